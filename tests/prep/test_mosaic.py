"""QEMSCAN mosaic damage (synth.damage) and its automatic repair (prep.mosaic).

The clean maps look like the study's label maps: a round sample of grains (Voronoi cells
of a few mineral ids, ~5-30 px) with small pores, on a white background id. The repair
is never told the field size, stripe widths or shifts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mineralseg.errors import UserError
from mineralseg.prep.mosaic import MosaicRepair, repair_mosaic, seam_figure_data
from mineralseg.synth.damage import apply_mosaic_damage, draw_shifts
from mineralseg.synth.dataset import sample_seed
from mineralseg.synth.sample import generate_sample

BACKGROUND = 23  # the white background id of the qemscan24 palette
PORE = 0
# Share of sample pixels the repaired map must get right (the rest: pixels a later field
# overwrote, filled from neighbours).
MIN_ACCURACY = 0.995


def clean_map(rng: np.random.Generator, size: int, n_minerals: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) uint8 ids of a round sample on background, and the sample mask."""
    h = w = size
    # grain size varies smoothly over the sample (cells of ~6 to ~28 px)
    spacing = 6 + 22 * ndimage.zoom(rng.random((4, 4)), size / 4, order=1)[:h, :w]
    n_try = h * w // 36
    ys, xs = rng.integers(0, h, n_try), rng.integers(0, w, n_try)
    keep = rng.random(n_try) < (6.0 / spacing[ys, xs]) ** 2
    ys, xs = ys[keep], xs[keep]
    seeds = np.ones((h, w), dtype=bool)
    seeds[ys, xs] = False
    index = np.zeros((h, w), dtype=np.int64)
    index[ys, xs] = np.arange(ys.size)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds, return_indices=True)
    minerals = rng.choice(np.arange(1, n_minerals + 1), size=ys.size, p=rng.dirichlet(np.ones(n_minerals)))
    ids = minerals[index[iy, ix]].astype(np.uint8)
    blobs = ndimage.gaussian_filter(rng.random((h, w)), 1.5)
    ids[blobs > np.quantile(blobs, 0.96)] = PORE
    yy, xx = np.mgrid[:h, :w]
    angle = np.arctan2(yy - h / 2, xx - w / 2)
    radius = 0.46 * size * (1 + 0.03 * np.sin(3 * angle))
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < radius**2
    ids[~inside] = BACKGROUND
    return ids, inside


def damaged_case(seed: int, size: int, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    clean, inside = clean_map(rng, size)
    damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=BACKGROUND, **kw)
    return clean, inside, damaged, layout


def check_repair(rep: MosaicRepair, clean: np.ndarray, inside: np.ndarray, layout: dict) -> float:
    assert rep.detected
    assert list(rep.field_size) == layout["field_size"]
    assert list(rep.seam_width) == layout["seam_width"]
    assert list(rep.pitch) == layout["pitch"]
    assert rep.repaired.shape == clean.shape
    assert rep.shifts.shape == (*layout["n_fields"], 2)
    assert [list(p) for p in rep.seam_rows] == layout["seam_rows"]
    assert [list(p) for p in rep.seam_cols] == layout["seam_cols"]
    accuracy = float((rep.repaired == clean)[inside].mean())
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.4f}"
    return accuracy


# --------------------------------------------------------------------------- damage
def test_damage_layout_matches_the_damaged_map():
    rng = np.random.default_rng(3)
    clean, _ = clean_map(rng, 200)
    damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=BACKGROUND, field_size=(60, 64),
                                          seam_width=(3, 5), max_shift=2)
    assert layout["n_fields"] == [4, 4]  # ceil(200 / 60), ceil(200 / 64)
    assert damaged.shape == (200 + 3 * 3, 200 + 3 * 5) == tuple(layout["damaged_shape"])
    assert layout["seam_rows"] == [[60, 63], [123, 126], [186, 189]]
    assert layout["seam_cols"] == [[64, 69], [133, 138], [202, 207]]
    shifts = np.asarray(layout["shifts"])
    assert shifts.shape == (4, 4, 2) and np.abs(shifts).max() <= 2
    json.dumps(layout)  # goes into truth.json as is
    # the last field drawn is never overwritten: it sits at its origin plus its shift
    last = layout["fields"][-1]
    (oy, ox), (dy, dx), (cy, cx) = last["origin"], last["shift"], last["clean_origin"]
    hh, ww = last["size"]
    y0, x0 = max(oy + dy, 0), max(ox + dx, 0)
    y1, x1 = min(oy + dy + hh, damaged.shape[0]), min(ox + dx + ww, damaged.shape[1])
    np.testing.assert_array_equal(
        damaged[y0:y1, x0:x1], clean[cy + y0 - oy - dy:cy + y1 - oy - dy, cx + x0 - ox - dx:cx + x1 - ox - dx])


def test_damage_stripes_are_fill_where_no_field_lands():
    rng = np.random.default_rng(4)
    clean = np.full((150, 150), 5, dtype=np.uint8)
    damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=9, field_size=50, seam_width=4, max_shift=0)
    assert set(np.unique(damaged)) == {5, 9}
    for a, b in layout["seam_cols"]:
        assert (damaged[:, a:b] == 9).all()
    for a, b in layout["seam_rows"]:
        assert (damaged[a:b] == 9).all()
    assert (damaged == 9).sum() == damaged.size - clean.size  # no shifts: nothing lost
    assert layout["lost_pixels"] == 0


def test_damage_noise_fill_draws_from_the_given_ids():
    rng = np.random.default_rng(5)
    clean = np.full((120, 120), 1, dtype=np.uint8)
    damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=0, field_size=40, seam_width=6,
                                          max_shift=0, fill="noise", noise_ids=[2, 3, 4])
    a, b = layout["seam_cols"][0]
    stripe = damaged[:, a:b]
    assert set(np.unique(stripe)) == {2, 3, 4}
    assert layout["fill"] == "noise"


def test_damage_draws_sizes_and_shifts_in_range():
    for seed in range(8):
        rng = np.random.default_rng(seed)
        clean = rng.integers(0, 6, (300, 330)).astype(np.uint8)
        _, layout = apply_mosaic_damage(clean, rng, seam_fill_id=6)
        fh, fw = layout["field_size"]
        assert 24 <= min(fh, fw) and max(fh, fw) <= 100 and abs(fh - fw) <= 2
        assert min(layout["n_fields"]) >= 4
        assert all(1 <= v <= 6 for v in layout["seam_width"])
    shifts = draw_shifts(np.random.default_rng(0), (100, 100), 2)
    assert np.abs(shifts).max() == 2
    assert 0.4 < np.mean(shifts == 0) < 0.6  # mostly 0 ...
    assert np.mean(np.abs(shifts) <= 1) > 0.8  # ... or +-1


@pytest.mark.parametrize("bad", [
    {"clean": np.zeros((20, 20, 3), np.uint8)},
    {"clean": np.zeros((20, 20), np.float32)},
    {"fill": "stripes"},
    {"seam_fill_id": 300},
    {"field_size": 0},
    {"seam_width": (-1, 2)},
])
def test_damage_rejects_bad_input(bad):
    kw = {"clean": np.zeros((60, 60), np.uint8), "seam_fill_id": 0}
    kw.update(bad)
    clean = kw.pop("clean")
    with pytest.raises(UserError, match="mosaic damage"):
        apply_mosaic_damage(clean, np.random.default_rng(0), **kw)


# --------------------------------------------------------------------------- repair
@pytest.mark.parametrize("seed,size,kw", [
    (0, 300, {}),
    (1, 300, {"field_size": 30}),
    (2, 450, {}),
    (3, 600, {"seam_width": (1, 1)}),
    (4, 600, {"field_size": (100, 102), "seam_width": (3, 5)}),  # the study's 5 x 3 stripes
    (5, 600, {"seam_width": (6, 6)}),
    (6, 900, {}),
    (7, 1200, {"field_size": 400, "seam_width": (2, 4)}),
    (8, 1200, {"field_size": 40}),
    (9, 1500, {"field_size": (355, 357), "seam_width": (3, 5)}),  # the study's fields
])
def test_repair_recovers_the_clean_map(seed, size, kw):
    clean, inside, damaged, layout = damaged_case(seed, size, **kw)
    rep = repair_mosaic(damaged)
    check_repair(rep, clean, inside, layout)
    assert rep.seam_fill_ids == (BACKGROUND,)
    assert rep.confidence > 0.5
    # fields that show enough sample get their exact shift
    fh, fw = layout["field_size"]
    truth = np.asarray(layout["shifts"])
    good = [(i, j) for i in range(truth.shape[0]) for j in range(truth.shape[1])
            if inside[i * fh:(i + 1) * fh, j * fw:(j + 1) * fw].mean() > 0.5]
    right = np.mean([np.array_equal(rep.shifts[i, j], truth[i, j]) for i, j in good])
    assert right >= 0.95


@pytest.mark.parametrize("seed,size", [(10, 300), (11, 600), (12, 900)])
def test_repair_noise_filled_seams(seed, size):
    clean, inside, damaged, layout = damaged_case(seed, size, fill="noise")
    rep = repair_mosaic(damaged)
    check_repair(rep, clean, inside, layout)
    assert rep.seam_fill_ids == ()  # no single fill id: noise


def test_repair_with_given_fill_id_and_ignore_index():
    clean, inside, damaged, layout = damaged_case(13, 600)
    damaged[5, 5] = 255  # an unknown colour in the mount changes nothing
    rep = repair_mosaic(damaged, seam_fill_ids=[BACKGROUND], ignore_index=255)
    assert rep.scores["seam_fill_detected"] is False
    check_repair(rep, clean, inside, layout)


def test_repair_only_column_seams():
    clean, inside, damaged, layout = damaged_case(14, 600, field_size=120, seam_width=(0, 4), max_shift=0)
    rep = repair_mosaic(damaged)
    assert rep.detected and rep.seam_rows == [] and len(rep.seam_cols) == 4
    assert rep.field_size[1] == 120 and rep.seam_width == (0, 4)
    np.testing.assert_array_equal(rep.repaired, clean)


@pytest.mark.parametrize("seed,size", [(20, 300), (21, 600), (22, 1200)])
def test_clean_map_is_left_alone(seed, size):
    clean, _ = clean_map(np.random.default_rng(seed), size)
    rep = repair_mosaic(clean)
    assert not rep.detected and rep.trusted and rep.doubt == ""
    np.testing.assert_array_equal(rep.repaired, clean)
    assert rep.seam_rows == [] and rep.seam_cols == [] and rep.confidence == 0.0
    assert "reason" in rep.scores


def test_uniform_and_random_maps_are_left_alone():
    noise = np.random.default_rng(0).integers(0, 20, (200, 240)).astype(np.uint8)
    for ids in (np.full((200, 240), 3, np.uint8), noise):
        rep = repair_mosaic(ids)
        assert not rep.detected
        np.testing.assert_array_equal(rep.repaired, ids)


def test_seam_figure_data_is_plain_and_matches_the_layout():
    clean, inside, damaged, layout = damaged_case(4, 600, field_size=(100, 102), seam_width=(3, 5))
    rep = repair_mosaic(damaged)
    data = seam_figure_data(rep)
    json.dumps(data)
    assert data["seam_rows"] == layout["seam_rows"] and data["seam_cols"] == layout["seam_cols"]
    nfy, nfx = layout["n_fields"]
    assert len(data["fields"]) == nfy * nfx
    assert data["repaired_boundaries_cols"] == [102 * j for j in range(1, nfx)]
    y, x, hh, ww = data["fields"][nfx + 1]  # field (1, 1): nominal corner + its shift
    dy, dx = layout["shifts"][1][1]
    assert (y, x, hh, ww) == (103 + dy, 107 + dx, 100, 102)
    empty = seam_figure_data(repair_mosaic(clean))
    assert empty["detected"] is False and empty["fields"] == []


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.uint8), np.zeros((50, 50), np.float64),
                                 np.zeros((1, 50), np.uint8), np.full((50, 50), -1, np.int16)])
def test_repair_rejects_bad_input(bad):
    with pytest.raises(UserError, match="repair_mosaic"):
        repair_mosaic(bad)


def test_repair_over_many_random_mosaics():
    """Random sizes, fields, stripes (1-6 px), shifts and fills: all repaired to >= 99.5 %.

    At least 5 fields per axis: with 3-4 fields and 1-px stripes, one seam line can be
    hidden entirely by the shifts (neighbouring fields overlap or abut all along it) and
    the pitch is then ambiguous.
    """
    worst = 1.0
    for seed in range(100, 140):
        rng = np.random.default_rng(seed)
        size = int(rng.choice([450, 600, 750, 900]))
        fill = "noise" if rng.random() < 0.3 else "constant"
        clean, inside = clean_map(rng, size)
        field = int(rng.integers(30, size // 5 + 1))
        damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=BACKGROUND, fill=fill,
                                              field_size=(field, field + int(rng.integers(-2, 3))))
        worst = min(worst, check_repair(repair_mosaic(damaged), clean, inside, layout))
    assert worst >= MIN_ACCURACY


# --------------------------------------------------------------------------- trust
def test_repair_leaving_stripes_behind_is_not_trusted():
    """Long background lines at no seam position survive the repair: not trusted."""
    clean, inside, damaged, layout = damaged_case(30, 450, field_size=70, seam_width=3, max_shift=1)
    rep = repair_mosaic(damaged)
    assert rep.trusted and rep.residual_stripes == 0.0
    damaged[100, 60:390] = BACKGROUND
    damaged[60:390, 251] = BACKGROUND
    rep = repair_mosaic(damaged)
    assert rep.detected and not rep.trusted
    assert rep.residual_stripes > 0.01 and "seam stripe pixels are left after the repair" in rep.doubt


def test_stripes_that_fit_no_grid_are_not_trusted():
    """Two long stripes across a clean map: no field grid, but not a clean map either."""
    clean, _ = clean_map(np.random.default_rng(31), 400)
    clean[130:133, 20:380] = BACKGROUND
    clean[20:380, 250:252] = BACKGROUND
    rep = repair_mosaic(clean)
    assert not rep.trusted and rep.doubt


# --------------------------------------------------------------------------- whole generated samples
def _generated(seed: int, index: int, shape: str, size: int = 4096):
    """Sample ``index`` of ``mineralseg synth OUT --seed SEED --size SIZE`` (the shape given)."""
    return generate_sample(sample_seed(seed, index), size=size, shape=shape)


@pytest.mark.parametrize("seed", [101, 107, 1234])
def test_repair_reported_rectangular_samples(seed):
    """Issue 16: ``mineralseg synth OUT --samples 3 --size 4096 --seed SEED``, sample02.

    101: 456 x 456 map repaired to 456 x 452 (clean 412 x 412) with confidence 0.27;
    107: 257 x 267 map, seams not detected; 1234: 38 x 36-px fields, ``_reassemble``
    stopped with "negative dimensions are not allowed". Small rectangular sections:
    few seams cross the section, the rest of the map is mount.
    """
    s = _generated(seed, 2, "rect")
    rep = repair_mosaic(s.labels)
    assert rep.detected and rep.trusted
    assert rep.repaired.shape == s.labels_clean.shape
    assert list(rep.field_size) == s.seams["field_size"] and list(rep.seam_width) == s.seams["seam_width"]
    assert np.mean(rep.repaired == s.labels_clean) >= MIN_ACCURACY


def test_combs_at_given_pitches_find_their_phase():
    """_combs_at: the combs of pitches the caller proposes, at the phase of the seams."""
    from mineralseg.prep.mosaic.comb import _comb, _combs_at

    rng = np.random.default_rng(3)
    profile = rng.normal(0.2, 0.02, 400)
    profile[np.arange(25, 400, 50)] += 0.3  # seams every 50 columns, from column 25
    # 10: below the smallest pitch; 201: fewer than 3 teeth fit
    combs = _combs_at(profile, None, [10, 50, 49, 201], min_pitch=16)
    assert [c.period for c in combs] == [50, 49]
    comb = combs[0]
    assert comb.z > 10 and combs[1].z < comb.z
    assert comb.lo <= 25 % 50 <= comb.hi
    # the same comb as the search grows when it finds that pitch itself
    found = _comb(profile, None, min_pitch=16, top=3)[0]
    assert (found.period, found.lo, found.hi) == (50, comb.lo, comb.hi)
    assert _combs_at(profile, None, [201], min_pitch=16) == []


@pytest.mark.parametrize("index, why", [
    (65, "1-px column stripes fitted every other seam (pitch 192, true 96)"),
    (71, "1-px column stripes not detected, row pitch 86 (true 85)"),
    (122, "column field 55 or 56 px (true 57): the visible stripes are widened by the shifts"),
    (199, "taken for noise stripes (no fill id): no visible stripes, left alone and flagged"),
])
def test_grids_the_first_look_gets_wrong_are_found_again(index, why):
    """Samples of benchmarks/prep_robustness.py (seed 0) that main of 2026-11-30 flagged.

    Each had the wrong field grid on an axis with 1-px stripes (mostly hidden under the
    field shifts) and was flagged; the second-chance grids (pitches near the other
    axis's, half pitches, a field 1-2 px larger) and the next fill choice find the
    right one, judged by how the layout sorts pixels into stripe and content.
    """
    s = _generated(0, index, "rect" if index % 2 else "round")
    rep = repair_mosaic(s.labels, ignore_index=255)
    assert rep.trusted, (why, rep.doubt)
    assert list(rep.field_size) == s.seams["field_size"] and list(rep.seam_width) == s.seams["seam_width"], why
    assert rep.repaired.shape == s.labels_clean.shape
    assert np.mean(rep.repaired == s.labels_clean) >= MIN_ACCURACY


def test_pitch_a_pixel_too_long_loses_to_likelier_shifts():
    """Sample 102 of ``benchmarks/prep_robustness.py --seed 1``: row pitch 96 for 95.

    Main of 2026-11-30 trusted it with the wrong shape: a pitch a pixel too long, made up
    for by shifts drifting field by field, sorted every pixel as well as the true one.
    Both sort the pixels alike; the true pitch's shifts are likelier (log-prior -56.9
    against -65.4) and now win.
    """
    s = _generated(1, 102, "round")
    rep = repair_mosaic(s.labels, ignore_index=255)
    assert rep.trusted, rep.doubt
    assert list(rep.seam_width) == s.seams["seam_width"] == [5, 1]
    assert rep.repaired.shape == s.labels_clean.shape
    assert np.mean(rep.repaired == s.labels_clean) >= MIN_ACCURACY


def test_a_wrong_grid_that_drops_content_is_not_trusted():
    """Sample 188 of benchmarks/prep_robustness.py (seed 0): flagged, not trusted with the wrong shape.

    Its best layout (a second-chance column grid with the origin 2 px off) drops 3 % as
    much field content as the stripes have; restored maps drop at most 0.5 %, and the
    limit of 5 % let this one through as a map of the wrong shape.
    """
    s = _generated(0, 188, "round")
    rep = repair_mosaic(s.labels, ignore_index=255)
    assert rep.detected and not rep.trusted
    assert "drops field content" in rep.doubt
    assert rep.repaired.shape != s.labels_clean.shape


@pytest.mark.slow
def test_repair_on_generated_samples_of_both_shapes():
    """40 whole generated samples (seeds fixed: the first 40 of benchmarks/prep_robustness.py).

    Issue 16 asks for >= 99 % restored (trusted, clean map's shape, >= 99.5 % of the
    pixels), no silent failure and a registration corner error of at most 0.5 label px
    on every map not flagged. Main's code of 2026-11-30 restored 35 of these 40,
    flagged 33 and 34 and got 23, 24 and 26 wrong without noticing (a pitch one pixel too
    long made up for by drifting shifts; a field at the section's edge placed 1-2 px
    off). Since the shift model counts every pixel in full, lines up the mount's outline
    across seams, keeps field 0 at the map's corner and looks harder for 1-px row stripes
    when the columns show seams clearly, 39 are restored by the seams alone and 19 (a
    field 1 px off: content dropped as stripe) is flagged (benchmark runs of 2026-11-30
    and 2026-12-01). Each map not flagged is then registered with its fields checked on
    the SEM, as ``prepare`` does (:func:`mineralseg.prep.seam_alignment.register_repaired`):
    every one stays restored and is registered within 0.5 label px.
    """
    from mineralseg.prep.registration import corner_error
    from mineralseg.prep.seam_alignment import register_repaired

    restored, flagged, silent = [], [], []
    for k in range(40):
        s = _generated(0, k, "rect" if k % 2 else "round")
        rep = repair_mosaic(s.labels, ignore_index=255)
        ok = rep.repaired.shape == s.labels_clean.shape and np.mean(rep.repaired == s.labels_clean) >= MIN_ACCURACY
        if not rep.trusted:
            flagged.append(k)
            assert not ok, f"sample {k} flagged but restored: {rep.doubt}"
            continue
        (restored if ok else silent).append(k)
        fixed, res, _ = register_repaired(s.sem, s.labels, rep, background_ids=[BACKGROUND], ignore_index=255)
        assert fixed.repaired.shape == s.labels_clean.shape
        assert np.mean(fixed.repaired == s.labels_clean) >= MIN_ACCURACY, f"sample {k} after the check on the SEM"
        err = corner_error(res.matrix, s.label_to_sem, s.labels_clean.shape)
        assert err <= 0.5, f"sample {k}: registration corner error {err:.2f} label px"
    assert len(restored) >= 39, (flagged, silent)
    assert silent == [], silent
