"""`make demo` runs `mineralseg demo`: the whole pipeline on synthetic data."""

from __future__ import annotations

import json

import pytest

from mineralseg.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    summary = run_demo(tmp_path / "demo", samples=2, size=2048, minutes=0.05, seed=0)
    metrics = json.loads((tmp_path / "demo" / "runs").glob("*/eval-test/metrics.json").__next__().read_text())
    assert metrics["class_names"] == ["pores_background", "quartz", "albite", "clay_accessories"]
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["num_pixels"] > 0
    assert metrics["context"] == "sample"  # scored the way a user maps: each sample predicted whole
    for name in ("manifest.json", "registration.json", "class_stats.json"):
        assert (tmp_path / "demo" / "dataset" / name).is_file()
    assert list((tmp_path / "demo" / "dataset" / "qa").glob("*_registration_after.png"))
    # the printed summary has the per-class table, the results table and the figure paths
    text = summary["text"]
    assert "| albite |" in text and "mean IoU" in text and "panels.png" in text
    # ...and ends by mapping a synthetic SEM image that no training tile came from.
    mapped = tmp_path / "demo" / "maps" / "sample00"
    assert summary["map"] == str(mapped) and f"report: {mapped / 'report.html'}" in text
    for name in ("labels.tif", "map.png", "mineralogy.csv", "report.html"):
        assert (mapped / name).is_file()
    mineralogy = json.loads((mapped / "mineralogy.json").read_text())
    assert sum(r["area_percent"] for r in mineralogy["classes"]) == pytest.approx(100.0)
    run = json.loads((mapped / "run.json").read_text())
    assert run["working_grid"]["from"].startswith("the model card")  # the scale came from the training data
