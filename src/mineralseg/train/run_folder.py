"""The folder of a training run: where it is, what ``run.json`` records, a summary.

A run folder ``<run.root>/<name>-<YYYYmmdd-HHMMSS>/`` holds::

    config.yaml              the resolved config (absolute paths; approach applied)
    run.json                 seed, versions, dataset manifest sha256, command, times,
                             device, status and results (updated at the end)
    checkpoints/best.ckpt    highest val_miou
    checkpoints/last.ckpt    latest state (every epoch, or every N steps)
    metrics.csv              Lightning CSVLogger (merged across resumes, see
                             :mod:`mineralseg.train.csv_log`)
    hparams.yaml             what the module saved as hyper-parameters
    tensorboard/             TensorBoard event files

Distributed training (``trainer.devices``/``num_nodes``/``strategy``) works with
Lightning's launchers: with ``strategy: ddp`` the script is started again for the
other local processes, which find the run folder through the environment variable
``MINERALSEG_RUN_DIR`` and write nothing themselves. Under an external launcher
(SLURM, torchrun) every process derives the folder ``<root>/<name>-<job id>`` from
``SLURM_JOB_ID`` / ``TORCHELASTIC_RUN_ID``; only global rank 0 writes files.

Reading a finished run's metrics is :mod:`mineralseg.runs` (used by evaluation).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint

from mineralseg.data.manifest import DatasetManifest
from mineralseg.errors import UserError
from mineralseg.io.atomic import write_json
from mineralseg.train.config import TrainConfig
from mineralseg.train.gan_module import GANModule
from mineralseg.versions import package_versions

__all__ = [
    "BEST_NAME", "CHECKPOINT_DIR", "LAST_NAME", "RUN_DIR_ENV", "finish_record", "is_global_zero",
    "resolve_resume", "run_folder", "run_summary", "start_record",
]

log = logging.getLogger(__name__)

RUN_DIR_ENV = "MINERALSEG_RUN_DIR"  # shared with the processes a DDP launcher starts
CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best"
LAST_NAME = "last"


def is_global_zero() -> bool:
    """True in the process that owns the run folder (before the Trainer exists)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _launch_id() -> str | None:
    """Job id shared by all processes of an external multi-process launch (SLURM, torchrun)."""
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1))) <= 1:
        return None
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(key, "")
        if value and value != "none":
            return re.sub(r"[^A-Za-z0-9_.-]", "_", value)
    return None


def _new_run_dir(root: Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = root / (f"{name}-{stamp}" if k == 0 else f"{name}-{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot create a new run folder for {name!r} in {root}")


def run_folder(cfg: TrainConfig, owner: bool) -> tuple[Path, bool]:
    """The folder of a new run and whether this process created it.

    Processes started by a DDP launcher get it from ``MINERALSEG_RUN_DIR``; under an
    external launcher all processes derive ``<root>/<name>-<job id>``; otherwise the
    owner creates ``<root>/<name>-<timestamp>``.
    """
    shared, launch_id = os.environ.get(RUN_DIR_ENV), _launch_id()
    if shared:
        return Path(shared), False
    if launch_id:
        run_dir = Path(cfg.run.root) / f"{cfg.run_name()}-{launch_id}"
        created = owner and not run_dir.exists()
        if owner:
            run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, created
    if owner:
        return _new_run_dir(Path(cfg.run.root), cfg.run_name()), True
    raise UserError(
        f"this process (rank > 0) was not given the run folder; set {RUN_DIR_ENV} to the folder "
        "shared by all processes"
    )


def resolve_resume(resume: str | os.PathLike) -> tuple[Path, Path]:
    """The run folder to resume and its ``checkpoints/last.ckpt`` (UserError when missing)."""
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise UserError(f"cannot resume: run folder not found: {run_dir}")
    last = run_dir / CHECKPOINT_DIR / f"{LAST_NAME}.ckpt"
    if not last.is_file():
        raise UserError(f"cannot resume {run_dir}: no {CHECKPOINT_DIR}/{LAST_NAME}.ckpt (no checkpoint was saved)")
    return run_dir, last


# --------------------------------------------------------------------------- run.json
def start_record(
    run_dir: Path, cfg: TrainConfig, manifest: DatasetManifest, meta: dict[str, Any],
    module: L.LightningModule, previous: dict[str, Any] | None, last_ckpt: Path | None,
) -> dict[str, Any]:
    """The ``run.json`` record of a starting (or resumed) session, status ``running``."""
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    path = run_dir / "run.json"
    record: dict[str, Any] = {}
    if previous is not None and path.is_file():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
    # The dataset the run used so far, read before this session's values replace it.
    earlier_sha = record.get("dataset", {}).get("manifest_sha256")
    params = sum(p.numel() for p in module.model.parameters())
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    record.setdefault("start_time", now)
    record.setdefault("train_time_s", 0.0)
    record.update({
        "status": "running",
        "seed": cfg.seed,
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "versions": package_versions(),
        "dataset": {
            "path": str(manifest.root),
            "manifest_sha256": manifest.sha256,
            "tiles": {s: sum(t.split == s for t in manifest.tiles) for s in ("train", "val", "test")},
        },
        "input_normalisation": {"mean": meta["mean"], "std": meta["std"]},
        "class_names": meta["class_names"],
        "class_weights": meta["class_weights"],
        "model": {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "parameters": params,
                  "trainable_parameters": trainable},
    })
    if isinstance(module, GANModule):
        record["model"]["discriminator_parameters"] = sum(p.numel() for p in module.discriminator.parameters())
    if previous is not None:
        entry = {"time": now, "checkpoint": str(last_ckpt), "epoch": previous.get("epoch"),
                 "global_step": previous.get("global_step")}
        if earlier_sha not in (None, manifest.sha256):  # only reached with allow_changed_dataset
            log.warning("resuming %s on a dataset whose manifest changed", run_dir)
            entry["dataset_changed_from"] = earlier_sha
        record.setdefault("resumed", []).append(entry)
    return record


def finish_record(run_dir: Path, record: dict[str, Any], trainer: L.Trainer, status: str, seconds: float) -> None:
    """Write ``run.json`` at the end of a session: status, times, steps, best checkpoint and score."""
    best = next((cb for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.monitor is not None), None)
    score = best.best_model_score if best is not None else None
    score = None if score is None or not np.isfinite(float(score)) else float(score)
    record.update({
        "status": status,
        "end_time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "train_time_s": float(record.get("train_time_s", 0.0)) + seconds,
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "best_checkpoint": str(best.best_model_path) if best is not None and best.best_model_path else None,
        "best_val_miou": score if best is not None and best.monitor == "val_miou" else None,
    })
    if best is not None and best.monitor != "val_miou":
        record[f"best_{best.monitor}"] = score
    write_json(run_dir / "run.json", record)


def run_summary(run_dir: str | os.PathLike) -> str:
    """A few lines about a run for people: status, steps, time, best validation score, folder."""
    from mineralseg.evaluate.tables import format_duration

    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return f"run folder: {run_dir}"
    best = record.get("best_val_miou")
    parts = [f"{record.get('status', '?')}", f"{record.get('global_step', '?')} steps",
             f"{record.get('epochs', '?')} epochs"]
    if record.get("train_time_s") is not None:
        parts.append(format_duration(float(record["train_time_s"])))
    if best is not None:
        parts.append(f"best val mean IoU {best:.3f}")
    if record.get("best_val_l1") is not None:  # a pix2pix map -> SEM run
        parts.append(f"best val L1 {record['best_val_l1']:.3f}")
    return f"training {', '.join(parts)}\nrun folder: {run_dir}"
