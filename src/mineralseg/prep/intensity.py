"""SEM grey-level normalisation: slow drift removal and a robust percentile stretch.

The original study found a uniform +16 grey-level offset over the sample in four of its
nine SEM images and removed it by hand. :func:`normalise_sem` makes any such offset (and
a slow brightness drift across a mosaic) irrelevant:

1. *drift* (optional): the image is averaged in large blocks inside the sample, the
   block means are median-filtered (a block full of one bright grain is an outlier)
   and a low-order 2-D polynomial is fitted to them robustly (iteratively trimmed least
   squares). Its variation around its median inside the sample is subtracted.
2. *stretch*: the ``low`` and ``high`` percentiles of the sample's grey levels are
   mapped to 0 and 255 (clipped), so a constant offset or gain disappears.

Everything is numpy/scipy; memory is a few float32 copies of the image.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import ndimage

__all__ = ["apply_normalisation", "fit_drift", "normalise_sem", "normalise_strip", "pooled_levels", "scale_levels"]

# Block grid on the long side for the drift estimate: blocks must hold many grains of
# every phase (so that their grey-level histogram shows all the phase peaks), and there
# must be enough of them to fit the polynomial.
DRIFT_GRID = 8
# A block enters the drift fit only if this much of it lies inside the sample.
DRIFT_MIN_COVER = 0.5
# Polynomial degree of the drift field: 2 follows a ramp or a vignetting bowl.
DRIFT_DEGREE = 2
# Histogram bins over the sample's 0.1..99.9 % grey-level range; a block's shift is
# searched within +-DRIFT_MAX_SHIFT of that range (a drift bigger than a quarter of the
# contrast would mix phases beyond repair anyway).
DRIFT_BINS = 192
DRIFT_MAX_SHIFT = 0.25
# Robust fit: residuals beyond this many robust sigmas (1.4826 MAD) are dropped and the
# fit repeated; a few rounds are enough for outlier blocks (a block of a single phase
# whose histogram locks onto the wrong peak).
DRIFT_TRIM_SIGMA = 2.5
DRIFT_ROUNDS = 4
# At most this many sample pixels are used for the percentiles (regular subsampling);
# the estimate of a 0.5 % percentile from 4M pixels is exact to a fraction of a grey level.
PERCENTILE_MAX_PIXELS = 1 << 22


def _poly_terms(x: np.ndarray, y: np.ndarray, degree: int) -> list[np.ndarray]:
    """Monomials x**i * y**j with i + j <= degree (x, y broadcastable)."""
    return [x**i * y**j for total in range(degree + 1) for j in range(total + 1) for i in [total - j]]


def _norm_coords(n: int) -> tuple[float, float]:
    """Centre and half-extent mapping pixel index 0..n-1 to -1..1."""
    half = max((n - 1) / 2.0, 0.5)
    return (n - 1) / 2.0, half


def _smoothed_hist(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    hist = np.histogram(values, bins=edges)[0].astype(np.float64)
    hist = ndimage.gaussian_filter1d(hist, 1.0, mode="constant")
    return hist / max(hist.sum(), 1e-12)


def _hist_shift(block: np.ndarray, ref: np.ndarray, max_shift: int) -> float:
    """Shift (in bins) that best aligns ``block`` onto ``ref`` (cross-correlation peak)."""
    n = ref.size
    shifts = np.arange(-max_shift, max_shift + 1)
    scores = np.empty(shifts.size)
    for i, s in enumerate(shifts):
        if s >= 0:
            scores[i] = np.dot(block[s:], ref[: n - s])
        else:
            scores[i] = np.dot(block[:s], ref[-s:])
    k = int(np.argmax(scores))
    if 0 < k < shifts.size - 1:  # parabolic sub-bin refinement
        a, b, c = scores[k - 1], scores[k], scores[k + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(shifts[k] + 0.5 * (a - c) / den)
    return float(shifts[k])


def fit_drift(
    img: np.ndarray,
    mask: np.ndarray,
    *,
    grid: int = DRIFT_GRID,
    degree: int = DRIFT_DEGREE,
) -> dict[str, Any] | None:
    """Fit a smooth additive drift field to the sample's grey levels.

    The image is cut into ``grid`` blocks on its long side. Each block's grey-level
    histogram (sample pixels only) is aligned on the whole sample's histogram by
    cross-correlation: the best shift moves the phase *peaks* onto each other, so it
    measures a brightness change and not a change of composition (more quartz in one
    corner moves the block's mean, not its peaks). A polynomial is fitted robustly to
    the block shifts; the process is repeated once on the corrected image.

    Parameters
    ----------
    img : (H, W) ndarray
        Greyscale image (any real dtype).
    mask : (H, W) bool ndarray
        Sample pixels.
    grid : int
        Number of blocks on the long side.
    degree : int
        Polynomial degree.

    Returns
    -------
    dict or None
        ``{"degree", "coef", "offset", "shape", "range", "amplitude", "blocks_used"}``:
        the field is ``sum(coef[k] * term_k(x, y))`` with x, y the column / row
        mapped to -1..1 over the image, clamped to ``range`` (its extent over the
        blocks); ``offset`` is its median over the blocks (removing ``field - offset``
        keeps the overall level); ``amplitude`` is the field's extent in grey levels.
        None when too few blocks lie inside the sample to fit the polynomial.
    """
    h, w = img.shape
    block = max(1, int(np.ceil(max(h, w) / grid)))
    n_terms = (degree + 1) * (degree + 2) // 2
    # Subsample big images: a block of 500 x 500 pixels has plenty with every 4th pixel.
    step = max(1, block // 128)
    sub = img[::step, ::step].astype(np.float32)
    sub_mask = mask[::step, ::step]
    values = sub[sub_mask]
    lo, hi = np.percentile(values, [0.1, 99.9])
    width = (hi - lo) / DRIFT_BINS
    if np.issubdtype(img.dtype, np.integer):
        width = max(width, 1.0)  # integer levels: no empty comb bins
    if width <= 0:
        return None
    margin = int(np.ceil(DRIFT_MAX_SHIFT * (hi - lo) / width)) + 4
    edges = lo - 0.5 * width + width * np.arange(-margin, int(np.ceil((hi - lo) / width)) + margin + 2)
    max_shift = margin - 4
    sb = max(1, block // step)
    centres_r, centres_c, cells = [], [], []
    for r0 in range(0, sub.shape[0], sb):
        for c0 in range(0, sub.shape[1], sb):
            cm = sub_mask[r0 : r0 + sb, c0 : c0 + sb]
            if cm.mean() < DRIFT_MIN_COVER or cm.sum() < 200:
                continue
            rr, cc = np.nonzero(cm)
            centres_r.append((r0 + rr.mean()) * step)
            centres_c.append((c0 + cc.mean()) * step)
            cells.append((r0, c0))
    if len(cells) < 2 * n_terms:
        return None
    cy, hy = _norm_coords(h)
    cx, hx = _norm_coords(w)
    x = (np.asarray(centres_c) - cx) / hx
    y = (np.asarray(centres_r) - cy) / hy
    design = np.stack(_poly_terms(x, y, degree), axis=1)
    coef = np.zeros(n_terms)
    keep = np.ones(len(cells), bool)
    for _ in range(2):  # estimate, correct, re-estimate on the corrected grey levels
        corr = design @ coef
        ref_vals = [sub[r0 : r0 + sb, c0 : c0 + sb][sub_mask[r0 : r0 + sb, c0 : c0 + sb]] - f
                    for (r0, c0), f in zip(cells, corr)]
        ref = _smoothed_hist(np.concatenate(ref_vals), edges)
        shifts = np.array([_hist_shift(_smoothed_hist(v, edges), ref, max_shift) for v in ref_vals])
        target = corr + shifts * width
        keep = np.ones(target.size, bool)
        for _ in range(DRIFT_ROUNDS):
            coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
            resid = target - design @ coef
            sigma = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep])))
            new_keep = np.abs(resid) <= DRIFT_TRIM_SIGMA * max(sigma, 0.5 * width)
            if new_keep.sum() < n_terms + 2 or np.array_equal(new_keep, keep):
                break
            keep = new_keep
    field = design @ coef
    return {
        "degree": degree,
        "coef": [float(c) for c in coef],
        "offset": float(np.median(field)),
        "shape": [h, w],
        "range": [float(field.min()), float(field.max())],
        "amplitude": float(field.max() - field.min()),
        "blocks_used": int(keep.sum()),
    }


def _drift_field(drift: dict[str, Any], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The drift field (minus its offset) at ``rows`` x ``cols`` of the image, float32."""
    h, w = drift["shape"]
    cy, hy = _norm_coords(h)
    cx, hx = _norm_coords(w)
    y = (np.asarray(rows, np.float64) - cy) / hy
    x = (np.asarray(cols, np.float64) - cx) / hx
    # Separable evaluation: sum_j y**j * (sum_i c_ij x**i), one outer product per power
    # of y (a full-size temporary per monomial would dominate the run time).
    degree = drift["degree"]
    powers = [(total - j, j) for total in range(degree + 1) for j in range(total + 1)]
    field = np.zeros((y.size, x.size), np.float32)
    for j in range(degree + 1):
        row_poly = np.zeros(x.size)
        for c, (pi, pj) in zip(drift["coef"], powers):
            if pj == j:
                row_poly += c * x**pi
        field += np.outer(y**j, row_poly).astype(np.float32)
    # Clamp to the range seen inside the sample: a polynomial extrapolated into the
    # mount around the sample can run away.
    lo, hi = drift["range"]
    np.clip(field, lo, hi, out=field)
    field -= np.float32(drift["offset"])
    return field


def apply_normalisation(
    img: np.ndarray,
    params: dict[str, Any],
    *,
    mask: np.ndarray | None = None,
    outside: Literal["keep", "zero"] = "keep",
    block_rows: int = 1024,
) -> np.ndarray:
    """Apply normalisation parameters from :func:`normalise_sem` to an image.

    Parameters
    ----------
    img : (H, W) ndarray
        Image of the same shape as the one the parameters were fitted on (the drift
        field is defined on that grid).
    params : dict
        The ``params`` returned by :func:`normalise_sem`.
    mask : (H, W) bool ndarray, optional
        Sample pixels; needed only for ``outside="zero"``.
    outside : {"keep", "zero"}
        Pixels outside the sample get the same mapping (``keep``) or 0.
    block_rows : int
        Rows processed at a time (bounds the float32 temporaries).

    Returns
    -------
    (H, W) uint8 ndarray
    """
    h, w = img.shape
    drift = params.get("drift")
    if drift is not None and tuple(drift["shape"]) != (h, w):
        raise ValueError(f"drift field fitted on shape {tuple(drift['shape'])}, image has shape {(h, w)}")
    out = np.empty((h, w), np.uint8)
    for r0 in range(0, h, block_rows):
        r1 = min(h, r0 + block_rows)
        out[r0:r1] = normalise_strip(img[r0:r1], params, np.arange(r0, r1), np.arange(w))
    if outside == "zero":
        if mask is None:
            raise ValueError("outside='zero' needs the sample mask")
        out[~mask] = 0
    return out


def normalise_strip(strip: np.ndarray, params: dict[str, Any], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Apply :func:`normalise_sem` parameters to some rows of an image, on any grid.

    Parameters
    ----------
    strip : (h, w) ndarray
        Grey levels (any real dtype).
    params : dict
        The ``params`` returned by :func:`normalise_sem`.
    rows, cols : (h,) and (w,) float ndarrays
        Coordinates of the strip's pixel centres on the grid the parameters were
        fitted on (``arange`` for that grid itself; fractional for a finer grid, e.g.
        a whole image normalised with statistics from its downscaled preview). They
        place the drift field.

    Returns
    -------
    (h, w) uint8 ndarray
    """
    lo, hi = params["low_value"], params["high_value"]
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = strip.astype(np.float32)
    if params.get("drift") is not None:
        out -= _drift_field(params["drift"], rows, cols)
    if scale > 0:
        out -= np.float32(lo)
        out *= np.float32(scale)
    else:  # constant image: mid-grey
        out[:] = 127.5
    np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(np.uint8)


def _subsample_masked(img: np.ndarray, mask: np.ndarray, drift: dict[str, Any] | None) -> np.ndarray:
    """Drift-corrected grey levels of (a regular subsample of) the sample pixels."""
    n = int(mask.sum())
    step = max(1, int(np.ceil(np.sqrt(n / PERCENTILE_MAX_PIXELS))))
    sub_img = img[::step, ::step].astype(np.float32)
    sub_mask = mask[::step, ::step]
    if drift is not None:
        h, w = img.shape
        sub_img -= _drift_field(drift, np.arange(0, h, step), np.arange(0, w, step))
    return sub_img[sub_mask]


def normalise_sem(
    img: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    low: float = 0.5,
    high: float = 99.5,
    drift: bool = True,
    outside: Literal["keep", "zero"] = "keep",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Remove a slow drift and stretch the sample's grey levels to 0..255.

    Parameters
    ----------
    img : (H, W) ndarray
        Greyscale SEM image on the working grid (uint8, uint16 or float).
    mask : (H, W) bool ndarray, optional
        Sample pixels (statistics use only these). None: the whole image.
    low, high : float
        Percentiles (0..100) of the sample's grey levels mapped to 0 and 255.
    drift : bool
        Estimate and remove a smooth additive drift (see :func:`fit_drift`).
    outside : {"keep", "zero"}
        Pixels outside the sample get the same mapping (default: the mount keeps
        its appearance, as at inference time) or are set to 0.

    Returns
    -------
    out : (H, W) uint8 ndarray
    params : dict
        JSON-ready: ``method``, ``low``, ``high`` (percentiles), ``low_value``,
        ``high_value`` (the grey levels they had after drift removal), ``median``
        (of the sample before the stretch), ``drift`` (:func:`fit_drift` output or
        None), ``outside``.

    Raises
    ------
    ValueError
        Wrong shapes, an empty mask, or percentiles out of order.

    Notes
    -----
    A constant offset (e.g. the study's +16) changes the percentiles by the same
    amount and therefore disappears in the stretch, up to pixels clipped at the
    ends of the input range. A constant image maps to 128.

    Examples
    --------
    >>> img = np.arange(100, dtype=np.uint8).reshape(10, 10) + 16
    >>> out, p = normalise_sem(img, drift=False, low=0, high=100)
    >>> int(out.min()), int(out.max())
    (0, 255)
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"normalise_sem expects a 2-D greyscale image, got shape {img.shape}")
    if mask is None:
        mask = np.ones(img.shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != img.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {img.shape}")
    if not mask.any():
        raise ValueError("normalise_sem: the sample mask is empty")
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    fit = fit_drift(img, mask) if drift else None
    values = _subsample_masked(img, mask, fit)
    lo, med, hi = np.percentile(values, [low, 50, high])
    params: dict[str, Any] = {
        "method": "percentile",
        "low": float(low),
        "high": float(high),
        "low_value": float(lo),
        "high_value": float(hi),
        "median": float(med),
        "drift": fit,
        "outside": outside,
    }
    return apply_normalisation(img, params, mask=mask, outside=outside), params


def pooled_levels(images: list[Any], *, low: float = 0.5, high: float = 99.5) -> dict[str, Any]:
    """One percentile mapping for several images (``normalise: {scope: dataset}``).

    Parameters
    ----------
    images : list of (H, W) array-likes
        Greyscale images of any real dtype; anything that slices with a step (a
        :class:`mineralseg.io.LazyImage` reads only a regular subsample).
    low, high : float
        Percentiles (0..100) of all their pixels together mapped to 0 and 255.

    Returns
    -------
    dict
        Parameters for :func:`apply_normalisation` (``method: percentile``, ``scope:
        dataset``, ``low_value``, ``high_value``, ``median``, ``drift: None``,
        ``outside: keep``, ``images``: how many images were pooled). Every image
        contributes about the same number of pixels (at most 4M in all).
    """
    if not images:
        raise ValueError("pooled_levels needs at least one image")
    per_image = max(1, PERCENTILE_MAX_PIXELS // len(images))
    values = []
    for img in images:
        h, w = img.shape[:2]
        step = max(1, int(np.ceil(np.sqrt(h * w / per_image))))
        values.append(np.asarray(img[::step, ::step], np.float32).ravel())
    pooled = np.concatenate(values)
    if not np.all(np.isfinite(pooled)):
        raise ValueError("the images have NaN or infinite values")
    lo, med, hi = np.percentile(pooled, [low, 50, high])
    return {
        "method": "percentile", "scope": "dataset", "low": float(low), "high": float(high),
        "low_value": float(lo), "high_value": float(hi), "median": float(med), "drift": None,
        "outside": "keep", "images": len(images),
    }


def scale_levels(lo: float, hi: float) -> dict[str, Any]:
    """Parameters for :func:`apply_normalisation` mapping ``lo`` .. ``hi`` to 0 .. 255.

    The mapping the user chose (``normalise: {method: none, scale: [lo, hi]}``), the same
    for every image: a 16-bit image is ``scale_levels(0, 65535)``, a float image in 0..1
    ``scale_levels(0, 1)``. Values outside are clipped (the user's choice).
    """
    return {"method": "none", "scale": [float(lo), float(hi)], "low_value": float(lo), "high_value": float(hi), "drift": None}
