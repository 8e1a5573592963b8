"""Memory-bounded downscaling of big images by area averaging or majority vote.

Both functions read the source in strips of rows (from a :class:`LazyImage`, a
numpy array or a memory map, a zarr array: anything with ``.shape`` and slicing),
so peak memory is one strip plus the output, whatever the size of the source.

Geometry: for a factor ``f`` the output has ``floor(H / f)`` rows and output pixel
``(i, j)`` covers the source rectangle ``[i*f, (i+1)*f) x [j*f, (j+1)*f)``, pixel
``(r, c)`` of the source being the unit square ``[r, r+1) x [c, c+1)``. Source
rows and columns beyond ``floor(H / f) * f`` are not used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tqdm import tqdm

from mineralseg.errors import UserError

__all__ = ["downscale_area", "downscale_mode", "output_shape"]

# Working memory aimed at per strip (float64 partial sums of one strip of source rows):
# large enough that per-strip overheads vanish, small against the 1 GB budget.
STRIP_WORK_BYTES = 64 * 2**20
# Factors within this distance of an integer use the exact integer (reshape) path:
# factors computed as ratios of sizes (88000 / 4700 * ...) carry rounding noise.
INTEGER_FACTOR_TOL = 1e-9


def _factors(factor: float | tuple[float, float]) -> tuple[float, float]:
    fy, fx = (factor, factor) if np.isscalar(factor) else tuple(factor)  # type: ignore[misc]
    fy, fx = float(fy), float(fx)
    if not (math.isfinite(fy) and math.isfinite(fx)) or fy < 1 or fx < 1:
        raise UserError(f"downscale factor must be >= 1 (per axis), got {factor!r}")
    return _snap(fy), _snap(fx)


def _snap(f: float) -> float:
    return float(round(f)) if abs(f - round(f)) <= INTEGER_FACTOR_TOL * f else f


def output_shape(shape: tuple[int, ...], factor: float | tuple[float, float]) -> tuple[int, ...]:
    """Shape of the downscaled image: ``(floor(H / fy), floor(W / fx)) + shape[2:]``."""
    fy, fx = _factors(factor)
    h = int(math.floor(shape[0] / fy + INTEGER_FACTOR_TOL))
    w = int(math.floor(shape[1] / fx + INTEGER_FACTOR_TOL))
    return (h, w) + tuple(shape[2:])


def _check_source(src: Any, factor: Any, what: str) -> tuple[tuple[int, ...], float, float]:
    shape = tuple(int(s) for s in getattr(src, "shape", ()))
    if len(shape) not in (2, 3):
        raise UserError(f"{what} needs a 2-D (H, W) or (H, W, C) image, got shape {shape}")
    fy, fx = _factors(factor)
    out_shape = output_shape(shape, (fy, fx))
    if out_shape[0] < 1 or out_shape[1] < 1:
        raise UserError(f"image of shape {shape} is smaller than one output pixel for factor {factor!r}")
    return out_shape, fy, fx


def _strip_rows(block_rows: int | None, fy: float, row_values: int) -> int:
    if block_rows is not None:
        if block_rows < 1:
            raise UserError(f"block_rows must be >= 1, got {block_rows}")
        return int(block_rows)
    return max(1, int(STRIP_WORK_BYTES // (8 * row_values * (fy + 2))))


# --------------------------------------------------------------------------- block sums
def _axis_area_sums(x: np.ndarray, axis: int, edges: np.ndarray) -> np.ndarray:
    """Sums of ``x`` along ``axis`` over ``[edges[k], edges[k+1])`` with fractional edges.

    Pixel ``p`` is the interval ``[p, p+1)``: whole pixels inside an interval are summed
    with :func:`numpy.add.reduceat` (no large temporaries), the two partly covered
    pixels at its ends are added with their covered fraction. Needs interval widths
    >= 1 and ``0 <= edges <= x.shape[axis]``.
    """
    n_in = x.shape[axis]
    a, b = edges[:-1], edges[1:]
    lo = np.ceil(a).astype(np.int64)  # first whole pixel
    hi = np.floor(b).astype(np.int64)  # one past the last whole pixel
    idx = np.empty(2 * len(lo), dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    if idx[-1] >= n_in:
        idx = idx[:-1]
    sums = np.add.reduceat(x, idx, axis=axis, dtype=np.float64)
    sums = np.take(sums, np.arange(0, 2 * len(lo), 2), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1

    def per_interval(values: np.ndarray) -> np.ndarray:
        return values.reshape(shape)

    sums *= per_interval(hi > lo)  # reduceat returns x[lo] for an empty range
    left = lo > a
    if left.any():
        k = np.flatnonzero(left)
        sums_k = np.take(x, lo[k] - 1, axis=axis) * per_interval(lo[k] - a[k])
        _add_at(sums, axis, k, sums_k)
    right = (hi < b) & (hi < n_in)
    if right.any():
        k = np.flatnonzero(right)
        sums_k = np.take(x, hi[k], axis=axis) * per_interval(b[k] - hi[k])
        _add_at(sums, axis, k, sums_k)
    return sums


def _add_at(target: np.ndarray, axis: int, k: np.ndarray, values: np.ndarray) -> None:
    index = [slice(None)] * target.ndim
    index[axis] = k
    target[tuple(index)] += values


def _block_sums(strip: np.ndarray, fy: float, fx: float, n_rows: int, n_cols: int, row0: float) -> np.ndarray:
    """Sums over the output pixels of one strip (``n_rows`` x ``n_cols`` output pixels).

    ``strip`` holds source rows starting at ``floor(row0)``; the first output row of
    the strip starts at source row ``row0``.
    """
    if fy.is_integer() and fx.is_integer():
        fy_i, fx_i = int(fy), int(fx)
        acc = np.uint64 if np.issubdtype(strip.dtype, np.integer) else np.float64
        if strip.dtype.itemsize == 1 and np.issubdtype(strip.dtype, np.unsignedinteger) and fy_i * fx_i < 2**24:
            acc = np.uint32  # 255 * fy * fx fits: half the memory traffic of uint64
        body = strip[: n_rows * fy_i, : n_cols * fx_i]
        body = body.reshape((n_rows, fy_i, n_cols, fx_i) + strip.shape[2:])
        return body.sum(axis=3, dtype=acc).sum(axis=1, dtype=acc)
    first = int(math.floor(row0))
    row_edges = np.minimum(np.arange(n_rows + 1, dtype=np.float64) * fy + row0, first + strip.shape[0]) - first
    col_edges = np.minimum(np.arange(n_cols + 1, dtype=np.float64) * fx, strip.shape[1])
    # rows first: the column pass then works on data already fy times smaller
    return _axis_area_sums(_axis_area_sums(strip, 0, row_edges), 1, col_edges)


def _iter_strips(n_out_rows: int, rows_per_strip: int, progress: bool, desc: str):
    starts = range(0, n_out_rows, rows_per_strip)
    return tqdm(starts, desc=desc, unit="strip", disable=not progress, leave=False)


def _read_rows(src: Any, i0: int, i1: int, fy: float, height: int, width_used: int) -> tuple[np.ndarray, float]:
    """Source rows covering output rows [i0, i1) and the start position of row i0."""
    y0, y1 = i0 * fy, min(i1 * fy, height)
    r0, r1 = int(math.floor(y0)), min(int(math.ceil(y1 - 1e-12)), height)
    return np.asarray(src[r0:r1, :width_used]), y0


# --------------------------------------------------------------------------- public
def downscale_area(
    src: Any,
    factor: float | tuple[float, float],
    *,
    out: np.ndarray | None = None,
    block_rows: int | None = None,
    dtype: Any = np.float32,
    progress: bool = False,
) -> np.ndarray:
    """Downscale by area averaging, strip by strip (memory independent of image size).

    Parameters
    ----------
    src : (H, W) or (H, W, C) array-like
        :class:`~mineralseg.io.LazyImage`, ndarray, memmap or zarr array; any real
        dtype. Only ``src[r0:r1, :w]`` slices are read.
    factor : float or (float, float)
        Source pixels per output pixel (>= 1), one value or per axis (rows, columns).
        Integer factors use an exact reshape-and-sum; other factors use exact area
        weights (the cumulative sum of pixel values, interpolated at fractional pixel
        edges), so each output is the mean over its ``f x f`` source square.
    out : ndarray, optional
        Array of shape :func:`output_shape` to fill (a memmap or zarr array works too).
    block_rows : int, optional
        Output rows per strip (default: about 64 MB of float64 work per strip).
    dtype : dtype-like
        Output dtype when ``out`` is not given (default float32). Integer outputs
        are rounded to nearest and clipped to the dtype's range.
    progress : bool
        Show a tqdm progress bar over strips.

    Returns
    -------
    ndarray
        ``(floor(H / fy), floor(W / fx)) + src.shape[2:]``; pixel ``(i, j)`` is the
        mean of source ``[i*fy, (i+1)*fy) x [j*fx, (j+1)*fx)``.

    Raises
    ------
    UserError
        Factor < 1, image smaller than one output pixel, wrong ``out`` shape.

    Notes
    -----
    Peak memory is about ``(block_rows * fy + 2) * W * 8`` bytes of work plus the
    output; time is O(H * W).

    Examples
    --------
    >>> import numpy as np
    >>> downscale_area(np.arange(16, dtype=np.uint8).reshape(4, 4), 2)
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    out_shape, fy, fx = _check_source(src, factor, "downscale_area")
    if out is None:
        out = np.empty(out_shape, dtype=dtype)
    elif tuple(out.shape) != out_shape:
        raise UserError(f"out has shape {tuple(out.shape)}, expected {out_shape} for factor {factor!r}")
    out_dtype = np.dtype(out.dtype)
    height = int(src.shape[0])
    width_used = min(int(src.shape[1]), int(math.ceil(out_shape[1] * fx - 1e-12)))
    per_row = int(np.prod(src.shape[1:], dtype=np.int64))
    rows_per_strip = _strip_rows(block_rows, fy, per_row)
    for i0 in _iter_strips(out_shape[0], rows_per_strip, progress, "downscale"):
        i1 = min(i0 + rows_per_strip, out_shape[0])
        strip, y0 = _read_rows(src, i0, i1, fy, height, width_used)
        mean = _block_sums(strip, fy, fx, i1 - i0, out_shape[1], y0) / (fy * fx)
        out[i0:i1] = _cast(mean, out_dtype)
    return out


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def downscale_mode(
    labels: Any,
    factor: float | tuple[float, float],
    *,
    ignore_index: int | None = None,
    block_rows: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Downscale a label map by majority vote (the most frequent id per output pixel).

    Parameters
    ----------
    labels : (H, W) integer array-like
        Class ids (LazyImage, ndarray, zarr ...), read in row strips.
    factor : float or (float, float)
        As in :func:`downscale_area` (same output shape and pixel footprint). With a
        non-integer factor each id's vote is the area it covers inside the output
        pixel's footprint (partial pixels count by their covered fraction).
    ignore_index : int, optional
        Id that does not vote; an output pixel is ``ignore_index`` only when it covers
        nothing else.
    block_rows : int, optional
        Output rows per strip.
    progress : bool
        Show a progress bar.

    Returns
    -------
    (floor(H / fy), floor(W / fx)) ndarray of the labels' dtype
        Ties go to the smallest id.

    Raises
    ------
    UserError
        Not a 2-D integer map, or a factor < 1.

    Notes
    -----
    Cost is one block sum per id present in a strip: O(H * W * n_ids).
    """
    out_shape, fy, fx = _check_source(labels, factor, "downscale_mode")
    dt = np.dtype(labels.dtype)
    if len(labels.shape) != 2 or not (np.issubdtype(dt, np.integer) or dt == np.bool_):
        raise UserError(f"downscale_mode needs a 2-D integer label map, got shape {tuple(labels.shape)} {dt}")
    out = np.empty(out_shape, dtype=dt)
    height = int(labels.shape[0])
    width_used = min(int(labels.shape[1]), int(math.ceil(out_shape[1] * fx - 1e-12)))
    rows_per_strip = _strip_rows(block_rows, fy, int(labels.shape[1]))
    for i0 in _iter_strips(out_shape[0], rows_per_strip, progress, "downscale labels"):
        i1 = min(i0 + rows_per_strip, out_shape[0])
        strip, y0 = _read_rows(labels, i0, i1, fy, height, width_used)
        best_votes = np.full((i1 - i0, out_shape[1]), -1.0)
        best = np.zeros((i1 - i0, out_shape[1]), dtype=dt)
        ids = np.unique(strip)
        voters = [v for v in ids if v != ignore_index] if ignore_index is not None else list(ids)
        for value in voters:  # ascending, so ties keep the smallest id
            votes = _block_sums((strip == value).view(np.uint8), fy, fx, i1 - i0, out_shape[1], y0)
            better = votes > best_votes + 1e-9
            best[better] = value
            best_votes[better] = votes[better]
        if ignore_index is not None:
            best[best_votes <= 1e-9] = ignore_index
        out[i0:i1] = best
    return out
