"""Whole-image prediction with overlapping windows (every pixel sees its context).

A model trained on tiles labels a whole image best when each pixel is predicted with
the image around it: windows of ``window`` px overlap by ``overlap`` px, and their
class probabilities are blended with weights that fall linearly to the window edges,
so seams between windows vanish and pixels near a window edge count little. Only the
image's own border lacks context.

Windows are visited row by row and the blended sum is kept for a band of rows only:
once no later window can touch a row, the row is final and leaves the band. So
:func:`predict_classes` needs memory for the class map (1 byte per pixel; or none with
``out=`` an on-disk array such as a ``numpy.memmap`` or zarr array) plus a band of
``C x window x W`` float32, whatever the image height;
:func:`predict_probabilities` returns the whole (C, H, W) float32 array and suits images
of up to a few hundred megapixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

# Test-time flips (tensor dims of an (N, C, H, W) batch): none, left-right, up-down, both.
FLIPS = ((), (3,), (2,), (2, 3))

__all__ = [
    "blend_bands",
    "edge_weights",
    "predict_class_bands",
    "predict_classes",
    "predict_probabilities",
    "predict_probability_bands",
    "window_starts",
]


def window_starts(length: int, window: int, step: int) -> list[int]:
    """Start offsets of windows of ``window`` px every ``step`` px covering ``length``.

    The last window ends at ``length`` (it may overlap its neighbour more); a length at
    most ``window`` gives the single start 0.
    """
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got {window}, {step}")
    if length <= window:
        return [0]
    starts = list(range(0, length - window, step))
    starts.append(length - window)
    return starts


def edge_weights(window: int, ramp: int) -> np.ndarray:
    """(window, window) float32 blending weights: 1 inside, falling linearly over ``ramp``
    px to ``0.5 / ramp`` at the edges (never 0, so every pixel keeps a weight)."""
    i = np.arange(window, dtype=np.float32) + 0.5
    if ramp <= 0:
        w = np.ones(window, np.float32)
    else:
        w = np.minimum(1.0, np.minimum(i, window - i) / ramp).astype(np.float32)
    return np.outer(w, w)


def _windows(shape: tuple[int, int], window: int, step: int) -> Iterator[tuple[int, int]]:
    for r in window_starts(shape[0], window, step):
        for c in window_starts(shape[1], window, step):
            yield r, c


@torch.inference_mode()
def predict_probability_bands(
    model: torch.nn.Module,
    image: Any,
    *,
    mean: float,
    std: float,
    window: int = 512,
    overlap: int = 64,
    zoom: float = 1.0,
    multiple: int = 32,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = False,
    needed: np.ndarray | None = None,
    flips: bool = False,
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Blended class probabilities of a whole (H, W) uint8 image, final rows first.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Maps (N, 1, S, S) normalised images to (N, C, S, S) logits (eval mode), e.g. a
        :class:`mineralseg.infer.onnx.OnnxPredictor`. On the CPU a torch module is switched
        to the channels-last memory layout (in place; faster there).
    image : (H, W) uint8 array
        On the grid the model was trained on (a prepared dataset's working grid). Any
        array that slices like numpy (``numpy.memmap``, zarr) is read window by window.
    mean, std : float
        Input normalisation: ``(image / 255 - mean) / std`` (the checkpoint's).
    window, overlap : int
        Window side and overlap of neighbouring windows, in image pixels. An image
        smaller than a window is padded by reflection.
    zoom : float
        Model input pixels per image pixel (the training ``input_size / tile_size``);
        windows are resized by it (area / bilinear), the probabilities back.
    multiple : int
        The model input side is rounded up to a multiple of this (encoder stride).
    batch_size : int
        Windows per forward pass.
    device : str or torch.device
    progress : bool
    needed : (H, W) bool ndarray, optional
        Pixels whose prediction is wanted: windows without any are skipped (scoring a
        few tiles of a large image). Pixels no window covered get probability 0.
    flips : bool
        Test-time augmentation: average the probabilities of each window as it is, flipped
        left-right, upside down and both (4x the computation).

    Yields
    ------
    (start, stop, band)
        ``band``: the (C, stop - start, W) float32 blended softmax probabilities of
        image rows ``start .. stop`` (each covered pixel's sum is 1), or None for rows
        that no window covered (skipped with ``needed``). Every row comes once, top to
        bottom. ``band`` is a view into the working band: use or copy it before asking
        for the next item.
    """
    if getattr(image, "ndim", None) != 2:
        raise ValueError(f"expected an (H, W) image, got shape {getattr(image, 'shape', None)}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    h, w = (int(n) for n in image.shape)
    side = window
    # The model input side must be a multiple of `multiple`.
    in_side = int(math.ceil(side * zoom / multiple) * multiple)
    ph, pw = max(0, side - h), max(0, side - w)
    # Only an image smaller than a window is padded (and so loaded whole); a larger one
    # may be any array that slices (numpy, memmap, zarr): windows are read one by one.
    img = np.pad(np.asarray(image), ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    dev = torch.device(device)
    if dev.type == "cpu" and isinstance(model, torch.nn.Module):
        # Channels-last convolutions: 1.6x faster than the default layout on this project's
        # CPU (benchmarks/inference_speed.py --settings); the same numbers up to rounding.
        with torch.inference_mode(False):  # normal tensors: the model can still be trained
            model.to(memory_format=torch.channels_last)

    def forward(chunk: list[tuple[int, int]]) -> np.ndarray:
        crops = []
        for r, c in chunk:
            crop = np.asarray(img[r : r + side, c : c + side])
            if in_side != side:
                interp = cv2.INTER_AREA if in_side < side else cv2.INTER_LINEAR
                crop = cv2.resize(crop, (in_side, in_side), interpolation=interp)
            crops.append(crop)
        x = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)
        x = ((x - mean) / std)[:, None].to(dev)
        probs_t = None
        for dims in FLIPS if flips else ((),):
            xin = torch.flip(x, dims) if dims else x
            logits = model(xin).float()
            if dims:
                logits = torch.flip(logits, dims)
            if logits.shape[-1] != side:
                logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)
            p = torch.softmax(logits, dim=1)
            probs_t = p if probs_t is None else probs_t + p
        if flips:
            probs_t /= len(FLIPS)
        return probs_t.cpu().numpy()

    yield from blend_bands(forward, (h, w), window=side, overlap=overlap, batch_size=batch_size, needed=needed,
                           progress=progress)  # fmt: skip


def blend_bands(
    forward: Callable[[list[tuple[int, int]]], np.ndarray],
    shape: tuple[int, int],
    *,
    window: int,
    overlap: int,
    batch_size: int = 4,
    needed: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Weighted average of overlapping window outputs over an (H, W) grid, final rows first.

    The window walk and blending of :func:`predict_probability_bands`, for any network
    output: ``forward`` computes a batch of windows, this function places them with
    :func:`edge_weights` and gives out each row of the blended average once no later
    window can touch it. Class probabilities (``predict``) and continuous images
    (``synthesize``) are blended alike.

    Parameters
    ----------
    forward : callable
        ``forward(chunk)`` with ``chunk`` a list of window corners ``(row, col)`` (one
        row of windows, at most ``batch_size``) returns an (N, C, window, window)
        float32 ndarray, the outputs of those windows at grid resolution. Windows of a
        grid smaller than ``window`` reach past its bottom / right edge (rows and
        columns up to ``max(H, window)``): ``forward`` supplies their content (e.g. by
        reflection); only the grid's own rows and columns are given out.
    shape : (int, int)
        ``(H, W)`` of the grid.
    window, overlap : int
        Window side and overlap of neighbouring windows, in grid pixels.
    batch_size : int
        Windows per ``forward`` call.
    needed : (H, W) bool ndarray, optional
        Pixels whose output is wanted: windows without any are skipped.
    progress : bool
        A tqdm bar over the windows.
    desc : str
        Label of the bar.

    Yields
    ------
    (start, stop, band)
        ``band``: the (C, stop - start, W) float32 weighted average of rows
        ``start .. stop``, or None for rows no window covered. Every row comes once,
        top to bottom. ``band`` is a view into the working band: use or copy it before
        asking for the next item. Memory: one band of ``C x window x max(W, window)``
        float32 plus one batch of outputs.
    """
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    h, w = (int(n) for n in shape)
    H, W = max(h, window), max(w, window)
    weights = edge_weights(window, overlap)
    starts = list(_windows((H, W), window, window - overlap))  # row by row, rows ascending
    if needed is not None:
        if needed.shape != (h, w):
            raise ValueError(f"needed has shape {needed.shape}, the image {(h, w)}")
        need = np.pad(needed, ((0, H - h), (0, W - w)))
        starts = [(r, c) for r, c in starts if need[r : r + window, c : c + window].any()]
    acc: np.ndarray | None = None  # blended sum of grid rows top .. top + window
    wsum = np.zeros((0, W), np.float32)
    top = 0  # first grid row not yet given out
    bar = tqdm(total=len(starts), desc=desc, unit="window", disable=not progress, leave=False)
    for chunk in _batches(starts, batch_size):
        out = forward(chunk)
        # Every batch holds windows of one row, rows ascending: rows above this one are
        # final, so give them out and move the band (one window tall) down to it.
        row = chunk[0][0]
        if row > top:
            yield from _release(acc, wsum, top, row, h, w)
            acc, wsum = _drop_rows(acc, wsum, row - top)
            top = row
        if acc is None:
            acc = np.zeros((out.shape[1], window, W), np.float32)
            wsum = np.zeros((window, W), np.float32)
        for (_, c), p in zip(chunk, out, strict=True):
            acc[:, :, c : c + window] += np.multiply(p, weights, out=p)  # in place: no temporary
            wsum[:, c : c + window] += weights
        bar.update(len(chunk))
    bar.close()
    yield from _release(acc, wsum, top, H, h, w)


def _batches(starts: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    """Windows in batches of at most ``size`` from one row of windows each, so the band
    is one window tall (and never reaches across rows skipped with ``needed``)."""
    chunk: list[tuple[int, int]] = []
    for r, c in starts:
        if chunk and (len(chunk) == size or r != chunk[0][0]):
            yield chunk
            chunk = []
        chunk.append((r, c))
    if chunk:
        yield chunk


def _release(
    acc: np.ndarray | None, wsum: np.ndarray, top: int, end: int, h: int, w: int
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Normalised rows ``top .. end`` of the band (clipped to the image), or None
    where the band does not reach (rows no window covered). The band is normalised in
    place and given out as a view: valid until the generator resumes (the rows are
    dropped right after)."""
    end = min(end, h)
    if end <= top:
        return
    have = 0 if acc is None else min(wsum.shape[0], end - top)
    if have:
        band = acc[:, :have, :w]
        sums = wsum[:have, :w]
        np.divide(band, sums, out=band, where=sums > 0)
        yield top, top + have, band
    if top + have < end:
        yield top + have, end, None


def _drop_rows(acc: np.ndarray | None, wsum: np.ndarray, n: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The band without its first ``n`` rows, shifted up in place (zeros come in at the
    bottom). Blocks of at most ``n`` rows move, so source and target never overlap and
    numpy needs no temporary copy."""
    if acc is None or n <= 0:
        return acc, wsum
    n = min(n, wsum.shape[0])
    rest = wsum.shape[0] - n
    for k in range(0, rest, n):
        m = min(n, rest - k)
        acc[:, k : k + m] = acc[:, n + k : n + k + m]
        wsum[k : k + m] = wsum[n + k : n + k + m]
    acc[:, rest:] = 0
    wsum[rest:] = 0
    return acc, wsum


def predict_probabilities(model: torch.nn.Module, image: Any, **kwargs: Any) -> np.ndarray:
    """Class probabilities of a whole (H, W) uint8 image, as one array.

    Takes the arguments of :func:`predict_probability_bands`.

    Returns
    -------
    (C, H, W) float32 ndarray
        Blended softmax probabilities (each covered pixel's sum is 1; 0 where no window
        covered); (0, H, W) when ``needed`` leaves no window. For images too large for
        that array, use :func:`predict_classes` or :func:`predict_class_bands`.
    """
    h, w = (int(n) for n in image.shape) if getattr(image, "ndim", None) == 2 else (0, 0)
    out: np.ndarray | None = None
    for start, stop, band in predict_probability_bands(model, image, **kwargs):
        if band is None:
            continue
        if out is None:
            out = np.zeros((band.shape[0], h, w), np.float32)
        out[:, start:stop] = band
    return np.zeros((0, h, w), np.float32) if out is None else out


def predict_class_bands(model: torch.nn.Module, image: Any, **kwargs: Any) -> Iterator[tuple[int, int, np.ndarray]]:
    """Class ids of a whole image as final bands of rows, top to bottom.

    Takes the arguments of :func:`predict_probability_bands`. Yields ``(start, stop,
    classes)`` with ``classes`` the (stop - start, W) uint8 ids of those image rows;
    every row comes once, in order, so the bands can go straight to a strip writer
    (:class:`mineralseg.io.TiffBlockWriter`). Pixels no window covered get class 0.
    Memory: one band of ``C x window x W`` float32.
    """
    for start, stop, band in predict_probability_bands(model, image, **kwargs):
        if band is None:  # rows no window covered: class 0, as an argmax of all-zero probabilities
            yield start, stop, np.zeros((stop - start, int(image.shape[1])), np.uint8)
        else:
            yield start, stop, band.argmax(axis=0).astype(np.uint8)


def predict_classes(
    model: torch.nn.Module, image: np.ndarray, *, out: Any | None = None, **kwargs: Any
) -> np.ndarray:
    """(H, W) uint8 class ids of a whole image, computed band by band.

    Takes the arguments of :func:`predict_probability_bands`. ``out``: an (H, W) uint8
    array to write into (e.g. a ``numpy.memmap`` or zarr array for an image whose class
    map should not be held in memory); returned. Pixels no window covered get class 0.
    Memory beyond ``out``: one band of ``C x window x W`` float32 (see
    :func:`predict_class_bands`).
    """
    shape = tuple(int(n) for n in image.shape)
    if out is None:
        out = np.zeros(shape, np.uint8)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the image {shape}")
    for start, stop, classes in predict_class_bands(model, image, **kwargs):
        out[start:stop] = classes
    return out
