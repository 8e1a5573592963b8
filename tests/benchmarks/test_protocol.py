"""The benchmark protocol's plumbing (benchmarks/common.py): rows appended, seeds
aggregated, "better" only beyond the spread."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402


def _seed_result(seed: int, miou: float, val: float, steps: int = 100) -> dict:
    return {"test": {"miou": miou, "iou": {"a": miou + 0.1, "b": miou - 0.1}, "num_pixels": 1000},
            "val": {"miou": val}, "train_seconds": 60.0 + seed, "run": f"/tmp/run-{seed}",
            "params": {"seed": seed, "global_step": steps, "best_step": steps}}


def test_seed_row_reports_mean_sd_and_each_seed():
    row = common.seed_row("cnn", "data", [_seed_result(0, 0.70, 0.6), _seed_result(1, 0.74, 0.62),
                                          _seed_result(2, 0.72, 0.64)], weights="none", steps=100)
    assert row["miou"] == pytest.approx(0.72) and row["miou_sd"] == pytest.approx(0.02)
    assert row["iou"]["a"] == pytest.approx(0.82) and row["iou_sd"]["b"] == pytest.approx(0.02)
    assert row["val_miou"] == pytest.approx(0.62) and row["val_miou_sd"] == pytest.approx(0.02)
    assert [s["seed"] for s in row["seeds"]] == [0, 1, 2] and row["seeds"][1]["miou"] == 0.74
    assert row["steps"] == 100 and row["train_seconds"] == pytest.approx(61.0)


def test_results_are_appended_never_overwritten(tmp_path):
    first = {"method": "rf", "dataset": "d", "iou": {"a": 0.5}, "miou": 0.5, "weights": None, "date": "2026-01-01"}
    second = {**first, "miou": 0.6, "iou": {"a": 0.6}, "date": "2026-01-02"}
    common.write_results(tmp_path, "q", [first], title="t", intro="i")
    _, md, latest = common.write_results(tmp_path, "q", [second], title="t", intro="i")
    rows = json.loads((tmp_path / "q.json").read_text())
    assert [r["miou"] for r in rows] == [0.5, 0.6] and all(r["recorded"] for r in rows)
    assert [r["miou"] for r in latest] == [0.6]  # the table shows the latest row of a method
    text = md.read_text()
    assert "| rf | – | 0.600 |" in text and "Earlier rows" in text and "rf: mean IoU 0.500, measured 2026-01-01" in text


def test_a_value_is_bold_only_beyond_the_spread():
    assert common.clear_winner([0.80, 0.78], [0.01, 0.01]) == 0
    assert common.clear_winner([0.80, 0.79], [0.02, 0.0]) is None  # within the spread: no winner
    assert common.clear_winner([0.80, 0.70], [None, 0.0]) is None  # one seed: spread unknown
    cnn = {"method": "cnn", "weights": "none", "iou": {"a": 0.80}, "iou_sd": {"a": 0.02}, "miou": 0.80,
           "miou_sd": 0.02, "seeds": [{}, {}, {}]}
    rf = {"method": "rf", "weights": None, "iou": {"a": 0.75}, "miou": 0.79}
    table = common.markdown_table([cnn, rf], ["a"])
    assert "**0.800 ± 0.020**" in table  # class a: 0.05 apart, beyond sd 0.02
    assert "| 0.800 ± 0.020 | 3 |" in table  # mean IoU: 0.01 apart, within the spread
    one_seed = {**cnn, "seeds": None, "iou_sd": None, "miou_sd": None}
    assert "**" not in common.markdown_table([one_seed, rf], ["a"])


def test_protocol_needs_three_seeds_unless_smoke():
    assert common.check_seeds([0, 1, 2]) == [0, 1, 2]
    with pytest.raises(SystemExit, match="at least 3 distinct seeds"):
        common.check_seeds([0, 0, 1])
    assert common.check_seeds([0], smoke=True) == [0]
    assert np.isclose(common.spread({"weights": None, "iou": {}}), 0.0)  # e.g. multi-Otsu
    assert common.spread({"weights": None, "iou": {}, "params": {"seed": 0}}) is None  # a seeded forest, one seed
