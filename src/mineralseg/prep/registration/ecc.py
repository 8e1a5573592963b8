"""Fine alignment: affine ECC on the label map rendered as an SEM-like image.

The SEM is area-downscaled to about the label resolution, the label map is rendered as
an intensity image (each id gets the median SEM grey of its pixels under the outline
alignment) and a full affine transform is refined with OpenCV's ECC maximisation, coarse
to fine on an image pyramid, after a rotation search over the accepted range at the
coarsest level. A last pass renders each id with its mean grey under the refined
alignment and refines once more without smoothing.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import cv2
import numpy as np

from mineralseg.errors import DataError
from mineralseg.prep.registration.geometry import (
    corner_points,
    rotation_matrix,
    small_to_full,
    translation_matrix,
)
from mineralseg.prep.registration.scoring import sample_stride, strided_matrix, warp_to_grid

log = logging.getLogger(__name__)

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


def render_labels(
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
    step = sample_stride(labels.shape)
    sub = labels[::step, ::step]
    grey, valid = warp_to_grid(image, strided_matrix(label_to_image, step), sub.shape)
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


def _half(img: np.ndarray) -> np.ndarray:
    """Area average by 2 (odd last row / column dropped); pixel u -> 2u + 0.5."""
    h2, w2 = img.shape[0] // 2, img.shape[1] // 2
    return img[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).mean(axis=(1, 3), dtype=np.float32)


def _half_mask(mask: np.ndarray) -> np.ndarray:
    h2, w2 = mask.shape[0] // 2, mask.shape[1] // 2
    return mask[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).all(axis=(1, 3))


def _level_matrix(level: int) -> np.ndarray:
    """Pyramid level pixel -> level-0 pixel."""
    return small_to_full(2.0**level)


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
    pts = corner_points(shape)
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


def fine_alignment(
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

    template, tmask = render_labels(labels, image, warp0, ignore_index)
    levels = pyramid(template, tmask, coarsest)

    # rotation search about the sample centre at the coarsest level
    t_c, m_c, i_c = levels[coarsest]
    a_c = _level_matrix(coarsest)
    cx, cy = centre
    best: tuple[float, np.ndarray] | None = None
    for turn_deg in turns_deg:
        turn = translation_matrix(cx, cy) @ rotation_matrix(turn_deg) @ translation_matrix(-cx, -cy)
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
    template, tmask = render_labels(labels, image, warp, ignore_index, statistic=FINAL_STATISTIC)
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


