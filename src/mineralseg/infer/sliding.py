"""Whole-image prediction with overlapping windows (every pixel sees its context).

A model trained on tiles labels a whole image best when each pixel is predicted with
the image around it: windows of ``window`` px overlap by ``overlap`` px, and their
class probabilities are blended with weights that fall linearly to the window edges,
so seams between windows vanish and pixels near a window edge count little. Only the
image's own border lacks context.

Memory: the (C, H, W) float32 probability sum plus one batch of windows, so this suits
images of up to a few hundred megapixels (a prepared dataset's samples); gigapixel
mosaics need a block-wise version that writes as it goes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

# Test-time flips (tensor dims of an (N, C, H, W) batch): none, left-right, up-down, both.
FLIPS = ((), (3,), (2,), (2, 3))

__all__ = ["edge_weights", "predict_classes", "predict_probabilities", "window_starts"]


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
def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
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
) -> np.ndarray:
    """Class probabilities of a whole (H, W) uint8 image.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (N, 1, S, S) normalised images to (N, C, S, S) logits (eval mode).
    image : (H, W) uint8 ndarray
        On the grid the model was trained on (a prepared dataset's working grid).
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

    Returns
    -------
    (C, H, W) float32 ndarray
        Blended softmax probabilities (each covered pixel's sum is 1).
    """
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {image.shape}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got {overlap} for window {window}")
    h, w = image.shape
    side = window
    # The model input side must be a multiple of `multiple`.
    in_side = int(math.ceil(side * zoom / multiple) * multiple)
    ph, pw = max(0, side - h), max(0, side - w)
    img = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    H, W = img.shape
    weights = edge_weights(side, overlap)
    acc: np.ndarray | None = None
    wsum = np.zeros((H, W), np.float32)
    starts = list(_windows((H, W), side, side - overlap))
    if needed is not None:
        if needed.shape != (h, w):
            raise ValueError(f"needed has shape {needed.shape}, the image {image.shape}")
        need = np.pad(needed, ((0, ph), (0, pw)))
        starts = [(r, c) for r, c in starts if need[r : r + side, c : c + side].any()]
    dev = torch.device(device)
    bar = tqdm(total=len(starts), desc="predict", unit="window", disable=not progress, leave=False)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        crops = []
        for r, c in chunk:
            crop = img[r : r + side, c : c + side]
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
        probs = (probs_t / (len(FLIPS) if flips else 1)).cpu().numpy()
        if acc is None:
            acc = np.zeros((probs.shape[1], H, W), np.float32)
        for (r, c), p in zip(chunk, probs, strict=True):
            acc[:, r : r + side, c : c + side] += p * weights
            wsum[r : r + side, c : c + side] += weights
        bar.update(len(chunk))
    bar.close()
    if acc is None:  # nothing needed
        return np.zeros((0, h, w), np.float32)
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc[:, :h, :w]


def predict_classes(model: torch.nn.Module, image: np.ndarray, **kwargs) -> np.ndarray:
    """(H, W) uint8 class ids of a whole image (see :func:`predict_probabilities`)."""
    probs = predict_probabilities(model, image, **kwargs)
    if probs.shape[0] == 0:
        return np.zeros(image.shape, np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)
