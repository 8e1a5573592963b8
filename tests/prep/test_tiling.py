"""Unit tests of tile positions and cutting (prep/tiling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mineralseg.errors import DataError
from mineralseg.prep.tiling import cut_tiles, tile_positions
from mineralseg.resize import resize_tile


def test_tile_positions_centre_and_skip():
    mask = np.zeros((100, 130), bool)
    mask[:, :65] = True  # left half is sample
    pos = tile_positions(mask, 30, 0.5, sample_name="s")
    # 3 x 4 whole tiles, grid centred: offsets (100 - 90) // 2 = 5 and (130 - 120) // 2 = 5
    rows = sorted({r for r, _, _ in pos})
    cols = sorted({c for _, c, _ in pos})
    assert rows == [5, 35, 65] and cols == [5, 35]  # tile at col 65 has 0 % sample
    assert all(f == 1.0 for _, _, f in pos)
    pos_all = tile_positions(mask, 30, 0.0)
    assert len(pos_all) == 12  # 0 keeps every tile, the mount included
    with pytest.raises(DataError, match=r"no tile of 30 px has >= 90% of sample 'rock' inside.*lower tile_size"):
        tile_positions(mask & (np.arange(130) < 20)[None, :], 30, 0.9, sample_name="rock")
    with pytest.raises(DataError, match="smaller than one tile"):
        tile_positions(mask, 200, 0.5)


def test_cut_tiles_resize_and_counts():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    classes = np.repeat(np.repeat(rng.integers(0, 3, (8, 8)), 8, 0), 8, 1).astype(np.uint8)
    classes[:4, :4] = 255
    pos = tile_positions(np.ones((64, 64), bool), 32, 0.5)
    for out_size in (16, 32, 48):
        tiles = list(cut_tiles(image, classes, pos, tile_size=32, out_size=out_size, n_classes=3))
        assert len(tiles) == 4
        for t in tiles:
            assert t.image.shape == t.mask.shape == (out_size, out_size)
            assert sum(t.class_counts) + t.ignored == out_size**2
            assert set(np.unique(t.mask)) <= {0, 1, 2, 255}
        assert tiles[0].ignored > 0 and tiles[1].ignored == 0
    t32 = list(cut_tiles(image, classes, pos, tile_size=32, out_size=32, n_classes=3))
    assert np.array_equal(t32[3].image, image[32:, 32:]) and np.array_equal(t32[3].mask, classes[32:, 32:])
    with pytest.raises(ValueError, match="out of range"):
        list(cut_tiles(image, classes, pos, tile_size=32, out_size=32, n_classes=2))
    # shrinking averages (area), enlarging interpolates; masks stay nearest
    img, msk = resize_tile(np.tile([0, 200], (32, 16)).astype(np.uint8), classes[:32, :32], 16)
    assert np.all(np.abs(img.astype(int) - 100) <= 1)
    img, _ = resize_tile(image[:32, :32], classes[:32, :32], 64)
    assert img.shape == (64, 64)
