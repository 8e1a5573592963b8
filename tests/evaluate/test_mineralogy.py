"""Tests of the modal mineralogy (mineralseg.evaluate.mineralogy)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.mineralogy import (
    ModalMineralogy,
    class_counts,
    check_class_names,
    default_excluded_classes,
    default_mount_classes,
    default_pore_classes,
    modal_mineralogy,
    write_mineralogy,
)

NAMES = ("pore", "quartz", "albite", "clay_accessories", "background")


def _random_map(seed: int = 0, shape: tuple[int, int] = (97, 131), classes: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.05] = 255
    return labels


def test_class_counts_equal_bincount_inside_mask():
    labels = _random_map()
    mask = np.zeros(labels.shape, bool)
    mask[10:80, 5:100] = True
    counts = class_counts(labels, 5, mask=mask)
    inside = labels[mask]
    expected = np.bincount(inside[inside != 255], minlength=5)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    # no mask: every known pixel; ignore_index=None with no 255 present counts all
    np.testing.assert_array_equal(class_counts(labels, 5), np.bincount(labels[labels != 255], minlength=5))
    clean = np.where(labels == 255, 0, labels)
    assert class_counts(clean, 5, ignore_index=None).sum() == clean.size


def test_class_counts_in_chunks_matches_whole(monkeypatch):
    import mineralseg.evaluate.mineralogy as mod

    labels = _random_map(1, (64, 64))
    whole = class_counts(labels, 5)
    monkeypatch.setattr(mod, "_CHUNK_PIXELS", 1000)  # 4096 pixels in 5 chunks
    np.testing.assert_array_equal(class_counts(labels, 5), whole)


def test_class_counts_rejects_bad_input():
    labels = _random_map()
    with pytest.raises(DataError, match="id 4, outside 0..3"):
        class_counts(labels, 4)
    with pytest.raises(DataError, match="mask of shape"):
        class_counts(labels, 5, mask=np.ones((3, 3), bool))
    with pytest.raises(DataError, match="2-D array of integer ids"):
        class_counts(labels.astype(np.float32), 5)
    with pytest.raises(UserError, match="num_classes"):
        class_counts(labels, 0)


def test_fractions_sum_to_100_and_equal_bincount():
    labels = _random_map(2)
    counts = class_counts(labels, 5)
    m = modal_mineralogy(counts, NAMES)
    assert m.excluded_classes == ("background",)
    assert m.class_names == NAMES[:4]
    assert m.pixels == tuple(int(v) for v in counts[:4])
    assert math.isclose(sum(m.area_percent), 100.0, rel_tol=1e-12)
    known = labels[(labels != 255) & (labels != 4)]
    expected = 100.0 * np.bincount(known, minlength=4) / known.size
    np.testing.assert_allclose(m.area_percent, expected, rtol=1e-12)
    assert m.section_pixels == known.size


def test_porosity_and_default_classes():
    m = modal_mineralogy([10, 60, 30, 500], ["pore", "quartz", "clay", "background"])
    assert m.porosity_percent == pytest.approx(10.0)
    assert m.pore_classes == ("pore",)
    # the study's 4 groups: pores and mount in one class, which counts as pore space
    m4 = modal_mineralogy([25, 50, 25, 0], ["pores_background", "quartz", "albite", "clay_accessories"])
    assert m4.excluded_classes == ()
    assert m4.pore_classes == ("pores_background",)
    assert m4.porosity_percent == pytest.approx(25.0)
    # sandstone XRM: air is pore space
    assert default_pore_classes(["air", "quartz", "clay", "pyrite"]) == ("air",)
    assert default_excluded_classes(["air", "quartz"]) == ()
    assert default_excluded_classes(["pores_background", "Epoxy-Mount", "outside", "quartz"]) == (
        "Epoxy-Mount", "outside")
    # no pore class at all
    assert modal_mineralogy([5, 5], ["quartz", "clay"]).porosity_percent is None


def test_explicit_classes_and_exclusions():
    counts = [10, 60, 30, 100]
    names = ["pore", "quartz", "clay", "resin_blob"]
    m = modal_mineralogy(counts, names, pore_classes=["pore", "clay"], excluded_classes=["resin_blob"])
    assert m.class_names == ("pore", "quartz", "clay")
    assert m.porosity_percent == pytest.approx(40.0)
    m2 = modal_mineralogy(counts, names, excluded_classes=["quartz"])
    assert m2.class_names == ("pore", "clay", "resin_blob")
    assert m2.area_percent == pytest.approx((10 / 1.4, 30 / 1.4, 100 / 1.4))
    m3 = modal_mineralogy(counts, names, excluded_classes=[])
    assert m3.section_pixels == 200
    with pytest.raises(UserError, match="did you mean 'quartz'"):
        modal_mineralogy(counts, names, excluded_classes=["qartz"])
    with pytest.raises(UserError, match="both pore space and excluded"):
        modal_mineralogy(counts, names, pore_classes=["pore"], excluded_classes=["pore"])


def test_area_mm2_from_pixel_size():
    m = modal_mineralogy([1_000_000, 3_000_000, 7], ["quartz", "clay", "background"], pixel_size_um=2.0)
    # one pixel = 4 um^2 = 4e-6 mm^2
    assert m.area_mm2 == pytest.approx((4.0, 12.0))
    assert m.section_area_mm2 == pytest.approx(16.0)
    assert modal_mineralogy([1, 1], ["quartz", "clay"]).area_mm2 is None
    with pytest.raises(UserError, match="pixel size"):
        modal_mineralogy([1, 1], ["quartz", "clay"], pixel_size_um=0)


def test_uncertain_share():
    m = modal_mineralogy([30, 70, 50], ["pore", "quartz", "background"], uncertain_pixels=25)
    assert m.uncertain_percent == pytest.approx(25.0)
    with pytest.raises(UserError, match="0..100"):
        modal_mineralogy([30, 70, 50], ["pore", "quartz", "background"], uncertain_pixels=101)


def test_empty_section_is_a_clear_error():
    with pytest.raises(DataError, match="no pixels inside the section") as info:
        modal_mineralogy([0, 0, 1234], ["pore", "quartz", "background"])
    assert "1234" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="3 pixel counts given for 2"):
        modal_mineralogy([1, 2, 3], ["a", "b"])
    with pytest.raises(UserError, match="non-negative"):
        modal_mineralogy([1, -2], ["a", "b"])


def test_write_mineralogy_csv_and_json(tmp_path):
    m = modal_mineralogy([10, 60, 30, 500], ["pore", "quartz", "clay", "background"], pixel_size_um=0.5,
                         uncertain_pixels=3)
    write_mineralogy(m, tmp_path / "mineralogy.csv", tmp_path / "mineralogy.json")
    with open(tmp_path / "mineralogy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == ["pore", "quartz", "clay"]
    assert [int(r["pixels"]) for r in rows] == [10, 60, 30]
    assert sum(float(r["area_percent"]) for r in rows) == pytest.approx(100.0)
    assert float(rows[1]["area_mm2"]) == pytest.approx(60 * 0.25e-6)
    data = json.loads((tmp_path / "mineralogy.json").read_text())
    assert data == json.loads(json.dumps(m.to_dict()))
    assert data["porosity_percent"] == pytest.approx(10.0)
    assert data["excluded_classes"] == ["background"]
    assert data["uncertain_percent"] == pytest.approx(3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mineralogy.csv", "mineralogy.json"]
    assert isinstance(m, ModalMineralogy)


def test_mount_classes_by_default():
    # a class of its own for the mount, else the pore classes that hold it too
    assert default_mount_classes(["pore", "quartz", "albite", "clay_accessories", "background"]) == ("background",)
    assert default_mount_classes(["pores_background", "quartz", "albite", "clay_accessories"]) == (
        "pores_background",)
    assert default_mount_classes(["air", "quartz", "clay", "pyrite"]) == ("air",)
    assert default_mount_classes(["quartz", "clay"]) == ()
    assert check_class_names(["clay", "clay", "quartz"], ["quartz", "clay"], "mount class") == ("clay", "quartz")
    with pytest.raises(UserError, match="unknown mount class 'qartz' \\(did you mean 'quartz'\\?\\)"):
        check_class_names("qartz", ["quartz", "clay"], "mount class")
