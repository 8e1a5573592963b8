"""Smooth random fields and the slow brightness drift, evaluated strip by strip.

A field is defined once on a coarse lattice (white noise, lightly smoothed) and
interpolated bicubically onto any rows of the SEM pixel grid, so an 8k x 8k image can be
rendered in strips with identical values at strip borders.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

# Lattice padding (nodes) so bicubic interpolation never reads past the edge.
_PAD = 2
# Smoothing of the white lattice (in nodes) so the bicubic surface has no creases.
_LATTICE_SIGMA = 0.8


class SmoothField:
    """A zero-mean, unit-variance smooth random field on the SEM pixel grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the lattice noise (consumes ``lattice.size`` normals).
    shape : (H, W)
        SEM image shape in pixels.
    spacing : float
        Distance between lattice nodes in SEM pixels (> 0); features are about
        2-3 x ``spacing`` across. Clamped below at 1 pixel.

    Notes
    -----
    Memory: the lattice holds ``(H / spacing + 5) * (W / spacing + 5)`` float32 values.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], spacing: float):
        self.spacing = max(float(spacing), 1.0)
        h, w = shape
        ny = int(np.ceil(h / self.spacing)) + 2 * _PAD + 1
        nx = int(np.ceil(w / self.spacing)) + 2 * _PAD + 1
        lattice = rng.standard_normal((ny, nx), dtype=np.float32)
        lattice = ndimage.gaussian_filter(lattice, _LATTICE_SIGMA, mode="wrap")
        # Normalise by the theoretical variance of smoothed white noise (not the sample std,
        # which would tie values to the image size).
        lattice *= np.float32(2.0 * np.sqrt(np.pi) * _LATTICE_SIGMA)
        self.lattice = lattice

    def _matrix(self, row0: float, col0: float, step: float) -> np.ndarray:
        k = step / self.spacing
        return np.array(
            [[k, 0.0, col0 / self.spacing + _PAD], [0.0, k, row0 / self.spacing + _PAD]], dtype=np.float64
        )

    def strip(self, row0: int, row1: int, width: int) -> np.ndarray:
        """Field values on SEM rows ``row0:row1`` and columns ``0:width``.

        Returns
        -------
        (row1 - row0, width) float32 ndarray
        """
        return cv2.warpAffine(
            self.lattice,
            self._matrix(row0, 0.0, 1.0),
            (int(width), int(row1 - row0)),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Field values at arbitrary points (same interpolation as :meth:`strip`).

        Parameters
        ----------
        x, y : (N,) float ndarrays
            SEM pixel coordinates.

        Returns
        -------
        (N,) float32 ndarray
        """
        x = np.asarray(x, np.float32).ravel()
        y = np.asarray(y, np.float32).ravel()
        n = x.size
        if n == 0:
            return np.zeros(0, np.float32)
        # cv2.remap wants 2-D maps of moderate width: fold the points into rows of 1024.
        cols = min(n, 1024)
        rows = -(-n // cols)
        mx = np.zeros(rows * cols, np.float32)
        my = np.zeros(rows * cols, np.float32)
        mx[:n] = x / np.float32(self.spacing) + _PAD
        my[:n] = y / np.float32(self.spacing) + _PAD
        out = cv2.remap(
            self.lattice, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT,
        )
        return out.ravel()[:n]

    def subsampled(self, shape: tuple[int, int], step: int) -> np.ndarray:
        """Field values at SEM pixels ``(i * step, j * step)``.

        Returns
        -------
        (ceil(H / step), ceil(W / step)) float32 ndarray
        """
        h, w = (int(np.ceil(s / step)) for s in shape)
        return cv2.warpAffine(
            self.lattice,
            self._matrix(0.0, 0.0, float(step)),
            (w, h),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )


# Drift terms on normalised coordinates X, Y in [-1, 1] (x = column, y = row).
DRIFT_TERMS = ("x", "y", "xy", "x2", "y2")


def draw_drift(rng: np.random.Generator, amplitude: float) -> dict[str, float]:
    """Coefficients (grey levels) of a smooth low-order brightness drift.

    Each term's coefficient is uniform in ``[-amplitude, amplitude]``; the field is
    ``sum(c_t * term_t)`` with terms ``X, Y, X*Y, X**2 - 1/3, Y**2 - 1/3``.
    """
    return {t: float(round(rng.uniform(-amplitude, amplitude), 4)) for t in DRIFT_TERMS}


def drift_strip(coef: dict[str, float], shape: tuple[int, int], row0: int, row1: int) -> np.ndarray:
    """Drift values (grey levels) on rows ``row0:row1`` of an image of ``shape``.

    Returns
    -------
    (row1 - row0, W) float32 ndarray
    """
    h, w = shape
    x = (np.arange(w, dtype=np.float32) * np.float32(2.0 / max(w - 1, 1)) - 1)[None, :]
    y = (np.arange(row0, row1, dtype=np.float32) * np.float32(2.0 / max(h - 1, 1)) - 1)[:, None]
    third = np.float32(1.0 / 3.0)
    col = coef["x"] * x + coef["x2"] * (x * x - third)
    row = coef["y"] * y + coef["y2"] * (y * y - third)
    return (row + col + coef["xy"] * (y * x)).astype(np.float32, copy=False)
