"""Coarse placement: a similarity transform from the moments of the two sample outlines.

The sample outline in both images (:mod:`mineralseg.prep.outline`) gives centroids, the
sqrt(area) ratio for the scale and, when the outline is elongated, the principal axes
for the rotation (for round or square sections the rotation is left to the ECC step,
:mod:`mineralseg.prep.registration.ecc`).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from mineralseg.errors import DataError
from mineralseg.prep.outline import OutlineShape
from mineralseg.prep.registration.geometry import full_to_small, rotation_matrix, translation_matrix

log = logging.getLogger(__name__)

# Longest side of the SEM image used to find the outline: an outline's moments are
# averages over ~10^5 boundary-free pixels at this size, precise to well under 0.1 %.
COARSE_SIZE = 1024
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
    matrix = translation_matrix(cxs, cys) @ rotation_matrix(angle, scale) @ translation_matrix(-cxl, -cyl)
    return matrix, rotation_from_outline


def check_outline_overlap(sem_mask: np.ndarray, factor: float, label_mask: np.ndarray, m: np.ndarray) -> float:
    """IoU of the SEM outline (on a grid downscaled by ``factor``) and the mapped label outline."""
    to_small = (full_to_small(factor) @ m)[:2]
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

