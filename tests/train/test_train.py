"""Tests of mineralseg.train: config, end-to-end runs, resume, DDP, NaN stop, grids."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mineralseg.data import intensity_stats, load_manifest
from mineralseg.errors import ConfigError, DataError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.train import NonFiniteLossError, SegmentationModule, train
from mineralseg.train.config import load_train_config
from mineralseg.train.experiment import run_experiment

from conftest import tiny_train_config

# Training script run in subprocesses (Lightning's DDP launcher starts it again for
# the second process, as it would `mineralseg train`).
TRAIN_SCRIPT = """
import sys
from mineralseg.train import train

if __name__ == "__main__":
    train(sys.argv[1])
"""


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _column(rows, name) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


# --------------------------------------------------------------------------- config
def test_config_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("dataset: data\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trainer.max_epoch' \(did you mean 'max_epochs'\?\).*batch_size"):
        load_train_config(path)
    path.write_text("trainer: {max_epochs: 3}\n")
    with pytest.raises(ConfigError, match="missing key 'dataset'"):
        load_train_config(path)
    path.write_text("dataset: d\nloss: {name: dice_focall}\n")
    with pytest.raises(ConfigError, match="loss.name"):
        load_train_config(path)


def test_config_paths_overrides_and_approach(tmp_path):
    path = tmp_path / "cfg" / "train.yaml"
    path.parent.mkdir()
    path.write_text("dataset: ../data\nrun: {root: runs}\napproach: imagenet_frozen\nmodel: {arch: unet, encoder: resnet18}\n")
    cfg = load_train_config(path, overrides=["trainer.max_epochs=7", "optim.lr=1e-4"])
    assert cfg.dataset.resolve() == (tmp_path / "data").resolve()
    assert cfg.run.root.resolve() == (tmp_path / "cfg" / "runs").resolve()
    assert cfg.trainer.max_epochs == 7 and cfg.optim.lr == 1e-4
    assert (cfg.model.encoder_weights, cfg.model.freeze_encoder) == ("imagenet", True)
    assert cfg.run_name() == "unet-resnet18"
    # the resolved config round-trips, and a new approach replaces the old one's settings
    again = load_train_config(yaml.safe_load(cfg.to_yaml()), overrides={"approach": "random"})
    assert (again.model.encoder_weights, again.model.freeze_encoder) == (None, False)
    with pytest.raises(ConfigError, match="approach 'random' sets model.encoder_weights"):
        load_train_config({"dataset": "d", "approach": "random", "model": {"encoder_weights": "imagenet"}})


def test_config_imbalance_switches():
    base = {"dataset": "d", "loss": {"name": "dice_focal"}}
    assert load_train_config(base).effective_loss == "dice_focal"
    off = {**base, "imbalance": {"focal_term": False}}
    assert load_train_config(off).effective_loss == "dice"
    assert load_train_config({**off, "loss": {"name": "focal"}}).effective_loss == "ce"
    assert load_train_config({"dataset": "d", "trainer": {"precision": 32}}).trainer.precision == "32"
    with pytest.raises(ConfigError, match="DD:HH:MM:SS"):
        load_train_config({"dataset": "d", "trainer": {"max_time": "2 hours"}})


# --------------------------------------------------------------------------- end to end
def test_train_run_folder_and_logs(trained_run, tiny_dataset):
    run = trained_run
    for name in ("config.yaml", "run.json", "metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").glob("events.out.tfevents*"))
    manifest = load_manifest(tiny_dataset)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 0
    assert record["dataset"]["manifest_sha256"] == manifest.sha256
    assert {"torch", "lightning", "python"} <= set(record["versions"])
    assert record["global_step"] == 16 and record["epochs"] == 4  # 4 epochs x 4 batches
    assert load_train_config(run / "config.yaml").dataset == Path(tiny_dataset).resolve()

    rows = _rows(run / "metrics.csv")
    miou = _column(rows, "val_miou")
    assert len(miou) == 4
    assert record["best_val_miou"] == pytest.approx(max(v for _, v in miou), abs=1e-6)
    assert miou[-1][1] > 0.5  # the tiny problem is learnt (pore/quartz by grey level)
    # the validation matrix counts every labelled pixel of the split once
    val_pixels = manifest.class_counts("val").sum()
    assert all(v == val_pixels for _, v in _column(rows, "val_pixels"))
    # LR logged per step: cosine from lr down, warm restart after one epoch (T_0 = 4 steps)
    lr = [v for _, v in sorted(_column(rows, "lr"))]
    assert len(lr) == 16 and lr[0] == pytest.approx(3e-3)
    assert all(a > b for a, b in zip(lr[:4], lr[1:4]))
    assert lr[4] == pytest.approx(3e-3)


def test_checkpoint_describes_itself(trained_run, tiny_dataset, tmp_path):
    alone = tmp_path / "model.ckpt"
    alone.write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes())
    model, card = load_checkpoint_model(alone)
    manifest = load_manifest(tiny_dataset)
    assert not model.training
    assert card.class_names == ("pore", "quartz", "clay")
    assert card.class_colors == ((0, 0, 0), (255, 192, 192), (0, 128, 0))
    assert card.ignore_index == 255 and card.num_classes == 3 and card.in_channels == 1
    assert (card.mean, card.std) == pytest.approx(intensity_stats(manifest.split("train")))
    assert (card.input_size, card.tile_size, card.out_size, card.sem_scale) == (64, 64, 64, 1)
    assert card.arch == "plain-unet" and card.dataset_sha256 == manifest.sha256
    assert card.config["trainer"]["max_epochs"] == 4
    # The best checkpoint carries the validation scores that ranked it.
    assert set(card.validation_iou) == {"pore", "quartz", "clay"}
    assert card.validation_miou == pytest.approx(json.loads((trained_run / "run.json").read_text())["best_val_miou"])
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3, 64, 64)
    # the same weights as the Lightning state
    state = torch.load(alone, map_location="cpu", weights_only=False)["state_dict"]
    key = next(k for k in state if k.startswith("model."))
    torch.testing.assert_close(model.state_dict()[key[len("model."):]], state[key])


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_before_training(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no manifest.json"):
        train(tiny_train_config(empty, runs))
    with pytest.raises(ConfigError, match="unknown architecture.*unet"):
        train(tiny_train_config(tiny_dataset, runs, **{"model.arch": "unetx", "model.options": {}}))
    with pytest.raises(ConfigError, match="unknown encoder.*resnet18"):
        train(tiny_train_config(tiny_dataset, runs, **{"model.arch": "unet", "model.encoder": "resnet81",
                                                       "model.options": {}}))
    with pytest.raises(ConfigError, match="input_size 60 is not a multiple of 8"):
        train(tiny_train_config(tiny_dataset, runs, input_size=60))
    with pytest.raises(ConfigError, match="class_weights has 2 values"):
        train(tiny_train_config(tiny_dataset, runs, **{"loss.class_weights": [1.0, 2.0]}))
    assert not runs.exists() or not any(runs.iterdir())  # nothing was started


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_dataset, monkeypatch):
    original = SegmentationModule.compute_loss

    def nan_from_step_6(self, logits, target):
        loss = original(self, logits, target)
        if self.training and self.trainer.global_step >= 6:
            return loss * float("nan")
        return loss

    monkeypatch.setattr(SegmentationModule, "compute_loss", nan_from_step_6)
    cfg = tiny_train_config(tiny_dataset, tmp_path / "runs", **{"trainer.checkpoint_every_n_steps": 2})
    with pytest.raises(NonFiniteLossError, match=r"loss became NaN at step 6 .*last good checkpoint: .*last\.ckpt"):
        train(cfg)
    (run,) = (tmp_path / "runs").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    record = json.loads((run / "run.json").read_text())
    assert record["status"].startswith("stopped: loss became NaN")



def test_frozen_encoder_stays_fixed_during_training(tmp_path, tiny_dataset, monkeypatch):
    """freeze_encoder: encoder weights and batch-norm statistics do not move; the decoder learns."""
    seen = {}

    def remember_start(self):
        seen["start"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(SegmentationModule, "on_train_start", remember_start, raising=False)
    run = train(tiny_train_config(tiny_dataset, tmp_path / "runs", **{
        "model.freeze_encoder": True, "trainer.max_epochs": 1}))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    record = json.loads((run / "run.json").read_text())
    assert 0 < record["model"]["trainable_parameters"] < record["model"]["parameters"]
    changed = {k for k, v in seen["start"].items()
               if v.is_floating_point() and not torch.equal(v, state[f"model.{k}"])}
    encoder = {k for k in seen["start"] if ".encoder." in f".{k}"}
    assert encoder and not (changed & encoder)  # weights and running_mean/var untouched
    assert changed - encoder  # the decoder did train


def test_moving_average_of_weights_is_validated_saved_and_evaluated(tmp_path, tiny_dataset):
    """optim.ema_decay: the averaged weights follow the trained ones by the EMA rule and are
    the ones a checkpoint's model is rebuilt with."""
    decay = 0.5
    run = train(tiny_train_config(tiny_dataset, tmp_path / "runs", **{"optim.ema_decay": decay,
                                                                      "trainer.max_epochs": 2}))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    steps = ckpt["global_step"]
    assert int(state["ema.n_averaged"]) == steps > 1
    raw = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    ema = {k[len("ema.module."):]: v for k, v in state.items() if k.startswith("ema.module.")}
    assert raw.keys() == ema.keys()
    weights = [k for k, v in raw.items() if v.is_floating_point() and k.endswith("weight")]
    assert any(not torch.allclose(raw[k], ema[k]) for k in weights)  # an average, not a copy
    model, card = load_checkpoint_model(run / "checkpoints" / "last.ckpt")
    assert card.weights == "moving average"
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema[k])
    _, plain_card = load_checkpoint_model(train(tiny_train_config(
        tiny_dataset, tmp_path / "runs2", **{"trainer.max_epochs": 1})))
    assert plain_card.weights == "trained"
    with pytest.raises(ConfigError, match="ema_decay"):
        load_train_config({"dataset": "d", "optim": {"ema_decay": 1.5}})


def test_precision_auto_uses_bf16_only_where_the_cpu_has_it():
    from mineralseg.train.precision import cpu_has_native_bf16

    assert cpu_has_native_bf16("processor: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16("flags\t: fpu avx512f avx512_bf16\n")
    assert not cpu_has_native_bf16("flags\t: fpu sse2 avx2 avx512f\n")
    assert not cpu_has_native_bf16("no flags line here")


@pytest.mark.slow
def _training_state(module) -> dict:
    """What a resumed fit must start from, read inside the running Trainer."""
    trainer = module.trainer
    optimizer = trainer.optimizers[0]
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    best = next(cb for cb in trainer.checkpoint_callbacks if cb.monitor == "val_miou")
    return {
        "weights": {k: v.detach().clone() for k, v in module.model.state_dict().items()},
        "exp_avg": [optimizer.state[p]["exp_avg"].clone() for p in optimizer.param_groups[0]["params"]],
        "scheduler_epoch": scheduler.last_epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "best_score": float(best.best_model_score),
        "global_step": trainer.global_step,
    }


def test_resume_after_kill_continues_steps(tmp_path, tiny_dataset, monkeypatch):
    runs = tmp_path / "runs"
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_train_config(tiny_dataset, runs, **{"trainer.max_epochs": 500})))
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_path)], env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        last = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(runs.glob("*/checkpoints/last.ckpt")) if runs.exists() else []
            # two epochs done: the best score and the schedule have moved on from their start
            if found and torch.load(found[0], map_location="cpu", weights_only=True).get("epoch", 0) >= 1:
                last = found[0]
                break
            time.sleep(0.05)
        assert last is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    run = last.parent.parent
    killed = torch.load(last, map_location="cpu", weights_only=True)
    killed_step, killed_epoch = killed["global_step"], killed["epoch"]
    assert killed_step > 0 and json.loads((run / "run.json").read_text())["status"] == "running"
    killed_best = next(v["best_model_score"] for k, v in killed["callbacks"].items() if "val_miou" in k)

    seen = {}
    monkeypatch.setattr(SegmentationModule, "on_train_start", lambda self: seen.update(_training_state(self)))
    target_epochs = killed_epoch + 3
    out = train(resume=run, overrides={"trainer.max_epochs": target_epochs})
    assert out == run and len(list(runs.iterdir())) == 1
    # the resumed fit started from the killed run's weights, optimiser state, LR schedule and best score
    assert seen["global_step"] == killed_step
    weights = {k[len("model."):]: v for k, v in killed["state_dict"].items() if k.startswith("model.")}
    assert weights.keys() == seen["weights"].keys()
    assert all(torch.equal(weights[k], seen["weights"][k]) for k in weights)
    saved_moments = [s["exp_avg"] for s in killed["optimizer_states"][0]["state"].values()]
    assert len(saved_moments) == len(seen["exp_avg"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(saved_moments, seen["exp_avg"]))
    assert seen["scheduler_epoch"] == killed["lr_schedulers"][0]["last_epoch"] == killed_step
    assert seen["lr"] == pytest.approx(killed["lr_schedulers"][0]["_last_lr"][0])
    assert seen["best_score"] == pytest.approx(float(killed_best))

    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == target_epochs * 4 > killed_step
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["resumed"][0]["global_step"] == killed_step
    assert record["best_val_miou"] >= float(killed_best) - 1e-6  # the best so far is never forgotten
    # metrics.csv merged: one LR entry per step from 0 to the end, none repeated
    steps = sorted(s for s, _ in _column(_rows(run / "metrics.csv"), "lr"))
    assert steps == list(range(target_epochs * 4))


def _changed_dataset(tiny_dataset: Path, dest: Path, **changes) -> Path:
    import shutil

    shutil.copytree(tiny_dataset, dest)
    raw = json.loads((dest / "manifest.json").read_text())
    raw.update(changes)
    (dest / "manifest.json").write_text(json.dumps(raw))
    return dest


def test_resume_refuses_changed_data_and_unsafe_checkpoints(trained_run, tiny_dataset, tmp_path):
    import shutil

    from mineralseg.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "run.json").read_text()
    epochs = json.loads(before)["epochs"]
    # another manifest (one tile fewer) under the same class names
    raw = json.loads((tiny_dataset / "manifest.json").read_text())
    changed = _changed_dataset(tiny_dataset, tmp_path / "changed", tiles=raw["tiles"][:-1])
    with pytest.raises(DataError, match=r"cannot resume .*run: dataset .*changed changed since the run started "
                                        r"\(manifest sha256 .*, was .*\).*--allow-changed-dataset"):
        train(resume=run, overrides={"dataset": str(changed)})
    renamed = {**raw["schema"], "names": ["pore", "quartz", "albite"]}
    other = _changed_dataset(tiny_dataset, tmp_path / "other", schema=renamed)
    with pytest.raises(DataError, match=r"trained on classes \['pore', 'quartz', 'clay'\] but dataset"):
        train(resume=run, overrides={"dataset": str(other)}, allow_changed_dataset=True)
    assert (run / "run.json").read_text() == before  # nothing was started or recorded

    # an explicit yes continues on the changed data, and the change is recorded
    train(resume=run, overrides={"dataset": str(changed), "trainer.max_epochs": epochs + 1},
          allow_changed_dataset=True)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["resumed"][-1]["dataset_changed_from"] == json.loads(before)["dataset"]["manifest_sha256"]
    assert record["dataset"]["manifest_sha256"] == load_manifest(changed).sha256

    # a last.ckpt carrying a payload is refused before anything runs, by train() and by the CLI
    marker = tmp_path / "payload-ran"

    class CreatesFile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["loops"]["payload"] = CreatesFile()
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    with pytest.raises(DataError, match=r"refusing to open .*last.ckpt: .*--trust-checkpoint"):
        train(resume=run, overrides={"dataset": str(changed)})
    assert main(["train", "--resume", str(run), "--set", f"dataset={changed}"]) == 2
    assert not marker.exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_reduce_metrics(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    cfg = tiny_train_config(tiny_dataset, runs, **{"trainer.devices": 2, "trainer.strategy": "ddp",
                                                   "trainer.max_epochs": 2})
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(cfg_path)], env=_subprocess_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs.iterdir()  # both processes used the same folder
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["device"]["devices"] == 2 and record["device"]["strategy"] == "DDPStrategy"
    # 16 train tiles / 2 processes / batch 4 = 2 steps per epoch
    assert record["global_step"] == 4
    rows = _rows(run / "metrics.csv")
    val_pixels = load_manifest(tiny_dataset).class_counts("val").sum()
    # each process saw half of the validation tiles; the logged matrix holds all of them
    assert [v for _, v in _column(rows, "val_pixels")] == [val_pixels, val_pixels]


@pytest.mark.slow
def test_experiment_grid_writes_study_tables(tmp_path, tiny_dataset):
    grid = tmp_path / "grid.yaml"
    base = tiny_train_config(tiny_dataset, tmp_path / "unused", **{"trainer.max_epochs": 1})
    base.pop("run")
    base["model"].pop("options")
    grid.write_text(yaml.safe_dump({
        "base": base,
        "models": [
            {"arch": "plain-unet", "options": {"base_width": 8, "depth": 3}},
            {"arch": "plain-unet", "name": "Custom model (wide)", "options": {"base_width": 12, "depth": 3}},
        ],
        "input_sizes": [32],
        "approaches": ["random", "imagenet_full"],  # imagenet does not apply to plain-unet: skipped
        "panels": 2,
    }))
    out = tmp_path / "exp"
    rows = run_experiment(grid, out)
    assert [r["model"] for r in rows] == ["Custom model", "Custom model (wide)"]
    assert all(r["approach"] == "random" and r["input_size"] == 32 for r in rows)
    assert rows[0]["params"] < rows[1]["params"]
    assert all(r["train_time_s"] > 0 and set(r["iou"]) == {"pore", "quartz", "clay"} for r in rows)
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("Each model's approach selected on the validation split")
    assert md[2] == "| Model | pore | quartz | clay | mean IoU | val mean IoU | train time | parameters |"
    assert md[4].startswith("| Custom model |") and md[5].startswith("| Custom model (wide) |")
    assert all(0 <= r["val_miou"] <= 1 and set(r["val_iou"]) == {"pore", "quartz", "clay"} for r in rows)
    assert (Path(rows[0]["run"]) / "eval-val" / "metrics.json").is_file()
    csv_rows = _rows(out / "results.csv")
    assert [r["model"] for r in csv_rows] == ["Custom model", "Custom model (wide)"]
    assert float(csv_rows[0]["params"]) == rows[0]["params"]
    assert json.loads((out / "results.json").read_text())["class_names"] == ["pore", "quartz", "clay"]
    # a second call reuses the finished runs instead of training again
    again = run_experiment(grid, out)
    assert [r["run"] for r in again] == [r["run"] for r in rows]
    assert len(list((out / "runs").iterdir())) == 2
    assert np.isfinite([r["miou"] for r in again]).all()


def test_experiment_selects_on_validation_and_reports_test(tmp_path, tiny_dataset, monkeypatch):
    """Validation prefers `random`, test prefers `imagenet_full`: the table keeps `random`."""
    import mineralseg.evaluate.evaluate as evaluate_module
    import mineralseg.train.run as run_module

    # (approach, split) -> mean IoU; the two splits disagree on the best approach
    scores = {("random", "val"): 0.70, ("random", "test"): 0.50,
              ("imagenet_full", "val"): 0.60, ("imagenet_full", "test"): 0.80}

    def fake_train(cfg):
        run = Path(cfg.run.root) / f"{cfg.run.name}-x"
        run.mkdir(parents=True, exist_ok=True)
        (run / "run.json").write_text(json.dumps({"train_time_s": 1.0, "model": {"parameters": 10}}))
        (run / "approach").write_text(cfg.approach)
        return run

    def fake_evaluate(run, *, split, **kwargs):
        miou = scores[((Path(run) / "approach").read_text(), split)]
        return {"class_names": ["pore", "quartz", "clay"], "iou": {"pore": miou, "quartz": miou, "clay": miou},
                "miou": miou, "input_size": 32}

    monkeypatch.setattr(run_module, "train", fake_train)
    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    grid = tmp_path / "grid.yaml"
    base = tiny_train_config(tiny_dataset, tmp_path / "unused")
    base.pop("run")
    grid.write_text(yaml.safe_dump({"base": base, "models": [{"arch": "unet", "encoder": "resnet18"}],
                                    "input_sizes": [32], "approaches": ["random", "imagenet_full"]}))
    rows = run_experiment(grid, tmp_path / "exp")
    assert [(r["approach"], r["val_miou"], r["miou"]) for r in rows] == [("random", 0.7, 0.5),
                                                                        ("imagenet_full", 0.6, 0.8)]
    result = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert result["selected_on"] == "val"
    assert result["table"] == [rows[0]["run"]]  # random: best on validation, although worse on test
    md = (tmp_path / "exp" / "results.md").read_text().splitlines()
    assert "selected on the validation split" in md[0]
    assert md[4] == "| Unet + resnet18 | 0.50 | 0.50 | 0.50 | 0.50 | 0.70 | 1s | 10 |"

    # the study's protocol, asked for explicitly, picks on test and says so
    grid.write_text(grid.read_text() + "select_on: test\n")
    run_experiment(grid, tmp_path / "exp")
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["table"] == [rows[1]["run"]]
    assert "TEST split" in (tmp_path / "exp" / "results.md").read_text().splitlines()[0]


@pytest.mark.slow
def test_shipped_study_grids_are_valid(tmp_path):
    """The Table 1-3 grids parse, name known models, and suit their input sizes."""
    from mineralseg.train.experiment import plan_experiment

    grids = Path(__file__).resolve().parents[2] / "configs" / "experiments"
    expected = {  # (rows of the study's table, input size, classes dataset)
        "table1-128.yaml": (11, 128, "study-4groups"),
        "table2-256.yaml": (6, 256, "study-4groups"),
        "table3-512-5classes.yaml": (5, 512, "study-5groups"),
    }
    for name, (n_models, size, dataset) in expected.items():
        plans = plan_experiment(grids / name, tmp_path / name)
        labels = list(dict.fromkeys(p.label for p in plans))
        assert len(labels) == n_models, name
        assert {p.input_size for p in plans} == {size}
        assert all(p.config.dataset.name == dataset for p in plans)
        # encoder-free models run from random weights only; the others all three ways
        for label in labels:
            approaches = [p.approach for p in plans if p.label == label]
            assert approaches in (["random"], ["imagenet_full", "imagenet_frozen", "random"])
        assert not (tmp_path / name).exists()  # planning trains nothing
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {dataset: d}\nmodels: [{arch: unet, encoder: resnet18}]\ninput_sizes: [100]\n")
    with pytest.raises(ConfigError, match="input size 100 does not suit Unet \\+ resnet18"):
        plan_experiment(bad, tmp_path / "bad")
    bad.write_text("base: {dataset: d}\nmodels: [{arch: unet, encoder: resnet81}]\n")
    with pytest.raises(ConfigError, match="resnet18"):
        plan_experiment(bad, tmp_path / "bad")


def test_invalid_trainer_settings_are_config_errors(tmp_path, tiny_dataset):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="invalid trainer settings"):
        train(tiny_train_config(tiny_dataset, runs, **{"trainer.accelerator": "tpu-x"}))
    assert not runs.exists() or not any(runs.iterdir())  # the half-made run folder is removed


def test_local_imagenet_file_with_approaches():
    """`encoder_weights: path` is the offline ImageNet source of the imagenet_* approaches."""
    cfg = load_train_config(
        {"dataset": "d", "approach": "imagenet_frozen", "model": {"encoder_weights": "/w/r18.pth"}}
    )
    assert cfg.model.encoder_weights == "/w/r18.pth" and cfg.model.freeze_encoder
    full = load_train_config(cfg.to_dict(), overrides={"approach": "imagenet_full"})
    assert full.model.encoder_weights == "/w/r18.pth" and not full.model.freeze_encoder
    rand = load_train_config(cfg.to_dict(), overrides={"approach": "random"})
    assert rand.model.encoder_weights is None and not rand.model.freeze_encoder
