"""Classical baselines: multi-Otsu + training-set mapping, pixel random forest."""

from __future__ import annotations

import numpy as np
import pytest

from mineralseg.errors import DataError, UserError
from mineralseg.models.classical import (
    MultiOtsuClassifier,
    RandomForestPixelClassifier,
    fit_otsu_mapping,
    multi_otsu_segment,
    multi_otsu_thresholds,
)

LEVELS = (40, 120, 210)  # three phases, well apart in brightness


def stripes(seed: int, size: int = 96, levels=LEVELS, noise: float = 8.0):
    """(image, brightness index) with random-width vertical stripes of the levels."""
    rng = np.random.default_rng(seed)
    idx = np.zeros((size, size), dtype=np.uint8)
    col = 0
    k = 0
    while col < size:
        w = int(rng.integers(6, 20))
        idx[:, col : col + w] = k % len(levels)
        col += w
        k += int(rng.integers(1, len(levels)))
    img = np.asarray(levels, dtype=np.float64)[idx] + rng.normal(0, noise, idx.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), idx


def two_textures(seed: int, size: int = 96):
    """Smooth phase (class 0) and speckled phase (class 1) of the same mean, 128.

    Class 1 lives in random disks; its pixels are 128 +- 60 at random, so the two
    phases have equal mean brightness and differ only in texture.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), dtype=np.uint8)
    for _ in range(5):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(10, 22))]
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    smooth = 128 + rng.normal(0, 3, lab.shape)
    speckle = 128 + 60 * rng.choice([-1.0, 1.0], lab.shape)
    img = np.where(lab == 1, speckle, smooth)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lab


# --------------------------------------------------------------------------- multi-Otsu
def test_multi_otsu_segment_orders_three_levels_by_brightness():
    img, idx = stripes(0)
    seg = multi_otsu_segment(img, 3)
    assert seg.dtype == np.uint8 and seg.shape == img.shape
    assert (seg == idx).mean() > 0.99
    t = multi_otsu_thresholds(img, 3)
    assert t.shape == (2,) and LEVELS[0] < t[0] < LEVELS[1] < t[1] < LEVELS[2]


def test_multi_otsu_mask_restricts_the_threshold_search():
    img, idx = stripes(1)
    img = img.copy()
    img[:, :10] = 250  # a bright frame that would become a class of its own
    mask = np.ones(img.shape, bool)
    mask[:, :10] = False
    t_masked = multi_otsu_thresholds(img, 3, masks=mask)
    assert LEVELS[0] < t_masked[0] < LEVELS[1] < t_masked[1] < LEVELS[2]
    seg = multi_otsu_segment(img, 3, mask=mask)
    assert (seg[mask] == idx[mask]).mean() > 0.99
    assert (seg[~mask] == 2).all()  # every pixel is classified, the frame as brightest


def test_fit_otsu_mapping_learns_label_of_each_brightness_class():
    # Label classes that are not in brightness order: dark = 2, middle = 0, bright = 1.
    to_label = np.array([2, 0, 1], dtype=np.uint8)
    pairs = [stripes(s) for s in (2, 3)]
    lut = fit_otsu_mapping([p[0] for p in pairs], [to_label[p[1]] for p in pairs], 3)
    assert lut.tolist() == [2, 0, 1]


def test_fit_otsu_mapping_skips_ignored_pixels_and_merges_same_brightness():
    img, idx = stripes(4)
    lab = np.array([0, 1, 1], dtype=np.uint8)[idx]  # two brightness classes -> one label
    lab[idx == 0] = 255  # the dark phase is unlabelled
    lut = fit_otsu_mapping([img], [lab], 3, n_labels=3)
    # dark: no labelled pixel -> the most frequent label (1); label 2 is never predicted
    assert lut.tolist() == [1, 1, 1]


def test_multi_otsu_classifier_generalises_to_a_new_image():
    to_label = np.array([2, 0, 1], dtype=np.uint8)
    train = [stripes(s) for s in (5, 6)]
    test_img, test_idx = stripes(7)
    clf = MultiOtsuClassifier(3).fit([t[0] for t in train], [to_label[t[1]] for t in train])
    pred = clf.predict(test_img)
    assert (pred == to_label[test_idx]).mean() > 0.99


def test_shared_thresholds_handle_tiles_with_few_phases():
    img, idx = stripes(8)
    clf_own = MultiOtsuClassifier(3).fit([img], [idx])
    clf_shared = MultiOtsuClassifier(3, shared_thresholds=True).fit([img], [idx])
    tile_img, tile_idx = stripes(9, levels=(LEVELS[0], LEVELS[2]))  # dark and bright only
    tile_idx = tile_idx * 2  # brightness indices 0 and 2 of the three-level scheme
    assert (clf_shared.predict(tile_img) == tile_idx).mean() > 0.99
    # the tile's own thresholds split one of its two phases in two
    assert (clf_own.predict(tile_img) == tile_idx).mean() < 0.9


def test_multi_otsu_errors():
    with pytest.raises(UserError, match="n_classes"):
        multi_otsu_segment(np.zeros((8, 8), np.uint8), 1)
    with pytest.raises(DataError, match="distinct grey levels"):
        multi_otsu_segment(np.full((8, 8), 7, np.uint8), 3)
    with pytest.raises(DataError, match="2-D"):
        multi_otsu_segment(np.zeros((8, 8, 3), np.uint8), 3)
    with pytest.raises(UserError, match="before fit"):
        MultiOtsuClassifier(3).predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"\(8, 8\).*\(8, 9\)"):
        fit_otsu_mapping([np.zeros((8, 8), np.uint8)], [np.zeros((8, 9), np.uint8)], 2)


# --------------------------------------------------------------------------- random forest
def test_random_forest_separates_equal_brightness_textures_otsu_does_not():
    train = [two_textures(s) for s in (10, 11)]
    test_img, test_lab = two_textures(12)
    assert abs(test_img[test_lab == 0].mean() - test_img[test_lab == 1].mean()) < 3  # same mean

    rf = RandomForestPixelClassifier(sigma_max=4, n_estimators=20, max_samples_per_class=1500, seed=0)
    rf.fit([t[0] for t in train], [t[1] for t in train])
    rf_acc = (rf.predict(test_img) == test_lab).mean()
    otsu = MultiOtsuClassifier(2).fit([t[0] for t in train], [t[1] for t in train])
    otsu_acc = (otsu.predict(test_img) == test_lab).mean()
    assert rf_acc > 0.95
    assert otsu_acc < 0.8


def test_random_forest_block_prediction_equals_whole_image():
    img, lab = two_textures(13, size=80)
    rf = RandomForestPixelClassifier(sigma_max=4, n_estimators=8, max_samples_per_class=500, seed=1).fit([img], [lab])
    assert rf.halo == 19  # 4 * 4 + 3 rows of context
    whole = rf.predict_proba(img, block_rows=img.shape[0])
    blocks = rf.predict_proba(img, block_rows=7)  # 12 blocks, each far smaller than the halo
    np.testing.assert_allclose(blocks, whole, atol=1e-6)
    assert (rf.predict(img, block_rows=7) == rf.predict(img)).all()
    np.testing.assert_allclose(whole.sum(axis=-1), 1.0, atol=1e-5)
    feats = rf.features(img)
    assert feats.shape == (80, 80, rf.n_features_) and feats.dtype == np.float32
    assert rf.n_features_ == 3 * 4  # scales 1, 2, 4 x (intensity, edges, 2 eigenvalues)


def test_random_forest_training_in_row_blocks_matches_one_block(monkeypatch):
    from mineralseg.models.classical import random_forest

    img, lab = two_textures(16, size=72)
    kw = dict(sigma_max=2, n_estimators=6, max_samples_per_class=400, seed=4)
    one = RandomForestPixelClassifier(**kw).fit([img], [lab]).predict_proba(img)
    monkeypatch.setattr(random_forest, "RF_BLOCK_PIXELS", 72 * 25)  # 25 rows - 2 x 11 halo = blocks of 3 rows
    blocks = RandomForestPixelClassifier(**kw).fit([img], [lab]).predict_proba(img)
    np.testing.assert_allclose(blocks, one, atol=1e-6)


def test_random_forest_sampling_budgets_and_ignored_pixels():
    img, idx = stripes(14, size=64)
    lab = idx.copy()
    lab[:, :16] = 255  # unlabelled columns are never drawn
    counts = np.bincount(lab[lab != 255], minlength=3)
    common = dict(sigma_max=2, n_estimators=5, max_samples_per_class=300, seed=2)

    strat = RandomForestPixelClassifier(**common).fit([img], [lab])
    assert 255 not in strat.classes_.tolist()
    drawn = np.array([strat.n_train_pixels_.get(c, 0) for c in range(3)])
    assert abs(drawn.sum() - 900) <= 3  # budget = 300 x 3 classes
    np.testing.assert_allclose(drawn / drawn.sum(), counts / counts.sum(), atol=0.01)  # class prior kept

    bal = RandomForestPixelClassifier(**common, sampling="balanced").fit([img], [lab])
    assert bal.n_train_pixels_ == {c: min(300, int(counts[c])) for c in range(3)}


def test_random_forest_is_seeded():
    img, lab = two_textures(15, size=64)
    a = RandomForestPixelClassifier(sigma_max=2, n_estimators=5, max_samples_per_class=200, seed=3)
    b = RandomForestPixelClassifier(sigma_max=2, n_estimators=5, max_samples_per_class=200, seed=3)
    np.testing.assert_array_equal(a.fit([img], [lab]).predict_proba(img), b.fit([img], [lab]).predict_proba(img))


def test_random_forest_errors():
    img = np.zeros((16, 16), np.uint8)
    rf = RandomForestPixelClassifier(sigma_max=2, n_estimators=2)
    with pytest.raises(DataError, match="no labelled pixel"):
        rf.fit([img], [np.full((16, 16), 255, np.uint8)])
    with pytest.raises(DataError, match="single class"):
        rf.fit([img], [np.zeros((16, 16), np.uint8)])
    with pytest.raises(DataError, match="integer class ids"):
        rf.fit([img], [np.zeros((16, 16), np.float32)])
    with pytest.raises(DataError, match="2 training images but 1 label maps"):
        rf.fit([img, img], [np.zeros((16, 16), np.uint8)])
    with pytest.raises(UserError, match="before fit"):
        rf.predict(img)
    with pytest.raises(UserError, match="sigma_min"):
        RandomForestPixelClassifier(sigma_min=4, sigma_max=2)
    with pytest.raises(UserError, match="sampling"):
        RandomForestPixelClassifier(sampling="uniform")
