"""Quality-assurance figures of the preparation (matplotlib, Agg backend).

* :func:`plot_label_edges`: class boundaries of the label map drawn over the SEM
  (before registration, i.e. the naive placement, and after, on the working grid);
* :func:`plot_seams`: detected mosaic seams drawn on the damaged label map;
* :func:`plot_class_frequencies`: class shares per split (bar chart).

Every figure is written atomically (:func:`mineralseg.io.atomic_path`).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display needed (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
import numpy as np  # noqa: E402

from mineralseg.io.atomic import atomic_path  # noqa: E402

__all__ = ["class_edges", "plot_class_frequencies", "plot_label_edges", "plot_seams", "shrink_for_display"]

# Longest side of images drawn in figures: about the panel size in pixels (finer detail
# is invisible and makes matplotlib resample big arrays).
DISPLAY_MAX_SIDE = 720
FIG_DPI = 110
EDGE_COLOR = (255, 40, 40)  # red boundaries stand out on a greyscale SEM
SEAM_COLOR = "magenta"  # absent from the built-in palettes
FIELD_COLOR = "black"  # outlines of the detected mosaic fields


def shrink_for_display(img: np.ndarray, max_side: int = DISPLAY_MAX_SIDE, *, nearest: bool = False) -> np.ndarray:
    """Subsample (labels: ``nearest``) or area-average an image to at most ``max_side``."""
    step = int(np.ceil(max(img.shape[:2]) / max_side))
    if step <= 1:
        return img
    # Both ways keep whole blocks only, so an image and its labels shrink to one shape.
    h, w = (img.shape[0] // step) * step, (img.shape[1] // step) * step
    if nearest:
        return img[step // 2 : h : step, step // 2 : w : step]
    blocks = img[:h, :w].reshape(h // step, step, w // step, step, *img.shape[2:])
    return blocks.mean(axis=(1, 3)).astype(img.dtype)


def class_edges(ids: np.ndarray) -> np.ndarray:
    """Boolean map of pixels whose right or lower neighbour has another class."""
    edges = np.zeros(ids.shape, bool)
    edges[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edges[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edges


def _grey_rgb(img: np.ndarray) -> np.ndarray:
    a = img.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2)


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIG_DPI)
    plt.close(fig)


def plot_label_edges(
    sem: np.ndarray,
    ids: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    crop: tuple[int, int, int, int] | None = None,
) -> None:
    """Draw the class boundaries of ``ids`` over ``sem`` (both on the same grid).

    Parameters
    ----------
    sem : (H, W) ndarray
        Greyscale image (any range: displayed with a 0.5..99.5 % stretch).
    ids : (H, W) integer ndarray
        Class ids on the same grid.
    path : path-like
        Output PNG.
    title : str
    crop : (r0, r1, c0, c1), optional
        Also show this zoomed window (full resolution) in a second panel.
    """
    if sem.shape != ids.shape:
        raise ValueError(f"SEM shape {sem.shape} differs from label shape {ids.shape}")
    panels = [(sem, ids, "overview")]
    if crop is not None:
        r0, r1, c0, c1 = crop
        panels.append((sem[r0:r1, c0:c1], ids[r0:r1, c0:c1], f"zoom rows {r0}:{r1}, cols {c0}:{c1}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 7), squeeze=False,
                             layout="constrained")
    for ax, (img, lab, name) in zip(axes[0], panels):
        rgb = _grey_rgb(shrink_for_display(img))
        edges = class_edges(shrink_for_display(lab, nearest=True))
        rgb[edges] = EDGE_COLOR
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)


def plot_seams(
    labels_rgb: np.ndarray,
    seam_rows: Sequence[Sequence[int] | int],
    seam_cols: Sequence[Sequence[int] | int],
    path: str | os.PathLike,
    *,
    title: str = "",
    fields: Sequence[Sequence[int]] | None = None,
) -> None:
    """Draw detected seam stripes (rows / columns of the damaged map) over it.

    Parameters
    ----------
    labels_rgb : (H, W, 3) uint8 ndarray
        The damaged colour label map.
    seam_rows, seam_cols : sequences
        Seam positions: ints (one row / column) or ``(start, stop)`` pairs (a stripe of
        rows ``start..stop-1``).
    path : path-like
    title : str
    fields : sequence of (y, x, h, w), optional
        Detected field rectangles in the damaged map (nominal corner plus the field's
        shift), drawn as outlines: the layout the repair used.
    """
    h, w = labels_rgb.shape[:2]
    step = max(1, int(np.ceil(max(h, w) / DISPLAY_MAX_SIDE)))
    fig, ax = plt.subplots(figsize=(7, 0.5 + 7 * h / max(w, 1)), layout="constrained")
    ax.imshow(labels_rgb[::step, ::step], interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    for span, horizontal in [(s, True) for s in seam_rows] + [(s, False) for s in seam_cols]:
        lo, hi = (span, span + 1) if np.isscalar(span) else (span[0], span[-1] if len(span) > 1 else span[0] + 1)
        if horizontal:
            ax.axhspan(lo - 0.5, hi - 0.5, color=SEAM_COLOR, alpha=0.6, lw=0.8)
        else:
            ax.axvspan(lo - 0.5, hi - 0.5, color=SEAM_COLOR, alpha=0.6, lw=0.8)
    for y, x, fh, fw in fields or ():
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), fw, fh, fill=False, edgecolor=FIELD_COLOR, lw=0.6))
    ax.set_title(title or f"{len(seam_rows)} seam rows, {len(seam_cols)} seam columns", fontsize=10)
    ax.set_axis_off()
    _save(fig, path)


def plot_class_frequencies(
    frequencies: Mapping[str, Sequence[float]],
    names: Sequence[str],
    colors: Sequence[Sequence[int]],
    path: str | os.PathLike,
    *,
    title: str = "Class frequencies",
) -> None:
    """Bar chart of class shares (0..1) per split.

    Parameters
    ----------
    frequencies : mapping
        ``{split: [share of class 0, ...]}`` (e.g. ``"all"``, ``"train"``...).
    names : sequence of str
        Class names.
    colors : sequence of (r, g, b)
        Class colours (0..255); bars get a black edge so white classes stay visible.
    path : path-like
    """
    splits = list(frequencies)
    n = len(names)
    width = 0.8 / max(1, len(splits))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * n + 2), 4.5), layout="constrained")
    x = np.arange(n)
    facecolors = [tuple(np.asarray(c, float) / 255) for c in colors]
    for i, split in enumerate(splits):
        vals = np.asarray(frequencies[split], float) * 100
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, vals, width, color=facecolors,
                      edgecolor="black", linewidth=0.6, hatch=["", "//", "..", "xx"][i % 4], label=split)
        for b, v in zip(bars, vals if i == 0 else []):  # numbers for the first series only
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_ylabel("share of labelled pixels (%)")
    ax.set_title(title)
    if len(splits) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)
