"""Tests of mineralseg.evaluate.evaluate and .checkpoint (on a tiny trained run)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mineralseg.data import load_manifest
from mineralseg.data.manifest import Tile
from mineralseg.errors import DataError, UserError
from mineralseg.model_card import ModelCard
from mineralseg.evaluate.checkpoint import (
    check_grid_matches,
    load_checkpoint_model,
    read_checkpoint,
    resolve_checkpoint,
)
from mineralseg.evaluate.evaluate import choose_panel_tiles, evaluate

from conftest import write_tiny_dataset


def _manual_confusion(model, card, manifest, split: str) -> np.ndarray:
    """Confusion matrix computed independently of the evaluate() code path."""
    c = manifest.num_classes
    cm = np.zeros((c, c), dtype=np.int64)
    size = card.input_size
    for tile in manifest.split(split):
        image = np.asarray(Image.open(tile.image)).astype(np.float32) / 255.0
        mask = np.asarray(Image.open(tile.mask)).astype(np.int64)
        if image.shape[0] != size:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy((image - card.mean) / card.std)[None, None].float()
        with torch.no_grad():
            logits = model(x)
        if logits.shape[-1] != mask.shape[-1]:
            logits = torch.nn.functional.interpolate(logits, size=mask.shape, mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0].numpy()
        keep = mask != 255
        cm += np.bincount(mask[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
    return cm


def test_evaluate_scores_one_confusion_matrix(trained_run, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(trained_run, tiny_dataset, out=out, batch_size=3, panels=3, progress=False)
    manifest = load_manifest(tiny_dataset)
    model, card = load_checkpoint_model(trained_run)
    expected = _manual_confusion(model, card, manifest, "test")
    assert np.array_equal(np.array(result["confusion_matrix"]), expected)
    assert result["num_pixels"] == manifest.class_counts("test").sum()
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    assert [result["iou"][n] for n in manifest.class_names] == pytest.approx(iou.tolist())
    assert result["miou"] == pytest.approx(np.nanmean(iou))
    assert result["pixel_accuracy"] == pytest.approx(tp.sum() / expected.sum())
    assert result["split"] == "test" and result["num_tiles"] == 4
    assert result["checkpoint"].endswith("best.ckpt")

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["miou"] == pytest.approx(result["miou"])
    assert set(saved["f1"]) == {"pore", "quartz", "clay"}
    for name in ("panels.png", "confusion.png", "training_curves.png", "lr_schedule.png"):
        assert name in result["figures"]
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_evaluate_default_folder_and_checkpoint_alone(trained_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = evaluate(run, split="val", panels=0, progress=False)  # dataset from the checkpoint
    assert (run / "eval-val" / "metrics.json").is_file()
    assert "panels.png" not in result["figures"] and result["num_tiles"] == 4
    assert result["dataset"] == str(tiny_dataset.resolve())

    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(run / "checkpoints" / "last.ckpt", alone)
    result = evaluate(alone, tiny_dataset, panels=1, progress=False)
    assert result["out"] == str(alone.parent / "eval-test-model")
    assert result["figures"] == ["panels.png", "confusion.png"]  # no run folder: no curves


def test_evaluate_resizes_tiles_to_the_model_input(trained_run, tiny_dataset, tmp_path):
    """Tiles stored at twice the training resolution (same grid, ``out_size`` 128): resized
    for the model, scored at full resolution."""
    big = tmp_path / "big"
    raw = json.loads((tiny_dataset / "manifest.json").read_text())
    for t in raw["tiles"]:
        for key in ("image", "mask"):
            arr = np.asarray(Image.open(tiny_dataset / t[key]))
            (big / t[key]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(np.repeat(arr, 2, 0), 2, 1)).save(big / t[key])
        t["class_counts"] = [4 * c for c in t["class_counts"]]
    raw["out_size"] = 128  # same tile_size (grid) as training: only the stored resolution differs
    (big / "manifest.json").write_text(json.dumps(raw))
    small = evaluate(trained_run, tiny_dataset, out=tmp_path / "e64", panels=0, progress=False)
    large = evaluate(trained_run, big, out=tmp_path / "e128", panels=0, progress=False)
    assert large["num_pixels"] == 4 * small["num_pixels"] and large["out_size"] == 128
    assert large["miou"] == pytest.approx(small["miou"], abs=0.03)
    model, card = load_checkpoint_model(trained_run)
    expected = _manual_confusion(model, card, load_manifest(big), "test")
    assert np.array_equal(np.array(large["confusion_matrix"]), expected)


def test_evaluate_rejects_a_dataset_with_other_classes(trained_run, tmp_path):
    other = write_tiny_dataset(tmp_path / "other", n_tiles=6, splits=(4, 1, 1),
                               class_names=("pore", "quartz", "albite"))
    with pytest.raises(DataError, match=r"trained on 3 classes \['pore', 'quartz', 'clay'\] but dataset .* has"):
        evaluate(trained_run, other, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_checkpoint_lookup_errors(tmp_path, trained_run):
    with pytest.raises(UserError, match="not found"):
        resolve_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(UserError, match="holds no checkpoints"):
        resolve_checkpoint(tmp_path)
    ckpt, run = resolve_checkpoint(trained_run)
    assert ckpt == trained_run / "checkpoints" / "best.ckpt" and run == trained_run
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 0}, foreign)
    with pytest.raises(DataError, match="not written by `mineralseg train`"):
        read_checkpoint(foreign)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: the file appearing means code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_copy(trained_run, dest, marker):
    """A run folder whose best checkpoint is the trained one plus a payload."""
    shutil.copytree(trained_run, dest)
    ckpt = torch.load(dest / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    ckpt["callbacks"]["payload"] = _CreatesFile(marker)
    torch.save(ckpt, dest / "checkpoints" / "best.ckpt")
    return dest


def test_a_malicious_checkpoint_is_refused_and_nothing_runs(trained_run, tiny_dataset, tmp_path, capsys):
    from mineralseg.cli import main

    marker = tmp_path / "payload-ran"
    run = _malicious_copy(trained_run, tmp_path / "run", marker)
    with pytest.raises(DataError, match=r"refusing to open .*best.ckpt: it needs io.open, .* --trust-checkpoint"):
        load_checkpoint_model(run)
    assert not marker.exists()
    code = main(["evaluate", str(run), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: refusing to open"), err
    assert not marker.exists() and not (tmp_path / "ev").exists()
    # The payload is real: trusting the file runs it (only ever for your own files).
    load_checkpoint_model(run, trust=True)
    assert marker.exists()


def test_checkpoints_the_project_writes_open_without_trust(trained_run):
    ckpt = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(ckpt)


def _retuned(tiny_dataset, dest, **changes):
    shutil.copytree(tiny_dataset, dest)
    raw = json.loads((dest / "manifest.json").read_text())
    for key, value in changes.items():
        raw[key] = value
    (dest / "manifest.json").write_text(json.dumps(raw))
    return dest


@pytest.mark.parametrize("changes, message", [
    ({"sem_scale": 2}, r"sem_scale 1.0 vs 2\.0"),
    ({"tile_size": 32}, r"tile_size 64 vs 32"),
    ({"normalisation": {"method": "percentile", "low": 1, "high": 99}}, r"normalisation method 'none' vs 'percentile'"),
])
def test_evaluate_rejects_a_dataset_on_another_grid(trained_run, tiny_dataset, tmp_path, changes, message):
    other = _retuned(tiny_dataset, tmp_path / "other", **changes)
    with pytest.raises(DataError, match=message):
        evaluate(trained_run, other, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_grid_check_compares_settings_not_per_sample_statistics(tiny_dataset):
    from dataclasses import replace

    base = load_manifest(tiny_dataset)
    norm = {"method": "percentile", "low": 1.0, "high": 99.0, "drift": True}
    card = ModelCard(class_names=("a",), class_colors=((0, 0, 0),), ignore_index=255, arch="unet", mean=0.5, std=0.2,
                     input_size=64, tile_size=64, out_size=64, sem_scale=1,
                     sem_normalisation={**norm, "per_sample": {"a": {"offset": 3}}})
    check_grid_matches(card, replace(base, normalisation={**norm, "per_sample": {"b": {"offset": 7}}}))  # same settings, other samples' statistics: fine
    with pytest.raises(DataError, match=r"normalisation high 99.0 vs 99.5"):
        check_grid_matches(card, replace(base, normalisation={**norm, "high": 99.5}), checkpoint="model.ckpt")
    with pytest.raises(DataError, match=r"model.ckpt was trained .* normalisation drift True vs False"):
        check_grid_matches(card, replace(base, normalisation={**norm, "drift": False}), checkpoint="model.ckpt")


def _tile(i: int, counts, sample: str = "a") -> Tile:
    return Tile(id=f"t{i}", sample=sample, row=i, col=0, split="test", image=None, mask=None,
                class_counts=tuple(counts))


def test_choose_panel_tiles_prefers_mixed_tiles_from_several_samples():
    tiles = [_tile(0, (100, 0, 0)), _tile(1, (50, 50, 0)), _tile(2, (34, 33, 33)),
             _tile(3, (40, 30, 30), sample="b"), _tile(4, (90, 10, 0))]
    assert choose_panel_tiles(tiles, 2) == [2, 3]  # the most mixed of each sample
    assert choose_panel_tiles(tiles, 3) == [2, 3, 1]
    assert choose_panel_tiles(tiles, 0) == []
    assert sorted(choose_panel_tiles(tiles, 10)) == [0, 1, 2, 3, 4]
