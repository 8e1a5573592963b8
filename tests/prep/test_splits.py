"""Unit tests of train/val/test splits (prep/splits.py)."""

from __future__ import annotations

import logging

from mineralseg.prep.splits import split_blocks, split_samples

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def test_split_blocks_keeps_blocks_whole_and_balanced():
    tile, block = 16, 3
    positions = [(4 + tile * i, 4 + tile * j) for i in range(18) for j in range(15)]
    splits = split_blocks(positions, tile, block, FRACTIONS, seed=7)
    assert len(splits) == len(positions)
    block_split: dict = {}
    for (r, c), s in zip(positions, splits):
        key = ((r - 4) // tile // block, (c - 4) // tile // block)
        assert block_split.setdefault(key, s) == s  # every block goes whole to one split
    counts = {s: splits.count(s) for s in FRACTIONS}
    assert all(counts[s] > 0 for s in FRACTIONS)
    for s, f in FRACTIONS.items():
        assert abs(counts[s] / len(positions) - f) < 0.08
    assert split_blocks(positions, tile, block, FRACTIONS, seed=7) == splits
    assert split_blocks(positions, tile, block, FRACTIONS, seed=8) != splits


def test_split_blocks_guard_band_keeps_train_away_from_held_out_tiles():
    tile, block = 16, 3
    positions = [(tile * i, tile * j) for i in range(18) for j in range(15)]
    plain = split_blocks(positions, tile, block, FRACTIONS, seed=7)
    guarded = split_blocks(positions, tile, block, FRACTIONS, seed=7, guard=True)
    grid = {(r // tile, c // tile): s for (r, c), s in zip(positions, guarded)}
    kept = {k: s for k, s in grid.items() if s is not None}
    # no kept train or val tile touches a test tile, not even at a corner
    for (r, c), s in kept.items():
        if s != "test":
            assert all(kept.get((r + dr, c + dc)) != "test" for dr in (-1, 0, 1) for dc in (-1, 0, 1)), (r, c)
    # the test blocks stay whole; exactly the train/val tiles next to them give way
    plain_grid = {(r // tile, c // tile): s for (r, c), s in zip(positions, plain)}
    for (r, c), s in plain_grid.items():
        near_test = any(plain_grid.get((r + dr, c + dc)) == "test" for dr in (-1, 0, 1) for dc in (-1, 0, 1))
        assert grid[r, c] == (s if s == "test" or not near_test else None), (r, c)
    dropped = guarded.count(None)
    assert 0 < dropped < len(positions) // 3
    assert guarded.count("train") > guarded.count("val") > 0


def test_split_blocks_few_blocks_warns(caplog):
    positions = [(0, 0), (0, 16), (16, 0), (16, 16)]
    notes: list[str] = []
    with caplog.at_level(logging.WARNING):
        splits = split_blocks(positions, 16, 1, FRACTIONS, seed=0, name="s", notes=notes)
    assert set(splits) == {"train", "val", "test"}  # 4 blocks: each split gets one
    notes.clear()
    with caplog.at_level(logging.WARNING):
        splits = split_blocks(positions, 16, 4, FRACTIONS, seed=0, name="tiny", notes=notes)
    assert len(set(splits)) == 1 and notes and "tiny" in notes[0] and "tiny" in caplog.text


def test_split_samples():
    names = ["s0", "s1", "s2", "s3", "s4", "s5"]
    a = split_samples(names, FRACTIONS, seed=3)
    assert sorted(a) == names and sorted(a.values()).count("val") >= 1 and "test" in a.values()
    assert list(a.values()).count("train") == 4
    notes: list[str] = []
    two = split_samples(["x", "y"], FRACTIONS, seed=0, notes=notes)
    assert sorted(two.values()) == ["train", "val"] and "test" in notes[0]
    explicit = split_samples(["x", "y"], FRACTIONS, explicit={"x": "test", "y": "train"})
    assert explicit == {"x": "test", "y": "train"}
