"""Outline masks and automatic label -> SEM registration on synthetic pairs with known truth."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from mineralseg.errors import DataError
from mineralseg.prep.outline import label_sample_mask, outline_shape, sem_sample_mask
from mineralseg.prep.registration import (
    RegistrationOptions,
    affine_decomposition,
    coarse_similarity,
    corner_error,
    register_labels_to_sem,
    registration_score,
    sem_to_label_grid,
)

BACKGROUND = 23
PORE = 0
# mineral id -> SEM grey: pores/mount dark, clays darker, quartz/albite mid-grey, pyrite bright
GREY = {BACKGROUND: 22.0, PORE: 28.0, 1: 70.0, 8: 88.0, 12: 96.0, 5: 112.0, 21: 124.0, 22: 235.0}
MINERALS = np.array([1, 8, 12, 5, 21, 22])
MINERAL_P = np.array([0.15, 0.15, 0.1, 0.25, 0.33, 0.02])


def synthetic_labels(rng: np.random.Generator, shape: tuple[int, int], sample: str = "round", grain: float = 7.0):
    """Label map with a round or rectangular section of Voronoi grains and pores.

    Returns the ids (uint8) and the grain index of each pixel (for per-grain texture).
    """
    h, w = shape
    n_seeds = int(h * w / grain**2)
    seeds = rng.uniform([0, 0], [h, w], size=(n_seeds, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    _, grain_idx = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]))
    grain_idx = grain_idx.reshape(h, w)
    ids = rng.choice(MINERALS, size=n_seeds, p=MINERAL_P).astype(np.uint8)[grain_idx]
    pores = rng.uniform([0, 0], [h, w], size=(n_seeds // 4, 2))
    _, pore_d = cKDTree(pores).query(np.column_stack([yy.ravel(), xx.ravel()]))
    ids[pore_d.reshape(h, w) < rng.uniform(0.8, 1.8)] = PORE
    cy, cx = (h - 1) / 2 + rng.uniform(-0.03, 0.03) * h, (w - 1) / 2 + rng.uniform(-0.03, 0.03) * w
    if sample == "round":
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.42 * min(h, w)) ** 2
    else:
        inside = (np.abs(yy - cy) <= 0.3 * h) & (np.abs(xx - cx) <= 0.4 * w)
    ids[~inside] = BACKGROUND
    return ids, grain_idx


def true_transform(label_shape, sem_shape, *, scale, rot_deg, shift_frac, aniso=0.0) -> np.ndarray:
    """label -> SEM: centre to (shifted) centre, rotated, scaled (optionally anisotropic)."""
    (h, w), (hs, ws) = label_shape, sem_shape
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    lin = np.array([[c, -s], [s, c]]) @ np.diag([scale * (1 + aniso), scale * (1 - aniso)])
    centre_l = np.array([(w - 1) / 2, (h - 1) / 2])
    centre_s = np.array([(ws - 1) / 2 + shift_frac[0] * ws, (hs - 1) / 2 + shift_frac[1] * hs])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = centre_s - lin @ centre_l
    return m


def synthetic_sem(rng, ids, grain_idx, m_true, sem_shape) -> np.ndarray:
    """Nearest-label SEM through ``m_true``: grey per id, per-grain shade, texture, noise, blur."""
    grey_lut = np.zeros(256, np.float32)
    for k, v in GREY.items():
        grey_lut[k] = v
    shade = rng.normal(0, 4, size=grain_idx.max() + 1).astype(np.float32)
    label_grey = grey_lut[ids] + np.where(np.isin(ids, [BACKGROUND, PORE]), 0, shade[grain_idx]).astype(np.float32)
    hs, ws = sem_shape
    sem = cv2.warpAffine(
        label_grey,
        m_true[:2],
        (ws, hs),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=GREY[BACKGROUND],
    )
    texture = rng.normal(0, 6, size=(hs // 16 + 1, ws // 16 + 1)).astype(np.float32)
    sem += cv2.resize(texture, (ws, hs), interpolation=cv2.INTER_LINEAR)
    sem += rng.standard_normal(sem.shape, dtype=np.float32) * 10
    sem = cv2.GaussianBlur(sem, (0, 0), 1.0)
    return np.clip(sem, 0, 255).astype(np.uint8)


def make_pair(
    seed,
    *,
    sample="round",
    label_shape=(256, 288),
    ratio=12.0,
    rot_deg=1.0,
    shift_frac=(0.02, -0.03),
    scale_change=0.01,
    aniso=0.0,
):
    """(label ids, SEM uint8, true label_to_sem) with the SEM ``ratio`` times finer."""
    rng = np.random.default_rng(seed)
    ids, grain_idx = synthetic_labels(rng, label_shape, sample)
    scale = ratio * (1 + scale_change)
    sem_shape = (int(label_shape[0] * ratio * 1.15), int(label_shape[1] * ratio * 1.15))
    m_true = true_transform(label_shape, sem_shape, scale=scale, rot_deg=rot_deg, shift_frac=shift_frac, aniso=aniso)
    return ids, synthetic_sem(rng, ids, grain_idx, m_true, sem_shape), m_true


class StripReader:
    """Minimal lazy image: ``.shape``, ``.dtype`` and 2-D slicing only (like LazyImage)."""

    def __init__(self, array: np.ndarray):
        self._a = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return np.array(self._a[key])


# ----------------------------------------------------------------------------- outlines


def _disk_image(rng, shape=(600, 800), centre=(420.0, 290.0), radius=230.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    disk = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    img = np.where(disk, 120.0, 20.0) + rng.normal(0, 12, shape)
    pores = ((xx - centre[0] - 60) ** 2 + (yy - centre[1]) ** 2 <= 25**2) | (
        (np.abs(xx - centre[0] + 80) < 40) & (np.abs(yy - centre[1] - 50) < 6)
    )
    img[pores] = 20.0 + rng.normal(0, 12, np.count_nonzero(pores))
    img[(xx - centre[0] + 100) ** 2 + (yy - centre[1] + 100) ** 2 <= 8**2] = 250.0  # pyrite grain
    return np.clip(img, 0, 255).astype(np.uint8), disk


def test_sem_sample_mask_finds_the_disk_and_fills_pores():
    img, disk = _disk_image(np.random.default_rng(0))
    mask = sem_sample_mask(img)
    assert mask.dtype == bool and mask.shape == img.shape
    iou = np.count_nonzero(mask & disk) / np.count_nonzero(mask | disk)
    assert iou > 0.98
    shape = outline_shape(mask)
    assert shape.centroid == pytest.approx((420.0, 290.0), abs=1.0)
    assert shape.elongation < 1.02


@pytest.mark.parametrize("img", [np.full((300, 300), 37, np.uint8), np.zeros((200, 300), np.float32)])
def test_sem_sample_mask_rejects_constant_image(img):
    with pytest.raises(DataError, match="no sample found.*constant"):
        sem_sample_mask(img)


def test_sem_sample_mask_rejects_noise_without_sample():
    noise = np.random.default_rng(1).normal(50, 10, (400, 400))
    with pytest.raises(DataError, match="no sample found"):
        sem_sample_mask(noise)


def test_label_sample_mask_bridges_unknown_stripes_and_fills_pores():
    rng = np.random.default_rng(2)
    ids, _ = synthetic_labels(rng, (200, 240), "rect")
    truth = ids != BACKGROUND
    damaged = ids.copy()
    damaged[:, 100:104] = 255  # a seam stripe across sample and mount
    damaged[60:63, :] = 255
    mask = label_sample_mask(damaged, [BACKGROUND])
    assert np.count_nonzero(mask ^ truth) < 0.002 * mask.size
    with pytest.raises(DataError, match="every pixel is background"):
        label_sample_mask(np.full((50, 50), BACKGROUND, np.uint8), [BACKGROUND])
    with pytest.raises(DataError, match="no sample found"):
        tiny = np.full((200, 200), BACKGROUND, np.uint8)
        tiny[5:9, 5:9] = 3
        label_sample_mask(tiny, [BACKGROUND])


def test_outline_shape_orientation_elongation_and_rescale():
    mask = np.zeros((400, 500), np.uint8)
    box = cv2.boxPoints(((250.0, 200.0), (300.0, 100.0), 20.0)).astype(np.float32)
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    shape = outline_shape(mask.astype(bool))
    assert shape.orientation_deg == pytest.approx(20.0, abs=0.5)
    assert shape.elongation == pytest.approx(3.0, rel=0.02)
    assert shape.compactness == pytest.approx(12 / (4 * math.pi), rel=0.01)  # rectangle
    big = shape.rescaled(4.0)
    assert big.centroid == pytest.approx(((250 + 0.5) * 4 - 0.5, (200 + 0.5) * 4 - 0.5), abs=2.5)
    assert big.area == pytest.approx(shape.area * 16)
    assert big.orientation_deg == pytest.approx(shape.orientation_deg)


# ----------------------------------------------------------------------------- geometry helpers


def test_corner_error_and_affine_decomposition():
    m = true_transform((100, 200), (2000, 4000), scale=19.0, rot_deg=0.48, shift_frac=(0.01, -0.02))
    assert corner_error(m, m, (100, 200)) == pytest.approx(0.0, abs=1e-9)
    shifted = m.copy()
    shifted[0, 2] += 19.0 * 0.3  # 0.3 label pixels along x
    assert corner_error(shifted, m, (100, 200)) == pytest.approx(0.3, abs=1e-9)
    parts = affine_decomposition(m)
    assert parts["scale"] == pytest.approx(19.0)
    assert parts["rotation_deg"] == pytest.approx(0.48)
    assert parts["shear"] == pytest.approx(0.0, abs=1e-12)


def test_coarse_similarity_from_outline_moments():
    rng = np.random.default_rng(3)
    ids, _ = synthetic_labels(rng, (200, 260), "rect")
    lab_mask = ids != BACKGROUND
    m_true = true_transform(ids.shape, (2600, 3400), scale=10.2, rot_deg=1.5, shift_frac=(0.04, -0.05))
    sem_mask = cv2.warpAffine(lab_mask.astype(np.uint8), m_true[:2], (3400, 2600), flags=cv2.INTER_NEAREST) > 0
    small = cv2.resize(sem_mask.astype(np.float32), (340, 260), interpolation=cv2.INTER_AREA) > 0.5
    m0, from_outline = coarse_similarity(outline_shape(small).rescaled(10.0), outline_shape(lab_mask))
    assert from_outline  # 4:3 rectangle of elongation 1.33: the axes give the rotation
    assert corner_error(m0, m_true, ids.shape) < 2.0
    round_ids, _ = synthetic_labels(rng, (200, 260), "round")
    with pytest.raises(DataError, match="outlines cannot be matched"):
        coarse_similarity(outline_shape(small).rescaled(10.0), outline_shape(round_ids != BACKGROUND))


# ----------------------------------------------------------------------------- registration


EXTREMES = [
    # sample, ratio, rotation, shift (fraction of SEM size), scale change, anisotropy
    ("round", 19.0, 2.0, (0.05, -0.05), 0.02, 0.0),
    ("round", 8.0, -2.0, (-0.05, 0.05), -0.02, 0.003),
    ("rect", 12.0, 2.0, (0.05, 0.05), 0.02, -0.004),
    ("rect", 20.0, -2.0, (-0.05, -0.05), -0.02, 0.0),
    ("round", 14.0, 0.48, (0.012, -0.03), 0.0, 0.0),
]


@pytest.mark.parametrize(("sample", "ratio", "rot", "shift", "dscale", "aniso"), EXTREMES)
def test_registration_moves_no_corner_more_than_half_a_label_pixel(sample, ratio, rot, shift, dscale, aniso):
    ids, sem, m_true = make_pair(
        7, sample=sample, ratio=ratio, rot_deg=rot, shift_frac=shift, scale_change=dscale, aniso=aniso
    )
    result = register_labels_to_sem(sem, ids, background_ids=[BACKGROUND])
    err = corner_error(result.matrix, m_true, ids.shape)
    assert err < 0.5, f"corner error {err:.3f} label px"
    assert result.converged
    assert result.score_after > result.score_coarse > result.score_before
    assert result.scale == pytest.approx(ratio * (1 + dscale), rel=0.002)
    assert result.rotation_deg == pytest.approx(rot, abs=0.05)


def test_registration_of_lazy_prescaled_sem_with_unknown_pixels():
    ids, sem, m_true = make_pair(
        11, sample="rect", label_shape=(240, 300), ratio=16.0, rot_deg=-1.2, shift_frac=(-0.03, 0.04)
    )
    damaged = ids.copy()
    damaged[:, 150:154] = 255  # seams left unknown by the repair
    damaged[100:103, :] = 255
    half = cv2.resize(sem, (sem.shape[1] // 2, sem.shape[0] // 2), interpolation=cv2.INTER_AREA)  # exact 2x area mean
    reader = StripReader(half)
    result = register_labels_to_sem(
        reader, damaged, background_ids=[BACKGROUND], options=RegistrationOptions(sem_prescale=2.0)
    )
    assert reader.reads > 0
    assert corner_error(result.matrix, m_true, ids.shape) < 0.5
    assert result.sem_factor == pytest.approx(16.0, rel=0.03)
    record = json.loads(result.to_json())
    assert np.allclose(record["label_to_sem"], result.matrix)
    assert record["score_after"] == result.score_after and record["converged"] is result.converged
    assert record["scale"] == pytest.approx(16.0 * 1.01, rel=0.002)


def test_score_and_resampling_on_the_label_grid():
    ids, sem, m_true = make_pair(5, sample="round", label_shape=(160, 160), ratio=9.0, rot_deg=1.0)
    small = cv2.resize(sem, (sem.shape[1] // 9, sem.shape[0] // 9), interpolation=cv2.INTER_AREA).astype(np.float32)
    good = registration_score(small, 9.0, m_true, ids)
    off = m_true @ np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]])  # 3, 2 label pixels off
    assert good > registration_score(small, 9.0, off, ids) + 0.05
    grid = sem_to_label_grid(small, 9.0, m_true, ids.shape)
    assert grid.shape == ids.shape and np.isfinite(grid).all()
    means = {k: np.median(grid[ids == k]) for k in (BACKGROUND, 21, 22)}
    assert means[BACKGROUND] < 40 and 100 < means[21] < 150 and means[22] > 180
    fine = sem_to_label_grid(small, 9.0, m_true, ids.shape, sem_scale=3)
    assert fine.shape == (480, 480)
    # centre sub-pixels coincide with label centres (OpenCV warps to 1/32 pixel)
    assert np.allclose(fine[1::3, 1::3], grid, atol=0.02)
    outside = sem_to_label_grid(small, 9.0, m_true @ np.array([[1, 0, 400.0], [0, 1, 0], [0, 0, 1]]), ids.shape)
    assert np.isnan(outside[:, -1]).all()


def test_registration_rejects_sem_without_sample():
    ids, _, _ = make_pair(2, label_shape=(120, 120), ratio=8.0)
    blank = np.full((1100, 1100), 18, np.uint8)
    with pytest.raises(DataError, match="no sample found in the SEM"):
        register_labels_to_sem(blank, ids, background_ids=[BACKGROUND])


def test_registration_rejects_unmatchable_outlines():
    ids_round, sem_round, _ = make_pair(4, sample="round", label_shape=(150, 150), ratio=8.0)
    ids_long = np.full((150, 150), BACKGROUND, np.uint8)
    ids_long[40:110, 10:140] = ids_round[40:110, 10:140].clip(1, 22)  # a 13:7 strip of rock
    with pytest.raises(DataError, match="outlines cannot be matched"):
        register_labels_to_sem(sem_round, ids_long, background_ids=[BACKGROUND])
