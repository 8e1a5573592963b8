"""Scoring an alignment: sampling the SEM on the label grid and mutual information.

:func:`registration_score` is the normalised mutual information between label ids and
SEM grey levels on the label grid; the registration reports it for the naive "stretch
the map over the image" alignment, the outline alignment and the final one.
The grid-sampling helpers here are shared with the ECC step.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

import mineralseg.io as mio
from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.prep.registration.geometry import as_matrix, full_to_small, small_to_full

# Grey-level bins of the mutual-information score.
SCORE_BINS = 64
# Label pixels sampled for class grey levels and the score: a 4,700 px map has 22
# million, far more than needed for 256 class statistics or a 256 x 64 histogram.
STAT_SAMPLES = 4_000_000
# Levels that differ by less than this from 1 are treated as "no resampling".
UNIT_FACTOR_TOL = 1e-3


def image_shape(sem: Any) -> tuple[int, int]:
    shape = tuple(getattr(sem, "shape", ()))
    if len(shape) != 2:
        raise DataError(f"SEM image must be 2-D greyscale, got shape {shape}")
    return int(shape[0]), int(shape[1])


def downscale_float(src: Any, factor: float) -> np.ndarray:
    """Area-average ``src`` by ``factor`` (>= 1) as float32; factor ~1 just reads it."""
    if factor < 1.0 + UNIT_FACTOR_TOL:
        h, w = image_shape(src)
        return np.asarray(src[0:h, 0:w], dtype=np.float32)
    return np.asarray(mio.downscale_area(src, factor), dtype=np.float32)


def warp_to_grid(image: np.ndarray, grid_to_image: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` (bilinear) at ``grid_to_image @ [x, y, 1]`` for every grid pixel.

    Returns the float32 samples and a bool mask of pixels whose 2x2 neighbourhood lies
    inside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    mat = np.asarray(grid_to_image, dtype=np.float64)[:2]
    values = cv2.warpAffine(image, mat, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ones = np.full(image.shape, 255, dtype=np.uint8)
    inside = cv2.warpAffine(ones, mat, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return values, inside == 255


def sample_stride(shape: Sequence[int]) -> int:
    """Grid step that leaves about STAT_SAMPLES label pixels for grey-level statistics."""
    n = int(shape[0]) * int(shape[1])
    return max(1, int(math.ceil(math.sqrt(n / STAT_SAMPLES))))


def strided_matrix(grid_to_image: np.ndarray, step: int) -> np.ndarray:
    """``grid_to_image`` for the sub-grid of every ``step``-th label pixel."""
    return grid_to_image @ np.diag([float(step), float(step), 1.0])


def _nmi(ids: np.ndarray, grey: np.ndarray, lo: float, hi: float, bins: int = SCORE_BINS) -> float:
    """Normalised mutual information 2 I / (H_ids + H_grey) of two flat samples."""
    if ids.size == 0:
        return 0.0
    q = np.clip(((grey - lo) / max(hi - lo, 1e-12) * bins).astype(np.int64), 0, bins - 1)
    joint = np.bincount(ids.astype(np.int64) * bins + q, minlength=256 * bins).reshape(256, bins)
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1), p.sum(axis=0)

    def entropy(x: np.ndarray) -> float:
        x = x[x > 0]
        return float(-(x * np.log(x)).sum())

    ha, hb, hab = entropy(pa), entropy(pb), entropy(p.ravel())
    if ha + hb <= 0:
        return 0.0
    return float(2.0 * (ha + hb - hab) / (ha + hb))


def registration_score(
    sem_small: np.ndarray,
    factor: float,
    label_to_sem: Any,
    labels: np.ndarray,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    grey_range: tuple[float, float] | None = None,
) -> float:
    """Normalised mutual information of label ids and SEM grey under a transform.

    The SEM (area-downscaled by ``factor``) is sampled (bilinear) at the label pixel
    centres; on maps over 4 million pixels, at every k-th pixel to keep about 4 million.

    Parameters
    ----------
    sem_small : (h, w) ndarray
        SEM image area-downscaled by ``factor`` from full resolution.
    factor : float
        Full-resolution SEM pixels per ``sem_small`` pixel (>= 1, or the factor the
        image was prepared with).
    label_to_sem : (3, 3) array-like
        The transform to score (full-resolution SEM pixels).
    labels : (H, W) integer ndarray
        Label ids (< 256).
    ignore_index : int or None
        Id left out of the score.
    grey_range : (float, float), optional
        Grey range of the histogram bins; default the 0.1..99.9 percentiles of ``sem_small``.

    Returns
    -------
    float
        NMI in [0, 1]: 0 when ids and grey are independent (misaligned), higher is better.
    """
    sem_small = np.asarray(sem_small, dtype=np.float32)
    step = sample_stride(labels.shape)
    sub = np.asarray(labels)[::step, ::step]
    grid_to_small = strided_matrix(full_to_small(factor) @ as_matrix(label_to_sem), step)
    grey, valid = warp_to_grid(sem_small, grid_to_small, sub.shape)
    if ignore_index is not None:
        valid &= sub != ignore_index
    lo, hi = grey_range if grey_range is not None else np.percentile(sem_small, [0.1, 99.9])
    return _nmi(sub[valid], grey[valid], float(lo), float(hi))


def sem_to_label_grid(
    sem_small: np.ndarray,
    factor: float,
    label_to_sem: Any,
    label_shape: Sequence[int],
    *,
    sem_scale: int = 1,
) -> np.ndarray:
    """Resample a downscaled SEM onto the label grid (bilinear); NaN outside the SEM.

    Parameters
    ----------
    sem_small : (h, w) ndarray
        SEM area-downscaled by ``factor`` from full resolution.
    factor : float
        Full-resolution SEM pixels per ``sem_small`` pixel.
    label_to_sem : (3, 3) array-like
        Registration result.
    label_shape : (int, int)
        ``(H, W)`` of the label map.
    sem_scale : int
        Output pixels per label pixel along each axis; output pixel ``j`` has its centre
        at label coordinate ``(j + 0.5) / sem_scale - 0.5``.

    Returns
    -------
    (H * sem_scale, W * sem_scale) float32 ndarray
    """
    k = int(sem_scale)
    if k < 1:
        raise UserError(f"sem_scale must be a positive integer, got {sem_scale}")
    # output pixel j has its centre at label coordinate (j + 0.5) / k - 0.5
    out_to_label = small_to_full(1.0 / k)
    grid_to_small = full_to_small(factor) @ as_matrix(label_to_sem) @ out_to_label
    shape = (int(label_shape[0]) * k, int(label_shape[1]) * k)
    values, valid = warp_to_grid(np.asarray(sem_small, dtype=np.float32), grid_to_small, shape)
    values[~valid] = np.nan
    return values


# --------------------------------------------------------------------------- fine step
