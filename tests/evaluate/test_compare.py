"""Tests of `mineralseg compare`: label-map registration, scoring, outputs, bad inputs."""

from __future__ import annotations

import csv
import json

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from mineralseg.classes import load_schema, read_label_map
from mineralseg.cli import main
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.compare import compare, open_predicted_map
from mineralseg.io import downscale_mode, write_png
from mineralseg.io.labels import labels_description
from mineralseg.prep.registration import corner_error
from mineralseg.prep.registration_labels import class_levels, register_label_maps, warp_labels
from mineralseg.synth import generate_sample

SANDSTONE = Path(__file__).resolve().parents[3] / "shared" / "data" / "sandstone-xrm"
OUTPUTS = ["disagreement.png", "metrics.json", "mineralogy_compare.csv", "mineralogy_compare.json",
           "registration_qa.png", "report.html"]


@pytest.fixture(scope="module")
def pair5(tmp_path_factory):
    """A synthetic section in the 5 groups (pore and mount apart): truth, coarse map, files."""
    d = tmp_path_factory.mktemp("pair5")
    s = generate_sample(3, size=640, ratio=8, palette="qemscan24-5groups", damage=False)
    schema = s.schema
    write_png(d / "pred.png", schema.to_groups(s.truth))
    write_png(d / "truth_rgb.png", schema.ids_to_colors(s.truth, level="minerals"))
    write_png(d / "qemscan.png", schema.ids_to_colors(s.labels_clean, level="minerals"))
    return s, d


def test_warp_labels_identity_scale_and_outside():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (13, 17)).astype(np.uint8)
    np.testing.assert_array_equal(warp_labels(lab, np.eye(3), (0, 13), 17), lab)
    np.testing.assert_array_equal(warp_labels(lab, np.eye(3), (4, 9), 17), lab[4:9])
    # 3x finer grid: target pixel centre x = 3 u + 1; nearest label pixel is x // 3
    m = [[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0]]
    fine = warp_labels(lab, m, (0, 39), 51)
    np.testing.assert_array_equal(fine, np.repeat(np.repeat(lab, 3, 0), 3, 1))
    # shifted by 5 target pixels to the right: the first columns fall outside
    shifted = warp_labels(lab, [[1, 0, 5], [0, 1, 0], [0, 0, 1]], (0, 13), 17, fill=255)
    assert (shifted[:, :5] == 255).all()
    np.testing.assert_array_equal(shifted[:, 5:], lab[:, :12])


def test_class_levels_put_mount_below_every_class():
    lut = class_levels(5)
    assert lut[255] == 0 and lut[5] == 0
    assert np.all(np.diff(lut[:5]) > 0) and lut[:5].min() >= 100


def test_register_label_maps_finds_a_rotated_shifted_coarse_copy():
    # 15 % of the fine map's pixels are wrong, as in a poor prediction
    rng = np.random.default_rng(1)
    s = generate_sample(5, size=1024, rotation_deg=-1.7, shift_frac=(0.04, -0.03), damage=False)
    fine = s.schema.to_groups(s.truth)
    noise = rng.random(fine.shape) < 0.15
    fine[noise] = rng.integers(0, 4, int(noise.sum()))
    coarse = s.schema.to_groups(s.labels_clean)
    result = register_label_maps(coarse, fine, num_classes=4, background_ids=[0])
    assert corner_error(result.matrix, s.label_to_sem, coarse.shape) < 1.0
    assert result.score_after > result.score_before
    assert result.rotation_deg == pytest.approx(-1.7, abs=0.1)


def test_register_label_maps_errors():
    s = generate_sample(3, size=512, ratio=8, damage=False)
    fine, coarse = s.schema.to_groups(s.truth), s.schema.to_groups(s.labels_clean)
    with pytest.raises(DataError, match="no class is the mount"):
        register_label_maps(coarse, fine, num_classes=4, background_ids=[])
    with pytest.raises(DataError, match="edge to edge.*--no-register"):
        register_label_maps(coarse, np.full((200, 200), 2, np.uint8), num_classes=4, background_ids=[0])
    with pytest.raises(DataError, match="2-D uint8 class map"):
        register_label_maps(coarse.astype(np.float32), fine, num_classes=4, background_ids=[0])


def test_truth_against_itself_gives_iou_1_and_the_known_fractions(pair5, tmp_path):
    s, d = pair5
    result = compare(d / "pred.png", d / "truth_rgb.png", palette="qemscan24-5groups", out=tmp_path / "cmp",
                     pixel_size_um=0.5)
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == OUTPUTS
    m = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    present = [n for n, v in m["support"].items() if v > 0]
    assert set(present) >= {"pore", "quartz", "albite", "clay_accessories"}
    assert all(m["iou"][n] == 1.0 for n in present)
    assert m["miou"] == 1.0 and m["pixel_accuracy"] == 1.0
    # the mount that both maps agree on is not scored: only the section's pixels are
    assert m["common_pixels"] == 640 * 640
    assert m["num_pixels"] == result.predicted.section_pixels + m["support"]["background"]
    assert m["num_pixels"] < 0.9 * m["common_pixels"]
    np.testing.assert_allclose(np.asarray(m["registration"]["label_to_prediction"]), np.eye(3), atol=1e-3)
    expected = s.truth_dict()["group_fractions"]  # share of each group inside the section
    for mineralogy in (result.predicted, result.qemscan):
        assert mineralogy.excluded_classes == ("background",)
        got = dict(zip(mineralogy.class_names, mineralogy.area_percent))
        for name in ("pore", "quartz", "albite", "clay_accessories"):
            assert got[name] == pytest.approx(100 * expected[name], abs=1e-3)
        assert mineralogy.porosity_percent == pytest.approx(100 * expected["pore"], abs=1e-3)
    with open(tmp_path / "cmp" / "mineralogy_compare.csv", newline="") as fh:
        rows = {r["class"]: r for r in csv.DictReader(fh)}
    assert float(rows["quartz"]["difference_percent_points"]) == 0.0
    assert float(rows["quartz"]["predicted_area_mm2"]) == pytest.approx(
        int(rows["quartz"]["predicted_pixels"]) * 0.25e-6)
    assert "mean IoU 1.000" in result.text
    assert f"porosity: predicted {100 * expected['pore']:.2f} %" in result.text


def test_compare_registers_the_coarse_qemscan(pair5, tmp_path):
    s, d = pair5
    result = compare(d / "pred.png", d / "qemscan.png", palette="qemscan24-5groups", out=tmp_path / "cmp")
    reg = result.metrics["registration"]
    assert corner_error(reg["label_to_prediction"], s.label_to_sem, s.labels_clean.shape) < 1.0
    # a QEMSCAN 8x coarser than the truth: boundaries blur, fractions stay close
    assert result.metrics["iou"]["quartz"] > 0.8
    # the mount is not scored (only its errors would be): out of the IoU and the means
    assert result.metrics["iou"]["background"] is None
    assert result.metrics["classes_in_mean"] == ["pore", "quartz", "albite", "clay_accessories"]
    assert result.metrics["miou"] == pytest.approx(np.mean([result.metrics["iou"][n] for n in
                                                            result.metrics["classes_in_mean"]]))
    assert result.metrics["miou"] > 0.7
    expected = s.truth_dict()["group_fractions"]
    got = dict(zip(result.qemscan.class_names, result.qemscan.area_percent))
    for name in ("pore", "quartz", "albite", "clay_accessories"):
        assert got[name] == pytest.approx(100 * expected[name], abs=2.0)


@pytest.mark.slow
def test_compare_repairs_seams_before_registering(tmp_path):
    s = generate_sample(1, size=1024, ratio=8)  # damaged map: seams and shifted fields
    schema = s.schema
    write_png(tmp_path / "pred.png", schema.to_groups(s.truth))
    write_png(tmp_path / "damaged.png", schema.ids_to_colors(s.labels, level="minerals"))
    write_png(tmp_path / "clean.png", schema.ids_to_colors(s.labels_clean, level="minerals"))
    clean = compare(tmp_path / "pred.png", tmp_path / "clean.png", palette="qemscan24", out=tmp_path / "a")
    repaired = compare(tmp_path / "pred.png", tmp_path / "damaged.png", palette="qemscan24", out=tmp_path / "b",
                       repair_seams=True)
    assert repaired.metrics["seam_repair"]["applied"]
    assert repaired.metrics["seam_repair"]["repaired_shape"] == list(s.labels_clean.shape)
    assert repaired.metrics["miou"] == pytest.approx(clean.metrics["miou"], abs=0.01)
    # the 4 groups: pores and mount are one class; the porosity counts pores inside the section
    # outline only (pores open to the mount at the rim count as mount: about 1.5 points here)
    assert clean.predicted.excluded_classes == ()
    expected = s.truth_dict()["group_fractions"]["pores_background"]
    assert clean.predicted.porosity_percent == pytest.approx(100 * expected, abs=2.0)


def test_class_table_from_labels_tif(pair5, tmp_path):
    s, d = pair5
    names = ["pore", "quartz", "albite", "clay_accessories", "background"]
    order = [4, 2, 0, 1, 3]  # the prediction's own class order
    ids = s.schema.to_groups(s.truth)
    remapped = np.argsort(order).astype(np.uint8)[ids]
    table = labels_description([names[i] for i in order], [[10 * k, 0, 0] for k in range(len(order))])
    tifffile.imwrite(tmp_path / "labels.tif", remapped, description=table, metadata=None, tile=(256, 256))
    pm = open_predicted_map(tmp_path / "labels.tif", "qemscan24-5groups")
    assert pm.class_names == tuple(names[i] for i in order)
    assert pm.source == "labels.tif metadata"
    result = compare(tmp_path / "labels.tif", d / "truth_rgb.png", palette="qemscan24-5groups",
                     out=tmp_path / "cmp")
    assert result.metrics["miou"] == 1.0
    assert result.metrics["class_names"] == list(pm.class_names)


def test_rock_from_edge_to_edge_without_mount_or_registration(tmp_path, capsys):
    # no mount (sandstone XRM phases cut from inside a core): compare cell by cell
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (24, 32)).astype(np.uint8)
    pred = np.repeat(np.repeat(ids, 4, 0), 4, 1)  # the prediction on a 4x finer grid
    schema = load_schema("sandstone-xrm")
    write_png(tmp_path / "pred.png", pred)
    write_png(tmp_path / "xrm.png", schema.ids_to_colors(ids, level="minerals"))
    with pytest.raises(DataError, match="no class is the mount.*--no-register"):
        compare(tmp_path / "pred.png", tmp_path / "xrm.png", palette="sandstone-xrm", out=tmp_path / "a",
                mount_classes=[])
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match="did you mean 'air'"):
        compare(tmp_path / "pred.png", tmp_path / "xrm.png", palette="sandstone-xrm", out=tmp_path / "a",
                mount_classes=["ai"])
    result = compare(tmp_path / "pred.png", tmp_path / "xrm.png", palette="sandstone-xrm", out=tmp_path / "b",
                     register=False, mount_classes=[])
    assert result.metrics["miou"] == 1.0
    counts = np.bincount(ids.ravel(), minlength=4)
    np.testing.assert_allclose(result.qemscan.area_percent, 100 * counts / counts.sum())
    assert result.qemscan.porosity_percent == pytest.approx(100 * counts[0] / counts.sum())
    code = main(["compare", str(tmp_path / "pred.png"), str(tmp_path / "xrm.png"), "--palette", "sandstone-xrm",
                 "--out", str(tmp_path / "c"), "--no-register", "--mount", "none"])
    assert code == 0 and "mean IoU 1.000" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.skipif(not SANDSTONE.is_dir(), reason="../shared/data/sandstone-xrm is absent")
def test_sandstone_mask_against_a_rotated_coarse_copy(tmp_path):
    # a round core in air: 'air' holds both the pores and the outside, as pores_background does
    schema = load_schema("sandstone-xrm")
    ids = read_label_map(SANDSTONE / "masks" / "Sandstone_Versa0000.tif", schema)
    write_png(tmp_path / "pred.png", ids)
    write_png(tmp_path / "same.png", schema.ids_to_colors(ids, level="minerals"))
    same = compare(tmp_path / "pred.png", tmp_path / "same.png", palette="sandstone-xrm", out=tmp_path / "a")
    assert same.metrics["miou"] == 1.0
    outside_air = np.count_nonzero(ids == 0) - round(same.predicted.porosity_percent / 100
                                                       * same.predicted.section_pixels)
    assert outside_air > 0.3 * ids.size  # the air around the core is not porosity
    assert 5 < same.predicted.porosity_percent < 20
    turn = cv2.getRotationMatrix2D((ids.shape[1] / 2, ids.shape[0] / 2), 1.2, 1.0)
    rotated = cv2.warpAffine(ids, turn, (ids.shape[1], ids.shape[0]), flags=cv2.INTER_NEAREST, borderValue=0)
    write_png(tmp_path / "coarse.png", schema.ids_to_colors(downscale_mode(rotated, 6), level="minerals"))
    result = compare(tmp_path / "pred.png", tmp_path / "coarse.png", palette="sandstone-xrm", out=tmp_path / "b")
    reg = result.metrics["registration"]
    assert reg["scale"] == pytest.approx(6.0, rel=0.01)
    assert abs(reg["rotation_deg"]) == pytest.approx(1.2, abs=0.1)
    assert result.metrics["iou"]["quartz"] > 0.85
    assert result.qemscan.porosity_percent == pytest.approx(same.qemscan.porosity_percent, abs=1.5)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_cli_compare_and_bad_inputs(pair5, tmp_path, capsys):
    s, d = pair5
    out = tmp_path / "cmp"
    code = main(["compare", str(d / "pred.png"), str(d / "truth_rgb.png"), "--palette", "qemscan24-5groups",
                 "--out", str(out)])
    assert code == 0
    assert "mean IoU 1.000" in capsys.readouterr().out
    bad = [
        # existing folder
        (["compare", str(d / "pred.png"), str(d / "truth_rgb.png"), "--palette", "qemscan24-5groups", "--out",
          str(out)], "already exists"),
        # a QEMSCAN map in another palette: its colours are listed with their counts
        (["compare", str(d / "pred.png"), str(d / "truth_rgb.png"), "--palette", "sandstone-xrm", "--out",
          str(tmp_path / "x1")], "colours not in schema 'sandstone-xrm'"),
        # the coloured map given as the prediction
        (["compare", str(d / "truth_rgb.png"), str(d / "truth_rgb.png"), "--palette", "qemscan24-5groups",
          "--out", str(tmp_path / "x2")], "one class id per pixel"),
        (["compare", str(d / "pred.png"), str(tmp_path / "missing.png"), "--palette", "qemscan24-5groups",
          "--out", str(tmp_path / "x3")], "QEMSCAN map not found"),
        (["compare", str(tmp_path / "missing.tif"), str(d / "truth_rgb.png"), "--palette", "qemscan24-5groups",
          "--out", str(tmp_path / "x4")], "predicted map not found"),
        (["compare", str(d / "pred.png"), str(d / "truth_rgb.png"), "--palette", "qemscan25", "--out",
          str(tmp_path / "x5")], "unknown class schema"),
    ]
    for args, words in bad:
        code, err = _cli(args, capsys)
        assert code == 2, args
        assert err.startswith("error: ") and words in err, err
        assert "\n" not in err and "Traceback" not in err
    # no complete-looking (or temporary) output left behind by the failures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp"]


def test_class_name_mismatch_lists_both(pair5, tmp_path):
    s, d = pair5
    ids = s.schema.to_groups(s.truth)
    table = labels_description(["pore", "quartz", "feldspar", "clay", "background"], [[0, 0, 0]] * 5)
    tifffile.imwrite(tmp_path / "labels.tif", ids, description=table, metadata=None)
    with pytest.raises(DataError) as info:
        compare(tmp_path / "labels.tif", d / "truth_rgb.png", palette="qemscan24-5groups", out=tmp_path / "cmp")
    msg = str(info.value)
    assert "'feldspar'" in msg and "'albite'" in msg and "\n" not in msg
    assert not (tmp_path / "cmp").exists()


def test_prediction_ids_outside_its_classes(pair5, tmp_path):
    s, d = pair5
    ids = s.schema.to_groups(s.truth)
    ids[5, 5] = 7
    write_png(tmp_path / "pred.png", ids)
    with pytest.raises(UserError, match="class id 7 in rows"):
        compare(tmp_path / "pred.png", d / "truth_rgb.png", palette="qemscan24-5groups", out=tmp_path / "cmp")


def test_the_compare_report_renders_in_chromium(pair5, chromium, tmp_path):
    s, d = pair5
    compare(d / "pred.png", d / "qemscan.png", palette="qemscan24-5groups", out=tmp_path / "cmp",
            command="mineralseg compare pred.png qemscan.png --palette qemscan24-5groups --out cmp")
    found, dom = chromium.probe(tmp_path / "cmp" / "report.html")
    assert found["violations"] == [] and len(found["images"]) >= 3  # chart, disagreement, registration
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in found["images"])
    for text in ("Per class", "QEMSCAN %", "mean IoU", "albite", "--palette qemscan24-5groups"):
        assert text in dom, text
