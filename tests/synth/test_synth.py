"""Tests of the synthetic SEM/QEMSCAN twin (mineralseg.synth)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.filters import threshold_multiotsu

from mineralseg.classes import load_schema
from mineralseg.errors import UserError
from mineralseg.synth import (
    generate_sample,
    inside_sem,
    label_to_sem_matrix,
    sem_on_label_grid,
    write_synth_dataset,
)
from mineralseg.synth import dataset as synth_dataset

SCHEMA = load_schema("qemscan24")
BG = SCHEMA.index("background")
TRUTH_KEYS = {
    "label_to_sem", "ratio", "rotation_deg", "scale", "shift_px", "sem_shape", "label_shape",
    "seams", "grey_offset", "drift", "mineral_fractions", "seed", "palette",
}


@pytest.fixture(scope="module")
def small():
    """A small sample with a fine label grid (ratio 8): 512 px SEM, ~70 px labels."""
    return generate_sample(7, size=512, ratio=8)


@pytest.fixture(scope="module")
def medium():
    """A 1536 px sample at ratio 8: ~200 grains, enough for area fractions."""
    return generate_sample(11, size=1536, ratio=8)


def _group_iou(pred: np.ndarray, truth: np.ndarray, n: int = 4) -> np.ndarray:
    return np.array([
        np.sum((pred == k) & (truth == k)) / max(np.sum((pred == k) | (truth == k)), 1) for k in range(n)
    ])


# ----------------------------------------------------------------------------- geometry
def test_sample_arrays_shapes_and_types(small):
    s = small
    assert s.sem.shape == (512, 512) and s.sem.dtype == np.uint8
    assert s.truth.shape == (512, 512) and s.truth.dtype == np.uint8
    step = s.ratio * s.scale
    side = math.ceil(1.1 * 512 / step)
    assert s.labels_clean.shape == (side, side)
    # Mosaic damage adds seam stripes: the damaged map is larger.
    assert s.labels.shape[0] > side and s.labels.shape[1] > side
    assert s.seams["clean_shape"] == [side, side]
    assert 8 <= s.ratio <= 20 and abs(s.scale - 1) <= 0.02
    # The label grid holds the section with a background margin all round.
    lab = s.labels_clean
    assert np.all(lab[0] == BG) and np.all(lab[-1] == BG) and np.all(lab[:, 0] == BG) and np.all(lab[:, -1] == BG)
    assert np.mean(lab != BG) > 0.3


def test_label_to_sem_is_the_drawn_similarity(small):
    s = small
    m = s.label_to_sem
    step = s.ratio * s.scale
    assert m.shape == (3, 3) and np.allclose(m[2], [0, 0, 1])
    assert np.isclose(np.linalg.det(m[:2, :2]), step**2)
    assert np.isclose(math.degrees(math.atan2(m[1, 0], m[0, 0])), s.rotation_deg)
    assert abs(s.rotation_deg) <= 2.0
    # The label grid's centre lands on the SEM centre plus the recorded shift.
    c_lab = (np.array(s.labels_clean.shape[::-1]) - 1) / 2.0
    c_sem = m[:2, :2] @ c_lab + m[:2, 2]
    assert np.allclose(c_sem, (np.array(s.sem.shape[::-1]) - 1) / 2.0 + np.array(s.shift_px))
    assert np.all(np.abs(s.shift_px) <= 0.05 * 512 + 1e-9)


def test_clean_labels_are_the_truth_at_mapped_points(medium):
    s = medium
    rng = np.random.default_rng(0)
    h, w = s.labels_clean.shape
    ys, xs = rng.integers(0, h, 400), rng.integers(0, w, 400)
    checked = 0
    for x, y in zip(xs, ys):
        xs_, ys_, _ = s.label_to_sem @ np.array([x, y, 1.0])
        xi, yi = int(math.floor(xs_ + 0.5)), int(math.floor(ys_ + 0.5))
        if 0 <= xi < s.truth.shape[1] and 0 <= yi < s.truth.shape[0]:
            assert s.labels_clean[y, x] == s.truth[yi, xi]
            checked += 1
        else:
            assert s.labels_clean[y, x] == BG
    assert checked > 300
    # Not a trivially constant map: the sampled points hit several minerals.
    assert len(np.unique(s.labels_clean[ys, xs])) >= 4


def test_sem_on_label_grid_reads_the_sem_at_label_to_sem():
    # A linear ramp survives the box pre-smoothing, so each output pixel must equal the
    # ramp at M @ [x, y, 1] (and a transposed / inverted matrix would not).
    yy, xx = np.mgrid[0:600, 0:700].astype(np.float32)
    ramp = 0.05 * xx + 0.1 * yy + 10.0
    m = label_to_sem_matrix((40, 50), (600, 700), step=11.5, rotation_deg=1.3, shift_px=(7.0, -12.0))
    for scale in (1, 3):
        out = sem_on_label_grid(ramp, m, (40, 50), sem_scale=scale)
        assert out.shape == (40 * scale, 50 * scale)
        ok = inside_sem(m, (40, 50), (600, 700), sem_scale=scale)
        oy, ox = np.mgrid[0 : 40 * scale, 0 : 50 * scale].astype(float)
        lx, ly = (ox + 0.5) / scale - 0.5, (oy + 0.5) / scale - 0.5  # working -> label coords
        sx = m[0, 0] * lx + m[0, 1] * ly + m[0, 2]
        sy = m[1, 0] * lx + m[1, 1] * ly + m[1, 2]
        inner = ok & (sx > 20) & (sx < 680) & (sy > 20) & (sy < 580)
        assert inner.sum() > 0.5 * inner.size
        assert np.abs(out - (0.05 * sx + 0.1 * sy + 10.0))[inner].max() < 0.05


def test_sem_on_label_grid_rejects_colour_images():
    with pytest.raises(UserError, match="2-D"):
        sem_on_label_grid(np.zeros((10, 10, 3), np.uint8), np.eye(3), (5, 5))


# ----------------------------------------------------------------------------- content
def test_area_fractions_are_sandstone_like(medium):
    fr = medium.mineral_fractions
    # Reported fractions are the truth map's, inside the section.
    counts = np.bincount(medium.truth.ravel(), minlength=SCHEMA.n_minerals)
    inside = counts.sum() - counts[BG]
    assert fr["quartz"] == pytest.approx(counts[SCHEMA.index("quartz")] / inside)
    assert sum(fr.values()) == pytest.approx(1.0)
    clays = fr["illite"] + fr["kaolinite"] + fr["chlorite"] + fr["smectite"]
    carbonate = fr["calcite"] + fr["dolomite"] + fr["siderite"] + fr["ankerite"]
    accessories = sum(fr[k] for k in ("rutile", "zircon", "apatite", "Fe-oxides", "barite", "others"))
    assert 0.43 <= fr["quartz"] <= 0.60
    assert 0.10 <= fr["albite"] <= 0.20
    assert 0.02 <= fr["K-feldspar"] <= 0.07
    assert 0.06 <= clays <= 0.14
    assert 0.01 <= carbonate <= 0.05
    assert 0.004 <= fr["pyrite"] <= 0.02
    assert 0.004 <= accessories <= 0.02
    assert 0.07 <= fr["pore"] <= 0.15
    # The section covers a good part of the frame, the mount the rest.
    assert 0.4 < inside / counts.sum() < 0.65


def test_grey_levels_follow_atomic_number(medium):
    s = medium
    sem = s.sem.astype(float)

    def mean_of(name):
        return sem[s.truth == SCHEMA.index(name)].mean()

    pore, quartz, albite = mean_of("pore"), mean_of("quartz"), mean_of("albite")
    assert mean_of("background") < 40 and pore < 40
    assert pore < mean_of("illite") < quartz
    assert abs(quartz - albite) < 6  # almost the same grey
    assert quartz + 10 < mean_of("K-feldspar") < mean_of("pyrite")
    assert mean_of("pyrite") > 200


def test_offset16_only_where_flagged():
    plain = generate_sample(5, size=512, ratio=8, offset16=False)
    bright = generate_sample(5, size=512, ratio=8, offset16=True)
    assert plain.grey_offset == 0 and bright.grey_offset == 16
    assert np.array_equal(plain.truth, bright.truth)
    assert np.array_equal(plain.labels, bright.labels)
    diff = bright.sem.astype(int) - plain.sem.astype(int)
    unclipped = (plain.sem > 0) & (plain.sem <= 239)
    assert np.all(diff[unclipped] == 16)
    # The darkest epoxy is below 16 only without the offset.
    assert plain.sem.min() < 16 <= bright.sem.min()


def test_given_options_leave_other_draws_unchanged():
    drawn = generate_sample(9, size=512)
    given = generate_sample(9, size=512, ratio=drawn.ratio, rotation_deg=drawn.rotation_deg, scale=drawn.scale)
    assert np.array_equal(drawn.sem, given.sem)
    assert np.array_equal(drawn.labels, given.labels)
    other = generate_sample(9, size=512, rotation_deg=0.0, shift_frac=0.0)
    assert np.array_equal(drawn.sem, other.sem)  # the SEM does not depend on the label grid
    assert other.rotation_deg == 0.0 and other.shift_px == (0.0, 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 100}, "size"),
        ({"size": 512, "shape": "oval"}, "shape"),
        ({"size": 512, "ratio": 60}, "label grid"),
        ({"size": 512, "scale": -1.0}, "scale"),
    ],
)
def test_bad_sample_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        generate_sample(0, **kwargs)


_MINI_PALETTE = """name: mini
ignore_index: 255
minerals:
  - {name: pore, color: [0, 0, 0], group: dark}
  - {name: quartz, color: [255, 192, 192], group: quartz}
  - {name: albite, color: [0, 255, 255], group: albite}
  - {name: background, color: [255, 255, 255], group: dark}
groups:
  - {name: dark, color: [255, 255, 255]}
  - {name: quartz, color: [255, 192, 192]}
  - {name: albite, color: [0, 255, 255]}
"""


def test_palette_with_few_minerals(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text(_MINI_PALETTE)
    s = generate_sample(2, size=384, ratio=8, palette=str(path))
    assert s.palette == "mini"
    assert set(np.unique(s.truth)) <= {0, 1, 2, 3}
    fr = s.mineral_fractions
    # The recipe is renormalised over what the palette names: quartz, albite, pores.
    assert fr["quartz"] > fr["albite"] > 0.1 and fr["pore"] > 0.05
    with pytest.raises(UserError, match="lacks albite"):
        albite = "{name: albite, color: [0, 255, 255], group"
        path.write_text(_MINI_PALETTE.replace(albite, albite.replace("albite", "feldspar", 1)))
        generate_sample(2, size=384, ratio=8, palette=str(path))


# ----------------------------------------------------------------------------- difficulty
def _multi_otsu_miou(s) -> float:
    """Mean IoU of a 4-class multi-Otsu threshold of the SEM on the label grid (Hungarian)."""
    img = sem_on_label_grid(s.sem, s.label_to_sem, s.labels_clean.shape)
    ok = inside_sem(s.label_to_sem, s.labels_clean.shape, s.sem.shape)
    truth = SCHEMA.to_groups(s.labels_clean)[ok]
    values = img[ok]
    pred = np.digitize(values, threshold_multiotsu(values, classes=4))
    overlap = np.array([[np.sum((pred == a) & (truth == b)) for b in range(4)] for a in range(4)])
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.empty(4, int)
    mapping[rows] = cols
    return float(_group_iou(mapping[pred], truth).mean())


def test_multi_otsu_cannot_solve_it():
    scores = []
    for seed, offset in ((0, False), (1, True)):
        s = generate_sample(seed, size=2048, offset16=offset)
        scores.append(_multi_otsu_miou(s))
    print(f"multi-Otsu mean IoU on the 4 groups: {np.round(scores, 3)}")
    assert max(scores) < 0.6
    # ... while it is no straw man: the dark pores/background group is found.
    assert min(scores) > 0.3


def test_texture_tells_quartz_from_albite_where_grey_cannot(medium):
    """At 4 working pixels per label pixel, a texture statistic (local spread of the
    denoised SEM) parts quartz from albite far better than the local mean grey."""
    s = medium
    scale = 4
    img = sem_on_label_grid(s.sem, s.label_to_sem, s.labels_clean.shape, sem_scale=scale)
    smooth = ndimage.gaussian_filter(img, 1.0)
    win = 3 * scale
    mean = ndimage.uniform_filter(smooth, win)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(smooth**2, win) - mean**2, 0))
    # One value per label pixel, at label pixels well inside quartz or albite grains.
    groups = SCHEMA.to_groups(s.labels_clean)
    centre = (np.arange(groups.shape[0]) * scale + scale // 2)
    mean_l, spread_l = mean[np.ix_(centre, centre)], spread[np.ix_(centre, centre)]
    scores = {}
    for name, feature in (("grey", mean_l), ("texture", spread_l)):
        acc = []
        for k in (1, 2):
            core = ndimage.binary_erosion(groups == k, iterations=2)
            acc.append(feature[core])
        q, a = acc
        # Best single threshold, balanced accuracy (either direction).
        cuts = np.quantile(np.concatenate([q, a]), np.linspace(0.02, 0.98, 97))
        bal = [0.5 * (np.mean(q < c) + np.mean(a >= c)) for c in cuts]
        scores[name] = max(max(bal), 1 - min(bal))
    print(f"quartz/albite balanced accuracy: {scores}")
    assert scores["grey"] < 0.68
    assert scores["texture"] > 0.75


# ----------------------------------------------------------------------------- dataset
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    write_synth_dataset(out, samples=3, size=512, seed=3, ratio=8, progress=False)
    return out


def test_dataset_layout_and_truth(written):
    names = ["sample00", "sample01", "sample02"]
    assert sorted(p.name for p in written.iterdir()) == sorted(names + ["prepare.yaml", "synth.json"])
    offsets, shapes = [], []
    for name in names:
        d = written / name
        assert (d / "sem.tif").is_file() and (d / "qemscan.png").is_file()
        truth = json.loads((d / "truth" / "truth.json").read_text())
        assert TRUTH_KEYS <= set(truth)
        with tifffile.TiffFile(d / "sem.tif") as tif:
            page = tif.pages[0]
            assert page.is_tiled and page.dtype == np.uint8 and page.shape == tuple(truth["sem_shape"])
        clean = np.asarray(Image.open(d / "truth" / "qemscan_clean.png").convert("RGB"))
        damaged = np.asarray(Image.open(d / "qemscan.png").convert("RGB"))
        assert list(clean.shape[:2]) == truth["label_shape"]
        assert list(damaged.shape[:2]) == truth["seams"]["damaged_shape"]
        assert SCHEMA.unknown_colors(clean) == {} and SCHEMA.unknown_colors(damaged) == {}
        assert np.array(truth["label_to_sem"]).shape == (3, 3)
        assert truth["ratio"] == 8 and truth["palette"] == "qemscan24"
        assert sum(truth["mineral_fractions"].values()) == pytest.approx(1.0, abs=1e-4)
        offsets.append(truth["grey_offset"])
        shapes.append(truth["shape"])
    assert offsets == [0, 16, 0] and shapes == ["round", "round", "rect"]
    meta = json.loads((written / "synth.json").read_text())
    assert meta["seed"] == 3 and meta["samples"] == 3 and meta["size"] == 512 and meta["version"]
    assert len({r["seed"] for r in meta["sample_records"]}) == 3  # independent seeds


def test_prepare_yaml_is_a_valid_prepare_config(written):
    from mineralseg.prep.config import load_prepare_config

    cfg = load_prepare_config(written / "prepare.yaml")
    assert [s.name for s in cfg.samples] == ["sample00", "sample01", "sample02"]
    assert Path(cfg.samples[1].sem) == (written / "sample01" / "sem.tif").resolve()
    assert cfg.sem_scale == 1 and cfg.out_size == 64 and cfg.split.by == "blocks"
    # A few dozen tiles per sample on the label grid.
    label_side = json.loads((written / "sample00" / "truth" / "truth.json").read_text())["label_shape"][0]
    assert 4 <= label_side / cfg.tile_size <= 12


def test_dataset_is_deterministic(written, tmp_path):
    again = write_synth_dataset(tmp_path / "again", samples=3, size=512, seed=3, ratio=8, progress=False)
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (written / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = write_synth_dataset(tmp_path / "other", samples=1, size=512, seed=4, ratio=8, progress=False)
    assert (other / "sample00" / "sem.tif").read_bytes() != (written / "sample00" / "sem.tif").read_bytes()


def test_existing_out_needs_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        write_synth_dataset(out, samples=1, size=256, ratio=8, progress=False)
    assert (out / "keep.txt").exists()
    write_synth_dataset(out, samples=1, size=256, ratio=8, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "sample00" / "sem.tif").is_file()


def test_failure_leaves_no_partial_out(tmp_path, monkeypatch):
    calls = []
    real = synth_dataset.generate_sample

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_dataset, "generate_sample", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_synth_dataset(tmp_path / "data", samples=3, size=256, ratio=8, progress=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_bad_dataset_options(tmp_path):
    with pytest.raises(UserError, match="unknown synth option"):
        write_synth_dataset(tmp_path / "a", samples=1, size=256, colour="red", progress=False)
    with pytest.raises(UserError, match="samples"):
        write_synth_dataset(tmp_path / "b", samples=0, size=256, progress=False)
    assert list(tmp_path.iterdir()) == []
