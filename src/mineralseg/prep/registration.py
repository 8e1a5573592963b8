"""Automatic affine registration of a label map (QEMSCAN) onto an SEM image.

The original study aligned each pair by hand (largest contour, crop, a hand-found
rotation of 0.48 degrees and hand-found offsets). Here the transform is estimated in
two steps and scored:

1. **coarse**: the sample outline in both images (:mod:`mineralseg.prep.outline`) gives
   a similarity transform from its moments: centroids, sqrt(area) ratio for the scale,
   principal axes for the rotation when the outline is elongated (for round or square
   sections the rotation is left to step 2).
2. **fine**: the SEM is area-downscaled to about the label resolution, the label map is
   rendered as an intensity image (each id gets the median SEM grey of its pixels under
   the outline alignment) and a full affine transform is refined with OpenCV's ECC
   maximisation, coarse to fine on an image pyramid, after a rotation search over the
   accepted range at the coarsest level. A last pass renders each id with its mean grey
   under the refined alignment and refines once more without smoothing.
3. **score**: normalised mutual information between label ids and SEM grey levels on the
   label grid, for the naive "stretch the map over the image" alignment, the outline
   alignment and the final one.

Geometry (see docs/CONTRACTS.md): ``label_to_sem`` is a 3x3 matrix ``M`` with
``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]``, x = column, y = row, pixel centres at
integer coordinates, in full-resolution SEM pixels. An image area-downscaled by a factor
``f`` (output pixel ``i`` covers source ``[i f, (i + 1) f)``) has its pixel centre ``u``
at ``x_sem = (u + 0.5) f - 0.5``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

import mineralseg.io as mio
from mineralseg.errors import DataError, UserError
from mineralseg.prep.outline import OutlineShape, label_sample_mask, outline_shape, sem_sample_mask

__all__ = [
    "RegistrationResult",
    "affine_decomposition",
    "corner_error",
    "coarse_similarity",
    "register_labels_to_sem",
    "registration_score",
    "sem_to_label_grid",
]

log = logging.getLogger(__name__)

# Longest side of the SEM image used to find the outline: an outline's moments are
# averages over ~10^5 boundary-free pixels at this size, precise to well under 0.1 %.
COARSE_SIZE = 1024
# The one full-resolution pass downscales the SEM by an integer factor to at least this
# many times finer than the label map's pixel (guessed from the image sizes), so that
# the fine image can be derived from it even when the SEM field is up to 1.5 times
# wider than the map's.
INTERMEDIATE_MARGIN = 1.5
# Outlines whose sqrt(eigenvalue ratio) is below this are too round or square for
# their principal axis to give the rotation: a pore of 1 % of the area cut into a
# corner of a 4:3 rectangle turns its axis by about 2 degrees.
ROTATION_ELONGATION = 1.3
# Largest relative difference of elongation (and of compactness) between the two
# outlines of one section; a 2 % anisotropic scale and ragged edges stay far below.
MAX_SHAPE_MISMATCH = 0.15
# Smallest overlap (intersection over union) of the two outlines after the coarse
# transform; a disk and a square of equal area overlap 0.83, a correct match 0.96+.
MIN_OUTLINE_IOU = 0.92
# Coarsest pyramid level of the fine step keeps at least this many pixels on its short
# side: enough grains for a unique correlation optimum.
PYRAMID_MIN_SIDE = 96
# Step of the rotation search at the coarsest level: half a degree moves the border of
# a 100-pixel image by under a pixel, well inside ECC's basin of convergence.
ROTATION_STEP_DEG = 0.5
# ECC iterations per call; calls repeat until the map corners move less than
# CONVERGENCE_TOL_PX label pixels or MAX_ITERATIONS_PER_LEVEL is reached.
ECC_CHUNK = 10
SEARCH_ITERATIONS = 30
MAX_ITERATIONS_PER_LEVEL = 100
CONVERGENCE_TOL_PX = 0.01
# Pyramid levels before the final pass only need to hand over a start well inside the
# next level's basin: a tenth of their own pixel.
LEVEL_TOL_PX = 0.1
# Gaussian filter of ECC (pixels) on the pyramid: widens the basin of convergence.
ECC_GAUSS_SIZE = 5
# The final pass runs unfiltered on a rendering by class means: a filter spreads each
# wrong label id over its neighbours and so shrinks the rendered contrast next to the
# (uncorrupted) mount, which pulls the outline; measured on synthetic maps with 10-30 %
# wrong ids, corner errors drop 2-3x against a 5-pixel filter, and a little on clean maps.
FINAL_GAUSS_SIZE = 1
FINAL_STATISTIC = "mean"
# Grey-level bins of the mutual-information score.
SCORE_BINS = 64
# Label pixels sampled for class grey levels and the score: a 4,700 px map has 22
# million, far more than needed for 256 class statistics or a 256 x 64 histogram.
STAT_SAMPLES = 4_000_000
# Longest side of the finest pyramid level refined by default: on a 4,700 px map the
# half-size level is 4x cheaper than full size and gave a corner error of 0.008 label
# pixels against 0.006 at full size (synthetic, 1/32-pixel interpolation of OpenCV).
MAX_FINE_SIDE = 2500
# Levels that differ by less than this from 1 are treated as "no resampling".
UNIT_FACTOR_TOL = 1e-3


@dataclass
class RegistrationResult:
    """The estimated ``label_to_sem`` transform and how good it is.

    Attributes
    ----------
    matrix : (3, 3) float64 ndarray
        ``label_to_sem``: label pixel -> full-resolution SEM pixel (see module doc).
    score_before, score_coarse, score_after : float
        Normalised mutual information (0 = independent, 1 = one determines the other)
        of label ids and SEM grey on the label grid, for the naive alignment (the label
        map stretched over the whole SEM image), the outline (coarse) alignment and the
        final alignment.
    correlation : float
        ECC correlation coefficient of the final refinement (-1..1).
    method : str
        How the transform was found.
    sem_factor : float
        Full-resolution SEM pixels per pixel of the image the fine step used.
    iterations : int
        ECC iterations run in total (rotation search included).
    converged : bool
        The last ECC iterations moved the map corners by less than
        ``CONVERGENCE_TOL_PX`` label pixels.
    coarse_matrix : (3, 3) float64 ndarray
        The outline (coarse) transform, for diagnostics.
    """

    matrix: np.ndarray
    score_before: float
    score_coarse: float
    score_after: float
    correlation: float
    method: str
    sem_factor: float
    iterations: int
    converged: bool
    coarse_matrix: np.ndarray = field(repr=False)

    @property
    def scale(self) -> float:
        """SEM pixels per label pixel, sqrt(|det|) of the linear part."""
        return affine_decomposition(self.matrix)["scale"]

    @property
    def rotation_deg(self) -> float:
        """Rotation of the label x axis in the SEM image (degrees, towards +y)."""
        return affine_decomposition(self.matrix)["rotation_deg"]

    @property
    def translation(self) -> tuple[float, float]:
        """SEM position ``(x, y)`` of the label pixel (0, 0)."""
        return float(self.matrix[0, 2]), float(self.matrix[1, 2])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``label_to_sem`` is the 3x3 matrix as nested lists."""
        parts = affine_decomposition(self.matrix)
        return {
            "label_to_sem": np.asarray(self.matrix, dtype=float).tolist(),
            "coarse_label_to_sem": np.asarray(self.coarse_matrix, dtype=float).tolist(),
            "method": self.method,
            "score": "normalised mutual information of label ids and SEM grey (0..1)",
            "score_before": self.score_before,
            "score_coarse": self.score_coarse,
            "score_after": self.score_after,
            "correlation": self.correlation,
            "sem_factor": self.sem_factor,
            "iterations": self.iterations,
            "converged": self.converged,
            **parts,
            "translation": list(self.translation),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


# --------------------------------------------------------------------------- geometry


def _small_to_full(factor: float) -> np.ndarray:
    """Matrix: pixel centre of an image area-downscaled by ``factor`` -> full pixel."""
    f = float(factor)
    return np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])


def _full_to_small(factor: float) -> np.ndarray:
    return np.linalg.inv(_small_to_full(factor))


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _rotation(angle_deg: float, scale: float = 1.0) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[scale * c, -scale * s, 0.0], [scale * s, scale * c, 0.0], [0.0, 0.0, 1.0]])


def _as_matrix(m: Any) -> np.ndarray:
    a = np.asarray(m, dtype=float)
    if a.shape == (2, 3):
        a = np.vstack([a, [0.0, 0.0, 1.0]])
    if a.shape != (3, 3):
        raise UserError(f"label_to_sem must be a 3x3 (or 2x3) matrix, got shape {a.shape}")
    return a


def _corners(shape: Sequence[int]) -> np.ndarray:
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
    est, true = _as_matrix(m_est), _as_matrix(m_true)
    pts = _corners(label_shape)
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
    a = _as_matrix(m)[:2, :2]
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


# --------------------------------------------------------------------------- coarse step


def coarse_similarity(
    sem_outline: OutlineShape,
    label_outline: OutlineShape,
    *,
    max_rotation_deg: float = 3.0,
) -> tuple[np.ndarray, bool]:
    """Similarity transform label -> SEM from the moments of the two sample outlines.

    Parameters
    ----------
    sem_outline : OutlineShape
        Outline of the section in full-resolution SEM pixels.
    label_outline : OutlineShape
        Outline of the section in label pixels.
    max_rotation_deg : float
        Largest rotation accepted between elongated outlines.

    Returns
    -------
    matrix : (3, 3) ndarray
        ``label_to_sem`` mapping centroid to centroid, scaled by the sqrt(area) ratio and
        rotated by the difference of principal axes for elongated outlines.
    rotation_from_outline : bool
        True when the rotation comes from the principal axes: both outlines are
        elongated (sqrt eigenvalue ratio >= 1.3) and the axes differ by at most
        ``max_rotation_deg``. Otherwise the rotation is 0, left to the fine step.

    Raises
    ------
    DataError
        "outlines cannot be matched" when elongation or compactness differ by more than
        15 %.
    """
    e_sem, e_lab = sem_outline.elongation, label_outline.elongation
    if abs(e_sem / e_lab - 1.0) > MAX_SHAPE_MISMATCH:
        raise DataError(
            f"outlines cannot be matched: the SEM sample has elongation {e_sem:.3f} (major/minor axis), "
            f"the label map's {e_lab:.3f}"
        )
    k_sem, k_lab = sem_outline.compactness, label_outline.compactness
    if abs(k_sem / k_lab - 1.0) > MAX_SHAPE_MISMATCH:
        raise DataError(
            f"outlines cannot be matched: the SEM sample has compactness {k_sem:.3f}, the label map's "
            f"{k_lab:.3f} (1 = ellipse)"
        )
    scale = math.sqrt(sem_outline.area / label_outline.area)
    angle = 0.0
    if min(e_sem, e_lab) >= ROTATION_ELONGATION:
        angle = (sem_outline.orientation_deg - label_outline.orientation_deg + 90.0) % 180.0 - 90.0
        if abs(angle) > max_rotation_deg:
            log.info("outline axes differ by %.2f deg (> %g): rotation left to the fine step", angle, max_rotation_deg)
            angle = 0.0
    rotation_from_outline = angle != 0.0
    (cxs, cys), (cxl, cyl) = sem_outline.centroid, label_outline.centroid
    matrix = _translation(cxs, cys) @ _rotation(angle, scale) @ _translation(-cxl, -cyl)
    return matrix, rotation_from_outline


def _check_outline_overlap(sem_mask: np.ndarray, factor: float, label_mask: np.ndarray, m: np.ndarray) -> float:
    """IoU of the SEM outline (on a grid downscaled by ``factor``) and the mapped label outline."""
    to_small = (_full_to_small(factor) @ m)[:2]
    h, w = sem_mask.shape
    mapped = cv2.warpAffine(
        label_mask.astype(np.uint8) * 255, to_small, (w, h), flags=cv2.INTER_LINEAR, borderValue=0
    )
    mapped = mapped >= 128
    union = np.count_nonzero(mapped | sem_mask)
    iou = np.count_nonzero(mapped & sem_mask) / union if union else 0.0
    if iou < MIN_OUTLINE_IOU:
        raise DataError(
            f"outlines cannot be matched: after aligning centroids, areas and axes the SEM and label "
            f"outlines overlap only {iou:.3f} (intersection over union; at least {MIN_OUTLINE_IOU} expected)"
        )
    return float(iou)


# --------------------------------------------------------------------------- images


def _shape_of(sem: Any) -> tuple[int, int]:
    shape = tuple(getattr(sem, "shape", ()))
    if len(shape) != 2:
        raise DataError(f"SEM image must be 2-D greyscale, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _downscale(src: Any, factor: float) -> np.ndarray:
    """Area-average ``src`` by ``factor`` (>= 1) as float32; factor ~1 just reads it."""
    if factor < 1.0 + UNIT_FACTOR_TOL:
        h, w = _shape_of(src)
        return np.asarray(src[0:h, 0:w], dtype=np.float32)
    return np.asarray(mio.downscale_area(src, factor), dtype=np.float32)


def _warp_to_grid(image: np.ndarray, grid_to_image: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
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


def _sample_stride(shape: Sequence[int]) -> int:
    """Grid step that leaves about STAT_SAMPLES label pixels for grey-level statistics."""
    n = int(shape[0]) * int(shape[1])
    return max(1, int(math.ceil(math.sqrt(n / STAT_SAMPLES))))


def _strided(grid_to_image: np.ndarray, step: int) -> np.ndarray:
    """``grid_to_image`` for the sub-grid of every ``step``-th label pixel."""
    return grid_to_image @ np.diag([float(step), float(step), 1.0])


def _render_labels(
    labels: np.ndarray,
    image: np.ndarray,
    label_to_image: np.ndarray,
    ignore_index: int | None,
    *,
    statistic: str = "median",
) -> tuple[np.ndarray, np.ndarray]:
    """Label map as an image like ``image``: each id gets a grey level of its pixels.

    The grey levels are read from ``image`` at the label pixels (every k-th pixel on
    large maps) through ``label_to_image``. ``statistic="median"`` is robust to a rough
    alignment (grain borders mixed in); ``"mean"`` is the least-squares predictor of the
    grey given the id: under a good alignment it keeps edges unbiased even when ids are
    partly wrong (a median of a mixture is not its mean, and that mismatch at a long
    edge such as the sample outline shifts it).

    Returns the float32 rendering of shape ``labels.shape`` and the bool mask of known
    (not ``ignore_index``) pixels.
    """
    step = _sample_stride(labels.shape)
    sub = labels[::step, ::step]
    grey, valid = _warp_to_grid(image, _strided(label_to_image, step), sub.shape)
    if ignore_index is not None:
        valid &= sub != ignore_index
    values = grey[valid].astype(np.float64)
    ids = sub[valid].astype(np.int64)
    counts = np.bincount(ids, minlength=256)
    overall = np.float32(values.mean()) if values.size else np.float32(0)
    if statistic == "mean":
        lut = (np.bincount(ids, weights=values, minlength=256) / np.maximum(counts, 1)).astype(np.float32)
    else:
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        bins = 1024
        q = np.clip(np.rint((values - lo) / max(hi - lo, 1e-12) * (bins - 1)), 0, bins - 1).astype(np.int64)
        hist = np.bincount(ids * bins + q, minlength=256 * bins).reshape(256, bins)
        median_bin = np.argmax(np.cumsum(hist, axis=1) >= (counts[:, None] + 1) // 2, axis=1)
        lut = (lo + median_bin * (hi - lo) / (bins - 1)).astype(np.float32)
    lut[counts == 0] = overall
    rendered = lut[labels]
    template_mask = np.ones(labels.shape, dtype=bool) if ignore_index is None else labels != ignore_index
    rendered[~template_mask] = overall
    return rendered, template_mask


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
    ignore_index: int | None = 255,
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
    step = _sample_stride(labels.shape)
    sub = np.asarray(labels)[::step, ::step]
    grid_to_small = _strided(_full_to_small(factor) @ _as_matrix(label_to_sem), step)
    grey, valid = _warp_to_grid(sem_small, grid_to_small, sub.shape)
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
    out_to_label = _small_to_full(1.0 / k)
    grid_to_small = _full_to_small(factor) @ _as_matrix(label_to_sem) @ out_to_label
    shape = (int(label_shape[0]) * k, int(label_shape[1]) * k)
    values, valid = _warp_to_grid(np.asarray(sem_small, dtype=np.float32), grid_to_small, shape)
    values[~valid] = np.nan
    return values


# --------------------------------------------------------------------------- fine step


def _half(img: np.ndarray) -> np.ndarray:
    """Area average by 2 (odd last row / column dropped); pixel u -> 2u + 0.5."""
    h2, w2 = img.shape[0] // 2, img.shape[1] // 2
    return img[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).mean(axis=(1, 3), dtype=np.float32)


def _half_mask(mask: np.ndarray) -> np.ndarray:
    h2, w2 = mask.shape[0] // 2, mask.shape[1] // 2
    return mask[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).all(axis=(1, 3))


def _level_matrix(level: int) -> np.ndarray:
    """Pyramid level pixel -> level-0 pixel."""
    return _small_to_full(2.0**level)


def _ecc(
    template: np.ndarray,
    tmask: np.ndarray,
    image: np.ndarray,
    warp: np.ndarray,
    iterations: int,
    gauss: int = ECC_GAUSS_SIZE,
) -> tuple[float, np.ndarray]:
    """Run exactly ``iterations`` affine ECC iterations; warp maps template -> image pixels."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(iterations), -1.0)
    w23 = np.ascontiguousarray(warp[:2], dtype=np.float32)
    if hasattr(cv2, "findTransformECCWithMask"):
        imask = np.full(image.shape, 255, dtype=np.uint8)
        rho, w23 = cv2.findTransformECCWithMask(
            template, image, tmask.astype(np.uint8) * 255, imask, w23, cv2.MOTION_AFFINE, criteria, gauss
        )
    else:  # OpenCV < 4.12: no template mask; unknown pixels carry the overall median
        rho, w23 = cv2.findTransformECC(template, image, w23, cv2.MOTION_AFFINE, criteria, None, gauss)
    return float(rho), np.vstack([w23.astype(np.float64), [0.0, 0.0, 1.0]])


def _corner_move(w_a: np.ndarray, w_b: np.ndarray, shape: Sequence[int], level: int) -> float:
    """Largest corner displacement between two level warps, in level-0 template pixels."""
    pts = _corners(shape)
    move = np.max(np.hypot(*((w_a - w_b) @ pts)[:2]))
    scale = math.sqrt(abs(np.linalg.det(w_b[:2, :2]))) or 1.0
    return float(move / scale * 2.0**level)


def _refine_level(
    template: np.ndarray,
    tmask: np.ndarray,
    image: np.ndarray,
    warp: np.ndarray,
    level: int,
    *,
    tol_px: float,
    gauss: int = ECC_GAUSS_SIZE,
) -> tuple[np.ndarray, float, int, bool]:
    """Chunked ECC on one pyramid level until the corners move less than ``tol_px`` label pixels."""
    total, rho, converged = 0, float("nan"), False
    while total < MAX_ITERATIONS_PER_LEVEL:
        n = min(ECC_CHUNK, MAX_ITERATIONS_PER_LEVEL - total)
        rho, new = _ecc(template, tmask, image, warp, n, gauss)
        total += n
        move = _corner_move(warp, new, template.shape, level)
        warp = new
        if move < tol_px:
            converged = True
            break
    return warp, rho, total, converged


def _pyramid_levels(template_shape: Sequence[int], max_fine_side: int | None) -> tuple[int, int]:
    """(finest, coarsest) pyramid level indices for a template of this shape."""
    short, long = min(template_shape), max(template_shape)
    coarsest = max(0, int(math.floor(math.log2(max(short / PYRAMID_MIN_SIDE, 1.0)))))
    finest = 0
    if max_fine_side is not None and long > max_fine_side:
        finest = min(coarsest, int(math.ceil(math.log2(long / max_fine_side))))
    return finest, coarsest


def _fine_alignment(
    labels: np.ndarray,
    image: np.ndarray,
    warp0: np.ndarray,
    centre: tuple[float, float],
    *,
    ignore_index: int | None,
    turns_deg: Sequence[float],
    max_fine_side: int | None,
) -> tuple[np.ndarray, float, int, bool]:
    """Refine the label -> image warp; returns (warp, correlation, iterations, converged)."""
    finest, coarsest = _pyramid_levels(labels.shape, max_fine_side)
    iterations = 0
    images = [image]
    for _ in range(coarsest):
        images.append(_half(images[-1]))

    def pyramid(template: np.ndarray, tmask: np.ndarray, top: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        levels = [(template, tmask, images[0])]
        for level in range(1, top + 1):
            t, m, _ = levels[-1]
            levels.append((_half(t), _half_mask(m), images[level]))
        return levels

    template, tmask = _render_labels(labels, image, warp0, ignore_index)
    levels = pyramid(template, tmask, coarsest)

    # rotation search about the sample centre at the coarsest level
    t_c, m_c, i_c = levels[coarsest]
    a_c = _level_matrix(coarsest)
    cx, cy = centre
    best: tuple[float, np.ndarray] | None = None
    for turn_deg in turns_deg:
        turn = _translation(cx, cy) @ _rotation(turn_deg) @ _translation(-cx, -cy)
        start = np.linalg.inv(a_c) @ warp0 @ turn @ a_c
        try:
            rho, found = _ecc(t_c, m_c, i_c, start, SEARCH_ITERATIONS)
        except cv2.error:
            continue
        finally:
            iterations += SEARCH_ITERATIONS
        if best is None or rho > best[0]:
            best = (rho, a_c @ found @ np.linalg.inv(a_c))
    if best is None:
        raise DataError(
            f"registration failed: the label map {labels.shape} and the SEM image {image.shape} "
            "do not correlate near the outline alignment"
        )
    warp = best[1]

    rho, converged = best[0], False
    for level in range(coarsest, finest - 1, -1):
        t, m, i = levels[level]
        a = _level_matrix(level)
        try:
            w_level, rho, n, converged = _refine_level(
                t, m, i, np.linalg.inv(a) @ warp @ a, level, tol_px=LEVEL_TOL_PX * 2.0**level
            )
        except cv2.error as exc:
            log.warning("ECC stopped at pyramid level %d: %s", level, str(exc).strip().splitlines()[-1])
            converged = False
            break
        iterations += n
        warp = a @ w_level @ np.linalg.inv(a)

    # render again under the refined alignment, then refine on the finest level
    template, tmask = _render_labels(labels, image, warp, ignore_index, statistic=FINAL_STATISTIC)
    t, m, i = pyramid(template, tmask, finest)[finest]
    a = _level_matrix(finest)
    try:
        w_level, rho, n, converged = _refine_level(
            t, m, i, np.linalg.inv(a) @ warp @ a, finest, tol_px=CONVERGENCE_TOL_PX, gauss=FINAL_GAUSS_SIZE
        )
        iterations += n
        warp = a @ w_level @ np.linalg.inv(a)
    except cv2.error as exc:
        log.warning("ECC stopped in the final pass: %s", str(exc).strip().splitlines()[-1])
        converged = False
    return warp, float(rho), iterations, converged


# --------------------------------------------------------------------------- main entry


def _stretch_matrix(sem_shape: Sequence[int], label_shape: Sequence[int]) -> np.ndarray:
    """The naive alignment: the label map stretched over the whole SEM image."""
    sx = sem_shape[1] / label_shape[1]
    sy = sem_shape[0] / label_shape[0]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def register_labels_to_sem(
    sem: Any,
    labels: np.ndarray,
    *,
    background_ids: Iterable[int],
    sem_downscale: float | None = None,
    sem_prescale: float = 1.0,
    ignore_index: int | None = 255,
    max_rotation_deg: float = 3.0,
    coarse_size: int = COARSE_SIZE,
    max_fine_side: int | None = MAX_FINE_SIDE,
) -> RegistrationResult:
    """Estimate the affine ``label_to_sem`` transform of a label map onto its SEM image.

    Parameters
    ----------
    sem : (H, W) array-like
        Greyscale SEM image: a numpy array or a lazy image with ``.shape`` and 2-D
        slicing (:func:`mineralseg.io.open_image`). Read once, in strips, by
        :func:`mineralseg.io.downscale_area`. The mount is darker than the section.
    labels : (h, w) uint8 ndarray
        Repaired label ids of the same section, typically 8 to 20 times coarser.
    background_ids : iterable of int
        Ids of the mount outside the section.
    sem_downscale : float, optional
        Full-resolution SEM pixels per pixel of the image the fine step works on.
        Default: the label-to-SEM scale found from the outlines (the SEM at the label
        resolution).
    sem_prescale : float
        ``sem`` is already area-downscaled by this factor from the full-resolution SEM
        (the returned matrix is still in full-resolution pixels).
    ignore_index : int or None
        Unknown label id (left out of outline, rendering and score).
    max_rotation_deg : float
        Rotation range searched (round sections) or accepted (elongated sections).
    coarse_size : int
        Longest side of the SEM image used to find the outline.
    max_fine_side : int or None
        Stop the pyramid at the first level whose longest side is at most this (time
        and memory of ECC grow with the map; precision on a large map is ample at half
        size). None: refine at full label size.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    DataError
        No section found in either image ("no sample found ..."), outlines of different
        shape ("outlines cannot be matched: ..."), or no correlation at all.
    UserError
        Invalid options (non-positive factors, label map not 2-D).

    Notes
    -----
    Cost: one pass over the SEM (an integer-factor area downscale), then work
    proportional to the label map: a few dozen ECC iterations, each a bilinear warp of
    an image of the (at most ``max_fine_side``) finest level. Measured on 2 CPU cores:
    a 4,700 px map against an SEM reduced to 7,000 px took about 30 s and 1.2 GB peak;
    the first pass over an 88,000 x 87,000 uint8 SEM in memory adds about 20 s.
    """
    sem_h, sem_w = _shape_of(sem)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise UserError(f"label map must be 2-D ids, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise UserError(f"label ids must lie in 0..255, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    if sem_prescale <= 0:
        raise UserError(f"sem_prescale must be positive, got {sem_prescale}")
    if sem_downscale is not None and sem_downscale < sem_prescale:
        raise UserError(f"sem_downscale={sem_downscale} is finer than the SEM given (sem_prescale={sem_prescale})")
    background_ids = [int(b) for b in background_ids]
    full_shape = (sem_h * sem_prescale, sem_w * sem_prescale)

    label_mask = label_sample_mask(labels, background_ids, ignore_index=ignore_index)
    label_outline = outline_shape(label_mask)

    # the one pass over the full image: a bit finer than the label resolution
    ratio = min(sem_h / labels.shape[0], sem_w / labels.shape[1])
    f_mid = float(max(1, math.floor(ratio / INTERMEDIATE_MARGIN)))  # integer: the fast exact path
    mid = _downscale(sem, f_mid)
    f_mid = 1.0 if f_mid < 1.0 + UNIT_FACTOR_TOL else f_mid

    # coarse: outlines
    g_coarse = float(max(1, math.ceil(max(mid.shape) / coarse_size)))
    coarse = _downscale(mid, g_coarse)
    g_coarse = 1.0 if g_coarse < 1.0 + UNIT_FACTOR_TOL else g_coarse
    factor_coarse = sem_prescale * f_mid * g_coarse
    try:
        sem_mask = sem_sample_mask(coarse)
    except DataError as exc:
        where = f"SEM of shape {(sem_h, sem_w)}, outline searched at 1/{factor_coarse:.3g} scale"
        raise DataError(f"{exc} ({where})") from None
    sem_outline = outline_shape(sem_mask).rescaled(factor_coarse)
    coarse_m, _ = coarse_similarity(sem_outline, label_outline, max_rotation_deg=max_rotation_deg)
    iou = _check_outline_overlap(sem_mask, factor_coarse, label_mask, coarse_m)
    log.info("outline match: scale %.4f, IoU %.4f", affine_decomposition(coarse_m)["scale"], iou)

    # fine: the SEM at about the label resolution
    if sem_downscale is not None:
        target = float(sem_downscale)
    else:
        target = max(affine_decomposition(coarse_m)["scale"], sem_prescale)
    g = target / (sem_prescale * f_mid)
    if g >= 1.0 - UNIT_FACTOR_TOL:
        fine = _downscale(mid, g)
        factor = sem_prescale * f_mid * (1.0 if g < 1.0 + UNIT_FACTOR_TOL else g)
    elif g > 0.8:  # the intermediate image is at most 25 % coarser than wanted: keep it
        fine, factor = mid, sem_prescale * f_mid
    else:  # the SEM field is much wider than the label map's: read the source again
        g_src = max(1.0, target / sem_prescale)
        fine = _downscale(sem, g_src)
        factor = sem_prescale * (1.0 if g_src < 1.0 + UNIT_FACTOR_TOL else g_src)
    del mid, coarse

    to_full = _small_to_full(factor)
    warp0 = np.linalg.inv(to_full) @ coarse_m
    centre = label_outline.centroid
    # candidate rotations: the whole accepted range, plus the outline's own estimate
    n_steps = int(math.floor(max_rotation_deg / ROTATION_STEP_DEG + 1e-9))
    angle0 = affine_decomposition(coarse_m)["rotation_deg"]
    turns = sorted({0.0} | {k * ROTATION_STEP_DEG - angle0 for k in range(-n_steps, n_steps + 1)})
    warp, rho, iterations, converged = _fine_alignment(
        labels, fine, warp0, centre, ignore_index=ignore_index, turns_deg=turns, max_fine_side=max_fine_side
    )
    matrix = to_full @ warp

    grey_range = tuple(np.percentile(fine, [0.1, 99.9]))
    scores = [
        registration_score(fine, factor, m, labels, ignore_index=ignore_index, grey_range=grey_range)
        for m in (_stretch_matrix(full_shape, labels.shape), coarse_m, matrix)
    ]
    method = "outline moments (similarity) + ECC affine on rendered labels"
    log.info("registration: NMI %.4f -> %.4f -> %.4f, ECC %.4f", *scores, rho)
    return RegistrationResult(
        matrix=matrix,
        score_before=scores[0],
        score_coarse=scores[1],
        score_after=scores[2],
        correlation=rho,
        method=method,
        sem_factor=float(factor),
        iterations=int(iterations),
        converged=bool(converged),
        coarse_matrix=coarse_m,
    )
