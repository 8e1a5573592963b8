"""Resampling the SEM (and the labels) onto the working grid, block-wise.

The *working grid* is the label grid refined by ``sem_scale`` (``s``): working pixel
centre ``(u, v)`` (column, row) sits at label coordinate ``((u + 0.5) / s - 0.5,
(v + 0.5) / s - 0.5)``, so the working image covers exactly the label map and each label
pixel becomes ``s x s`` working pixels. ``label_to_sem`` (3x3, see docs/CONTRACTS.md)
then places every working pixel in the full-resolution SEM.

The SEM may be far bigger than memory (88,000 x 87,000 in the original study). For each
strip of output rows, :func:`sem_to_working_grid` computes the SEM bounding box through
the transform, reads only that window, area-averages it by the integer factor
``k = floor(SEM pixels per working pixel)`` (anti-aliasing) and warps the small
residual transform (scale in [1, 2), rotation, shift) with bilinear interpolation.
Peak memory is a few strips, independent of the SEM size.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = [
    "labels_to_working_grid",
    "sem_coverage",
    "sem_to_working_grid",
    "working_shape",
    "working_to_label_matrix",
]

# Default budget of SEM window pixels read per strip (2**24 = 16 M pixels, i.e. 64 MB
# as float32 during the area average): bounds the peak memory whatever the SEM size.
DEFAULT_WINDOW_PIXELS = 1 << 24
# OpenCV's remap/warp functions index with 16-bit signed ints internally.
_CV_MAX_SIDE = 32767
# Extra SEM pixels read around each strip's bounding box (bilinear needs one neighbour;
# a few more absorb rounding of the block alignment).
_WINDOW_PAD = 2
# The area-average factor k is floor(SEM px per working px + _K_SNAP): a ratio of
# 1.98 (a 2x grid with a 1 % scale change) is averaged by 2 and then enlarged by 1 %,
# instead of bilinear sampling at half resolution (aliasing).
_K_SNAP = 0.1
# A composite transform closer than this to the identity (in pixels over the strip) is
# copied instead of interpolated, so aligned data stays bit-exact.
_IDENTITY_TOL = 1e-9


def working_shape(label_shape: tuple[int, int], sem_scale: float) -> tuple[int, int]:
    """Shape ``(round(H * s), round(W * s))`` of the working grid."""
    h, w = label_shape[:2]
    return int(round(h * sem_scale)), int(round(w * sem_scale))


def working_to_label_matrix(sem_scale: float) -> np.ndarray:
    """3x3 matrix mapping working-grid pixel centres to label-grid coordinates."""
    s = float(sem_scale)
    t = 0.5 / s - 0.5
    return np.array([[1 / s, 0, t], [0, 1 / s, t], [0, 0, 1]], dtype=np.float64)


def _check_matrix(m: Any) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0, 0, 1]])
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"label_to_sem must be a finite 3x3 (or 2x3) matrix, got shape {m.shape}")
    if not np.allclose(m[2], [0, 0, 1]):
        raise ValueError(f"label_to_sem must be affine (last row [0, 0, 1]), got {m[2].tolist()}")
    if abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ValueError("label_to_sem is singular")
    return m


def _block_mean(window: np.ndarray, k: int) -> np.ndarray:
    """Area average of ``k x k`` blocks (the window is cropped to a multiple of k), float32."""
    win = window.astype(np.float32, copy=False)
    if k == 1:
        return win
    h, w = (window.shape[0] // k) * k, (window.shape[1] // k) * k
    # INTER_AREA with an exact integer factor is the plain block mean (and several times
    # faster than a numpy reshape-mean for small k).
    return cv2.resize(win[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)


def sem_to_working_grid(
    sem_lazy: Any,
    label_to_sem: np.ndarray,
    label_shape: tuple[int, int],
    sem_scale: float = 1,
    *,
    block_rows: int | None = None,
    max_window_pixels: int = DEFAULT_WINDOW_PIXELS,
    fill: float = 0.0,
    progress: Any = None,
) -> np.ndarray:
    """Resample the SEM onto the working grid, reading one window per strip.

    Parameters
    ----------
    sem_lazy : LazyImage or (Hs, Ws) ndarray
        The full-resolution SEM; anything sliceable as ``sem[r0:r1, c0:c1]`` with
        ``.shape`` works.
    label_to_sem : (3, 3) array_like
        Affine map of label-grid pixel centres to SEM pixel centres
        (``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]``, x = column).
    label_shape : (H, W)
        Shape of the (repaired) label map.
    sem_scale : float
        Working pixels per label pixel (>= 1).
    block_rows : int, optional
        Output rows per strip; default: as many as fit ``max_window_pixels`` SEM
        pixels.
    max_window_pixels : int
        SEM pixels read per strip when ``block_rows`` is None.
    fill : float
        Value of working pixels that fall outside the SEM.
    progress : callable, optional
        Called with the number of rows done after each strip (e.g. ``tqdm.update``).

    Returns
    -------
    (round(H * s), round(W * s)) float32 ndarray
        SEM grey levels on the working grid (same units as the SEM).

    Raises
    ------
    ValueError
        A singular or non-affine matrix, a colour SEM, ``sem_scale < 1``.

    Notes
    -----
    With ``k = max(1, floor(sqrt(|det M|) / s + 0.1))`` SEM pixels averaged per working
    pixel (the residual warp then scales by ``sqrt(|det M|) / (s k)`` in [0.95, 2)), each
    strip reads about ``block_rows * k`` SEM rows (more if rotated): memory is
    O(strip), independent of the SEM size. A transform equal to the identity (same
    grid, ``s = 1``) copies the pixels unchanged.
    """
    m = _check_matrix(label_to_sem)
    if sem_scale < 1:
        raise ValueError(f"sem_scale must be >= 1, got {sem_scale}")
    if len(sem_lazy.shape) != 2:
        raise ValueError(f"the SEM must be a single-channel image, got shape {tuple(sem_lazy.shape)}")
    sem_h, sem_w = (int(v) for v in sem_lazy.shape)
    out_h, out_w = working_shape(label_shape, sem_scale)
    w2s = m @ working_to_label_matrix(sem_scale)  # working pixel -> SEM pixel
    px_per_working = math.sqrt(abs(np.linalg.det(w2s[:2, :2])))
    k = max(1, int(math.floor(px_per_working + _K_SNAP)))
    if block_rows is None:
        per_row = max(1.0, px_per_working * (out_w * px_per_working + 2 * k))
        block_rows = int(max(1, min(out_h, max_window_pixels // per_row)))
    block_rows = max(1, int(block_rows))
    col_chunk = min(out_w, _CV_MAX_SIDE // 2)
    out = np.empty((out_h, out_w), np.float32)
    for r0 in range(0, out_h, block_rows):
        r1 = min(out_h, r0 + block_rows)
        for c0 in range(0, out_w, col_chunk):
            c1 = min(out_w, c0 + col_chunk)
            out[r0:r1, c0:c1] = _warp_block(sem_lazy, (sem_h, sem_w), w2s, k, r0, r1, c0, c1, fill)
        if progress is not None:
            progress(r1 - r0)
    return out


def _warp_block(
    sem: Any,
    sem_shape: tuple[int, int],
    w2s: np.ndarray,
    k: int,
    r0: int,
    r1: int,
    c0: int,
    c1: int,
    fill: float,
) -> np.ndarray:
    """Output block rows r0..r1, cols c0..c1 of the working grid (float32)."""
    sem_h, sem_w = sem_shape
    # Transform from block-local output pixel to SEM pixel.
    local = w2s @ np.array([[1, 0, c0], [0, 1, r0], [0, 0, 1]], dtype=np.float64)
    bh, bw = r1 - r0, c1 - c0
    if np.allclose(local[:2, :2], np.eye(2), atol=_IDENTITY_TOL) and np.allclose(
        local[:2, 2], np.round(local[:2, 2]), atol=_IDENTITY_TOL
    ):
        return _copy_block(sem, sem_shape, int(round(local[1, 2])), int(round(local[0, 2])), bh, bw, fill)
    corners = np.array([[-0.5, -0.5, 1], [bw - 0.5, -0.5, 1], [-0.5, bh - 0.5, 1], [bw - 0.5, bh - 0.5, 1]]).T
    xs, ys = (local @ corners)[:2]
    pad = _WINDOW_PAD * k
    x0 = max(0, int(math.floor(xs.min())) - pad)
    y0 = max(0, int(math.floor(ys.min())) - pad)
    x1 = min(sem_w, int(math.ceil(xs.max())) + pad + 1)
    y1 = min(sem_h, int(math.ceil(ys.max())) + pad + 1)
    if x1 - x0 < k or y1 - y0 < k:  # the block falls outside the SEM
        return np.full((bh, bw), fill, np.float32)
    window = np.asarray(sem[y0:y1, x0:x1])
    small = _block_mean(window, k)
    del window
    # Downscaled pixel (i, j) covers SEM pixels y0 + i*k .. y0 + i*k + k - 1: its centre
    # is at SEM coordinate k * i + y0 + (k - 1) / 2 (same for x).
    small_to_sem = np.array([[k, 0, x0 + (k - 1) / 2], [0, k, y0 + (k - 1) / 2], [0, 0, 1]])
    dst_to_small = np.linalg.solve(small_to_sem, local)
    result = cv2.warpAffine(
        small,
        dst_to_small[:2].astype(np.float64),
        (bw, bh),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(fill),
    )
    return _blank_outside(result, local, sem_shape, fill)


def _inside_columns(local: np.ndarray, shape: tuple[int, int], sem_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per output row, the first and last column whose centre maps inside the SEM.

    The inside pixels of a row form one interval (an affine image of a line), found
    analytically; ``last < first`` marks a row entirely outside.
    """
    bh, bw = shape
    rows = np.arange(bh, dtype=np.float64)
    lo = np.zeros(bh)
    hi = np.full(bh, bw - 1.0)
    for axis, limit in ((0, sem_shape[1]), (1, sem_shape[0])):
        a = local[axis, 0]
        b = local[axis, 1] * rows + local[axis, 2]
        if abs(a) < 1e-12:
            hi[(b < -0.5) | (b > limit - 0.5)] = -1.0
            continue
        u1, u2 = (-0.5 - b) / a, (limit - 0.5 - b) / a
        lo = np.maximum(lo, np.minimum(u1, u2))
        hi = np.minimum(hi, np.maximum(u1, u2))
    first = np.clip(np.ceil(lo - 1e-9), 0, bw).astype(np.int64)
    last = np.clip(np.floor(hi + 1e-9), -1, bw - 1).astype(np.int64)
    return first, last


def _blank_outside(result: np.ndarray, local: np.ndarray, sem_shape: tuple[int, int], fill: float) -> np.ndarray:
    """Set output pixels whose centre maps outside the SEM to ``fill``.

    cv2's constant border blends the edge pixels with ``fill`` over half a pixel; the
    SEM edge itself is kept (pixels centred inside it keep their interpolated value).
    """
    bh, bw = result.shape
    sem_h, sem_w = sem_shape
    corners = local @ np.array([[0, bw - 1, 0, bw - 1], [0, 0, bh - 1, bh - 1], [1, 1, 1, 1]], dtype=np.float64)
    if (corners[0].min() >= -0.5 and corners[1].min() >= -0.5 and corners[0].max() <= sem_w - 0.5
            and corners[1].max() <= sem_h - 0.5):
        return result  # the block lies inside the SEM
    first, last = _inside_columns(local, (bh, bw), sem_shape)
    for r in range(bh):
        if last[r] < first[r]:
            result[r] = fill
        else:
            result[r, : first[r]] = fill
            result[r, last[r] + 1 :] = fill
    return result


def sem_coverage(
    label_to_sem: np.ndarray, label_shape: tuple[int, int], sem_scale: float, sem_shape: tuple[int, int]
) -> np.ndarray:
    """Working-grid pixels whose centre falls inside the SEM image.

    Parameters
    ----------
    label_to_sem : (3, 3) array_like
    label_shape : (H, W)
    sem_scale : float
    sem_shape : (Hs, Ws)

    Returns
    -------
    (round(H * s), round(W * s)) bool ndarray
    """
    m = _check_matrix(label_to_sem) @ working_to_label_matrix(sem_scale)
    shape = working_shape(label_shape, sem_scale)
    first, last = _inside_columns(m, shape, tuple(sem_shape[:2]))
    cols = np.arange(shape[1])
    out = np.empty(shape, bool)
    for r0 in range(0, shape[0], 1024):
        r1 = min(shape[0], r0 + 1024)
        out[r0:r1] = (cols[None, :] >= first[r0:r1, None]) & (cols[None, :] <= last[r0:r1, None])
    return out


def _copy_block(sem: Any, sem_shape: tuple[int, int], y0: int, x0: int, bh: int, bw: int, fill: float) -> np.ndarray:
    """Integer-offset copy of an SEM window (the identity case), fill outside."""
    sem_h, sem_w = sem_shape
    out = np.full((bh, bw), fill, np.float32)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(sem_h, y0 + bh), min(sem_w, x0 + bw)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = np.asarray(sem[ys:ye, xs:xe])
    return out


def labels_to_working_grid(labels: np.ndarray, sem_scale: float) -> np.ndarray:
    """Nearest-neighbour upscaling of a label map by ``sem_scale``.

    Parameters
    ----------
    labels : (H, W) uint8 ndarray
        Class ids (any integer dtype is kept).
    sem_scale : float
        Working pixels per label pixel (>= 1). Integer factors repeat each pixel
        ``s x s`` times; other factors take, for working pixel ``v``, the label pixel
        containing its centre, ``floor((v + 0.5) / s)`` (the working-grid convention).

    Returns
    -------
    (round(H * s), round(W * s)) ndarray of ``labels.dtype``
    """
    if sem_scale < 1:
        raise ValueError(f"sem_scale must be >= 1, got {sem_scale}")
    s = float(sem_scale)
    if s.is_integer():
        n = int(s)
        return labels if n == 1 else np.repeat(np.repeat(labels, n, axis=0), n, axis=1)
    out_h, out_w = working_shape(labels.shape, s)
    rows = np.minimum(np.floor((np.arange(out_h) + 0.5) / s).astype(np.intp), labels.shape[0] - 1)
    cols = np.minimum(np.floor((np.arange(out_w) + 0.5) / s).astype(np.intp), labels.shape[1] - 1)
    return labels[rows][:, cols]
