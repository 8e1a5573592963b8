"""Compare a mineral map predicted from SEM with the QEMSCAN map of the same section.

This is how a user decides whether SEM-only mapping can replace QEMSCAN for a sample:
:func:`compare` reads the prediction (``labels.tif`` from ``mineralseg predict``, or any
class-id image) and the QEMSCAN colour map (through a palette), groups the QEMSCAN
minerals into the prediction's classes by name, repairs the mosaic seams when asked,
registers the QEMSCAN onto the prediction
(:func:`mineralseg.prep.registration_labels.register_label_maps`), resamples it onto
the prediction grid (nearest) and scores the two maps strip by strip:

- one confusion matrix (rows QEMSCAN, columns prediction) over the pixels both maps
  cover and at least one of them calls section (mount agreed by both is left out: it
  would flatter every score), with per-class IoU, F1, precision, recall, mean IoU and
  pixel accuracy (:mod:`mineralseg.evaluate.metrics`);
- both modal mineralogies (:mod:`mineralseg.evaluate.mineralogy`), each inside its own
  section, on the common area, side by side;
- a disagreement map: pixels where the maps differ in the QEMSCAN class's colour,
  agreement in grey;
- a registration QA figure: QEMSCAN class edges (red) over the prediction.

Memory is bounded by the QEMSCAN map (a few copies), a strip of the prediction and
the display images: the prediction is read in strips (lazily from a TIFF).

Output folder (built under a temporary name, renamed when complete)::

    OUT/metrics.json               scores, confusion matrix, registration, inputs
    OUT/mineralogy_compare.csv     one row per class: both mineralogies
    OUT/mineralogy_compare.json    both ModalMineralogy records and the rows
    OUT/disagreement.png           display-size map of where the maps differ
    OUT/registration_qa.png        QEMSCAN edges over the prediction
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

import mineralseg.io as mio
from mineralseg.classes import IGNORE_INDEX, ClassSchema, load_schema, read_label_map
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.metrics import ConfusionMatrix, metrics_from_confusion
from mineralseg.evaluate.mineralogy import (
    ModalMineralogy,
    check_class_names,
    default_excluded_classes,
    default_mount_classes,
    modal_mineralogy,
    write_csv,
)
from mineralseg.prep.mosaic import repair_mosaic
from mineralseg.prep.outline import label_sample_mask
from mineralseg.prep.qa import plot_label_edges
from mineralseg.prep.registration import stretch_matrix  # the naive placement, "same field"
from mineralseg.prep.registration_labels import (
    SectionMask,
    class_levels,
    register_label_maps,
    section_mask,
    warp_labels,
)

__all__ = ["CompareResult", "PredictedMap", "compare", "open_predicted_map", "qemscan_to_classes"]

# Pixels of the prediction scored per strip: bounds the strip temporaries (ids, the
# resampled QEMSCAN, masks: about 10 bytes a pixel) to about 40 MB.
STRIP_PIXELS = 1 << 22
# Longest side of disagreement.png and of the registration QA overview.
DISPLAY_SIDE = 1536
# Grey of agreeing pixels in disagreement.png.
AGREE_GREY = 190
# Colours tried, in order, for pixels not compared (outside the overlap, or mount in
# both maps); the first one no class uses.
NOT_COMPARED_COLORS = ((255, 255, 255), (0, 0, 0), (96, 96, 96))
OUTPUT_FILES = ("report.html", "metrics.json", "mineralogy_compare.csv", "mineralogy_compare.json", "disagreement.png",
                "registration_qa.png")
SCORED_PIXELS = "pixels both maps cover, where at least one calls section (mount in both left out)"
PLACEMENT_CONVENTION = (
    "label_to_sem of docs/CONTRACTS.md with the prediction in place of the SEM: "
    "[x_pred, y_pred, 1] = M @ [x_qemscan, y_qemscan, 1], pixel centres at integers"
)
MINERALOGY_COLUMNS = (
    "class", "predicted_pixels", "predicted_area_percent", "qemscan_pixels", "qemscan_area_percent",
    "difference_percent_points", "predicted_area_mm2", "qemscan_area_mm2",
)
# Keys of the JSON class table in a labels.tif ImageDescription, and those in each
# class entry: {"classes": [{"name": ..., "color": [r, g, b]}, ...]} or
# {"class_names": [...], "class_colors": [[r, g, b], ...]}.


@dataclass(frozen=True)
class PredictedMap:
    """A class-id map to compare, opened lazily.

    Attributes
    ----------
    ids : array-like (H, W) uint8
        Class ids, sliceable (a :class:`~mineralseg.io.LazyImage` or ndarray).
    class_names : tuple of str
    class_colors : (C, 3) uint8 ndarray
    source : str
        Where the class table came from ("labels.tif metadata" or "palette groups").
    path : str
        The file.
    """

    ids: Any
    class_names: tuple[str, ...]
    class_colors: np.ndarray = field(repr=False)
    source: str
    path: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the map."""
        return int(self.ids.shape[0]), int(self.ids.shape[1])


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` measured and wrote.

    Attributes
    ----------
    out : Path
        The output folder.
    metrics : dict
        Contents of ``metrics.json`` (scores as in
        :func:`~mineralseg.evaluate.metrics.metrics_from_confusion`, plus
        ``registration``, ``inputs``, ``scored``, ``not_scored``...).
    predicted, qemscan : ModalMineralogy
        The two modal mineralogies on the common area.
    class_colors : (C, 3) uint8 ndarray
        Colour of each class of ``metrics["class_names"]`` (for charts).
    files : dict of str to Path
        Each output file by name.
    """

    out: Path
    metrics: dict[str, Any]
    predicted: ModalMineralogy
    qemscan: ModalMineralogy
    class_colors: np.ndarray = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """A short report for the console."""
        m = self.metrics
        lines = [f"mean IoU {_fmt(m['miou'])}, pixel accuracy {_fmt(m['pixel_accuracy'])} "
                 f"over {m['num_pixels']:,} pixels"]
        reg = m.get("registration") or {}
        if "score_after" in reg:
            lines.append(f"registration: scale {reg['scale']:.4g}, rotation {reg['rotation_deg']:.3f} deg, "
                         f"score {reg['score_before']:.3f} -> {reg['score_after']:.3f}")
        lines.append(f"{'class':<22}{'IoU':>7}{'pred %':>9}{'QEMSCAN %':>11}")
        pred = dict(zip(self.predicted.class_names, self.predicted.area_percent))
        qem = dict(zip(self.qemscan.class_names, self.qemscan.area_percent))
        for name in m["class_names"]:
            lines.append(f"{name:<22}{_fmt(m['iou'][name]):>7}{_fmt(pred.get(name), 2):>9}{_fmt(qem.get(name), 2):>11}")
        if self.predicted.porosity_percent is not None:
            lines.append(f"porosity: predicted {self.predicted.porosity_percent:.2f} %, "
                         f"QEMSCAN {self.qemscan.porosity_percent:.2f} % (of each section)")
        lines.append(f"results: {self.out}")
        return "\n".join(lines)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


# --------------------------------------------------------------------------- reading


def _tiff_class_table(path: Path) -> tuple[list[str], np.ndarray] | None:
    """Class names and colours from the class table of a ``labels.tif`` written by predict."""
    from mineralseg.io.labels import read_labels_table

    try:
        table = read_labels_table(path)
    except DataError:
        return None
    return [str(n) for n in table["class_names"]], np.asarray(table["class_colors"], np.uint8)


def open_predicted_map(path: str | os.PathLike, schema: ClassSchema | str) -> PredictedMap:
    """Open a predicted class map and find its class table.

    Parameters
    ----------
    path : path-like
        ``labels.tif`` of ``mineralseg predict`` (class names and colours in its JSON
        ImageDescription: ``{"classes": [{"name", "color"}, ...]}`` or
        ``{"class_names": [...], "class_colors": [...]}``), or any single-channel
        class-id image (PNG, TIFF); ids ``0..C-1``, 255 = unknown.
    schema : ClassSchema or str
        Palette; without a class table in the file, the ids are its groups.

    Returns
    -------
    PredictedMap

    Raises
    ------
    UserError
        Missing or unreadable file, a colour (RGB) image, not 8-bit ids.
    """
    path = Path(path)
    schema = load_schema(schema)
    if not path.is_file():
        raise DataError(f"predicted map not found: {path}")
    ids = mio.open_image(path, palette_indices=True)
    if ids.ndim != 2:
        ids.close()
        raise DataError(
            f"{path}: a predicted map must hold one class id per pixel (2-D), got shape {tuple(ids.shape)}; "
            "give labels.tif of `mineralseg predict`, not the coloured map.png"
        )
    if ids.dtype != np.uint8:
        ids.close()
        raise DataError(f"{path}: class ids must be 8-bit (uint8), got {ids.dtype}")
    table = _tiff_class_table(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if table is not None:
        names, colors = table
        source = "labels.tif metadata"
    else:
        names, colors = schema.group_names, schema.group_colors
        source = f"groups of palette {schema.name!r} (no class table in the file)"
    return PredictedMap(ids=ids, class_names=tuple(names), class_colors=np.asarray(colors, np.uint8), source=source,
                        path=str(path))


def qemscan_to_classes(schema: ClassSchema, class_names: Sequence[str]) -> np.ndarray:
    """(256,) uint8 look-up: palette mineral id -> the prediction's class id, by name.

    The prediction's classes must be the palette's groups or its minerals (any order).

    Raises
    ------
    DataError
        The names match neither; the message lists both.
    """
    names = list(class_names)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # unknown colours and unused ids: unknown
    if sorted(names) == sorted(schema.group_names):
        groups = schema.group_names
        for i, m in enumerate(schema.minerals):
            lut[i] = names.index(groups[m.group])
    elif sorted(names) == sorted(schema.mineral_names):
        for i, m in enumerate(schema.minerals):
            lut[i] = names.index(m.name)
    else:
        raise DataError(
            f"the prediction's classes {names} are neither the groups {schema.group_names} nor the minerals "
            f"of palette {schema.name!r}; give the palette the model was trained with"
        )
    return lut


# --------------------------------------------------------------------------- scoring


def _free_color(colors: np.ndarray) -> np.ndarray:
    used = {tuple(int(v) for v in c) for c in np.asarray(colors).reshape(-1, 3)}
    for c in NOT_COMPARED_COLORS:
        if c not in used:
            return np.array(c, dtype=np.uint8)
    return np.array(NOT_COMPARED_COLORS[-1], dtype=np.uint8)


@dataclass
class _Accumulator:
    """Strip-by-strip totals: confusion matrix, per-map class counts, display images."""

    num_classes: int
    shape: tuple[int, int]
    step: int
    cm: ConfusionMatrix = field(init=False)
    pred_counts: np.ndarray = field(init=False)
    qem_counts: np.ndarray = field(init=False)
    common_pixels: int = 0
    preview_pred: np.ndarray = field(init=False)
    preview_qem: np.ndarray = field(init=False)
    preview_scored: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        c = self.num_classes
        self.cm = ConfusionMatrix(c, ignore_index=IGNORE_INDEX)
        self.pred_counts = np.zeros(c, np.int64)
        self.qem_counts = np.zeros(c, np.int64)
        hp, wp = max(1, self.shape[0] // self.step), max(1, self.shape[1] // self.step)
        self.preview_pred = np.full((hp, wp), IGNORE_INDEX, np.uint8)
        self.preview_qem = np.full((hp, wp), IGNORE_INDEX, np.uint8)
        self.preview_scored = np.zeros((hp, wp), bool)

    def add(self, r0: int, pred: np.ndarray, qem: np.ndarray, pred_in: np.ndarray, qem_in: np.ndarray) -> None:
        common = (pred != IGNORE_INDEX) & (qem != IGNORE_INDEX)
        scored = common & (pred_in | qem_in)
        truth = np.where(scored, qem, np.uint8(IGNORE_INDEX))
        self.cm.update(truth, pred)
        c = self.num_classes
        self.pred_counts += np.bincount(pred[common & pred_in], minlength=c)[:c]
        self.qem_counts += np.bincount(qem[common & qem_in], minlength=c)[:c]
        self.common_pixels += int(np.count_nonzero(common))
        s, hp, wp = self.step, *self.preview_pred.shape
        rows = np.arange(r0, r0 + pred.shape[0])
        take = (rows % s == s // 2) & (rows // s < hp)
        if take.any():
            pr = rows[take] // s
            cols = slice(s // 2, s // 2 + wp * s, s)
            self.preview_pred[pr] = pred[take][:, cols]
            self.preview_qem[pr] = qem[take][:, cols]
            self.preview_scored[pr] = scored[take][:, cols]


def _disagreement_rgb(acc: _Accumulator, colors: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8: QEMSCAN colour where the maps differ, grey where they agree."""
    pred, qem, scored = acc.preview_pred, acc.preview_qem, acc.preview_scored
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = colors
    rgb = np.empty(pred.shape + (3,), np.uint8)
    rgb[...] = _free_color(colors)
    agree = scored & (pred == qem)
    rgb[agree] = AGREE_GREY
    differ = scored & (pred != qem)
    rgb[differ] = lut[qem[differ]]
    return rgb


def _registration_figure(acc: _Accumulator, num_classes: int, path: Path, title: str) -> None:
    """QEMSCAN class edges (red) over the prediction's classes as grey levels."""
    grey = class_levels(num_classes)[acc.preview_pred]
    h, w = grey.shape
    crop = (h // 2 - h // 8, h // 2 + h // 8, w // 2 - w // 8, w // 2 + w // 8) if min(h, w) >= 16 else None
    plot_label_edges(grey, acc.preview_qem, path, title=title, crop=crop)


def _mineralogy_rows(pred: ModalMineralogy, qem: ModalMineralogy, names: Sequence[str]) -> list[dict[str, Any]]:
    def lookup(m: ModalMineralogy, n: str) -> tuple[Any, Any, Any]:
        if n not in m.class_names:
            return None, None, None
        i = m.class_names.index(n)
        return m.pixels[i], m.area_percent[i], None if m.area_mm2 is None else m.area_mm2[i]

    rows = []
    for n in names:
        (pp, pa, pm), (qp, qa, qm) = lookup(pred, n), lookup(qem, n)
        if pp is None and qp is None:
            continue
        rows.append({
            "class": n, "predicted_pixels": pp, "predicted_area_percent": pa, "qemscan_pixels": qp,
            "qemscan_area_percent": qa, "difference_percent_points": None if pa is None or qa is None else pa - qa,
            "predicted_area_mm2": pm, "qemscan_area_mm2": qm,
        })
    return rows


# --------------------------------------------------------------------------- main entry


def compare(
    predicted: str | os.PathLike,
    qemscan_map: str | os.PathLike,
    *,
    palette: str | os.PathLike | ClassSchema,
    out: str | os.PathLike,
    coding: str = "color",
    repair_seams: bool = False,
    overwrite: bool = False,
    pixel_size_um: float | None = None,
    register: bool = True,
    mount_classes: Sequence[str] | None = None,
    unknown: str = "reject",
    tolerance: float = 0,
    max_rotation_deg: float = 3.0,
    progress: bool | None = None,
    command: str | None = None,
) -> CompareResult:
    """Score a predicted mineral map against the QEMSCAN map of the same section.

    Parameters
    ----------
    predicted : path-like
        Class-id map (:func:`open_predicted_map`): ``labels.tif`` of ``mineralseg
        predict`` or any uint8 class-id PNG/TIFF.
    qemscan_map : path-like
        QEMSCAN map coded with ``palette`` (colours by default).
    palette : str, path-like or ClassSchema
        Built-in palette name or palette YAML. Its minerals are grouped to the
        prediction's classes by name (:func:`qemscan_to_classes`).
    out : path-like
        Output folder; refused if it exists unless ``overwrite``.
    coding : {"color", "grey", "index"}
        How the QEMSCAN map codes its minerals (:func:`mineralseg.classes.read_label_map`).
    repair_seams : bool
        Repair the QEMSCAN mosaic seams first (:func:`mineralseg.prep.mosaic.repair_mosaic`).
    overwrite : bool
        Replace an existing ``out`` (only once the new one is complete).
    pixel_size_um : float, optional
        Prediction pixel size in micrometres: areas in mm².
    register : bool
        Register the QEMSCAN onto the prediction; False when both cover the same field
        (the QEMSCAN is stretched over the prediction).
    mount_classes : sequence of str, optional
        Classes of the mount around the section (found as the largest region of the
        other classes, holes filled; their pixels inside it stay, as pores). Default
        :func:`~mineralseg.evaluate.mineralogy.default_mount_classes` (background-like
        classes, else the pore classes, which merge pores and mount in 'pores_background'
        or 'air'); ``[]`` for rock from edge to edge (every pixel is section; then
        ``register=False``).
    unknown, tolerance
        Handling of colours not in the palette (:meth:`ClassSchema.colors_to_ids`).
    max_rotation_deg : float
        Rotation range of the registration.
    progress : bool, optional
        Progress bar over strips (default: when stderr is a terminal).

    Returns
    -------
    CompareResult

    Raises
    ------
    UserError
        Missing or unreadable inputs, classes that do not match the palette, no
        section, registration failure, an existing ``out`` without ``overwrite``
        (``FileExistsError``): one line each; no output folder is left behind.
    """
    schema = load_schema(palette)
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise UserError(f"pixel size must be a positive number of micrometres, got {pixel_size_um}")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    inputs = {"predicted": str(predicted), "qemscan": str(qemscan_map)}
    with mio.atomic_dir(out, overwrite=overwrite) as tmp:
        pred_map = open_predicted_map(predicted, schema)
        try:
            names = list(pred_map.class_names)
            lut = qemscan_to_classes(schema, names)
            qem, seams = _read_qemscan(Path(qemscan_map), schema, lut, coding=coding, unknown=unknown,
                                       tolerance=tolerance, repair_seams=repair_seams)
            if mount_classes is None:
                mount = default_mount_classes(names)
            else:
                mount = check_class_names(mount_classes, names, "mount class")
            background = [names.index(n) for n in mount]
            qem_section, pred_section = _sections(qem, pred_map, background)
            label_to_pred, registration = _place(qem, pred_map, background, pred_section, register=register,
                                                 max_rotation_deg=max_rotation_deg)
            acc = _score(pred_map, qem, qem_section, pred_section, label_to_pred, show=show)
        finally:
            if hasattr(pred_map.ids, "close"):
                pred_map.ids.close()
        if acc.cm.total == 0:
            raise DataError(
                f"the QEMSCAN map {qemscan_map} and the prediction {predicted} share no section pixel once placed; "
                "check that they show the same sample"
            )
        try:
            pred_min = modal_mineralogy(acc.pred_counts, names, pixel_size_um=pixel_size_um)
            qem_min = modal_mineralogy(acc.qem_counts, names, pixel_size_um=pixel_size_um)
        except DataError as exc:
            raise DataError(f"modal mineralogy on the common area of {predicted} and {qemscan_map}: {exc}") from None
        metrics = _section_metrics(metrics_from_confusion(acc.cm, names), default_excluded_classes(names))
        metrics.update(
            confusion_rows="QEMSCAN", confusion_columns="prediction", scored=SCORED_PIXELS,
            common_pixels=acc.common_pixels, registration=registration, seam_repair=seams,
            class_table=pred_map.source, prediction_shape=list(pred_map.shape), qemscan_shape=list(qem.shape),
            palette=schema.name, inputs=inputs, pixel_size_um=pixel_size_um,
        )
        _write_outputs(tmp, acc, metrics, pred_min, qem_min, pred_map.class_colors)
        from mineralseg.report.compare import write_compare_report

        write_compare_report(tmp / "report.html", metrics=metrics, predicted=pred_min, qemscan=qem_min,
                             class_colors=pred_map.class_colors, folder=tmp, command=command)  # fmt: skip
    out = Path(out)
    return CompareResult(out=out, metrics=metrics, predicted=pred_min, qemscan=qem_min,
                         class_colors=pred_map.class_colors, files={k: out / k for k in OUTPUT_FILES})


def _section_metrics(metrics: dict[str, Any], mount: Sequence[str]) -> dict[str, Any]:
    """Leave the mount classes out of the per-class scores and the means.

    Mount that both maps agree on is not scored, so a mount class's pixels are only its
    errors and its IoU would be near 0 by construction; its errors still count against
    the section classes (as false positives or negatives) and in the pixel accuracy.
    """
    for name in mount:
        for key in ("iou", "f1", "precision", "recall"):
            metrics[key][name] = None
    for key, mean in (("iou", "miou"), ("f1", "mean_f1"), ("precision", "mean_precision"),
                      ("recall", "mean_recall")):  # fmt: skip
        values = [v for v in metrics[key].values() if v is not None]
        metrics[mean] = float(np.mean(values)) if values else None
    metrics["classes_in_mean"] = [n for n in metrics["class_names"] if metrics["iou"][n] is not None]
    metrics["not_scored"] = {"classes": list(mount), "why": "mount outside the section: only its errors are scored"}
    return metrics


def _read_qemscan(
    path: Path, schema: ClassSchema, lut: np.ndarray, *, coding: str, unknown: str, tolerance: float,
    repair_seams: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The QEMSCAN map in the prediction's class ids (repaired when asked) and the repair record."""
    if not path.exists():
        raise DataError(f"QEMSCAN map not found: {path}")
    minerals = read_label_map(path, schema, coding=coding, level="minerals", unknown=unknown, tolerance=tolerance)
    seams: dict[str, Any] = {"applied": False}
    if repair_seams:
        rep = repair_mosaic(minerals, ignore_index=schema.ignore_index)
        seams = mio.json_ready({"applied": rep.detected, "field_size": rep.field_size, "seam_width": rep.seam_width,
                                "confidence": rep.confidence, "damaged_shape": minerals.shape,
                                "repaired_shape": rep.repaired.shape})
        minerals = rep.repaired
    return lut[minerals], seams


def _place(
    qem: np.ndarray, pred_map: PredictedMap, background: list[int], pred_section: SectionMask, *, register: bool,
    max_rotation_deg: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``label_to_prediction`` (3x3) and its JSON record: registered, or stretched over the prediction."""
    if register:
        reg = register_label_maps(qem, pred_map.ids, num_classes=len(pred_map.class_names),
                                  background_ids=background, ignore_index=IGNORE_INDEX,
                                  max_rotation_deg=max_rotation_deg, target_name=f"the predicted map {pred_map.path}",
                                  target_section=pred_section if background else None)
        matrix, record = reg.matrix, reg.to_dict()
        record["score"] = "normalised mutual information of QEMSCAN ids and the rendered prediction (0..1)"
    else:
        matrix = stretch_matrix(pred_map.shape, qem.shape)
        record = {"method": "none: the QEMSCAN map stretched over the prediction (same field)"}
    record["label_to_prediction"] = np.asarray(matrix, dtype=float).tolist()
    record["convention"] = PLACEMENT_CONVENTION
    return matrix, record


def _sections(qem: np.ndarray, pred_map: PredictedMap, background: list[int]) -> tuple[np.ndarray, SectionMask]:
    """Section of the QEMSCAN (uint8 0/1, label grid) and of the prediction; all of both without a mount class."""
    if not background:  # rock from edge to edge
        return np.ones(qem.shape, np.uint8), SectionMask(mask=np.ones((1, 1), bool), step=max(pred_map.shape))
    qem_section = label_sample_mask(qem, background, ignore_index=IGNORE_INDEX).astype(np.uint8)
    pred_section = section_mask(pred_map.ids, background, ignore_index=IGNORE_INDEX,
                                what=f"the predicted map {pred_map.path}")
    return qem_section, pred_section


def _score(
    pred_map: PredictedMap, qem: np.ndarray, qem_section: np.ndarray, pred_section: SectionMask,
    label_to_pred: np.ndarray, *, show: bool,
) -> _Accumulator:
    """Read the prediction strip by strip, resample the QEMSCAN onto each strip, add up."""
    (h, w), c = pred_map.shape, len(pred_map.class_names)
    acc = _Accumulator(c, (h, w), max(1, math.ceil(max(h, w) / DISPLAY_SIDE)))
    rows_per_strip = max(1, STRIP_PIXELS // w)
    starts = range(0, h, rows_per_strip)
    for r0 in tqdm(starts, desc="compare", unit="strip", disable=not show, leave=False, file=sys.stderr):
        r1 = min(r0 + rows_per_strip, h)
        pred = np.asarray(pred_map.ids[r0:r1, 0:w])
        bad = pred[(pred >= c) & (pred != IGNORE_INDEX)]
        if bad.size:
            raise DataError(f"{pred_map.path}: class id {int(bad.max())} in rows {r0}..{r1 - 1}, but the map has "
                            f"{c} classes {list(pred_map.class_names)}")
        q = warp_labels(qem, label_to_pred, (r0, r1), w, fill=IGNORE_INDEX)
        q_in = warp_labels(qem_section, label_to_pred, (r0, r1), w, fill=0).astype(bool)
        acc.add(r0, pred, q, pred_section.rows(r0, r1, 0, w), q_in)
    return acc


def _write_outputs(
    folder: Path, acc: _Accumulator, metrics: dict[str, Any], pred_min: ModalMineralogy, qem_min: ModalMineralogy,
    colors: np.ndarray,
) -> None:
    """Every output file of :func:`compare` into ``folder``."""
    mio.write_json(folder / "metrics.json", metrics)
    rows = _mineralogy_rows(pred_min, qem_min, metrics["class_names"])
    write_csv(folder / "mineralogy_compare.csv", MINERALOGY_COLUMNS, rows)
    mio.write_json(folder / "mineralogy_compare.json",
                   {"classes": rows, "predicted": pred_min.to_dict(), "qemscan": qem_min.to_dict(),
                    "area": "each map inside its own section, on the area both maps cover"})
    mio.write_png(folder / "disagreement.png", _disagreement_rgb(acc, colors))
    title = "QEMSCAN class edges (red) over the prediction"
    reg = metrics["registration"]
    if "score_after" in reg:
        title += f": score {reg['score_before']:.3f} -> {reg['score_after']:.3f}"
    _registration_figure(acc, len(colors), folder / "registration_qa.png", title)
