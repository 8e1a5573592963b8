"""Mineral map -> SEM-like image with a pix2pix generator: ``mineralseg synthesize``.

The reverse of ``predict``: a generator trained in mode ``synthesize`` (card
``gan_mode: "synthesize"``) turns a class map into the normalised 8-bit SEM image that
``prepare`` stores in tiles. The data flow, with memory bounded by one band of windows:

1. **read** the map: ``labels.tif`` of ``mineralseg predict`` (its class table must
   name the generator's classes), a class-id PNG/TIFF (ids ``0..C-1``, 255 outside the
   section) or an RGB colour map in the card's class colours (:func:`read_class_map`);
2. **working grid**: the map is upsampled by nearest neighbour by ``scale`` working px
   per map px (the card's ``sem_scale`` for a label-resolution map; for a ``labels.tif``,
   which is already on a working grid, the ratio of the two grids' SEM pixels, or 1),
   window by window, never whole;
3. **generate** with overlapping windows of the training tile side, each resized to the
   network input (as training tiles were), one-hot encoded and blended back as an
   average of the generator's continuous output (:func:`synthesize_bands`, through
   :func:`mineralseg.infer.sliding.blend_bands`);
4. **write as it goes**: per band, grey levels into ``sem.tif`` and the class ids on the
   working grid into ``labels.tif``; then ``preview.png``, ``run.json`` and the list of
   pairs ``OUT/pairs.json`` that ``synthetic_pairs:`` of a training config reads.

Every output folder is built under a temporary name and renamed at the end: a failure
leaves no folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mineralseg.data.synthetic_pairs import PAIRS_NAME
from mineralseg.errors import DataError, UserError
from mineralseg.io.labels import OUTSIDE, labels_colormap, labels_description, read_labels_table
from mineralseg.model_card import ModelCard
from mineralseg.models.pix2pix import one_hot_labels, tanh_to_grey
from mineralseg.resize import resize_mask

__all__ = [
    "PAIRS_NAME",
    "ClassMap",
    "SynthesizeResult",
    "SynthesizeSettings",
    "grey_from_output",
    "load_generator",
    "read_class_map",
    "synthesize",
    "synthesize_bands",
    "synthesize_map",
    "synthesize_window",
    "working_shape",
]

#: Version of the pairs.json layout.
PAIRS_VERSION = 1
#: Card value of a map -> SEM generator.
SYNTHESIZE_MODE = "synthesize"
#: Unknown colours (or ids) named in an error message, the most frequent first.
MAX_REPORTED = 5
#: Pixels counted at a time when checking class ids (8 MB of int64 temporaries).
_COUNT_CHUNK = 1 << 20


# --------------------------------------------------------------------------- the generator
def load_generator(checkpoint: str | os.PathLike, device: str | torch.device = "cpu", *,
                   trust: bool = False) -> tuple[Any, ModelCard]:
    """The map -> SEM generator of a checkpoint (eval mode, on ``device``) and its card.

    The one place ``synthesize`` opens a checkpoint: through
    :func:`mineralseg.evaluate.checkpoint.load_checkpoint_model` with
    ``purpose="synthesize"``.

    Raises
    ------
    UserError
        Missing or unreadable checkpoint, or one that is not a generator trained in mode
        ``synthesize`` (a CNN, or a pix2pix in mode ``segment``).
    """
    from mineralseg.evaluate import checkpoint as ckpt

    # the loader refuses every checkpoint but a map -> SEM generator (evaluate.checkpoint.check_purpose)
    return ckpt.load_checkpoint_model(checkpoint, map_location=device, trust=trust, purpose=SYNTHESIZE_MODE)


def grey_from_output(t: np.ndarray) -> np.ndarray:
    """uint8 grey levels of a generator output ``t`` in [-1, 1] (any shape), by the
    contract's rule (:func:`mineralseg.models.pix2pix.tanh_to_grey`)."""
    return tanh_to_grey(torch.from_numpy(np.asarray(t, np.float32))).numpy()


def working_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) of a map of ``shape`` upsampled by ``scale`` working px per map px."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _map_index(positions: np.ndarray, scale: float, length: int) -> np.ndarray:
    """Map pixel of each working-grid position (centre-aligned nearest neighbour)."""
    return np.minimum(np.floor((positions + 0.5) / scale).astype(np.int64), length - 1)


def _reflect(positions: np.ndarray, length: int) -> np.ndarray:
    """Positions past ``length - 1`` mirrored back into the grid (as ``np.pad(mode="reflect")``)."""
    if length == 1:
        return np.zeros_like(positions)
    return np.abs(np.where(positions >= length, 2 * (length - 1) - positions, positions))


def _window_geometry(card: ModelCard, generator: Any) -> tuple[int, int, int]:
    """Window side and overlap (working px) and network input side.

    Windows are the training tile side: a pix2pix generator normalises over each window
    (instance norm), so windows the size of its training tiles keep the statistics it
    was trained with; neighbours overlap by a quarter of a tile."""
    window = int(card.tile_size)
    multiple = int(getattr(generator, "input_divisor", 1) or 1)
    in_side = int(math.ceil(card.input_size / multiple) * multiple)
    return window, window // 4, in_side


@torch.inference_mode()
def synthesize_window(generator: Any, ids: np.ndarray, num_classes: int, side: int,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Generator output of a batch of class-id windows, at window resolution.

    Parameters
    ----------
    generator : callable
        (N, C, S, S) float32 one-hot -> (N, 1, S, S) in [-1, 1].
    ids : (N, S, S) uint8 ndarray
        Class ids at the network input side ``S`` (255: outside, all-zero input).
    num_classes : int
    side : int
        Window side on the working grid; the output is resized to it (bilinear).
    device : str or torch.device

    Returns
    -------
    (N, 1, side, side) float32 ndarray
    """
    x = one_hot_labels(torch.from_numpy(np.ascontiguousarray(ids)).to(device), num_classes)
    t = generator(x).float()
    if t.ndim != 4 or t.shape[1] != 1:
        raise DataError(f"the generator returned shape {tuple(t.shape)}; a map -> SEM generator gives (N, 1, H, W)")
    if t.shape[-1] != side:
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    return t.cpu().numpy()


def synthesize_bands(
    generator: Any,
    labels: np.ndarray,
    card: ModelCard,
    *,
    scale: float | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """A generated SEM-like image of a class map, band by band on the working grid.

    Parameters
    ----------
    generator : callable
        See :func:`synthesize_window` (eval mode, on ``device``).
    labels : (H, W) uint8 array-like
        Class ids ``0 .. C-1`` (C = ``card.num_classes``), 255 outside the section, at
        the map's resolution; anything that slices like numpy.
    card : ModelCard
        The generator's card: ``tile_size`` (window side on the working grid),
        ``input_size`` (network input side), ``sem_scale``.
    scale : float, optional
        Working-grid px per map px (default ``card.sem_scale``).
    batch_size : int
        Windows per forward pass.
    device : str or torch.device
    progress : bool
        A bar over the windows (stderr).

    Yields
    ------
    (start, stop, grey, ids)
        Working-grid rows ``start .. stop``: ``grey`` (stop - start, W') uint8 generated
        grey levels (0 outside the section), ``ids`` the class ids upsampled to the
        working grid (same shape, uint8). Every row comes once, top to bottom.

    Notes
    -----
    Memory: the map itself, one band of ``window x W'`` float32 and one batch of one-hot
    windows (``batch_size x C x input_size^2`` float32); never the one-hot of the map.
    """
    from mineralseg.infer.sliding import blend_bands

    labels_h, labels_w = (int(n) for n in labels.shape)
    s = float(card.sem_scale if scale is None else scale)
    if not (math.isfinite(s) and s > 0):
        raise UserError(f"sem-scale must be a positive number, got {s}")
    hw, ww = working_shape((labels_h, labels_w), s)
    window, overlap, in_side = _window_geometry(card, generator)
    c = card.num_classes
    cols_all = _map_index(np.arange(ww), s, labels_w)

    def forward(chunk: list[tuple[int, int]]) -> np.ndarray:
        wins = []
        for r, col in chunk:
            rows = _map_index(_reflect(np.arange(r, r + window), hw), s, labels_h)
            cols = _map_index(_reflect(np.arange(col, col + window), ww), s, labels_w)
            r0, r1 = int(rows.min()), int(rows.max()) + 1
            block = np.asarray(labels[r0:r1])  # the map rows this window needs, read once
            win = block[rows - r0][:, cols]
            if in_side != window:
                win = resize_mask(win, in_side)  # as training tiles' masks
            wins.append(win)
        return synthesize_window(generator, np.stack(wins), c, window, device)

    for start, stop, band in blend_bands(forward, (hw, ww), window=window, overlap=overlap,
                                         batch_size=batch_size, progress=progress, desc="synthesize"):  # fmt: skip
        rows = _map_index(np.arange(start, stop), s, labels_h)
        ids = np.asarray(labels[int(rows[0]) : int(rows[-1]) + 1])[rows - rows[0]][:, cols_all].astype(np.uint8)
        grey = np.zeros((stop - start, ww), np.uint8) if band is None else grey_from_output(band[0])
        grey[ids >= c] = 0
        yield start, stop, grey, ids


def synthesize_map(
    generator: Any,
    labels: np.ndarray,
    card: ModelCard,
    *,
    scale: float | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """(H * s, W * s) uint8 SEM-like image of an (H, W) class map (``s``: ``scale``, default
    ``card.sem_scale``; sides rounded), computed band by band as in :func:`synthesize_bands`
    (same arguments); 0 outside the section. For maps whose working grid is too large for
    memory, write the bands of :func:`synthesize_bands` instead (as :func:`synthesize` does).
    """
    out: np.ndarray | None = None
    for start, stop, grey, _ in synthesize_bands(generator, labels, card, scale=scale, batch_size=batch_size,
                                                 device=device, progress=progress):  # fmt: skip
        if out is None:
            out = np.zeros(working_shape(tuple(labels.shape), float(card.sem_scale if scale is None else scale)),
                           np.uint8)
        out[start:stop] = grey
    assert out is not None
    return out


# --------------------------------------------------------------------------- reading maps
@dataclass(frozen=True)
class ClassMap:
    """A class map checked against a generator's classes.

    Attributes
    ----------
    ids : (H, W) uint8 ndarray
        Class ids ``0 .. C-1``, 255 outside the section.
    kind : str
        ``"labels.tif"`` (written by predict), ``"class ids"`` or ``"colours"``.
    default_scale : float
        Working px per map px when not given: for a ``labels.tif`` the ratio of its SEM
        px per pixel to the card's SEM px per working px when both are known, else 1
        (it is on a working grid); the card's ``sem_scale`` for a map at label resolution.
    scale_source : str
        Where ``default_scale`` comes from (for the run record).
    """

    ids: np.ndarray = field(repr=False)
    kind: str
    default_scale: float
    scale_source: str


def _known_classes(card: ModelCard) -> str:
    return ", ".join(f"{i} {n}" for i, n in enumerate(card.class_names)) + f" (and {OUTSIDE} outside the section)"


def _check_ids(ids: np.ndarray, card: ModelCard, path: Path) -> None:
    counts = np.zeros(256, np.int64)
    flat = ids.reshape(-1)
    for start in range(0, flat.size, _COUNT_CHUNK):  # bincount makes int64 copies: a chunk at a time
        counts += np.bincount(flat[start : start + _COUNT_CHUNK], minlength=256)
    bad = [v for v in np.flatnonzero(counts) if v >= card.num_classes and v != OUTSIDE]
    if bad:
        bad.sort(key=lambda v: -counts[v])
        shown = ", ".join(f"{v} x{counts[v]}" for v in bad[:MAX_REPORTED])
        more = f" and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise DataError(f"{path}: class ids {shown}{more} are not classes of the generator, which knows "
                        f"{_known_classes(card)}; recode the map to these ids")


def _colours_to_ids(rgb: np.ndarray, card: ModelCard, path: Path) -> np.ndarray:
    """Class ids of an RGB map in the card's class colours; the colour ``predict`` gives
    the outside of the section (its ``map.png``) reads as outside."""
    from mineralseg.classes import inline_schema
    from mineralseg.infer.predict import _colour_lut

    outside = tuple(int(v) for v in _colour_lut(card)[OUTSIDE])
    entries = [{"name": n, "color": list(c)} for n, c in zip(card.class_names, card.class_colors)]
    schema = inline_schema(entries + [{"name": "(outside the section)", "color": list(outside)}],
                           name="generator classes", source=str(path))  # fmt: skip
    rgb = np.ascontiguousarray(rgb[..., :3])
    unknown = schema.unknown_colors(rgb, level="groups")
    if unknown:
        shown = ", ".join(f"({r}, {g}, {b}) x{n}" for (r, g, b), n in list(unknown.items())[:MAX_REPORTED])
        more = f" and {len(unknown) - MAX_REPORTED} more" if len(unknown) > MAX_REPORTED else ""
        classes = ", ".join(f"{n} {tuple(c)}" for n, c in zip(card.class_names, card.class_colors))
        raise DataError(f"{path}: {sum(unknown.values())} pixels have colours that are not the generator's class "
                        f"colours: {shown}{more}; the classes are {classes} (outside the section {outside}); "
                        "recolour the map or give a class-id image")
    ids = schema.colors_to_ids(rgb, level="groups", source=str(path))
    ids[ids == card.num_classes] = OUTSIDE
    return ids


def read_class_map(path: str | os.PathLike, card: ModelCard) -> ClassMap:
    """Read a class map for a generator and check it against the generator's classes.

    Parameters
    ----------
    path : path-like
        ``labels.tif`` of ``mineralseg predict``; a single-channel class-id PNG/TIFF
        (ids ``0 .. C-1``, 255 outside); or an RGB(A) colour map in the card's
        ``class_colors`` (the outside colour of predict's ``map.png`` reads as outside).
    card : ModelCard
        The generator's card.

    Returns
    -------
    ClassMap

    Raises
    ------
    UserError
        Missing or unreadable file; a ``labels.tif`` whose class names differ from the
        card's (both lists named); ids that are not classes (up to 5 named with their
        pixel counts, and the known classes); colours that are not class colours (up to
        5 with pixel counts).
    """
    from mineralseg.io import read_image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"label map not found: {path}")
    table = None
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            table = read_labels_table(path)
        except DataError:
            table = None
    if table is not None:
        names = [str(n) for n in table["class_names"]]
        if names != list(card.class_names):
            raise DataError(f"{path}: its classes {names} are not the generator's {list(card.class_names)}; "
                            "give a map of the generator's classes (or a generator trained on these)")
    data = read_image(path, palette_indices=True)
    if data.ndim == 3 and data.shape[2] in (3, 4):
        if data.dtype != np.uint8:
            raise DataError(f"{path}: a colour map must be 8-bit RGB, got {data.dtype}")
        return ClassMap(_colours_to_ids(data, card, path), "colours", float(card.sem_scale),
                        "the generator's sem_scale (a map at label resolution)")
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise DataError(f"{path}: expected an (H, W) class-id map or an RGB colour map, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
        raise DataError(f"{path}: class ids must be integers 0..255, got {data.dtype} values "
                        f"{data.min()}..{data.max()}")
    ids = data.astype(np.uint8, copy=False)
    _check_ids(ids, card, path)
    if table is not None:
        px = table.get("image_px_per_pixel")
        if isinstance(px, (int, float)) and px > 0 and card.sem_px_per_working_px:
            return ClassMap(ids, "labels.tif", float(px) / card.sem_px_per_working_px,
                            f"the labels.tif ({px:g} SEM px per pixel) and the generator's working grid "
                            f"({card.sem_px_per_working_px:g} SEM px per working px)")  # fmt: skip
        return ClassMap(ids, "labels.tif", 1.0, "1 (a labels.tif of predict is on a working grid)")
    return ClassMap(ids, "class ids", float(card.sem_scale), "the generator's sem_scale (a map at label resolution)")


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SynthesizeSettings:
    """How ``synthesize`` generates (recorded in each output's ``run.json``).

    Attributes
    ----------
    sem_scale : float, optional
        Working-grid px per map px. Default: for a ``labels.tif`` of predict, its SEM px
        per pixel over the generator's SEM px per working px (1 when either is unknown:
        it is on a working grid); the generator's ``sem_scale`` for other maps.
    batch_size : int
        Windows per forward pass.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1`` (default: CUDA when available).
    seed : int
        Seed of torch's generator (a generator that keeps dropout on draws from it).
    """

    sem_scale: float | None = None
    batch_size: int = 8
    device: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sem_scale is not None and not (math.isfinite(self.sem_scale) and self.sem_scale > 0):
            raise UserError(f"sem-scale must be a positive number, got {self.sem_scale}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass
class SynthesizeResult:
    """What :func:`synthesize_one` wrote."""

    out: Path
    labels: Path
    map_shape: tuple[int, int]
    working_shape: tuple[int, int]
    scale: float
    seconds: float
    files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- one map
def synthesize_one(
    generator: Any,
    card: ModelCard,
    class_map: ClassMap,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: SynthesizeSettings = SynthesizeSettings(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> SynthesizeResult:
    """Generate the SEM-like image of one class map and write its folder.

    ``out_dir`` gets ``sem.tif`` (tiled, zlib, uint8), ``labels.tif`` (class ids on the
    working grid, palette TIFF with the class table, as predict writes it),
    ``preview.png`` (map | generated SEM, at most 2048 px tall) and ``run.json``.

    Raises
    ------
    UserError
        Existing output (unless ``overwrite``), a full disk; nothing is left under
        ``out_dir`` then (nor after Ctrl-C).
    """
    from contextlib import ExitStack

    from mineralseg.infer.predict import PREVIEW_SIDE, _colour_lut, _device, _no_space
    from mineralseg.io import TiffBlockWriter, write_png
    from mineralseg.io.atomic import atomic_dir, write_json

    started = time.perf_counter()
    out_dir, source = Path(out_dir), Path(source)
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists (use --overwrite to replace it)")
    dev = _device(settings.device)
    scale = class_map.default_scale if settings.sem_scale is None else float(settings.sem_scale)
    scale_source = class_map.scale_source if settings.sem_scale is None else "--sem-scale"
    hw, ww = working_shape(class_map.ids.shape, scale)
    step = max(1, math.ceil(max(hw, ww) / PREVIEW_SIDE))
    disp_shape = (-(-hw // step), -(-ww // step))
    grey_disp, ids_disp = np.zeros(disp_shape, np.uint8), np.zeros(disp_shape, np.uint8)
    lut = _colour_lut(card)
    torch.manual_seed(settings.seed)
    from mineralseg.console import show_progress

    bar = tqdm(total=hw, desc="synthesize", unit="row", disable=not (progress and show_progress(sys.stderr)),
               file=sys.stderr)  # fmt: skip
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp, ExitStack() as stack:
            sem_out = stack.enter_context(TiffBlockWriter(tmp / "sem.tif", (hw, ww), np.uint8, compression="zlib"))
            labels_out = stack.enter_context(TiffBlockWriter(
                tmp / "labels.tif", (hw, ww), np.uint8, compression="zlib", colormap=labels_colormap(lut),
                description=labels_description(card.class_names, card.class_colors,
                                               image_px_per_pixel=card.sem_px_per_working_px,
                                               pixel_size_um=card.working_pixel_size_um)))  # fmt: skip
            for start, stop, grey, ids in synthesize_bands(generator, class_map.ids, card, scale=scale,
                                                           batch_size=settings.batch_size, device=dev):  # fmt: skip
                sem_out.write(grey)
                labels_out.write(ids)
                first = -(-start // step) * step
                rows = slice(first - start, stop - start, step)
                dr = slice(first // step, first // step + len(range(first, stop, step)))
                grey_disp[dr], ids_disp[dr] = grey[rows, ::step], ids[rows, ::step]
                bar.update(stop - start)
            stack.close()  # both TIFFs complete before the pictures and the record
            gap = np.full((disp_shape[0], max(2, disp_shape[1] // 100), 3), 255, np.uint8)
            write_png(tmp / "preview.png", np.concatenate([lut[ids_disp], gap, np.repeat(grey_disp[..., None], 3, 2)],
                                                          axis=1))  # fmt: skip
            files = ["sem.tif", "labels.tif", "preview.png", "run.json"]
            result = SynthesizeResult(out=out_dir, labels=source, map_shape=tuple(class_map.ids.shape),
                                      working_shape=(hw, ww), scale=scale, seconds=time.perf_counter() - started,
                                      files=files)  # fmt: skip
            write_json(tmp / "run.json", _run_record(result, class_map, card, settings, scale_source, command))
    except OSError as exc:
        raise _no_space(exc, out_dir) from None
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _sha256(path: Path) -> str:
    from mineralseg.data.manifest import manifest_sha256

    return manifest_sha256(path)


def _run_record(result: SynthesizeResult, class_map: ClassMap, card: ModelCard, settings: SynthesizeSettings,
                scale_source: str, command: str | None) -> dict[str, Any]:
    from mineralseg.versions import package_versions

    return {
        "command": command,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "seed": settings.seed,
        "input": {"path": str(result.labels.resolve()), "sha256": _sha256(result.labels), "kind": class_map.kind,
                  "shape": list(result.map_shape), "bytes": result.labels.stat().st_size},
        "checkpoint": card.checkpoint,
        "generator": {"model": card.model_name, "gan_mode": card.gan_mode, "epoch": card.epoch,
                      "global_step": card.global_step, "class_names": list(card.class_names)},
        "working_grid": {"shape": list(result.working_shape), "working_px_per_map_px": result.scale,
                         "from": scale_source, "tile_size": card.tile_size, "input_size": card.input_size},
        "seconds": round(result.seconds, 3),
        "versions": package_versions(),
        "platform": platform.platform(),
        "files": result.files,
    }


# --------------------------------------------------------------------------- several maps
def _pairs_header(card: ModelCard) -> dict[str, Any]:
    return {
        "version": PAIRS_VERSION,
        "class_names": list(card.class_names),
        "class_colors": [list(c) for c in card.class_colors],
        "outside": OUTSIDE,
        "working_grid": {"sem_scale": card.sem_scale, "tile_size": card.tile_size, "input_size": card.input_size,
                         "sem_px_per_working_px": card.sem_px_per_working_px},
        "checkpoint": card.checkpoint,
    }


def _existing_pairs(out: Path, card: ModelCard) -> dict[str, dict[str, Any]]:
    """Pairs already listed in ``OUT/pairs.json`` (their folders still there), by name.

    Raises
    ------
    UserError
        The file lists pairs of other classes or another working grid.
    """
    path = out / PAIRS_NAME
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
        names, grid, pairs = old["class_names"], old["working_grid"], old["pairs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a pairs list written by `mineralseg synthesize` ({exc}); "
                        "choose another --out") from None
    header = _pairs_header(card)
    if names != header["class_names"] or grid.get("sem_scale") != card.sem_scale or \
            grid.get("tile_size") != card.tile_size:
        raise DataError(f"{path} lists pairs of classes {names} on grid {grid}; this generator makes "
                        f"{header['class_names']} on {header['working_grid']}: choose another --out")
    return {p["name"]: p for p in pairs if (out / p["name"]).is_dir()}


def _pair_entry(result: SynthesizeResult, out: Path) -> dict[str, Any]:
    rel = result.out.relative_to(out)
    return {"name": rel.as_posix(), "sem": (rel / "sem.tif").as_posix(), "labels": (rel / "labels.tif").as_posix(),
            "shape": list(result.working_shape), "source": str(result.labels.resolve()),
            "working_px_per_map_px": result.scale}


def synthesize(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    settings: SynthesizeSettings = SynthesizeSettings(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    trust_checkpoint: bool = False,
) -> list[SynthesizeResult]:
    """Generate an SEM-like image for each class map; one folder per map, ``OUT/<map name>/``,
    and ``OUT/pairs.json`` listing every pair in ``OUT`` (see the module docstring).

    Every map is read and checked against the generator's classes before any output is
    written, so a bad input leaves nothing behind; ``pairs.json`` is rewritten after each
    finished folder and keeps the pairs of earlier runs into the same ``OUT``.

    Raises
    ------
    UserError
        No map, two maps with the same name, an existing folder (unless ``overwrite``),
        a checkpoint that is not a map -> SEM generator, any error of
        :func:`read_class_map`, a ``pairs.json`` of other classes in ``OUT``.
    """
    from mineralseg.infer.predict import _device, output_folders
    from mineralseg.io.atomic import write_json

    out = Path(out)
    folders = output_folders(out, inputs, overwrite=overwrite, what="label map",
                             none_given="give at least one LABELS map to synthesize from", files_only=True)
    generator, card = load_generator(checkpoint, _device(settings.device), trust=trust_checkpoint)
    pairs = _existing_pairs(out, card)
    maps = [read_class_map(p, card) for p in inputs]
    results = []
    for path, folder, class_map in zip(inputs, folders, maps):
        result = synthesize_one(generator, card, class_map, path, folder, settings, overwrite=overwrite,
                                progress=progress, command=command)  # fmt: skip
        results.append(result)
        pairs[folder.name] = _pair_entry(result, out)
        write_json(out / PAIRS_NAME, {**_pairs_header(card), "pairs": [pairs[k] for k in sorted(pairs)]})
    return results
