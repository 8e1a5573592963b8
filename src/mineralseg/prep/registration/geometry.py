"""Geometry of the registration: 3x3 pixel-coordinate matrices and their read-outs.

Convention (see docs/CONTRACTS.md): ``label_to_sem`` is a 3x3 matrix ``M`` with
``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]``, x = column, y = row, pixel centres at
integer coordinates, in full-resolution SEM pixels. An image area-downscaled by a factor
``f`` (output pixel ``i`` covers source ``[i f, (i + 1) f)``) has its pixel centre ``u``
at ``x_sem = (u + 0.5) f - 0.5`` (:func:`small_to_full`).

The helpers without a docstring of their own build the elementary matrices the other
modules of this package compose; only :func:`corner_error`, :func:`affine_decomposition`
and :func:`stretch_matrix` are part of the public API.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mineralseg.errors import UserError


def small_to_full(factor: float) -> np.ndarray:
    """Matrix: pixel centre of an image area-downscaled by ``factor`` -> full pixel."""
    f = float(factor)
    return np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])


def full_to_small(factor: float) -> np.ndarray:
    return np.linalg.inv(small_to_full(factor))


def translation_matrix(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def rotation_matrix(angle_deg: float, scale: float = 1.0) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[scale * c, -scale * s, 0.0], [scale * s, scale * c, 0.0], [0.0, 0.0, 1.0]])


def as_matrix(m: Any) -> np.ndarray:
    a = np.asarray(m, dtype=float)
    if a.shape == (2, 3):
        a = np.vstack([a, [0.0, 0.0, 1.0]])
    if a.shape != (3, 3):
        raise UserError(f"label_to_sem must be a 3x3 (or 2x3) matrix, got shape {a.shape}")
    return a


def corner_points(shape: Sequence[int]) -> np.ndarray:
    h, w = int(shape[0]), int(shape[1])
    return np.array([[0.0, 0.0, 1.0], [w - 1.0, 0.0, 1.0], [0.0, h - 1.0, 1.0], [w - 1.0, h - 1.0, 1.0]]).T


def corner_error(m_est: Any, m_true: Any, label_shape: Sequence[int]) -> float:
    """Largest distance, in label pixels, between the map corners mapped by two transforms.

    Each corner of the label map (pixel centres ``(0, 0)``, ``(W-1, 0)``, ``(0, H-1)``,
    ``(W-1, H-1)``) is mapped into the SEM by ``m_est``, back by the inverse of
    ``m_true``, and compared with where it started.

    Parameters
    ----------
    m_est, m_true : (3, 3) array-like
        ``label_to_sem`` matrices.
    label_shape : (int, int)
        ``(H, W)`` of the label map.

    Returns
    -------
    float
        Maximum corner displacement in label pixels (0 for identical transforms).
    """
    est, true = as_matrix(m_est), as_matrix(m_true)
    pts = corner_points(label_shape)
    back = np.linalg.solve(true, est @ pts)
    return float(np.max(np.hypot(back[0] - pts[0], back[1] - pts[1])))


def affine_decomposition(m: Any) -> dict[str, Any]:
    """Split the linear part of ``m`` into rotation, scales and shear.

    ``A = R(rotation) @ [[scale_x, shear * scale_y], [0, scale_y]]``.

    Returns
    -------
    dict
        ``scale`` (sqrt |det A|), ``scale_xy`` [scale_x, scale_y], ``rotation_deg``,
        ``shear`` (dimensionless).
    """
    a = as_matrix(m)[:2, :2]
    sx = math.hypot(a[0, 0], a[1, 0])
    theta = math.atan2(a[1, 0], a[0, 0])
    c, s = math.cos(theta), math.sin(theta)
    k = c * a[0, 1] + s * a[1, 1]
    sy = -s * a[0, 1] + c * a[1, 1]
    return {
        "scale": math.sqrt(abs(float(np.linalg.det(a)))),
        "scale_xy": [sx, sy],
        "rotation_deg": math.degrees(theta),
        "shear": k / sy if sy else math.inf,
    }



def stretch_matrix(sem_shape: Sequence[int], label_shape: Sequence[int]) -> np.ndarray:
    """The naive alignment: the label map stretched over the whole SEM image.

    Parameters
    ----------
    sem_shape : (int, int)
        ``(H, W)`` of the full-resolution SEM image.
    label_shape : (int, int)
        ``(h, w)`` of the label map.

    Returns
    -------
    (3, 3) float64 ndarray
        ``label_to_sem`` mapping the label map's pixel footprints exactly onto the
        SEM's (corner to corner), scaled independently along x and y.
    """
    sx = sem_shape[1] / label_shape[1]
    sy = sem_shape[0] / label_shape[0]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
