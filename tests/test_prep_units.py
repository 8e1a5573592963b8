"""Unit tests of the preparation steps: config, intensity, resample, tiling, splits, QA."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from mineralseg.errors import ConfigError, DataError
from mineralseg.prep import qa
from mineralseg.prep.config import load_prepare_config
from mineralseg.prep.intensity import fit_drift, normalise_sem
from mineralseg.prep.resample import (
    labels_to_working_grid,
    sem_coverage,
    sem_to_working_grid,
    working_shape,
    working_to_label_matrix,
)
from mineralseg.prep.splits import split_blocks, split_samples
from mineralseg.prep.tiling import cut_tiles, tile_positions
from mineralseg.resize import resize_tile


# --------------------------------------------------------------------------- config
def _write_cfg(tmp_path: Path, **over) -> Path:
    data = {
        "palette": "qemscan24",
        "samples": [
            {"name": "a", "sem": "a/sem.tif", "labels": "a/qemscan.png"},
            {"name": "b", "sem": "b/sem.tif", "labels": "b/qemscan.png"},
        ],
    }
    data.update(over)
    path = tmp_path / "cfg" / "prepare.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_defaults_and_relative_paths(tmp_path):
    cfg = load_prepare_config(_write_cfg(tmp_path, sem_scale=2.0, palette="pal/my.yaml"))
    assert cfg.samples[0].sem == (tmp_path / "cfg" / "a" / "sem.tif").resolve()
    assert cfg.samples[1].labels == (tmp_path / "cfg" / "b" / "qemscan.png").resolve()
    assert cfg.palette == str((tmp_path / "cfg" / "pal" / "my.yaml").resolve())
    assert cfg.sem_scale == 2 and isinstance(cfg.sem_scale, int)
    assert cfg.tile_size == 32 and cfg.out_size == 64 and cfg.split.by == "blocks"
    assert cfg.register_ is True and cfg.repair_seams == "auto"
    assert cfg.split.fractions.as_dict() == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_config_builtin_palette_name_is_not_a_path(tmp_path):
    cfg = load_prepare_config(_write_cfg(tmp_path, palette="sandstone-xrm", register=False, sem_scale=1.5))
    assert cfg.palette == "sandstone-xrm"
    assert cfg.register_ is False and cfg.sem_scale == 1.5


@pytest.mark.parametrize(
    "over, match",
    [
        ({"tile_sise": 32}, "did you mean 'tile_size'"),
        ({"tile_size": 0}, "tile_size"),
        ({"out_size": -4}, "out_size"),
        ({"sem_scale": 0.5}, "sem_scale must be >= 1"),
        ({"min_sample_fraction": 1.5}, "min_sample_fraction"),
        ({"split": {"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}}, "sum to 1"),
        ({"split": {"by": "sample", "train": ["a"], "val": ["zz"]}}, "unknown sample 'zz'"),
        ({"split": {"by": "sample", "train": ["a"], "val": ["a"]}}, "is in split.train and split.val"),
        ({"split": {"by": "blocks", "val": ["a"]}}, "only used with split.by: sample"),
        ({"normalise": {"low": 99, "high": 1}}, "must be below high"),
        ({"repair_seams": "sometimes"}, "repair_seams"),
    ],
)
def test_config_rejects_bad_values(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        load_prepare_config(_write_cfg(tmp_path, **over))


def test_config_sample_rules(tmp_path):
    dup = [{"name": "a", "sem": "x.tif", "labels": "y.png"}] * 2
    with pytest.raises(ConfigError, match="unique; repeated: a"):
        load_prepare_config(_write_cfg(tmp_path, samples=dup))
    one = [{"name": "a", "sem": "x.tif", "labels": "y.png"}]
    with pytest.raises(ConfigError, match="at least 2 samples"):
        load_prepare_config(_write_cfg(tmp_path, samples=one, split={"by": "sample"}))
    # explicit lists make a single sample fine
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=one, split={"by": "sample", "train": ["a"]}))
    assert cfg.sample_splits() == {"a": "train"}
    raw = [{"name": "a", "sem": "x.raw", "labels": "y.png"}]
    with pytest.raises(ConfigError, match="raw SEM file .* needs sem_shape"):
        load_prepare_config(_write_cfg(tmp_path, samples=raw, split={"by": "blocks"}))
    raw[0].update(sem_shape=[10, 20], sem_dtype="uint16")
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=raw))
    assert cfg.samples[0].sem_shape == (10, 20)
    with pytest.raises(ConfigError, match="folder name"):
        load_prepare_config(_write_cfg(tmp_path, samples=[{"name": "a/b", "sem": "x.tif", "labels": "y.png"}]))


def test_config_sample_lists_rest_goes_to_train(tmp_path):
    three = [{"name": n, "sem": "x.tif", "labels": "y.png"} for n in ("a", "b", "c")]
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=three, split={"by": "sample", "val": ["b"]}))
    assert cfg.sample_splits() == {"a": "train", "b": "val", "c": "train"}
    with pytest.raises(ConfigError, match="in no split list"):
        load_prepare_config(_write_cfg(tmp_path, samples=three, split={"by": "sample", "train": ["a"], "val": ["b"]}))


# --------------------------------------------------------------------------- intensity
def _rock(seed: int, size: int = 768, drift: np.ndarray | None = None):
    """Three phases (grey 60 / 120 / 180 + noise) in a disk on a dark mount."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 5)
    phase = (field > 0.02).astype(int) + (field > 0.07)
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    grey = np.array([60.0, 120.0, 180.0])[phase] + rng.normal(0, 6, (size, size))
    if drift is not None:
        grey = grey + drift
    img = np.where(mask, grey, 12).clip(0, 255).astype(np.uint8)
    return img, mask, phase


def test_normalise_removes_constant_offset():
    img, mask, _ = _rock(0)
    shifted = img.copy()
    shifted[mask] = np.clip(img[mask].astype(int) + 16, 0, 255).astype(np.uint8)
    out_a, pa = normalise_sem(img, mask)
    out_b, pb = normalise_sem(shifted, mask)
    assert abs(float(np.median(out_a[mask])) - float(np.median(out_b[mask]))) <= 1
    assert pb["low_value"] - pa["low_value"] == pytest.approx(16, abs=1.5)
    assert out_a.dtype == np.uint8
    # the percentile stretch spans the range inside the sample
    assert np.percentile(out_a[mask], 0.1) <= 2 and np.percentile(out_a[mask], 99.9) >= 253


def test_normalise_removes_slow_drift():
    size = 768
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1  # -1..1
    drift = 12 * xx + 10 * yy**2
    img, mask, phase = _rock(1, size, drift)
    out, params = normalise_sem(img, mask)
    raw, _ = normalise_sem(img, mask, drift=False)
    assert params["drift"]["coef"][1] == pytest.approx(12, abs=1.0)  # x term
    assert params["drift"]["coef"][5] == pytest.approx(10, abs=1.0)  # y**2 term
    left, right = xx < -0.3, xx > 0.3
    for k in range(3):
        sel = mask & (phase == k)
        corrected = abs(out[sel & left].mean() - out[sel & right].mean())
        uncorrected = abs(raw[sel & left].mean() - raw[sel & right].mean())
        assert corrected < 1.5 < 10 < uncorrected


def test_drift_fit_ignores_composition_gradient():
    """More bright phase on one side moves block means, not the histogram peaks."""
    img, mask, phase = _rock(2)
    size = img.shape[0]
    xx = np.mgrid[:size, :size][1]
    # turn most of the dark phase of the right half into the bright phase
    flip = (phase == 0) & (xx > size / 2) & mask
    img2 = img.copy()
    img2[flip] = np.clip(img[flip].astype(int) + 120, 0, 255)
    fit = fit_drift(img2, mask)
    assert fit is not None and fit["amplitude"] < 2.0
    assert img2[mask & (xx > size / 2)].mean() - img2[mask & (xx < size / 2)].mean() > 20


def test_normalise_edge_cases():
    const = np.full((64, 64), 77, np.uint8)
    out, params = normalise_sem(const, drift=False)
    assert np.all(out == 128) and params["high_value"] == params["low_value"]
    img, mask, _ = _rock(3, 256)
    out, _ = normalise_sem(img, mask, outside="zero")
    assert np.all(out[~mask] == 0)
    with pytest.raises(ValueError, match="mask is empty"):
        normalise_sem(img, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        normalise_sem(img, mask[:10])


# --------------------------------------------------------------------------- resample
class _CountingImage:
    """An ndarray wrapper that records the size of every window read."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.reads = a, a.shape, []

    def __getitem__(self, key):
        out = self.a[key]
        self.reads.append(out.size)
        return out


def _affine(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t) * scale, np.sin(t) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])


@pytest.mark.parametrize("sem_scale", [1, 2, 2.5])
def test_sem_to_working_grid_follows_the_transform(sem_scale):
    """A linear SEM ramp is reproduced exactly (area average and bilinear keep linear functions)."""
    hs, ws = 1500, 1400
    yy, xx = np.mgrid[:hs, :ws]
    sem = _CountingImage((0.05 * xx + 0.03 * yy + 7).astype(np.float32))
    m = _affine(7.3, 0.6, -40.2, 25.7)  # the left edge of the map falls outside the SEM
    label_shape = (190, 180)
    budget = 1 << 18
    out = sem_to_working_grid(sem, m, label_shape, sem_scale, max_window_pixels=budget)
    assert out.shape == working_shape(label_shape, sem_scale) and out.dtype == np.float32
    w2s = m @ working_to_label_matrix(sem_scale)
    v, u = np.mgrid[: out.shape[0], : out.shape[1]]
    x = w2s[0, 0] * u + w2s[0, 1] * v + w2s[0, 2]
    y = w2s[1, 0] * u + w2s[1, 1] * v + w2s[1, 2]
    inner = (x > 10) & (y > 10) & (x < ws - 11) & (y < hs - 11)
    assert inner.mean() > 0.9
    np.testing.assert_allclose(out[inner], (0.05 * x + 0.03 * y + 7)[inner], atol=1e-3)
    outside = (x < -0.5) | (y < -0.5) | (x > ws - 0.5) | (y > hs - 0.5)
    assert outside.any() and np.all(out[outside] == 0)
    np.testing.assert_array_equal(sem_coverage(m, label_shape, sem_scale, (hs, ws)), ~outside)
    # memory stays bounded: many strips, none reading much more than the budget
    assert len(sem.reads) > 3 and max(sem.reads) < 3 * budget


def test_sem_to_working_grid_area_averages_fine_texture():
    """A checkerboard finer than the working grid averages to its mean (no aliasing)."""
    sem = (np.indices((800, 800)).sum(axis=0) % 2 * 200).astype(np.uint8)
    out = sem_to_working_grid(sem, _affine(8.0, 0.3, 3.5, 3.5), (96, 96), 1)
    inner = out[5:-5, 5:-5]
    assert abs(inner.mean() - 100) < 2 and inner.std() < 15


def test_identity_grid_is_exact_and_labels_upscale():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 70)).astype(np.uint8)
    np.testing.assert_array_equal(sem_to_working_grid(img, np.eye(3), img.shape, 1), img)
    labels = rng.integers(0, 5, (9, 7)).astype(np.uint8)
    up = labels_to_working_grid(labels, 3)
    assert up.shape == (27, 21) and np.array_equal(up[::3, ::3], labels) and np.array_equal(up[2::3, 2::3], labels)
    up = labels_to_working_grid(labels, 1.5)
    assert up.shape == (14, 10) and set(np.unique(up)) <= set(np.unique(labels))
    # centre-aligned: working pixel centre (u + 0.5) / s - 0.5 rounds to the label pixel
    for v in range(14):
        for u in range(10):
            lr, lc = min(8, int(np.floor((v + 0.5) / 1.5))), min(6, int(np.floor((u + 0.5) / 1.5)))
            assert up[v, u] == labels[lr, lc]
    with pytest.raises(ValueError, match="sem_scale"):
        labels_to_working_grid(labels, 0.5)
    with pytest.raises(ValueError, match="singular"):
        sem_to_working_grid(img, np.zeros((3, 3)) + np.diag([0, 0, 1]), img.shape, 1)


# --------------------------------------------------------------------------- tiling
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


# --------------------------------------------------------------------------- splits
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


# --------------------------------------------------------------------------- QA
def test_qa_figures(tmp_path):
    from PIL import Image

    ids = np.zeros((40, 50), np.uint8)
    ids[10:30, 20:] = 2
    edges = qa.class_edges(ids)
    assert edges.sum() == 20 + 30 + 30 and edges[10:30, 19].all() and edges[9, 20:].all() and edges[29, 20:].all()
    sem = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    qa.plot_label_edges(sem, ids, tmp_path / "edges.png", title="t", crop=(0, 20, 0, 20))
    qa.plot_seams(np.zeros((40, 50, 3), np.uint8), [10, (20, 23)], [7], tmp_path / "seams.png")
    qa.plot_class_frequencies({"all": [0.5, 0.3, 0.2], "train": [0.4, 0.4, 0.2]}, ["a", "b", "c"],
                              [(255, 255, 255), (255, 0, 0), (0, 0, 255)], tmp_path / "freq.png")
    for name in ("edges.png", "seams.png", "freq.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edges.png", "freq.png", "seams.png"]  # no temp files


@pytest.mark.parametrize("shape", [(4822, 4822), (1205, 300), (2049, 17), (1000, 1000)])
def test_qa_shrinks_an_image_and_its_labels_to_one_shape(shape, tmp_path):
    """Regression: a 1,205-row grid (step 2) gave a 602-row image but 603 rows of label edges."""
    img = np.zeros(shape, np.uint8)
    grey, labels = qa.shrink_for_display(img), qa.shrink_for_display(img, nearest=True)
    assert grey.shape == labels.shape and max(grey.shape) <= qa.DISPLAY_MAX_SIDE
