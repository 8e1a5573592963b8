"""Report figures: prediction panels, confusion matrix, training curves, LR schedule.

Every function draws one figure with matplotlib's Agg canvas (no screen, no
pyplot global state), saves it as PNG through :func:`mineralseg.io.atomic.atomic_path`
and returns the path. Class colours come from the class schema
(``ClassSchema.group_colors``), so the maps look like the QEMSCAN maps.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.io.atomic import atomic_path

DPI = 120  # sharp enough for a report page, small files
PANEL_INCHES = 2.4  # side of one image panel; 4 panels fit a landscape page
# Colours tried in turn for ignored pixels; the first one that no class uses is taken.
_IGNORE_CANDIDATES = ((128, 128, 128), (255, 0, 255), (0, 0, 0), (64, 64, 64))


def _save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _colors01(class_names: Sequence[str], class_colors: Any) -> np.ndarray:
    colors = np.asarray(class_colors, dtype=np.float64)
    if colors.ndim != 2 or colors.shape[1] != 3 or len(colors) != len(class_names):
        raise UserError(
            f"class_colors must be ({len(class_names)}, 3) RGB values for classes "
            f"{list(class_names)}, got shape {colors.shape}"
        )
    return colors / 255.0 if colors.max() > 1 else colors


def _ignore_color(colors01: np.ndarray) -> np.ndarray:
    used = {tuple(np.round(c * 255).astype(int)) for c in colors01}
    for cand in _IGNORE_CANDIDATES:
        if cand not in used:
            return np.asarray(cand, dtype=np.float64) / 255.0
    return np.asarray(_IGNORE_CANDIDATES[0], dtype=np.float64) / 255.0


def _grey01(image: np.ndarray) -> np.ndarray:
    """(H, W) float image in 0..1: uint8 / 255, else a 0.5-99.5 % percentile stretch."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (1, 3):
        img = img.mean(axis=-1) if img.shape[-1] == 3 else img[..., 0]
    if img.ndim != 2:
        raise DataError(f"an input image must be (H, W) greyscale, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    img = img.astype(np.float64)
    lo, hi = np.nanpercentile(img, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0, 1)


def _labels_to_rgb(labels: np.ndarray, colors01: np.ndarray, ignore: np.ndarray,
                   what: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise DataError(f"{what} must be an (H, W) integer class map, got {lab.dtype} {lab.shape}")
    c = len(colors01)
    bad = (lab < 0) | ((lab >= c) & (lab != IGNORE_INDEX))
    if bad.any():
        raise DataError(f"{what} holds class id {int(lab[bad][0])}, outside 0..{c - 1} and not {IGNORE_INDEX}")
    lut = np.tile(ignore, (256, 1))
    lut[:c] = colors01
    return lut[np.clip(lab, 0, 255).astype(np.intp)]


def _as_list(x: Any) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x] if x.ndim == 2 else list(x)
    return [np.asarray(a) for a in x]


def _legend(fig: Figure, names: Sequence[str], colors01: np.ndarray,
            extra: Sequence[tuple[str, np.ndarray]] = ()) -> None:
    handles = [Patch(facecolor=c, edgecolor="0.3", label=n) for n, c in zip(names, colors01)]
    handles += [Patch(facecolor=c, edgecolor="0.3", label=n) for n, c in extra]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5),
               frameon=False, fontsize="small")


def plot_panels(
    images: Any,
    truths: Any,
    preds: Any,
    class_names: Sequence[str],
    class_colors: Any,
    path: str | os.PathLike,
    overlay_alpha: float = 0.4,
    *,
    row_labels: Sequence[str] | None = None,
    extra: Sequence[tuple[str, Any]] = (),
    titles: Sequence[str] = ("SEM input", "truth", "prediction", "overlay"),
    dpi: int = DPI,
) -> Path:
    """Rows of input | truth | prediction | prediction over the input.

    Parameters
    ----------
    images : (N, H, W) array or sequence of (H, W) arrays
        SEM tiles (uint8 shown as is; other dtypes stretched to 0.5-99.5 %).
    truths, preds : (N, H, W) int arrays or sequences of (H, W)
        Class ids; ``truths`` may hold 255 (ignored, drawn in a colour no class uses).
    class_names : sequence of C str
    class_colors : (C, 3) array_like
        RGB in 0..255 (``ClassSchema.group_colors``) or 0..1.
    path : path-like
        Output PNG.
    overlay_alpha : float in [0, 1]
        Opacity of the prediction colours in the overlay column.
    row_labels : sequence of N str, optional
        Shown left of each row (e.g. tile ids).
    extra : sequence of (title, maps)
        More class-map columns, each N (H, W) maps, drawn between the prediction and the
        overlay (e.g. a second reference).
    titles : 4 str
        Titles of the input, truth, prediction and overlay columns.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        Mismatched counts or shapes, class ids out of range.
    """
    imgs = _as_list(images)
    if len(titles) != 4:
        raise DataError(f"plot_panels: titles must name the 4 columns input, truth, prediction, overlay; got {titles}")
    # The class-map columns: truth, prediction (also drawn over the input), then the extra ones.
    maps = [(titles[1], _as_list(truths)), (titles[2], _as_list(preds))]
    maps += [(str(title), _as_list(m)) for title, m in extra]
    if not imgs or any(len(m) != len(imgs) for _, m in maps):
        raise DataError(
            f"plot_panels needs as many images as class maps per column (>= 1), got {len(imgs)} images and "
            + ", ".join(f"{len(m)} {title}" if k < 2 else f"{len(m)} in extra column {title!r}"
                        for k, (title, m) in enumerate(maps))
        )
    if not 0 <= overlay_alpha <= 1:
        raise UserError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
    if row_labels is not None and len(row_labels) != len(imgs):
        raise UserError(f"{len(row_labels)} row labels given for {len(imgs)} rows")
    colors = _colors01(class_names, class_colors)
    ignore = _ignore_color(colors)
    n, cols = len(imgs), 2 + len(maps)
    fig = Figure(figsize=(cols * PANEL_INCHES, n * PANEL_INCHES + 0.5), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    names = (titles[0], *(title for title, _ in maps), titles[3])
    any_ignored = False
    for i, img in enumerate(imgs):
        grey = _grey01(img)
        rgbs = []
        for title, column in maps:
            if np.shape(column[i]) != grey.shape:
                raise DataError(f"row {i}: image {grey.shape} and {title} {np.shape(column[i])} must have the same (H, W)")
            rgbs.append(_labels_to_rgb(column[i], colors, ignore, f"{title} of row {i}"))
            any_ignored |= bool((np.asarray(column[i]) == IGNORE_INDEX).any())
        grey_rgb = np.repeat(grey[..., None], 3, axis=-1)
        overlay = grey_rgb.copy()
        shown = np.asarray(maps[1][1][i]) != IGNORE_INDEX  # the prediction, over the input
        overlay[shown] = (1 - overlay_alpha) * grey_rgb[shown] + overlay_alpha * rgbs[1][shown]
        panels = (grey_rgb, *rgbs, overlay)
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(names[j], fontsize="medium")
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize="small")
    _legend(fig, class_names, colors, [("ignored", ignore)] if any_ignored else ())
    return _save(fig, path, dpi)


_NORMALIZE = {"true": 1, "pred": 0, "all": None}


def plot_confusion(
    cm: Any,
    class_names: Sequence[str],
    path: str | os.PathLike,
    normalize: str | None = "true",
    *,
    dpi: int = DPI,
) -> Path:
    """Confusion matrix heat map with the value in each cell.

    Parameters
    ----------
    cm : (C, C) array of counts or ConfusionMatrix
        Rows truth, columns prediction.
    class_names : sequence of C str
    path : path-like
        Output PNG.
    normalize : {"true", "pred", "all", None}
        Divide by row sums (diagonal = recall), column sums (diagonal = precision),
        the total, or show raw counts. Empty rows/columns show "-".

    Returns
    -------
    Path
    """
    m = np.asarray(getattr(cm, "matrix", cm), dtype=np.float64)
    c = len(class_names)
    if m.shape != (c, c):
        raise UserError(f"confusion matrix of shape {m.shape} does not fit {c} classes {list(class_names)}")
    if normalize is not None and normalize not in _NORMALIZE:
        raise UserError(f"normalize must be one of 'true', 'pred', 'all' or None, got {normalize!r}")
    if normalize is None:
        values = m
    else:
        axis = _NORMALIZE[normalize]
        denom = m.sum() if axis is None else m.sum(axis=axis, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = m / denom
    side = max(3.5, 0.7 * c + 1.8)
    fig = Figure(figsize=(side + 0.8, side), layout="constrained")
    ax = fig.subplots()
    vmax = 1.0 if normalize is not None else max(float(np.nanmax(m)), 1.0)
    im = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if c <= 20:
        for r in range(c):
            for k in range(c):
                v = values[r, k]
                if math.isnan(v):
                    text = "-"
                elif normalize is None:
                    text = _compact_count(v)
                else:
                    text = f"{v:.2f}"
                dark = not math.isnan(v) and v > 0.55 * vmax
                ax.text(k, r, text, ha="center", va="center", fontsize="small",
                        color="white" if dark else "black")
    ax.set_xticks(range(c), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(c), labels=class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title({"true": "confusion (rows sum to 1)", "pred": "confusion (columns sum to 1)",
                  "all": "confusion (fraction of all pixels)", None: "confusion (pixels)"}[normalize],
                 fontsize="medium")
    return _save(fig, path, dpi)


def _compact_count(v: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.1f}{suffix}"
    return f"{int(v)}"


def _to_float_array(values: Any) -> np.ndarray | None:
    """Float array of a column (blank/invalid cells -> NaN), None if not numeric at all."""
    out = []
    for v in values:
        if v is None or (isinstance(v, str) and not v.strip()):
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    arr = np.asarray(out, dtype=np.float64)
    return arr if np.isfinite(arr).any() else None


def _read_columns(source: Any) -> tuple[dict[str, np.ndarray], str]:
    """Numeric columns of a metrics.csv path, a mapping, a list of rows or a data frame."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise DataError(f"metrics file not found: {p}")
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        names = list(rows[0].keys()) if rows else []
        raw = {n: [r.get(n) for r in rows] for n in names}
        where = str(p)
    elif isinstance(source, Mapping):
        raw, where = {str(k): list(np.ravel(v)) for k, v in source.items()}, "metrics mapping"
    elif hasattr(source, "columns"):
        raw = {str(k): list(np.ravel(np.asarray(source[k]))) for k in source.columns}
        where = "metrics table"
    elif isinstance(source, Sequence):
        names = list(dict.fromkeys(k for row in source for k in row))
        raw, where = {n: [row.get(n) for row in source] for n in names}, "metrics rows"
    else:
        raise UserError(f"cannot read training metrics from a {type(source).__name__}")
    cols = {}
    for name, values in raw.items():
        arr = _to_float_array(values)
        if arr is not None:
            cols[name] = arr
    return cols, where


def plot_training_curves(metrics: Any, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Loss, metric and learning-rate curves from Lightning's CSVLogger output.

    Parameters
    ----------
    metrics : path-like, mapping of column -> values, sequence of row dicts, or a
        data frame (anything with ``.columns`` and ``[name]``)
        Typically ``metrics.csv`` with columns such as ``epoch``, ``step``,
        ``train_loss``, ``val_loss``, ``val_miou``, ``lr-Adam``. Blank cells (rows
        that log other columns) are skipped; missing columns are fine.
    path : path-like
        Output PNG.

    Returns
    -------
    Path

    Notes
    -----
    The x axis is ``step`` when present, else ``epoch``, else the row number.
    Panels: columns whose name contains "loss"; all other numeric columns (mean
    IoU, accuracy...); learning rates (names starting with "lr", linear scale,
    which shows cosine schedules best). Empty panels are left out.

    Raises
    ------
    DataError
        Missing file, or no numeric column to plot.
    """
    cols, where = _read_columns(metrics)
    xname = next((n for n in ("step", "epoch") if n in cols), None)
    n_rows = max((len(v) for v in cols.values()), default=0)
    x = cols[xname] if xname else np.arange(n_rows, dtype=np.float64)
    groups: dict[str, list[str]] = {"loss": [], "metrics": [], "learning rate": []}  # panel order
    for name in cols:
        if name in ("step", "epoch"):
            continue
        if "loss" in name.lower():
            groups["loss"].append(name)
        elif name.lower().startswith("lr"):
            groups["learning rate"].append(name)
        else:
            groups["metrics"].append(name)
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise DataError(f"no numeric metric columns to plot in {where}; columns found: {sorted(cols)}")
    fig = Figure(figsize=(6.5, 2.4 * len(groups) + 0.4), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (title, names) in zip(axes, groups.items()):
        for name in names:
            y = cols[name]
            ok = np.isfinite(y) & np.isfinite(x[: len(y)])
            if not ok.any():
                continue
            xs, ys = x[: len(y)][ok], y[ok]
            ax.plot(xs, ys, label=name, marker="o" if ok.sum() <= 30 else None,
                    markersize=3, linewidth=1.2)
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", frameon=False)
    axes[-1].set_xlabel(xname or "row")
    return _save(fig, path, dpi)


def plot_lr_schedule(
    steps: Any, lrs: Any, path: str | os.PathLike, *, log: bool = False, dpi: int = DPI
) -> Path:
    """Learning rate against optimisation step.

    Parameters
    ----------
    steps, lrs : (S,) array_like of float
        Steps and the learning rate at each one.
    path : path-like
        Output PNG.
    log : bool
        Log-scale y axis (for step or exponential decay; the default linear
        scale shows cosine annealing best). Needs all rates > 0.

    Returns
    -------
    Path
    """
    s = np.asarray(steps, dtype=np.float64).reshape(-1)
    lr = np.asarray(lrs, dtype=np.float64).reshape(-1)
    if s.size == 0 or s.shape != lr.shape:
        raise UserError(f"steps and lrs must be non-empty and of equal length, got {s.size} and {lr.size}")
    if not (np.isfinite(s).all() and np.isfinite(lr).all()):
        raise DataError("steps and learning rates must be finite")
    if log and not (lr > 0).all():
        raise UserError(f"a log-scale learning-rate plot needs rates > 0, got a minimum of {lr.min()}")
    fig = Figure(figsize=(6.0, 3.0), layout="constrained")
    ax = fig.subplots()
    ax.plot(s, lr, linewidth=1.4)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule", fontsize="medium")
    ax.grid(True, alpha=0.3)
    return _save(fig, path, dpi)
