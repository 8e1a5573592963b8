"""The label (QEMSCAN) grid and the SEM grid: the ``label_to_sem`` matrix and resampling.

Convention (docs/CONTRACTS.md): ``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]`` with
x = column, y = row and pixel centres at integer coordinates.
"""

from __future__ import annotations

import cv2
import numpy as np

from mineralseg.errors import UserError


def label_to_sem_matrix(
    label_shape: tuple[int, int],
    sem_shape: tuple[int, int],
    *,
    step: float,
    rotation_deg: float,
    shift_px: tuple[float, float],
) -> np.ndarray:
    """Similarity transform from label-grid to SEM pixel coordinates.

    The label grid's centre maps to the SEM frame's centre plus ``shift_px``; one label
    pixel spans ``step`` SEM pixels, turned by ``rotation_deg`` (positive turns the label
    x axis towards +y, i.e. clockwise on screen).

    Parameters
    ----------
    label_shape, sem_shape : (H, W)
    step : float
        SEM pixels per label pixel (``ratio * scale``).
    rotation_deg : float
    shift_px : (dx, dy)
        Offset in SEM pixels.

    Returns
    -------
    (3, 3) float64 ndarray
    """
    th = np.deg2rad(rotation_deg)
    a = step * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c_lab = np.array([(label_shape[1] - 1) / 2.0, (label_shape[0] - 1) / 2.0])
    c_sem = np.array([(sem_shape[1] - 1) / 2.0, (sem_shape[0] - 1) / 2.0]) + np.asarray(shift_px, float)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = c_sem - a @ c_lab
    return m


def label_points(m: np.ndarray, label_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """SEM coordinates of every label pixel centre.

    Returns
    -------
    x_sem, y_sem : (H, W) float64 ndarrays
    """
    yy, xx = np.mgrid[0 : label_shape[0], 0 : label_shape[1]].astype(np.float64)
    return m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]


def sample_points(truth: np.ndarray, m: np.ndarray, label_shape: tuple[int, int], outside: int) -> np.ndarray:
    """Point-sample an SEM-resolution id map on the label grid (as QEMSCAN measures).

    Each label pixel takes the value of the SEM pixel nearest to ``M @ [x, y, 1]``
    (round half up); points outside the SEM frame take ``outside``.

    Parameters
    ----------
    truth : (H, W) uint8 ndarray
    m : (3, 3) float ndarray
        ``label_to_sem``.
    label_shape : (h, w)
    outside : int

    Returns
    -------
    (h, w) uint8 ndarray
    """
    xs, ys = label_points(m, label_shape)
    xi = np.floor(xs + 0.5).astype(np.int64)
    yi = np.floor(ys + 0.5).astype(np.int64)
    ok = (xi >= 0) & (xi < truth.shape[1]) & (yi >= 0) & (yi < truth.shape[0])
    out = np.full(label_shape, outside, dtype=np.uint8)
    out[ok] = truth[yi[ok], xi[ok]]
    return out


def working_matrix(m: np.ndarray, sem_scale: int) -> np.ndarray:
    """``label_to_sem`` for a working grid with ``sem_scale`` pixels per label pixel.

    Working pixel ``j`` covers label coordinates ``(j + 0.5) / s - 0.5`` (label pixel
    ``k`` is split into working pixels ``k*s .. k*s + s - 1``).
    """
    s = float(sem_scale)
    w = np.array([[1.0 / s, 0.0, 0.5 / s - 0.5], [0.0, 1.0 / s, 0.5 / s - 0.5], [0.0, 0.0, 1.0]])
    return np.asarray(m, float) @ w


def sem_on_label_grid(
    sem: np.ndarray,
    m: np.ndarray,
    label_shape: tuple[int, int],
    *,
    sem_scale: int = 1,
    border_value: float = 0.0,
) -> np.ndarray:
    """Resample the SEM onto the label grid (or a ``sem_scale`` x finer working grid).

    The SEM is first box-averaged over one output pixel's footprint (odd box of about
    ``|det M|^(1/2) / sem_scale`` SEM pixels, so fine texture is averaged out rather than
    aliased), then sampled bilinearly at ``M @ [x, y, 1]`` (``cv2.warpAffine`` with
    ``WARP_INVERSE_MAP``: destination pixel (x, y) reads the source at M (x, y)).

    Parameters
    ----------
    sem : (H, W) uint8 or float ndarray
    m : (3, 3) float ndarray
        ``label_to_sem``.
    label_shape : (h, w)
        Label grid shape.
    sem_scale : int
        Output pixels per label pixel (>= 1).
    border_value : float
        Value of output pixels whose footprint lies outside the SEM.

    Returns
    -------
    (h * sem_scale, w * sem_scale) float32 ndarray

    Raises
    ------
    UserError
        If ``sem`` is not 2-D or ``sem_scale`` < 1.
    """
    if sem.ndim != 2:
        raise UserError(f"sem_on_label_grid needs a 2-D greyscale image, got shape {sem.shape}")
    if int(sem_scale) < 1:
        raise UserError(f"sem_scale must be >= 1, got {sem_scale}")
    mw = working_matrix(m, int(sem_scale))
    step = float(np.sqrt(abs(np.linalg.det(mw[:2, :2]))))
    box = max(1, int(round(step)) // 2 * 2 + 1)
    src = sem.astype(np.float32, copy=False)
    if box > 1:
        src = cv2.blur(src, (box, box), borderType=cv2.BORDER_REFLECT)
    out_shape = (int(label_shape[0]) * int(sem_scale), int(label_shape[1]) * int(sem_scale))
    return cv2.warpAffine(
        src,
        mw[:2],
        (out_shape[1], out_shape[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(border_value),
    )


def inside_sem(
    m: np.ndarray, label_shape: tuple[int, int], sem_shape: tuple[int, int], *, sem_scale: int = 1
) -> np.ndarray:
    """Output pixels of :func:`sem_on_label_grid` whose centre maps inside the SEM frame.

    Returns
    -------
    (h * sem_scale, w * sem_scale) bool ndarray
    """
    mw = working_matrix(m, int(sem_scale))
    shape = (int(label_shape[0]) * int(sem_scale), int(label_shape[1]) * int(sem_scale))
    xs, ys = label_points(mw, shape)
    return (xs >= -0.5) & (xs <= sem_shape[1] - 0.5) & (ys >= -0.5) & (ys <= sem_shape[0] - 0.5)
