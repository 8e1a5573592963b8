"""mineralseg.resize: the one tile/mask resize rule (centre-aligned nearest for masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from mineralseg.data.dataset import TileDataset
from mineralseg.data.manifest import load_manifest
from mineralseg.prep.tiling import cut_tiles
from mineralseg.resize import resize_image, resize_mask, resize_tile


def _exact_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Reference: output pixel j takes source pixel floor((j + 0.5) * n / size), in integers."""
    j = np.arange(size)
    rows = (2 * j + 1) * mask.shape[0] // (2 * size)
    cols = (2 * j + 1) * mask.shape[1] // (2 * size)
    return mask[np.ix_(rows, cols)]


def test_shrinking_by_three_takes_the_centre_of_each_block_not_its_corner():
    mask = np.arange(36, dtype=np.uint8).reshape(6, 6)
    out = resize_mask(mask, 2)
    np.testing.assert_array_equal(out, [[7, 10], [25, 28]])  # centres (1, 1), (1, 4), (4, 1), (4, 4)
    # OpenCV's plain INTER_NEAREST takes the top-left pixels instead: one pixel off its image
    plain = cv2.resize(mask, (2, 2), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(plain, [[0, 3], [18, 21]])
    assert not np.array_equal(out, plain)


def test_mask_stays_aligned_with_the_area_averaged_image():
    # one bright pixel at the centre of the middle 3x3 block: the image's middle output pixel
    # is the mean of that block, and the mask's middle pixel must be the same source pixel
    image = np.zeros((9, 9), np.uint8)
    image[4, 4] = 255
    mask = (image > 0).astype(np.uint8)
    img3, msk3 = resize_tile(image, mask, 3)
    assert img3.argmax() == 4 and msk3.argmax() == 4 and msk3.sum() == 1


@pytest.mark.parametrize(("n", "size"), [(6, 2), (7, 3), (10, 4), (60, 24), (100, 36), (5, 8), (3, 7), (32, 64)])
def test_matches_the_exact_nearest_formula_down_and_up(n, size):
    # sizes where no output pixel centre falls exactly on a source pixel edge (there,
    # e.g. 64 -> 24, OpenCV's fixed-point arithmetic picks either neighbour)
    rng = np.random.default_rng(n * 100 + size)
    mask = rng.integers(0, 6, (n, n), dtype=np.uint8)
    mask[0, 0] = 255
    np.testing.assert_array_equal(resize_mask(mask, size), _exact_nearest(mask, size))


def test_down_and_up_by_two_keeps_class_ids_and_regions():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 5, (8, 8), dtype=np.uint8)
    blocks[2, 3] = 255  # ignore index survives too
    mask = np.kron(blocks, np.ones((2, 2), np.uint8))  # (16, 16), constant 2x2 blocks
    down = resize_mask(mask, 8)
    np.testing.assert_array_equal(down, blocks)
    np.testing.assert_array_equal(resize_mask(down, 16), mask)
    assert set(np.unique(resize_mask(mask, 11))) <= set(np.unique(mask))  # no invented ids


def test_flip_symmetry_holds_for_exact_nearest():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 4, (9, 9), dtype=np.uint8)
    np.testing.assert_array_equal(resize_mask(mask[::-1, ::-1], 3)[::-1, ::-1], resize_mask(mask, 3))
    plain = cv2.resize(mask, (3, 3), interpolation=cv2.INTER_NEAREST)
    flipped = cv2.resize(np.ascontiguousarray(mask[::-1, ::-1]), (3, 3), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(flipped[::-1, ::-1], plain)  # the corner rule is not symmetric


def test_same_size_returns_the_inputs_and_image_rule_is_area_then_linear():
    image = np.tile([0, 200], (32, 16)).astype(np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    same_img, same_mask = resize_tile(image, mask, 32)
    assert same_img is image and same_mask is mask
    assert resize_tile(image, None, 16)[1] is None
    assert np.all(np.abs(resize_image(image, 16).astype(int) - 100) <= 1)  # area average
    up = resize_image(image, 64)
    assert up.shape == (64, 64) and 0 < up.mean() < 200


def test_prep_and_training_use_the_same_rule(tiny_dataset):
    """cut_tiles (prep) and TileDataset (training input) resize a mask identically."""
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 3, (30, 30), dtype=np.uint8)
    image = rng.integers(0, 255, (30, 30), dtype=np.uint8)
    (tile,) = cut_tiles(image, classes, [(0, 0, 1.0)], tile_size=30, out_size=10, n_classes=3)
    np.testing.assert_array_equal(tile.mask, _exact_nearest(classes, 10))
    # the tiny dataset's 64 px tiles read at input size 24: the training input is what
    # prep would have cut at out_size 24, and not OpenCV's corner rule
    manifest = load_manifest(tiny_dataset)
    dataset = TileDataset(manifest, "val", input_size=24, cache=False)
    stored_image = np.asarray(Image.open(manifest.split("val")[0].image))
    stored = np.asarray(Image.open(manifest.split("val")[0].mask))
    _, mask = dataset.load(0)
    (cut,) = cut_tiles(stored_image, stored, [(0, 0, 1.0)], tile_size=64, out_size=24, n_classes=3)
    np.testing.assert_array_equal(mask, cut.mask)
    assert not np.array_equal(mask, cv2.resize(stored, (24, 24), interpolation=cv2.INTER_NEAREST))
