"""``mineralseg prepare CONFIG --out DATASET``: SEM/label pairs -> a training dataset.

For each sample of the config (:mod:`mineralseg.prep.config`):

1. read the label map (colour / grey / index coding -> mineral ids);
2. repair the QEMSCAN mosaic seams (:func:`mineralseg.prep.mosaic.repair_mosaic`;
   ``auto``: kept unchanged when nothing is detected);
3. register the repaired map onto the SEM
   (:func:`mineralseg.prep.registration.register_labels_to_sem`), or use the identity
   (or an exact integer zoom) for pairs marked ``aligned`` / ``register: false``; after
   a seam repair (``realign_fields: true``) each field's position is checked on the
   registered SEM and the fields it places elsewhere are moved, then the map is
   registered again (:func:`mineralseg.prep.seam_alignment.register_repaired`);
4. resample the SEM onto the working grid (label grid refined by ``sem_scale``),
   strip by strip (:func:`mineralseg.prep.resample.sem_to_working_grid`);
5. sample mask (``outline``: ``auto`` outlines a section in a mount and keeps every
   pixel of rock from edge to edge, see :mod:`mineralseg.prep.outline`), grey-level
   normalisation (:func:`mineralseg.prep.intensity.normalise_sem`, one pooled mapping
   for ``scope: dataset``, or the user's ``scale``), tiles (:mod:`mineralseg.prep.tiling`);

Folders of aligned pairs (``folders:`` or ``mineralseg prepare --images --masks``) are
expanded into samples by :func:`mineralseg.prep.config.folder_samples`; inline or
guessed classes come from :func:`mineralseg.classes.inline_schema` /
:func:`mineralseg.classes.guess_mask_coding`.

then the train / val / test split (:mod:`mineralseg.prep.splits`) and the dataset files
(layout in docs/CONTRACTS.md): ``manifest.json``, ``class_stats.json``,
``registration.json``, ``samples/<sample>/...``, ``tiles/<sample>/...``, ``qa/*.png``
and ``run.json``. Everything is written into a temporary folder renamed at the end: a
failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from tqdm import tqdm

from mineralseg.classes import (
    ClassSchema,
    guess_mask_coding,
    inline_schema,
    load_schema,
    mask_values,
    read_label_map,
)
from mineralseg.errors import DataError, UserError
from mineralseg.io import atomic_dir, json_ready, open_image, write_json, write_png, write_tiff
from mineralseg.prep import qa
from mineralseg.prep.config import PrepareConfig, SampleConfig, load_prepare_config
from mineralseg.prep.intensity import apply_normalisation, normalise_sem, pooled_levels, scale_levels
from mineralseg.prep.outline import label_sample_mask, labels_have_mount, section_mask
from mineralseg.prep.registration import stretch_matrix
from mineralseg.prep.resample import (
    labels_to_working_grid,
    sem_coverage,
    sem_to_working_grid,
    working_shape,
)
from mineralseg.prep.splits import SPLITS, group_side, split_blocks, split_samples, split_tile_groups
from mineralseg.prep.tiling import cut_tiles, tile_positions
from mineralseg.versions import package_versions

__all__ = ["GEOMETRY_CONVENTION", "background_ids", "prepare"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
GEOMETRY_CONVENTION = (
    "label_to_sem is a 3x3 matrix M with [x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]; x = column, "
    "y = row, pixel centres at integer coordinates; label coordinates on the repaired (clean) grid, "
    "SEM coordinates in full-resolution SEM pixels. Working grid (sem_aligned, labels_aligned, tile "
    "row/col): working pixel centre (u, v) is label coordinate ((u + 0.5) / sem_scale - 0.5, "
    "(v + 0.5) / sem_scale - 0.5); working_to_sem = label_to_sem @ working_to_label."
)
# Mineral names taken as "outside the section" (the mount) when finding the sample in a
# label map; schemas without any of them fall back to the commonest id on the map border.
BACKGROUND_NAMES = ("background", "air", "outside", "mount", "epoxy", "resin")
# Input files up to this size are fully hashed; bigger ones (SEM mosaics of several GB)
# get the hash of their first MiB plus their size, which identifies them in practice.
FULL_HASH_MAX_BYTES = 64 * 2**20
PARTIAL_HASH_BYTES = 2**20
# The aligned SEM of a sample is saved as PNG up to this many pixels, as a tiled TIFF
# beyond (PNG encoders hold the whole image and are slow on gigapixel images).
PNG_MAX_PIXELS = 1 << 26
# Longest side of the display grid of the "before registration" QA figures (the SEM
# overview is read at twice that).
QA_OVERVIEW_SIDE = 720
# A working grid finer than the SEM by more than this is reported (the SEM is then
# interpolated, not averaged: tiles look blurred and carry no extra information).
UPSAMPLING_TOL = 0.05
# Samples listed one per line in the summary (folders of tiles have hundreds).
_LISTED_SAMPLES = 8
# Side (working pixels) of the zoomed crop in the "after registration" QA figure.
QA_ZOOM_SIDE = 256


# --------------------------------------------------------------------------- helpers
def background_ids(schema: ClassSchema, ids: np.ndarray | None = None) -> list[int]:
    """Mineral ids of the mount outside the section.

    Minerals named like :data:`BACKGROUND_NAMES` (``background`` in qemscan24, ``air``
    in sandstone-xrm); without any, the commonest id on the border of ``ids``.

    Raises
    ------
    DataError
        No background mineral in the schema and no map given (or an all-ignored border).
    """
    named = _named_background_ids(schema)
    if named:
        return named
    if ids is None:
        raise DataError(f"schema {schema.name!r} has no background mineral ({', '.join(BACKGROUND_NAMES)})")
    border = np.concatenate([ids[0], ids[-1], ids[:, 0], ids[:, -1]])
    border = border[border != schema.ignore_index]
    if border.size == 0:
        raise DataError("cannot tell the background: the label map border is all unknown")
    return [int(np.bincount(border).argmax())]


def _named_background_ids(schema: ClassSchema) -> list[int]:
    """Mineral ids named like :data:`BACKGROUND_NAMES` (empty when none is)."""
    return [i for i, m in enumerate(schema.minerals) if m.name.lower() in BACKGROUND_NAMES]


def _resolve_classes(cfg: PrepareConfig) -> tuple[PrepareConfig, ClassSchema, str | None]:
    """The class schema and label coding of a config; with a one-line summary when told from the masks.

    A palette name or file is loaded (coding: the config's, default colour). Inline
    classes with colours or grey levels for all are decoded with them. Otherwise (no
    palette, or names only) the masks are read and their values tell the coding
    (:func:`mineralseg.classes.guess_mask_coding`).
    """
    palette, coding = cfg.palette, cfg.label_coding
    if isinstance(palette, str):
        return cfg, load_schema(palette), None
    names = cfg.palette_names
    if palette is not None and names is None:  # entries with colours / grey levels
        entries = [{"name": e} if isinstance(e, str) else e.model_dump() for e in palette]
        schema = inline_schema(entries, source="palette")
        if coding is None:
            if all(e.get("grey") is not None for e in entries):
                coding = "grey"
            elif all(e.get("color") is not None for e in entries):
                coding = "color"
        if coding is not None:
            return cfg.model_copy(update={"label_coding": coding}), schema, None
        names = [e["name"] for e in entries]
    if coding == "color":
        raise DataError("label_coding: color needs the classes' colours: palette: [{name: ..., color: [r, g, b]}, ...]")
    if names is not None and coding is not None:
        return cfg, inline_schema(names, source="palette"), None
    source = str(cfg.folders.masks) if cfg.folders is not None else "the label maps"
    guess = guess_mask_coding(mask_values([s.labels for s in cfg.samples]), names, source=source)
    if coding is not None and coding != guess.coding:
        raise DataError(f"{source}: label_coding is {coding} but the mask values fit {guess.coding} coding ({guess.summary})")
    return cfg.model_copy(update={"label_coding": guess.coding}), guess.schema, guess.summary


def _sample_error(sample: SampleConfig, exc: UserError, files: tuple[Path, ...] = ()) -> UserError:
    """The same error type, one line, naming the sample and the files of the failed step."""
    text = " ".join(str(exc).split())
    missing = [str(f) for f in files if str(f) not in text]
    if missing:
        text = f"{' / '.join(missing)}: {text}"
    if f"'{sample.name}'" not in text:
        text = f"sample {sample.name!r}: {text}"
    return type(exc)(text)


def _check_inputs(cfg: PrepareConfig) -> None:
    for s in cfg.samples:
        for what, path in (("SEM", s.sem), ("label map", s.labels)):
            if not Path(path).is_file() and not Path(path).is_dir():
                raise DataError(f"sample {s.name!r}: {what} not found: {path}")


def _file_record(path: Path) -> dict[str, Any]:
    stat = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if stat.st_size <= FULL_HASH_MAX_BYTES:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            how = "sha256"
        else:
            h.update(fh.read(PARTIAL_HASH_BYTES))
            how = f"sha256 of the first {PARTIAL_HASH_BYTES} bytes"
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stat.st_mtime)),
        "hash": h.hexdigest(),
        "hash_kind": how,
    }


def _aligned_matrix(sample: SampleConfig, sem_shape: tuple[int, int], label_shape: tuple[int, int]) -> np.ndarray:
    """label_to_sem of a pair already on one grid (or the SEM an exact integer zoom of it)."""
    (sh, sw), (lh, lw) = sem_shape, label_shape
    if (sh, sw) == (lh, lw):
        return np.eye(3)
    f = sh / lh
    if sh % lh == 0 and sw % lw == 0 and sw // lw == f:
        f = int(f)
        return np.array([[f, 0, (f - 1) / 2], [0, f, (f - 1) / 2], [0, 0, 1]], dtype=np.float64)
    raise DataError(
        f"sample {sample.name!r}: aligned pair but the SEM {sample.sem} has shape {sh} x {sw} and the label map "
        f"{sample.labels} has shape {lh} x {lw} (they must be equal, or the SEM an integer multiple); "
        "set aligned: false (and register: true) to register them"
    )


def _sem_overview(sem: Any, sem_shape: tuple[int, int], max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """The SEM area-downscaled to about ``max_side`` (one pass) and its SEM-from-small matrix."""
    f = max(1, int(np.ceil(max(sem_shape) / max_side)))  # integer: exact block means
    small_to_sem = np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]], dtype=np.float64)
    small_shape = (sem_shape[0] // f, sem_shape[1] // f)
    return sem_to_working_grid(sem, small_to_sem, small_shape, 1), small_to_sem


def _overview(sem_small: np.ndarray, label_to_small: np.ndarray, label_shape: tuple[int, int], max_side: int) -> tuple[np.ndarray, float]:
    """An SEM overview resampled onto the label grid scaled to ``max_side``, and the scale factor.

    The display grid may be finer than the label grid (small maps): label pixel edges
    then show as steps over the smoother SEM.
    """
    f = max(label_shape) / max_side
    small_shape = (max(1, int(round(label_shape[0] / f))), max(1, int(round(label_shape[1] / f))))
    grid_to_label = np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]])
    return sem_to_working_grid(sem_small, label_to_small @ grid_to_label, small_shape, 1), f


def _labels_overview(ids: np.ndarray, f: float, shape: tuple[int, int]) -> np.ndarray:
    rows = np.clip(np.rint((np.arange(shape[0]) + 0.5) * f - 0.5).astype(int), 0, ids.shape[0] - 1)
    cols = np.clip(np.rint((np.arange(shape[1]) + 0.5) * f - 0.5).astype(int), 0, ids.shape[1] - 1)
    return ids[np.ix_(rows, cols)]


# --------------------------------------------------------------------------- one sample
class _SampleRun:
    """Processes one sample and writes its files into the dataset folder."""

    def __init__(
        self, cfg: PrepareConfig, schema: ClassSchema, sample: SampleConfig, root: Path,
        levels: dict[str, Any] | None = None, *, accept_low_confidence: bool = False,
    ):
        self.cfg, self.schema, self.sample, self.root = cfg, schema, sample, root
        self.levels = levels  # one mapping for all samples (scope: dataset), else None
        self.level = cfg.classes
        self.n_classes = schema.n_classes(self.level)
        self.timings: dict[str, float] = {}
        self.record: dict[str, Any] = {"name": sample.name}
        self.files: tuple[Path, ...] = ()  # input files of the step running (for errors)
        self.step = "start"  # the step running (for errors)
        self.accept_low_confidence = accept_low_confidence  # use an untrusted seam repair (and say so)
        self.notes: list[str] = []
        self.bar: Any = None

    @contextlib.contextmanager
    def _step(self, name: str, files: tuple[Path, ...] = ()) -> Iterator[None]:
        """Show the step, remember its input files (for error messages), time it."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.sample.name}: {name}")
        self.files = files
        self.step = name
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)

    def run(self, bar: Any = None) -> list[dict[str, Any]]:
        """All steps of one sample; returns its tile records (split still unset)."""
        s, cfg, schema = self.sample, self.cfg, self.schema
        self.bar = bar
        sdir, qa_dir = self.root / "samples" / s.name, self.root / "qa"

        with self._step("read_labels", (s.labels,)):
            ids = read_label_map(
                s.labels, schema, coding=cfg.sample_coding(s), level="minerals",
                unknown=cfg.unknown_colors, tolerance=cfg.color_tolerance,
            )
            bg = background_ids(schema, ids)
            self.record.update(labels=str(s.labels), label_shape=list(ids.shape), background_ids=bg)
        with self._step("seam_repair", (s.labels,)):
            repaired, rep = self._repair(ids, qa_dir)

        with ExitStack() as stack:
            with self._step("open_sem", (s.sem,)):
                sem = open_image(s.sem, shape=s.sem_shape, dtype=s.sem_dtype, as_grey=True)
                stack.callback(sem.close)
                sem_shape = tuple(int(v) for v in sem.shape[:2])
                self.record.update(sem=str(s.sem), sem_shape=list(sem_shape), sem_dtype=str(sem.dtype))
            with self._step("registration", (s.sem, s.labels)):
                label_to_sem, repaired = self._register(sem, sem_shape, ids, repaired, rep, bg)
                write_png(sdir / "qemscan_repaired.png", schema.ids_to_colors(repaired, level="minerals"),
                          compress_level=1)
            with self._step("resample", (s.sem,)):
                sem_w = self._resample(sem, label_to_sem, repaired.shape)
            if not self.record["registration"].get("identity"):
                with self._step("qa_before", (s.sem,)):
                    self._qa_before(sem, sem_shape, repaired, qa_dir)

        with self._step("masks", (s.sem,) if cfg.outline == "sem" else (s.labels,)):
            sample_mask, classes_w = self._masks(repaired, bg, label_to_sem, sem_shape, sem_w)
        with self._step("normalise", (s.sem,)):
            image = self._normalise(sem_w, sample_mask)
            del sem_w
        with self._step("write_aligned_qa"):
            self._write_aligned(sdir, image, classes_w)
            self._qa_after(image, classes_w, qa_dir)
        with self._step("tiles"):
            positions = tile_positions(sample_mask, cfg.tile_size, cfg.min_sample_fraction, sample_name=s.name)
            tiles = self._write_tiles(image, classes_w, positions)
        self.record["tiles"] = len(tiles)
        self.record["timings_s"] = self.timings
        return tiles

    def _resample(self, sem: Any, label_to_sem: np.ndarray, label_shape: tuple[int, int]) -> np.ndarray:
        scale = self.cfg.sem_scale
        sem_px = float(np.sqrt(abs(np.linalg.det(label_to_sem[:2, :2])))) / scale
        self.record["sem_px_per_working_px"] = round(sem_px, 4)
        if sem_px < 1 - UPSAMPLING_TOL:
            self.notes.append(
                f"sample {self.sample.name!r}: the working grid (sem_scale {scale}) is finer than the SEM "
                f"({sem_px:.2f} SEM px per working px): the SEM is interpolated; lower sem_scale"
            )
        return sem_to_working_grid(sem, label_to_sem, label_shape, scale)

    def _outline(self, repaired: np.ndarray, bg: list[int], sem_w: np.ndarray) -> np.ndarray:
        """Sample mask on the working grid by ``outline`` mode (before SEM coverage)."""
        mode, schema, scale = self.cfg.outline, self.schema, self.cfg.sem_scale
        if mode == "auto":
            named = _named_background_ids(schema)
            mode = "labels" if labels_have_mount(repaired, named) else "none"
            bg = named
        self.record["outline"] = {"mode": self.cfg.outline, "used": mode}
        if mode == "none":
            return np.ones(sem_w.shape, bool)
        if mode == "sem":
            return section_mask(sem_w, "sem")
        in_labels = label_sample_mask(repaired, bg, ignore_index=schema.ignore_index)
        return labels_to_working_grid(in_labels.view(np.uint8), scale).astype(bool)

    def _masks(
        self, repaired: np.ndarray, bg: list[int], label_to_sem: np.ndarray, sem_shape: tuple[int, int],
        sem_w: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample mask and class ids on the working grid (ignore_index where there is no SEM)."""
        s, schema, scale = self.sample, self.schema, self.cfg.sem_scale
        covered = sem_coverage(label_to_sem, repaired.shape, scale, sem_shape)
        sample_mask = self._outline(repaired, bg, sem_w)
        sample_mask &= covered
        if not sample_mask.any():
            raise DataError(f"sample {s.name!r}: the sample in {s.labels} falls outside the SEM {s.sem}")
        classes = repaired if self.level == "minerals" else schema.to_groups(repaired)
        classes_w = labels_to_working_grid(classes, scale).copy()
        classes_w[~covered] = schema.ignore_index  # no image there
        self.record["sample_fraction"] = round(float(sample_mask.mean()), 4)
        return sample_mask, classes_w

    def _normalise(self, sem_w: np.ndarray, sample_mask: np.ndarray) -> np.ndarray:
        norm, dtype = self.cfg.normalise, np.dtype(self.record["sem_dtype"])
        if self.levels is not None:
            params = self.levels
        elif norm.method == "percentile":
            image, params = normalise_sem(sem_w, sample_mask, low=norm.low, high=norm.high, drift=norm.drift)
            params["scope"] = "sample"
            self.record["normalisation"] = params
            return image
        elif norm.scale is not None:
            params = scale_levels(*norm.scale)
        elif dtype == np.uint8:
            params = {"method": "none", "low_value": 0.0, "high_value": 255.0, "drift": None}
        else:
            lo, hi = float(np.min(sem_w)), float(np.max(sem_w))
            full = f"[0, {np.iinfo(dtype).max}]" if np.issubdtype(dtype, np.integer) else "[0, 1]"
            raise DataError(
                f"SEM {self.sample.sem} is {dtype} (values {lo:g}..{hi:g}): normalise: none keeps 8-bit grey levels "
                f"only; give the range to map to 0..255 (normalise: {{method: none, scale: {full}}}) or use "
                "method: percentile"
            )
        self.record["normalisation"] = {k: v for k, v in params.items() if k != "images"}
        return apply_normalisation(sem_w, params)

    # ------------------------------------------------------------------ steps
    def _repair(self, ids: np.ndarray, qa_dir: Path) -> tuple[np.ndarray, Any]:
        """The repaired map and the repair (None when the repair was not run)."""
        s, mode = self.sample, self.cfg.repair_seams
        summary: dict[str, Any] = {"mode": mode}
        self.record["seam_repair"] = summary
        if s.aligned or mode is False:
            summary.update(applied=False, reason="aligned pair" if s.aligned else "repair_seams: false")
            return ids, None
        from mineralseg.prep.mosaic import repair_mosaic, seam_figure_data

        rep = repair_mosaic(ids, ignore_index=self.schema.ignore_index)
        info = seam_figure_data(rep)
        fields = info.pop("fields", None)
        summary.update(info)
        summary.update(field_size=json_ready(rep.field_size), seam_width=json_ready(rep.seam_width),
                       seam_fill_ids=[int(v) for v in rep.seam_fill_ids], applied=bool(rep.detected),
                       trusted=bool(rep.trusted), doubt=rep.doubt or None)
        if not rep.trusted:
            self._check_trust(rep)
        if not rep.detected:
            summary["reason"] = "no seam pattern detected"
            if mode is True:
                self.notes.append(f"sample {s.name!r}: repair_seams is true but no seam pattern was found in {s.labels}")
            return ids, None
        qa.plot_seams(
            self.schema.ids_to_colors(ids, level="minerals"), list(rep.seam_rows), list(rep.seam_cols),
            qa_dir / f"{s.name}_seams.png",
            title=f"{s.name}: {len(rep.seam_rows)} seam rows, {len(rep.seam_cols)} seam columns detected, "
            f"fields {rep.field_size}, confidence {float(rep.confidence):.2f}"
            + ("" if rep.trusted else " (NOT TRUSTED, accepted)"),
            fields=fields,
        )
        repaired = np.asarray(rep.repaired)
        summary["damaged_shape"] = list(ids.shape)
        summary["repaired_shape"] = list(repaired.shape)
        return repaired, rep

    def _check_trust(self, rep: Any) -> None:
        """Stop on a repair that is not trusted, unless low confidence is accepted."""
        s = self.sample
        if self.accept_low_confidence:
            self.notes.append(f"sample {s.name!r}: seam repair not trusted ({rep.doubt}), used as accepted")
            return
        found = (f"{len(rep.seam_rows)} seam rows and {len(rep.seam_cols)} seam columns, fields "
                 f"{rep.field_size[0]} x {rep.field_size[1]} px, confidence {rep.confidence:.2f}"
                 if rep.detected else "no seam layout")
        raise DataError(
            f"sample {s.name!r}: the seam repair of {s.labels} is not trusted: found {found}, but {rep.doubt}; "
            "if the map has no seams set repair_seams: false, otherwise rerun with --accept-low-confidence "
            f"and check the layout found in qa/{s.name}_seams.png"
        )

    def _register(
        self, sem: Any, sem_shape: tuple[int, int], ids: np.ndarray, labels: np.ndarray, rep: Any, bg: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``label_to_sem`` and the repaired map (fields moved where the SEM places them)."""
        s, cfg = self.sample, self.cfg
        if s.aligned or not cfg.register_:
            m = _aligned_matrix(s, sem_shape, labels.shape)
            self.record["registration"] = {
                "method": "aligned pair (identity)" if np.allclose(m, np.eye(3)) else "aligned pair (integer zoom)",
                "label_to_sem": m.tolist(),
                "score_before": None,
                "score_after": None,
                "identity": True,
            }
            return m, labels
        from mineralseg.prep.registration import register_labels_to_sem

        if rep is None:
            result = register_labels_to_sem(sem, labels, background_ids=bg, ignore_index=self.schema.ignore_index)
        else:
            from mineralseg.prep.seam_alignment import register_repaired

            rep, result, moves = register_repaired(sem, ids, rep, background_ids=bg,
                                                   ignore_index=self.schema.ignore_index, realign=cfg.realign_fields)
            labels = np.asarray(rep.repaired)
            summary = self.record["seam_repair"]
            summary["realign_fields"] = bool(cfg.realign_fields)
            summary["fields_moved_by_sem"] = moves
            summary["sem_trend"] = rep.scores.get("sem_trend", [])
        self.record["registration"] = result.to_dict()
        self._coarse_matrix = np.asarray(result.coarse_matrix, dtype=np.float64)
        return np.asarray(result.matrix, dtype=np.float64), labels

    # ------------------------------------------------------------------ outputs
    def _write_aligned(self, sdir: Path, image: np.ndarray, classes_w: np.ndarray) -> None:
        if image.size <= PNG_MAX_PIXELS:
            write_png(sdir / "sem_aligned.png", image, compress_level=1)
            self.record["sem_aligned"] = f"samples/{self.sample.name}/sem_aligned.png"
        else:
            write_tiff(sdir / "sem_aligned.tif", image)
            self.record["sem_aligned"] = f"samples/{self.sample.name}/sem_aligned.tif"
        write_png(sdir / "labels_aligned.png", classes_w, compress_level=1)
        self.record["labels_aligned"] = f"samples/{self.sample.name}/labels_aligned.png"

    def _write_tiles(self, image: np.ndarray, classes_w: np.ndarray, positions: list) -> list[dict[str, Any]]:
        name, cfg = self.sample.name, self.cfg
        out = []
        for tile in cut_tiles(
            image, classes_w, positions, tile_size=cfg.tile_size, out_size=cfg.out_size,
            n_classes=self.n_classes, ignore_index=self.schema.ignore_index,
        ):
            tid = f"{name}_r{tile.row:05d}_c{tile.col:05d}"
            img_rel, msk_rel = f"tiles/{name}/{tid}_sem.png", f"tiles/{name}/{tid}_mask.png"
            write_png(self.root / img_rel, tile.image, compress_level=1)
            write_png(self.root / msk_rel, tile.mask, compress_level=1)
            out.append({
                "id": tid, "sample": name, "row": tile.row, "col": tile.col, "split": None,
                "image": img_rel, "mask": msk_rel, "class_counts": tile.class_counts,
                "ignored": tile.ignored, "sample_fraction": round(tile.sample_fraction, 4),
            })
        return out

    def _qa_before(self, sem: Any, sem_shape: tuple[int, int], labels: np.ndarray, qa_dir: Path) -> None:
        """Label edges over the SEM for the naive (stretched) and the outline placements."""
        placements = [("naive placement (labels stretched over the SEM)", stretch_matrix(sem_shape, labels.shape))]
        coarse = getattr(self, "_coarse_matrix", None)
        if coarse is not None:
            placements.append(("outline (coarse) placement", coarse))
        sem_small, small_to_sem = _sem_overview(sem, sem_shape, 2 * QA_OVERVIEW_SIDE)
        display_side = min(QA_OVERVIEW_SIDE, max(sem_small.shape))
        sem_to_small = np.linalg.inv(small_to_sem)
        for i, (what, mat) in enumerate(placements):
            small, f = _overview(sem_small, sem_to_small @ mat, labels.shape, display_side)
            ids_small = _labels_overview(labels, f, small.shape)
            suffix = "before" if i == 0 else "coarse"
            qa.plot_label_edges(small, ids_small, qa_dir / f"{self.sample.name}_registration_{suffix}.png",
                                title=f"{self.sample.name}: {what}")

    def _qa_after(self, image: np.ndarray, classes_w: np.ndarray, qa_dir: Path) -> None:
        h, w = image.shape
        crop = None
        if max(h, w) > 2 * QA_ZOOM_SIDE:  # zoom only when the overview is shrunk for display
            z = min(QA_ZOOM_SIDE, h, w)
            r0, c0 = (h - z) // 2, (w - z) // 2
            crop = (r0, r0 + z, c0, c0 + z)
        reg = self.record["registration"]
        score = reg.get("score_after")
        note = f" (NMI {reg.get('score_before'):.3f} -> {score:.3f})" if score is not None else " (aligned pair)"
        qa.plot_label_edges(image, classes_w, qa_dir / f"{self.sample.name}_registration_after.png",
                            title=f"{self.sample.name}: after registration, working grid{note}",
                            crop=crop)


# --------------------------------------------------------------------------- dataset
def _assign_splits(cfg: PrepareConfig, tiles_by_sample: dict[str, list[dict]], notes: list[str],
                   root: Path | None = None) -> list[str]:
    """Set each tile's split; return the ids of the tiles a guard band dropped (their
    records leave ``tiles_by_sample`` and their files leave ``root``)."""
    split = cfg.split
    dropped: list[str] = []
    fractions = split.fractions.as_dict()
    if cfg.split_by == "sample":
        names = [s.name for s in cfg.samples]
        explicit = cfg.sample_splits() if split.has_lists else None
        by_sample = split_samples(names, fractions, seed=cfg.seed, explicit=explicit, notes=notes)
        for name, tiles in tiles_by_sample.items():
            for t in tiles:
                t["split"] = by_sample[name]
    else:
        for i, (name, tiles) in enumerate(tiles_by_sample.items()):
            labels = split_blocks(
                [(t["row"], t["col"]) for t in tiles], cfg.tile_size, split.block_tiles, fractions,
                seed=cfg.seed * 1000003 + i, name=name, notes=notes, guard=split.guard,
            )
            for t, lab in zip(tiles, labels):
                t["split"] = lab
            dropped += [t["id"] for t in tiles if t["split"] is None]
            for t in tiles:
                if t["split"] is None and root is not None:
                    for key in ("image", "mask"):
                        (root / t[key]).unlink(missing_ok=True)
            tiles[:] = [t for t in tiles if t["split"] is not None]
    used = {t["split"] for tiles in tiles_by_sample.values() for t in tiles}
    for s in SPLITS:
        if fractions.get(s, 0) > 0 and s not in used and not (cfg.split_by == "sample" and split.has_lists):
            notes.append(f"the {s} split has no tile")
    if cfg.split_by == "sample" and split.has_lists:
        for s in SPLITS:
            if getattr(split, s) and s not in used:
                notes.append(f"the {s} split has no tile")
    return dropped


def _group_splits(cfg: PrepareConfig, notes: list[str]) -> tuple[dict[str, str | None], int]:
    """``{sample: split}`` of a folder of tiles split by groups of neighbours (None: left out), and the group side."""
    names = [s.name for s in cfg.samples]
    side = cfg.split.group_tiles or group_side(names, cfg.folders.grid)
    labels = split_tile_groups(names, cfg.folders.grid, side, cfg.split.fractions.as_dict(), seed=cfg.seed, notes=notes,
                               guard=cfg.split.guard)
    return dict(zip(names, labels)), side


def _dataset_levels(cfg: PrepareConfig, samples: list[SampleConfig]) -> dict[str, Any]:
    """One percentile mapping over the SEM pixels of all samples (``normalise.scope: dataset``)."""
    with ExitStack() as stack:
        images = []
        for s in samples:
            try:
                img = open_image(s.sem, shape=s.sem_shape, dtype=s.sem_dtype, as_grey=True)
            except UserError as exc:
                raise _sample_error(s, exc, (s.sem,)) from None
            stack.callback(img.close)
            images.append(img)
        try:
            return pooled_levels(images, low=cfg.normalise.low, high=cfg.normalise.high)
        except ValueError as exc:
            raise DataError(f"normalise.scope: dataset: {exc}") from None


def _class_stats(tiles: list[dict], names: list[str]) -> dict[str, Any]:
    n = len(names)
    groups: dict[str, list[dict]] = {"all": tiles}
    for s in SPLITS:
        groups[s] = [t for t in tiles if t["split"] == s]
    out: dict[str, Any] = {"classes": names, "splits": {}}
    for key, ts in groups.items():
        counts = np.zeros(n, np.int64)
        ignored = 0
        for t in ts:
            counts += np.asarray(t["class_counts"], np.int64)
            ignored += t["ignored"]
        total = int(counts.sum())
        out["splits"][key] = {
            "tiles": len(ts),
            "pixels": total,
            "ignored": int(ignored),
            "counts": counts.tolist(),
            "frequencies": (counts / total).round(6).tolist() if total else [0.0] * n,
        }
    return out


def prepare(
    config_path: str | Path | PrepareConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    accept_low_confidence: bool = False,
) -> dict[str, Any]:
    """Build a training dataset from the SEM / label pairs of a prepare config.

    Parameters
    ----------
    config_path : path-like or PrepareConfig
        ``prepare.yaml`` (see :mod:`mineralseg.prep.config`), or a resolved config
        (e.g. :func:`mineralseg.prep.config.folder_config`, the folder shortcut).
    out : path-like
        Dataset folder to create (layout in docs/CONTRACTS.md).
    overwrite : bool
        Replace an existing folder (only once the new one is complete).
    progress : bool
        Show a progress bar (only on a terminal).
    accept_low_confidence : bool
        Use seam repairs that are not trusted (:attr:`MosaicRepair.trusted`) instead of
        stopping; each is reported in ``notes`` and its QA figure says so.

    Returns
    -------
    dict
        Summary: ``out``, ``tiles`` per split, ``class_frequencies`` (all tiles),
        per-sample records (shapes, registration scores, seam repair, timings),
        ``notes`` (warnings), ``seconds`` and ``text`` (a few human-readable lines).

    Raises
    ------
    UserError
        Existing ``out`` without ``overwrite``; invalid config (ConfigError); missing
        or unreadable files, size mismatch of raw files, a label map without sample,
        a seam repair that is not trusted (without ``accept_low_confidence``), outlines
        that cannot be matched, no tile kept (DataError, naming the sample and the
        file); an internal error in a step (UserError naming the sample and the step).
        Nothing is left under ``out`` (nor a temporary folder).
    """
    t_start = time.perf_counter()
    out = Path(out)
    if isinstance(config_path, PrepareConfig):
        cfg, config_path = config_path, None
    else:
        config_path = Path(config_path)
        cfg = load_prepare_config(config_path)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (use --overwrite to replace it)")
    _check_inputs(cfg)
    cfg, schema, classes_summary = _resolve_classes(cfg)
    level = cfg.classes
    names = schema.level_names(level)
    notes: list[str] = []
    split_of, group_tiles = _group_splits(cfg, notes) if cfg.split_by == "groups" else ({}, None)
    samples = list(cfg.samples)  # every pair is read and checked, also those the guard band leaves out
    levels = _dataset_levels(cfg, samples) if cfg.normalise.scope == "dataset" else None
    records: list[dict[str, Any]] = []
    tiles_by_sample: dict[str, list[dict]] = {}

    with atomic_dir(out, overwrite=overwrite) as root:
        bar = tqdm(samples, desc="prepare", unit="sample", disable=None if progress else True, file=sys.stderr)
        for sample in bar:
            run = _SampleRun(cfg, schema, sample, root, levels, accept_low_confidence=accept_low_confidence)
            try:
                tiles_by_sample[sample.name] = run.run(bar)
            except UserError as exc:
                raise _sample_error(sample, exc, run.files) from None
            except Exception as exc:  # a bug, not a user mistake: still one line, naming where
                log.debug("sample %s, step %s", sample.name, run.step, exc_info=True)
                raise UserError(
                    f"sample {sample.name!r}: step {run.step} failed with an internal error "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())}); please report it with the input files"
                ) from None
            records.append(run.record)
            notes.extend(run.notes)
            log.info("sample %s: %d tiles", sample.name, len(tiles_by_sample[sample.name]))
        bar.close()

        guarded = [name for name, split in split_of.items() if split is None]  # images next to test images
        if split_of:
            for name, tiles_of in tiles_by_sample.items():
                for t in tiles_of:
                    t["split"] = split_of[name]
                    if t["split"] is None:
                        for key in ("image", "mask"):
                            (root / t[key]).unlink(missing_ok=True)
                tiles_of[:] = [t for t in tiles_of if t["split"] is not None]
        else:
            guarded = _assign_splits(cfg, tiles_by_sample, notes, root)
        for msg in notes:
            log.warning(msg)
        tiles = [t for ts in tiles_by_sample.values() for t in ts]
        stats = _class_stats(tiles, names)
        colors = [list(c) for c in schema.level_colors(level).tolist()]
        norm_by_sample = {r["name"]: r["normalisation"] for r in records}
        manifest = {
            "version": MANIFEST_VERSION,
            "schema": {**schema.classes_dict(level), "level": level, "palette": schema.name},
            "tile_size": cfg.tile_size,
            "out_size": cfg.out_size,
            "sem_scale": cfg.sem_scale,
            "normalisation": {
                "method": cfg.normalise.method,
                "low": cfg.normalise.low,
                "high": cfg.normalise.high,
                "drift": cfg.normalise.drift,
                "scope": cfg.normalise.scope,
                "scale": list(cfg.normalise.scale) if cfg.normalise.scale is not None else None,
                "dataset": {k: v for k, v in levels.items() if k != "images"} if levels else None,
                "per_sample": norm_by_sample,
            },
            "outline": cfg.outline,
            "split": {"by": cfg.split_by, "seed": cfg.seed, "fractions": cfg.split.fractions.as_dict(),
                      "block_tiles": cfg.split.block_tiles, "group_tiles": group_tiles,
                      **({"guard": cfg.split.guard, "guard_dropped": guarded}
                         if cfg.split_by in ("blocks", "groups") else {})},
            "samples": [r["name"] for r in records],
            "tiles": tiles,
        }
        write_json(root / "manifest.json", manifest)
        write_json(root / "class_stats.json", stats)
        write_json(root / "registration.json", {
            "convention": GEOMETRY_CONVENTION,
            "sem_scale": cfg.sem_scale,
            "samples": {
                r["name"]: {
                    **{k: r[k] for k in ("sem", "labels", "sem_shape", "sem_dtype", "label_shape") if k in r},
                    "working_shape": list(working_shape(
                        (r["seam_repair"].get("repaired_shape") or r["label_shape"]), cfg.sem_scale)),
                    "registration": r["registration"],
                    "seam_repair": r["seam_repair"],
                } for r in records
            },
        })
        freqs = {k: stats["splits"][k]["frequencies"] for k in ("all", *SPLITS) if stats["splits"][k]["tiles"]}
        qa.plot_class_frequencies(freqs, names, colors, root / "qa" / "class_frequencies.png",
                                  title=f"Class frequencies in the tiles ({len(tiles)} tiles)")
        seconds = round(time.perf_counter() - t_start, 2)
        inputs = [_file_record(Path(p)) for s in cfg.samples for p in (s.sem, s.labels) if Path(p).is_file()]
        write_json(root / "run.json", {
            "command": "prepare",
            "config_path": str(config_path.resolve()) if config_path is not None else None,
            "config": cfg.model_dump(mode="json", by_alias=True),
            "config_yaml": yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False),
            "seed": cfg.seed,
            "versions": package_versions(),
            "platform": platform.platform(),
            "inputs": inputs,
            "samples": records,
            "notes": notes,
            "seconds": seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })

    per_split = Counter(t["split"] for t in tiles)
    summary = {
        "out": str(out),
        "tiles": {s: per_split.get(s, 0) for s in SPLITS},
        "guard_dropped": len(guarded),
        "class_names": names,
        "class_frequencies": stats["splits"]["all"]["frequencies"],
        "samples": records,
        "notes": notes,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    lines = ([classes_summary] if classes_summary else []) + [
        f"dataset: {out}",
        f"tiles: {len(tiles)} (" + ", ".join(f"{s} {per_split.get(s, 0)}" for s in SPLITS) + ")"
        + (f"; {len(guarded)} dropped next to test tiles (guard band)" if guarded else ""),
        "classes: " + ", ".join(f"{n} {100 * f:.1f}%" for n, f in zip(names, summary["class_frequencies"])),
    ]
    outlines = ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["outline"]["used"] for r in records).items()))
    if cfg.folders is not None:  # aligned tiles: one line for all
        lines.append(f"pairs: {len(records)} from {cfg.folders.images} and {cfg.folders.masks} "
                     f"(split by {cfg.split_by}; outline: {outlines})")
    else:
        for r in records[:_LISTED_SAMPLES]:
            reg = r["registration"]
            score = "aligned" if reg.get("score_after") is None else f"NMI {reg['score_before']:.3f} -> {reg['score_after']:.3f}"
            seams = "seams repaired" if r["seam_repair"].get("applied") else "no seam repair"
            moved = len(r["seam_repair"].get("fields_moved_by_sem") or [])
            if moved:
                seams += f" ({moved} field{'s' if moved > 1 else ''} moved where the SEM has them)"
            lines.append(f"  {r['name']}: {r['tiles']} tiles, {score}, {seams}, outline {r['outline']['used']}")
        if len(records) > _LISTED_SAMPLES:
            lines.append(f"  ... and {len(records) - _LISTED_SAMPLES} more samples (outline: {outlines})")
    lines += [f"warning: {n}" for n in notes]
    lines.append(f"time: {summary['seconds']:.1f} s")
    summary["text"] = "\n".join(lines)
    return summary
