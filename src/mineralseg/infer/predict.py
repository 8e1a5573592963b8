"""Map a whole SEM image with a trained model: ``mineralseg predict``.

The data flow, with memory bounded by a preview and one band of windows (never the whole
image):

1. **read** the image lazily (raw, TIFF/BigTIFF, zarr, PNG/JPEG; 8/16-bit or float);
2. **preview**: one strip-wise pass downscales it to at most :data:`PREVIEW_SIDE` px a
   side; the section outline (:func:`section_mask`) and the grey-level statistics
   (:func:`mineralseg.prep.intensity.normalise_sem`) come from it;
3. **working grid**: a second pass downscales the image by ``sem_px`` (image pixels per
   working-grid pixel, from the model card or the options) and normalises every strip
   with the preview's statistics (:func:`mineralseg.prep.intensity.normalise_strip`) into
   uint8, kept in memory when small, else in a zarr array inside the output's temporary
   folder;
4. **predict** with overlapping blended windows, band by band (:func:`predict_bands`, the
   one way to predict an image, also used by ``evaluate --context sample``);
5. **write as it goes**: per band, class ids into ``labels.tif`` and the uncertainty into
   ``uncertainty.tif`` (tiled TIFFs written strip by strip), pixel counts per class,
   and a nearest-neighbour preview for the pictures; then the mineralogy tables, the
   card, the run record and the report.

Everything is written under a temporary folder renamed at the end, so an interrupted
or failed run leaves no output that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import errno
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mineralseg.errors import DataError, UserError
from mineralseg.io.labels import OUTSIDE, labels_colormap, labels_description
from mineralseg.model_card import ModelCard

__all__ = [
    "OUTLINES",
    "PREVIEW_SIDE",
    "PredictResult",
    "PredictSettings",
    "predict",
    "predict_bands",
    "predict_image",
    "predict_working_image",
    "sample_overlap",
    "sample_window",
    "section_mask",
    "working_scale",
]

#: Longest side of the preview used for the outline, the grey-level statistics and the
#: pictures: 2048 px gives percentiles exact to a grey level and an outline within
#: 0.05 % of the image side, in 16 MB of float32.
PREVIEW_SIDE = 2048
#: Working images up to this many pixels stay in memory (uint8); larger ones go to a
#: zarr array on disk (chunks of ZARR_CHUNK px).
IN_MEMORY_MAX_PIXELS = 64 * 1024 * 1024
ZARR_CHUNK = 1024
#: A pixel is "uncertain" when the blended probability of its class is below this.
UNCERTAIN_PROBABILITY = 0.5
#: Ratios of image pixels to working pixels this close to 1 are taken as 1 (no resampling).
SCALE_TOLERANCE = 0.02
#: Outline modes: auto (a section in a mount gets its outline, an image that is rock
#: from edge to edge is kept whole), sem (the outline must be found), none (whole image).
OUTLINES = ("auto", "sem", "none")
_NORMALISE = ("auto", "none")
#: Inference engines: PyTorch, or ONNX Runtime (the checkpoint exported on the fly, or an
#: ONNX file written by ``mineralseg export``).
ENGINES = ("torch", "onnxruntime")
_OUTSIDE_COLOURS = ((224, 224, 224), (192, 192, 192), (255, 255, 255), (0, 0, 0))


# --------------------------------------------------------------------------- windows
def sample_window(tile_size: int) -> int:
    """Window side (working-grid px) for whole-image prediction: 3 tiles wide."""
    return 3 * int(tile_size)


def sample_overlap(tile_size: int) -> int:
    """Overlap of neighbouring windows for whole-image prediction: half a tile."""
    return int(tile_size) // 2


def _sliding_options(card: ModelCard, batch_size: int) -> dict[str, Any]:
    """Window, overlap, zoom and windows per pass of :func:`predict_bands`; ``batch_size``
    is in training tiles' worth of model input per forward pass."""
    window = sample_window(card.tile_size)
    zoom = card.input_size / card.tile_size
    per_pass = max(1, round(batch_size * (card.input_size / (window * zoom)) ** 2))
    return {"window": window, "overlap": sample_overlap(card.tile_size), "zoom": zoom, "batch_size": per_pass,
            "mean": card.mean, "std": card.std}


def predict_bands(
    model: Any,
    card: ModelCard,
    image: Any,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    flips: bool = False,
    needed: np.ndarray | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Blended class probabilities of a whole working-grid image, band by band.

    The one way this project predicts an image: windows :func:`sample_window` wide,
    overlapping by :func:`sample_overlap`, resized by the training zoom
    (``input_size / tile_size``), blended (:func:`mineralseg.infer.predict_probability_bands`).

    Parameters
    ----------
    model : callable
        A torch module (or any callable with its contract: (N, 1, S, S) float32 tensor
        of normalised images -> (N, C, S, S) logits).
    card : ModelCard
    image : (H, W) uint8 array-like
        Normalised grey levels on the model's working grid; anything that slices.
    batch_size : int
        Training tiles' worth of model input per forward pass.
    device, flips, needed, progress
        As in :func:`mineralseg.infer.predict_probability_bands`.

    Yields
    ------
    (start, stop, probabilities)
        (C, stop - start, W) float32 (a view: copy before the next item), or None for
        rows no window covered.
    """
    from mineralseg.infer.sliding import predict_probability_bands

    yield from predict_probability_bands(model, image, device=device, flips=flips, needed=needed, progress=progress,
                                         **_sliding_options(card, batch_size))  # fmt: skip


def predict_working_image(
    model: Any,
    card: ModelCard,
    image: Any,
    *,
    out: Any = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    flips: bool = False,
    needed: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(H, W) uint8 class ids of a working-grid image, predicted as :func:`predict_bands`
    predicts it (same windows, blending and arguments); pixels no window covered get
    class 0. ``out``: an (H, W) uint8 array to fill (memmap, zarr)."""
    from mineralseg.infer.sliding import predict_classes

    return predict_classes(model, image, out=out, device=device, flips=flips, needed=needed, progress=progress,
                           **_sliding_options(card, batch_size))  # fmt: skip


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PredictSettings:
    """How ``predict`` maps an image (recorded in each output's ``run.json``).

    Attributes
    ----------
    sem_px : float, optional
        Image pixels per working-grid pixel. Default: from ``pixel_size_um`` and the
        card's working pixel size when both are known, else the card's training value.
    pixel_size_um : float, optional
        The image's pixel size in micrometres (areas in mm^2; the scale when the card
        knows the training pixel size).
    outline : {"auto", "sem", "none"}
        See :func:`section_mask`.
    normalise : {"auto", "none"}
        ``auto``: grey levels normalised as the training data were (the card's method).
        ``none``: the image is already a normalised uint8 working-grid image.
    flips : bool
        Test-time flips (4x the computation).
    batch_size : int
        Training tiles' worth of input per forward pass.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1`` (default: CUDA when available).
    probabilities : bool
        Also write ``probabilities.zarr`` ((C, H, W) float16).
    engine : {"torch", "onnxruntime"}
        Who runs the network (an ``.onnx`` checkpoint always runs on ONNX Runtime).
    scheduler : str, optional
        ``local:N`` or ``tcp://HOST:PORT``: predict on a Dask cluster
        (:mod:`mineralseg.infer.distributed`; identical class ids; no uncertainty map
        or probabilities, since the workers return class ids only).
    raw_shape, raw_dtype : optional
        Shape (H, W) and dtype of raw image files.
    """

    sem_px: float | None = None
    pixel_size_um: float | None = None
    outline: str = "auto"
    normalise: str = "auto"
    flips: bool = False
    batch_size: int = 8
    device: str | None = None
    probabilities: bool = False
    engine: str = "torch"
    scheduler: str | None = None
    raw_shape: tuple[int, int] | None = None
    raw_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.outline not in OUTLINES:
            raise UserError(f"unknown outline {self.outline!r}; choose one of {', '.join(OUTLINES)}")
        if self.engine not in ENGINES:
            raise UserError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.normalise not in _NORMALISE:
            raise UserError(f"unknown normalise {self.normalise!r}; choose one of {', '.join(_NORMALISE)}")
        for name in ("sem_px", "pixel_size_um"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"{name.replace('_', '-')} must be a positive number, got {value}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.scheduler is not None and self.probabilities:
            raise UserError("--probabilities is not available with --scheduler (the workers return class ids only)")


@dataclass
class PredictResult:
    """What :func:`predict_image` wrote and measured."""

    out: Path
    image: Path
    image_shape: tuple[int, ...]
    working_shape: tuple[int, int]
    sem_px: float
    scale_source: str
    outline: str
    mineralogy: Any
    seconds: float
    files: list[str] = field(default_factory=list)

    @property
    def mpx_per_s(self) -> float:
        """Image megapixels mapped per second (whole run: read, resample, predict, write)."""
        return float(np.prod(self.image_shape[:2])) / 1e6 / max(self.seconds, 1e-9)


def working_scale(card: ModelCard, *, sem_px: float | None = None, pixel_size_um: float | None = None) -> tuple[float, str]:
    """Image pixels per working-grid pixel for a new image, and where the value came from.

    Raises
    ------
    UserError
        Neither option given and the card does not know its working grid.
    """
    if sem_px is not None:
        return float(sem_px), "--sem-px"
    if pixel_size_um is not None and card.working_pixel_size_um is not None:
        return card.working_pixel_size_um / float(pixel_size_um), (
            f"--pixel-size {pixel_size_um:g} um and the model's working pixel of {card.working_pixel_size_um:.4g} um")
    if card.sem_px_per_working_px is not None:
        return float(card.sem_px_per_working_px), "the model card (training SEM px per working px)"
    raise UserError(
        f"{card.checkpoint or 'the checkpoint'} does not say how many SEM pixels make one pixel of its working grid "
        "(an older checkpoint whose training dataset is not at hand): pass --sem-px F (image pixels per working "
        f"pixel; the training used sem_scale {card.sem_scale:g} working px per label px)"
    )


def section_mask(preview: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, str]:
    """Where the rock section is in a (downscaled) image, and how that was decided.

    :func:`mineralseg.prep.outline.section_mask` (the outline ``prepare`` uses on an SEM
    image) with a line for the run record and the report.

    Parameters
    ----------
    preview : (H, W) ndarray
        Grey levels (any real dtype), e.g. an SEM image downscaled to ~2,000 px.
    mode : {"auto", "sem", "none"}
        ``none``: the whole image; ``sem``: the section outline, an error when none is
        found; ``auto``: the outline of a section in a mount, the whole image when it
        is rock from edge to edge.

    Returns
    -------
    mask : (H, W) bool ndarray
    how : str

    Raises
    ------
    UserError
        ``mode`` unknown, or ``sem`` and no section found.
    """
    from mineralseg.prep.outline import section_mask as find_section

    if mode not in OUTLINES:
        raise UserError(f"unknown outline {mode!r}; choose one of {', '.join(OUTLINES)}")
    try:
        mask = find_section(preview, mode)
    except DataError as exc:
        raise DataError(f"outline: {mode}: {exc}; use --outline none for an image that is rock from edge to edge") from None
    if mask.all():
        return mask, "whole image" + (" (outline: none)" if mode == "none" else " (no mount around a section)")
    return mask, f"section outline ({100 * mask.mean():.1f} % of the image)"


# --------------------------------------------------------------------------- working grid
class _NormalisingSink:
    """The ``out`` of :func:`mineralseg.io.downscale_area`: each strip it receives is
    normalised to uint8 (with the preview's statistics) and stored in ``target``."""

    def __init__(self, target: Any, params: dict[str, Any] | None, to_preview: float):
        self.target = target
        self.shape = tuple(target.shape)
        self.dtype = np.dtype(np.float32)
        self.params = params
        self.to_preview = to_preview  # preview px per working px
        self.cols = (np.arange(self.shape[1]) + 0.5) * to_preview - 0.5

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        if self.params is None:  # already normalised 8-bit grey levels
            self.target[rows] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            return
        from mineralseg.prep.intensity import normalise_strip

        r = (np.arange(rows.start, rows.stop) + 0.5) * self.to_preview - 0.5
        self.target[rows] = normalise_strip(values, self.params, r, self.cols)


def _grey_params(card: ModelCard, settings: PredictSettings, preview: np.ndarray, mask: np.ndarray,
                 dtype: np.dtype) -> dict[str, Any] | None:
    """Grey-level mapping of the new image as the training images had it (None: keep the
    8-bit grey levels as they are).

    ``percentile`` per sample (the default): the image's own percentiles and drift, from
    the preview inside the section; ``percentile`` with ``scope: dataset``: the training
    set's pooled levels; ``none`` with ``scale``: the user's fixed range; plain ``none``:
    8-bit grey levels kept."""
    from mineralseg.prep.intensity import normalise_sem, scale_levels

    norm = card.sem_normalisation
    method = norm.get("method", "percentile")
    if settings.normalise == "none" or (method == "none" and not norm.get("scale")):
        if dtype != np.uint8:
            raise UserError(
                f"the image is {dtype}, but --normalise none expects 8-bit grey levels that are already normalised; "
                "use --normalise auto" if settings.normalise == "none" else
                f"the image is {dtype}, but the model was trained on 8-bit images that were not normalised "
                "(normalise: none): convert the image to the 8-bit scale of the training images"
            )
        return None
    if method == "none":
        return scale_levels(*norm["scale"])
    if norm.get("scope") == "dataset" and norm.get("dataset"):
        return dict(norm["dataset"])
    _, params = normalise_sem(preview, mask, low=float(norm.get("low", 0.5)), high=float(norm.get("high", 99.5)),
                              drift=bool(norm.get("drift", True)))  # fmt: skip
    return params


# --------------------------------------------------------------------------- outputs
def _outside_colour(colors: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    used = {tuple(int(v) for v in c) for c in colors}
    return next(c for c in _OUTSIDE_COLOURS if c not in used)


def _colour_lut(card: ModelCard) -> np.ndarray:
    """(256, 3) uint8 colours of ids 0..255: the classes, then OUTSIDE."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: card.num_classes] = np.asarray(card.class_colors, np.uint8)
    lut[OUTSIDE] = _outside_colour(card.class_colors)
    return lut


def _no_space(exc: OSError, out: Path) -> UserError:
    return UserError(f"no space left on the device while writing {out}: free some space or choose another --out "
                     "(nothing was kept)") if exc.errno == errno.ENOSPC else UserError(f"cannot write {out}: {exc}")


# --------------------------------------------------------------------------- one image
def _device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
    return dev


def output_folder(out: str | os.PathLike, image: str | os.PathLike) -> Path:
    """The output folder of one image: ``OUT/<image file name without suffix>``."""
    name = Path(image).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr", ".png", ".jpg", ".jpeg", ".raw", ".bin",
                   ".dat", ".npy", ".bmp"):
        if name.lower().endswith(suffix):
            return Path(out) / name[: -len(suffix)]
    return Path(out) / Path(name).stem


def output_folders(
    out: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    overwrite: bool,
    what: str,
    none_given: str,
    files_only: bool = False,
) -> list[Path]:
    """The output folder of each input (:func:`output_folder`), all checked before any work.

    ``what`` names an input in the messages ("image", "label map"); ``none_given`` is the
    message for an empty list; ``files_only`` refuses folders as inputs (a zarr image is
    a folder, a label map is not).

    Raises
    ------
    UserError
        No input, two inputs with the same name (their folders would collide), a missing
        input, an existing output folder unless ``overwrite``.
    """
    if not inputs:
        raise UserError(none_given)
    folders = [output_folder(out, p) for p in inputs]
    if len(set(folders)) != len(folders):
        raise UserError(f"two {what}s have the same file name, so their output folders would collide: "
                        + ", ".join(str(p) for p in inputs))
    for path, folder in zip(inputs, folders):
        if not (Path(path).is_file() if files_only else Path(path).exists()):
            raise UserError(f"{what} not found: {path}")
        if folder.exists() and not overwrite:
            raise UserError(f"{folder} already exists (use --overwrite to replace it)")
    return folders


def predict_image(
    model: Any,
    card: ModelCard,
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: PredictSettings = PredictSettings(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    model_factory: Any = None,
) -> PredictResult:
    """Map one image and write its output folder (see the module docstring).

    Parameters
    ----------
    model : callable
        The network (see :func:`predict_bands`), on ``settings.device``.
    card : ModelCard
    image_path : path-like
    out_dir : path-like
        The folder to create (refused when it exists, unless ``overwrite``).
    settings : PredictSettings
    overwrite : bool
    progress : bool
        Progress bars (on stderr).
    command : str, optional
        The command line, for the run record and the report.
    model_factory : callable, optional
        With ``settings.scheduler``: builds the model on each worker
        (:func:`mineralseg.infer.distributed.checkpoint_factory`).

    Returns
    -------
    PredictResult

    Raises
    ------
    UserError
        Existing output, unreadable image, an image coarser than the model's working
        grid, no section found with ``outline: sem``, a full disk. Nothing is left
        under ``out_dir`` then (nor after Ctrl-C).

    Notes
    -----
    Memory: the preview (<= 16 MB), one band of ``C x window x W`` float32
    probabilities, a few working-grid strips, and the working image itself only when
    it has at most :data:`IN_MEMORY_MAX_PIXELS` pixels (else it is on disk).
    """
    from mineralseg.evaluate.mineralogy import modal_mineralogy, write_mineralogy
    from mineralseg.io import downscale_area, open_image
    from mineralseg.io.atomic import atomic_dir, write_json
    from mineralseg.io.downscale import output_shape

    started = time.perf_counter()
    image_path, out_dir = Path(image_path), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir} already exists (use --overwrite to replace it)")
    # On a cluster the device names the workers' device; the client holds the model on the CPU.
    dev = _device(settings.device) if settings.scheduler is None else torch.device("cpu")
    sem_px, scale_source = working_scale(card, sem_px=settings.sem_px, pixel_size_um=settings.pixel_size_um)
    if abs(sem_px - 1) <= SCALE_TOLERANCE:
        sem_px = 1.0
    elif sem_px < 1:
        raise UserError(
            f"{image_path}: its pixels are {1 / sem_px:.2f}x coarser than the model's working grid ({scale_source}); "
            "the model needs an image at least as fine as its training data (or --sem-px 1 to predict at the "
            "image's own resolution, at your own risk)"
        )
    with open_image(image_path, shape=settings.raw_shape, dtype=settings.raw_dtype, as_grey=True) as image:
        h, w = image.shape[:2]
        if min(h, w) < sem_px:
            raise DataError(f"{image_path}: an image of {h} x {w} px is smaller than one working pixel ({sem_px:g} px)")
        work_shape = output_shape((h, w), sem_px)
        preview_px = max(sem_px, max(h, w) / PREVIEW_SIDE)
        bars = progress and sys.stderr.isatty()  # one bar per stage on a terminal, none in a log
        preview = downscale_area(image, preview_px, progress=bars)
        mask_preview, outline_how = section_mask(preview, settings.outline)
        params = _grey_params(card, settings, preview, mask_preview, np.dtype(image.dtype))
        to_preview = sem_px / preview_px
        try:
            with atomic_dir(out_dir, overwrite=overwrite) as tmp:
                if preview_px == sem_px:
                    work = np.empty(work_shape, np.uint8)
                    _NormalisingSink(work, params, 1.0)[0 : work_shape[0]] = preview
                else:
                    work = _working_store(tmp, work_shape)
                    downscale_area(image, sem_px, out=_NormalisingSink(work, params, to_preview), progress=bars)
                files, counts, uncertain, display = _predict_and_write(
                    model, card, work, mask_preview, to_preview, tmp, settings, dev, sem_px,
                    progress=progress, image_mpx=h * w / 1e6, model_factory=model_factory)  # fmt: skip
                if not isinstance(work, np.ndarray):
                    import shutil

                    shutil.rmtree(tmp / "_working.zarr", ignore_errors=True)
                pixel_um = None if settings.pixel_size_um is None else settings.pixel_size_um * sem_px
                mineralogy = modal_mineralogy(counts, list(card.class_names), pixel_size_um=pixel_um,
                                              uncertain_pixels=uncertain)  # fmt: skip
                write_mineralogy(mineralogy, tmp / "mineralogy.csv", tmp / "mineralogy.json")
                files += ["mineralogy.csv", "mineralogy.json"]
                files += _write_pictures(tmp, card, display)
                seconds = time.perf_counter() - started
                result = PredictResult(
                    out=out_dir, image=image_path, image_shape=tuple(image.shape), working_shape=work_shape,
                    sem_px=sem_px, scale_source=scale_source, outline=outline_how, mineralogy=mineralogy,
                    seconds=seconds, files=files,
                )
                write_json(tmp / "card.json", card.to_dict())
                write_json(tmp / "run.json", _run_record(result, image, card, settings, params, command))
                files += ["card.json", "run.json"]
                _write_report(tmp, result, card, command, display)
                files.append("report.html")
        except OSError as exc:
            raise _no_space(exc, out_dir) from None
    result.seconds = time.perf_counter() - started
    return result


def _working_store(tmp: Path, shape: tuple[int, int]) -> Any:
    """The working image: a uint8 array in memory when small, else a zarr array in ``tmp``."""
    if shape[0] * shape[1] <= IN_MEMORY_MAX_PIXELS:
        return np.empty(shape, np.uint8)
    import zarr

    chunks = (min(ZARR_CHUNK, shape[0]), min(ZARR_CHUNK, shape[1]))
    return zarr.create_array(store=str(tmp / "_working.zarr"), shape=shape, dtype=np.uint8, chunks=chunks,
                             zarr_format=3)  # fmt: skip


@dataclass
class _Display:
    """Nearest-neighbour previews (every ``step``-th working pixel) for the pictures."""

    step: int
    grey: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray | None  # None on a cluster (class ids only)


def _class_bands(
    model: Any, card: ModelCard, work: Any, tmp: Path, settings: PredictSettings, dev: torch.device,
    probs_store: Any, model_factory: Any,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """``(start, stop, classes, top)`` bands of the working image, top to bottom: class ids
    and the blended probability of each pixel's class (None on a cluster, which returns
    class ids only)."""
    if settings.scheduler is None:
        for start, stop, probs in predict_bands(model, card, work, batch_size=settings.batch_size, device=dev,
                                                flips=settings.flips):  # fmt: skip
            if probs_store is not None:
                probs_store[:, start:stop] = probs.astype(np.float16)
            yield start, stop, probs.argmax(axis=0).astype(np.uint8), probs.max(axis=0)
        return
    import zarr

    from mineralseg.infer.distributed import predict_classes_distributed

    hw, ww = (int(v) for v in work.shape)
    labels = zarr.create_array(store=str(tmp / "_labels.zarr"), shape=(hw, ww), dtype=np.uint8,
                               chunks=(min(ZARR_CHUNK, hw), min(ZARR_CHUNK, ww)), zarr_format=3)  # fmt: skip
    predict_classes_distributed(model_factory, work, scheduler=settings.scheduler, out=labels,
                                device=settings.device or "cpu",
                                flips=settings.flips, **_sliding_options(card, settings.batch_size))  # fmt: skip
    for start in range(0, hw, ZARR_CHUNK):
        stop = min(hw, start + ZARR_CHUNK)
        yield start, stop, np.asarray(labels[start:stop]), None


def _predict_and_write(
    model: Any, card: ModelCard, work: Any, mask_preview: np.ndarray, to_preview: float, tmp: Path,
    settings: PredictSettings, dev: torch.device, sem_px: float, *, progress: bool, image_mpx: float,
    model_factory: Any = None,
) -> tuple[list[str], np.ndarray, int | None, _Display]:
    """Predict the working image band by band and write labels.tif, uncertainty.tif (and
    probabilities.zarr); return the files, class counts inside the section, the number
    of uncertain pixels (None on a cluster) and the display previews."""
    from contextlib import ExitStack

    from mineralseg.io import TiffBlockWriter

    hw, ww = (int(v) for v in work.shape)
    c = card.num_classes
    step = max(1, math.ceil(max(hw, ww) / PREVIEW_SIDE))
    disp_shape = (-(-hw // step), -(-ww // step))
    local = settings.scheduler is None
    display = _Display(step, np.zeros(disp_shape, np.uint8), np.zeros(disp_shape, np.uint8),
                       np.zeros(disp_shape, np.uint8) if local else None)  # fmt: skip
    pcols = np.minimum(((np.arange(ww) + 0.5) * to_preview).astype(np.int64), mask_preview.shape[1] - 1)
    counts = np.zeros(c, np.int64)
    uncertain = 0
    pixel_um = None if settings.pixel_size_um is None else settings.pixel_size_um * sem_px
    probs_store = None
    if settings.probabilities:
        import zarr

        probs_store = zarr.create_array(store=str(tmp / "probabilities.zarr"), shape=(c, hw, ww), dtype=np.float16,
                                        chunks=(1, min(ZARR_CHUNK, hw), min(ZARR_CHUNK, ww)), zarr_format=3)
    bar = tqdm(total=round(image_mpx, 2), desc="predict", unit="Mpx", disable=None if progress else True,
               file=sys.stderr, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} Mpx [{elapsed}<{remaining}, {rate_fmt}]")
    with ExitStack() as stack:
        labels_out = stack.enter_context(TiffBlockWriter(
            tmp / "labels.tif", (hw, ww), np.uint8, compression="zlib", colormap=labels_colormap(_colour_lut(card)),
            description=labels_description(card.class_names, card.class_colors, image_px_per_pixel=sem_px,
                                           pixel_size_um=pixel_um)))  # fmt: skip
        unc_out = stack.enter_context(TiffBlockWriter(tmp / "uncertainty.tif", (hw, ww), np.uint8,
                                                      compression="zlib")) if local else None  # fmt: skip
        for start, stop, classes, top in _class_bands(model, card, work, tmp, settings, dev, probs_store,
                                                      model_factory):  # fmt: skip
            prow = np.minimum(((np.arange(start, stop) + 0.5) * to_preview).astype(np.int64), mask_preview.shape[0] - 1)
            inside = mask_preview[np.ix_(prow, pcols)]
            counts += np.bincount(classes[inside], minlength=c)[:c]
            classes[~inside] = OUTSIDE
            labels_out.write(classes)
            first = -(-start // step) * step
            rows = slice(first - start, stop - start, step)
            dr = slice(first // step, first // step + len(range(first, stop, step)))
            if top is not None:
                uncertain += int(np.count_nonzero((top < UNCERTAIN_PROBABILITY) & inside))
                unc = np.rint((1.0 - top) * 255).astype(np.uint8)
                unc[~inside] = 0
                unc_out.write(unc)
                display.uncertainty[dr] = unc[rows, ::step]
            display.labels[dr] = classes[rows, ::step]
            display.grey[dr] = np.asarray(work[first:stop:step, ::step])
            bar.update((stop - start) / hw * image_mpx)
    bar.close()
    if not local:
        import shutil

        shutil.rmtree(tmp / "_labels.zarr", ignore_errors=True)
    files = ["labels.tif"] + (["uncertainty.tif"] if local else []) + (["probabilities.zarr"] if probs_store is not None else [])
    return files, counts, uncertain if local else None, display


def _write_pictures(tmp: Path, card: ModelCard, display: _Display) -> list[str]:
    from mineralseg.io import write_png
    from mineralseg.report.charts import overlay

    rgb = _colour_lut(card)[display.labels]
    write_png(tmp / "map.png", rgb)
    write_png(tmp / "sem_preview.png", display.grey)
    write_png(tmp / "overlay.png", overlay(display.grey, rgb, mask=display.labels != OUTSIDE))
    return ["map.png", "sem_preview.png", "overlay.png"]


def _run_record(result: PredictResult, image: Any, card: ModelCard, settings: PredictSettings,
                params: dict[str, Any] | None, command: str | None) -> dict[str, Any]:
    from mineralseg.versions import package_versions

    stat = result.image.stat() if result.image.is_file() else None
    return {
        "command": command,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "image": {"path": str(result.image.resolve()), "shape": list(image.shape), "dtype": str(image.dtype),
                  "kind": image.kind, "bytes": stat.st_size if stat else None,
                  "modified": stat.st_mtime if stat else None},
        "checkpoint": card.checkpoint,
        "working_grid": {"shape": list(result.working_shape), "image_px_per_working_px": result.sem_px,
                         "from": result.scale_source},
        "outline": result.outline,
        "normalisation": params if params is not None else {"method": "none"},
        "seconds": round(result.seconds, 3),
        "image_mpx_per_s": round(result.mpx_per_s, 3),
        "versions": package_versions(),
        "platform": platform.platform(),
        "files": result.files,
    }


def _write_report(tmp: Path, result: PredictResult, card: ModelCard, command: str | None, display: _Display) -> None:
    """report.html: one self-contained page (:mod:`mineralseg.report.predict`)."""
    from mineralseg.report.predict import write_predict_report

    write_predict_report(tmp / "report.html", result, card, grey=display.grey, labels=display.labels,
                         uncertainty=display.uncertainty, lut=_colour_lut(card), command=command)  # fmt: skip


# --------------------------------------------------------------------------- several images
def predict(
    checkpoint: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    settings: PredictSettings = PredictSettings(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    trust_checkpoint: bool = False,
) -> list[PredictResult]:
    """Map each image with one checkpoint; one output folder per image,
    ``OUT/<image name>/`` (:func:`output_folder`). The checkpoint is opened without
    running code from it unless ``trust_checkpoint`` (see
    :func:`mineralseg.evaluate.checkpoint.load_checkpoint_file`).

    Raises
    ------
    UserError
        No image, the same output folder twice, an existing output folder (checked for
        every image before any work), a checkpoint that is not a mineralseg model,
        or any error of :func:`predict_image` (earlier images' folders stay complete).
    """
    folders = output_folders(out, images, overwrite=overwrite, what="image",
                             none_given="give at least one IMAGE to map")
    # On a cluster the device names the workers' device; the client holds the model on the CPU.
    dev = _device(settings.device) if settings.scheduler is None else torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="mineralseg-predict-") as scratch:
        model, card = _load_model(checkpoint, settings.engine, dev, Path(scratch), trust=trust_checkpoint)
        factory = None
        if settings.scheduler is not None:
            from mineralseg.infer.distributed import checkpoint_factory

            if Path(checkpoint).suffix.lower() == ".onnx":
                factory = checkpoint_factory(checkpoint, engine="onnxruntime")
            elif settings.engine == "onnxruntime":  # the file _load_model exported
                factory = checkpoint_factory(Path(scratch) / "model.onnx", engine="onnxruntime")
            else:
                factory = checkpoint_factory(checkpoint, device=settings.device or "cpu")
        results = []
        for image, folder in zip(images, folders):
            results.append(predict_image(model, card, image, folder, settings, overwrite=overwrite,
                                         progress=progress, command=command, model_factory=factory))  # fmt: skip
    return results


def _load_model(checkpoint: str | os.PathLike, engine: str, device: torch.device, scratch: Path, *,
                trust: bool) -> tuple[Any, ModelCard]:
    """The network and its card: a checkpoint on PyTorch or exported to ONNX Runtime (into
    ``scratch``), or an ONNX file written by ``mineralseg export``."""
    from mineralseg.evaluate.checkpoint import load_checkpoint_model
    from mineralseg.infer.onnx import OnnxPredictor, export_model, load_onnx

    if Path(checkpoint).suffix.lower() == ".onnx":
        predictor, meta = load_onnx(checkpoint)
        return predictor, ModelCard.from_dict(meta, where=str(checkpoint))
    model, card = load_checkpoint_model(checkpoint, map_location=device if engine == "torch" else "cpu",
                                        trust=trust)  # fmt: skip
    if engine == "torch":
        return model, card
    path = export_model(model, scratch / "model.onnx", card=card.to_dict(), input_size=card.input_size)
    return OnnxPredictor(path), card
