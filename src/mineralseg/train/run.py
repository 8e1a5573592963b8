"""``mineralseg train``: one training run in its own folder, resumable.

A run folder ``<run.root>/<name>-<YYYYmmdd-HHMMSS>/`` holds::

    config.yaml              the resolved config (absolute paths; approach applied)
    run.json                 seed, versions, dataset manifest sha256, command, times,
                             device, status and results (updated at the end)
    checkpoints/best.ckpt    highest val_miou
    checkpoints/last.ckpt    latest state (every epoch, or every N steps)
    metrics.csv              Lightning CSVLogger (merged across resumes)
    hparams.yaml             what the module saved as hyper-parameters
    tensorboard/             TensorBoard event files

``train(config, resume=RUN)`` continues from ``RUN/checkpoints/last.ckpt`` in the
same folder. Distributed training (``trainer.devices``/``num_nodes``/``strategy``)
works with Lightning's launchers: with ``strategy: ddp`` the script is started again
for the other local processes, which find the run folder through the environment
variable ``MINERALSEG_RUN_DIR`` and write nothing themselves. Under an external
launcher (SLURM, torchrun) every process derives the folder
``<root>/<name>-<job id>`` from ``SLURM_JOB_ID`` / ``TORCHELASTIC_RUN_ID``; only
global rank 0 writes files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import inspect
import logging
import os
import re
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mineralseg.console import is_verbose, quiet_third_party, show_progress
from mineralseg.data.datamodule import SegmentationDataModule
from mineralseg.data.manifest import SPLITS, DatasetManifest, load_manifest
from mineralseg.errors import ConfigError, DataError, UserError
from mineralseg.evaluate.checkpoint import CHECKPOINT_TYPES, read_card, read_checkpoint
from mineralseg.io.atomic import atomic_path, write_json
from mineralseg.train.callbacks import NaNGuard, NonFiniteLossError
from mineralseg.train.config import TrainConfig, load_train_config
from mineralseg.train.losses import class_weights_from_frequencies
from mineralseg.model_card import ModelCard, training_grid
from mineralseg.runs import METRICS_NAME, PARTS_DIR, metrics_parts, read_run_metrics
from mineralseg.train.gan_module import GANModule, generator_spec
from mineralseg.train.module import SegmentationModule
from mineralseg.versions import package_versions

__all__ = ["RUN_DIR_ENV", "package_versions", "read_run_metrics", "run_summary", "train", "training_card"]

log = logging.getLogger(__name__)

RUN_DIR_ENV = "MINERALSEG_RUN_DIR"  # shared with the processes a DDP launcher starts
CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best"
LAST_NAME = "last"
def _is_global_zero() -> bool:
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


def _class_weights(cfg: TrainConfig, manifest: DatasetManifest) -> list[float] | None:
    if not cfg.imbalance.loss_weights or cfg.loss.class_weights == "none":
        return None
    if isinstance(cfg.loss.class_weights, list):
        if len(cfg.loss.class_weights) != manifest.num_classes:
            raise ConfigError(
                f"loss.class_weights has {len(cfg.loss.class_weights)} values but the dataset "
                f"{manifest.root} has {manifest.num_classes} classes {manifest.class_names}"
            )
        return [float(w) for w in cfg.loss.class_weights]
    freq = manifest.class_frequencies("train")
    return [float(w) for w in class_weights_from_frequencies(freq, cfg.loss.weight_method)]


def training_card(
    cfg: TrainConfig, manifest: DatasetManifest, *, mean: float, std: float, class_weights: list[float] | None
) -> ModelCard:
    """The model card stored in every checkpoint of a run (see :mod:`mineralseg.model_card`)."""
    grid = training_grid(manifest.root)
    tiles = {s: sum(t.split == s for t in manifest.tiles) for s in SPLITS}
    try:
        frequencies = [round(float(f), 6) for f in manifest.class_frequencies("train")]
    except DataError:
        frequencies = None
    in_channels, model_options = generator_spec(cfg, manifest.num_classes) if cfg.gan else (1, cfg.model.options)
    return ModelCard(
        class_names=tuple(manifest.class_names),
        class_colors=tuple(tuple(int(v) for v in c) for c in manifest.class_colors),
        ignore_index=manifest.ignore_index,
        schema_name=manifest.schema_name,
        arch=cfg.model.arch,
        encoder=cfg.model.encoder,
        model_options=dict(model_options),
        in_channels=in_channels,
        mean=float(mean),
        std=float(std),
        input_size=int(cfg.input_size or manifest.out_size),
        tile_size=manifest.tile_size,
        out_size=manifest.out_size,
        sem_scale=manifest.sem_scale,
        sem_normalisation=dict(manifest.normalisation),
        sem_px_per_working_px=grid.sem_px_per_working_px,
        sem_px_range=grid.sem_px_range,
        sem_pixel_size_um=grid.sem_pixel_size_um,
        training_data={
            "dataset": str(manifest.root),
            "dataset_sha256": manifest.sha256,
            "samples": grid.per_sample or sorted({t.sample for t in manifest.tiles}),
            "tiles": tiles,
            "class_frequencies": frequencies,
        },
        approach=cfg.approach,
        gan_mode=cfg.gan.mode if cfg.gan else None,
        encoder_weights=cfg.model.encoder_weights,
        freeze_encoder=cfg.model.freeze_encoder,
        class_weights=class_weights,
    )


def _check_input_size(model: torch.nn.Module, cfg: TrainConfig, input_size: int) -> None:
    """ConfigError before training when the model cannot take ``input_size``."""
    divisor = int(getattr(model, "input_divisor", 1) or 1)
    smallest = int(getattr(model, "min_input_size", 1) or 1)
    name = f"{cfg.model.arch}/{cfg.model.encoder}" if cfg.model.encoder else cfg.model.arch
    if input_size % divisor:
        lower = max(divisor, input_size // divisor * divisor)
        raise ConfigError(
            f"input_size {input_size} is not a multiple of {divisor}, which {name} needs; "
            f"use {lower} or {lower + divisor}"
        )
    if input_size < smallest:
        raise ConfigError(f"input_size {input_size} is below {smallest}, the smallest input {name} takes")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (x86 AMX-BF16 or AVX512-BF16 flags).

    Elsewhere bf16 is emulated and slower than float32. ``cpuinfo`` is the text of
    ``/proc/cpuinfo`` (read when None; False where it cannot be read, e.g. not Linux).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def _precision(cfg: TrainConfig) -> str:
    """Lightning's precision for the config (``auto`` resolved for this machine)."""
    p = cfg.trainer.precision
    if p == "auto":
        acc = cfg.trainer.accelerator.lower()
        gpu = acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())
        if gpu:
            return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    return {"32": "32-true", "64": "64-true"}.get(p, p)


def _device_info(trainer: L.Trainer) -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "precision": str(trainer.precision),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- metrics.csv
def _merge_metrics(run_dir: Path) -> None:
    parts = metrics_parts(run_dir)
    if not parts:
        return
    rows = read_run_metrics(run_dir)
    keys = sorted({k for r in rows for k in r})
    with atomic_path(run_dir / METRICS_NAME) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    for path, _ in parts:
        path.unlink()


def _set_aside_metrics(run_dir: Path, resumed_at: int) -> None:
    current = run_dir / METRICS_NAME
    if not current.is_file():
        return
    k = len(metrics_parts(run_dir))
    dest = run_dir / PARTS_DIR / f"metrics-part{k:03d}-until-step{resumed_at}.csv"
    dest.parent.mkdir(exist_ok=True)
    os.replace(current, dest)


class _AtomicExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but a header change rewrites metrics.csv atomically.

    New columns (the first validation, the first epoch-end loss) make Lightning
    rewrite the whole file; a run killed at that moment (often right after a
    checkpoint) would otherwise lose the rows logged so far.
    """

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_path(self.metrics_file_path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class _AtomicCSVLogger(CSVLogger):
    """CSVLogger writing through :class:`_AtomicExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment


# --------------------------------------------------------------------------- trainer
def _best_monitor(cfg: TrainConfig) -> tuple[str, str]:
    """The validation score ``best.ckpt`` is chosen by and its direction."""
    return ("val_l1", "min") if cfg.gan is not None and cfg.gan.mode == "synthesize" else ("val_miou", "max")


def _callbacks(cfg: TrainConfig, ckpt_dir: Path) -> list[L.Callback]:
    t = cfg.trainer
    monitor, mode = _best_monitor(cfg)
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename=BEST_NAME, monitor=monitor, mode=mode,
        save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False,
    )
    every = {"every_n_train_steps": t.checkpoint_every_n_steps} if t.checkpoint_every_n_steps else {"every_n_epochs": 1}
    last = ModelCheckpoint(
        dirpath=ckpt_dir, filename=LAST_NAME, save_top_k=1, enable_version_counter=False,
        auto_insert_metric_name=False, **every,
    )
    callbacks: list[L.Callback] = [NaNGuard(), last]
    if t.limit_val_batches != 0:  # without validation there is no score to rank by
        callbacks.insert(1, best)
    if _progress_bar(cfg):
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    return callbacks


def _progress_bar(cfg: TrainConfig) -> bool:
    """Lightning's bars only where someone watches: a terminal (or ``--verbose``)."""
    return bool(cfg.trainer.progress_bar) and show_progress()


def _trainer(cfg: TrainConfig, run_dir: Path) -> L.Trainer:
    t = cfg.trainer
    loggers = [
        _AtomicCSVLogger(save_dir=run_dir, name="", version=""),
        TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False),
    ]
    limits = {k: getattr(t, k) for k in ("limit_train_batches", "limit_val_batches") if getattr(t, k) is not None}
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=t.max_epochs,
        max_time=t.max_time,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=_precision(cfg),
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=_progress_bar(cfg),
        enable_model_summary=is_verbose(),
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        logger=loggers,
        callbacks=_callbacks(cfg, run_dir / CHECKPOINT_DIR),
        **limits,
    )


def _run_folder(cfg: TrainConfig, owner: bool) -> tuple[Path, bool]:
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


def _resumed_card(
    last_ckpt: Path, run_dir: Path, manifest: DatasetManifest, *, trust: bool = False,
    allow_changed_dataset: bool = False,
) -> tuple[dict[str, Any], ModelCard]:
    """The checkpoint to resume from and its model card.

    Raises
    ------
    DataError
        The dataset's classes differ from the run's, or its manifest changed (another
        sha256) and ``allow_changed_dataset`` is False; an unsafe checkpoint (see
        :func:`~mineralseg.evaluate.checkpoint.load_checkpoint_file`).
    """
    previous = read_checkpoint(last_ckpt, trust=trust)
    card = read_card(previous, last_ckpt)
    if list(card.class_names) != list(manifest.class_names):
        raise DataError(
            f"cannot resume {run_dir}: it was trained on classes {list(card.class_names)} but dataset "
            f"{manifest.root} has {manifest.class_names}"
        )
    trained_on = card.dataset_sha256
    if trained_on not in (None, manifest.sha256) and not allow_changed_dataset:
        raise DataError(
            f"cannot resume {run_dir}: dataset {manifest.root} changed since the run started (manifest sha256 "
            f"{manifest.sha256[:12]}, was {str(trained_on)[:12]}); start a new run, or pass --allow-changed-dataset "
            "to continue on the changed data"
        )
    return previous, card


def _check_same_kind(card: ModelCard, cfg: TrainConfig, run_dir: Path) -> None:
    """ConfigError when a resumed run would switch between a CNN and the pix2pix modes."""
    mode = cfg.gan.mode if cfg.gan is not None else None
    if card.gan_mode != mode:
        def kind(m: str | None) -> str:
            return f"pix2pix gan.mode {m}" if m else "a CNN (no gan: section)"

        raise ConfigError(
            f"cannot resume {run_dir}: it trains {kind(card.gan_mode)} but the config gives {kind(mode)}; "
            "resume with the run's own config, or start a new run"
        )


def _fit_kwargs(trainer: L.Trainer, *, trust: bool = False) -> dict[str, Any]:
    # Lightning >= 2.5 asks whether resumed checkpoints may hold more than weights. Ours
    # hold loop and optimiser states as plain data, opened like any checkpoint: weights
    # only (plus CHECKPOINT_TYPES, allowed around fit()) unless the user trusts the file.
    return {"weights_only": not trust} if "weights_only" in inspect.signature(trainer.fit).parameters else {}


def _resolve_resume(resume: str | os.PathLike) -> tuple[Path, Path]:
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise UserError(f"cannot resume: run folder not found: {run_dir}")
    last = run_dir / CHECKPOINT_DIR / f"{LAST_NAME}.ckpt"
    if not last.is_file():
        raise UserError(f"cannot resume {run_dir}: no {CHECKPOINT_DIR}/{LAST_NAME}.ckpt (no checkpoint was saved)")
    return run_dir, last


def train(
    config: str | os.PathLike | dict[str, Any] | TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overrides: Any = None,
    trust_checkpoint: bool = False,
    allow_changed_dataset: bool = False,
) -> Path:
    """Train a segmentation model; return the run folder.

    Parameters
    ----------
    config : path-like, dict or TrainConfig, optional
        The training config (see :mod:`mineralseg.train.config`). May be left out
        with ``resume`` (the run's own ``config.yaml`` is used).
    resume : path-like, optional
        A run folder to continue from its ``checkpoints/last.ckpt`` (same folder;
        epochs and steps continue, metrics.csv is merged).
    overrides : dict or list of str, optional
        Config changes, e.g. ``{"trainer.max_epochs": 80}`` or ``["optim.lr=1e-4"]``.
    trust_checkpoint : bool
        With ``resume``: open the checkpoint fully even if it holds more than the
        types mineralseg writes (a pickle can run code; only for your own files).
    allow_changed_dataset : bool
        With ``resume``: continue although the dataset's manifest changed since the
        run started (the change is recorded in ``run.json``).

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    ConfigError
        Invalid config, unknown architecture/encoder, input size the model cannot
        take (all before anything is trained or written).
    DataError
        Dataset folder without ``manifest.json``, unreadable tiles, class schema of a
        resumed run differing from the dataset's, a changed dataset on resume (unless
        ``allow_changed_dataset``), a checkpoint that is not safe to open (unless
        ``trust_checkpoint``).
    NonFiniteLossError
        The loss became NaN/inf (the message names the last good checkpoint).
    """
    last_ckpt: Path | None = None
    run_dir: Path | None = None
    if resume is not None:
        run_dir, last_ckpt = _resolve_resume(resume)
        if config is None:
            config = run_dir / "config.yaml"
    if config is None:
        raise UserError("train() needs a config (or resume=RUN_FOLDER)")
    cfg = load_train_config(config, overrides=overrides)
    manifest = load_manifest(cfg.dataset)
    input_size = int(cfg.input_size or manifest.out_size)

    previous: dict[str, Any] | None = None
    mean = std = None
    if last_ckpt is not None:
        previous, old_card = _resumed_card(last_ckpt, run_dir, manifest, trust=trust_checkpoint,
                                           allow_changed_dataset=allow_changed_dataset)
        mean, std, weights = old_card.mean, old_card.std, old_card.class_weights
        _check_same_kind(old_card, cfg, run_dir)
    else:
        weights = _class_weights(cfg, manifest)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = SegmentationDataModule(
        manifest, input_size=input_size, batch_size=cfg.trainer.batch_size,
        num_workers=cfg.trainer.num_workers, augment=cfg.augment,
        rare_sampler=cfg.imbalance.rare_sampler, sampler_power=cfg.imbalance.sampler_power,
        mean=mean, std=std, pin_memory=torch.cuda.is_available(),
        **({"synthetic_pairs": cfg.synthetic_pairs.path, "synthetic_share": cfg.synthetic_pairs.share}
           if cfg.synthetic_pairs is not None else {}),
    )
    meta = training_card(cfg, manifest, mean=datamodule.mean, std=datamodule.std, class_weights=weights).to_dict()
    module_class = GANModule if cfg.gan is not None else SegmentationModule
    module = module_class(cfg.to_dict(), meta, pretrained=last_ckpt is None)
    _check_input_size(module.model, cfg, input_size)
    if isinstance(module, GANModule):
        module.check_input_size(input_size)

    owner = _is_global_zero()
    created = False
    if run_dir is None:
        run_dir, created = _run_folder(cfg, owner)
    record = _start_record(run_dir, cfg, manifest, meta, module, previous, last_ckpt) if owner else {}
    if owner and datamodule.synthetic_record() is not None:
        record["synthetic_pairs"] = datamodule.synthetic_record()
    if owner:
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(cfg.to_yaml())
        if previous is not None:
            _set_aside_metrics(run_dir, int(previous.get("global_step", 0)))

    try:
        with quiet_third_party(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            trainer = _trainer(cfg, run_dir)
    except (MisconfigurationException, ValueError) as exc:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        where = "config" if isinstance(config, dict | TrainConfig) else str(config)
        raise ConfigError(f"{where}: invalid trainer settings: {exc}") from None
    if owner:
        record["device"] = _device_info(trainer)
        write_json(run_dir / "run.json", record)

    os.environ[RUN_DIR_ENV] = str(run_dir)
    started = time.perf_counter()
    status = "failed"
    try:
        with quiet_third_party(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            if cfg.model.freeze_encoder:  # a frozen encoder is kept in eval mode on purpose
                warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            with torch.serialization.safe_globals(list(CHECKPOINT_TYPES)):
                trainer.fit(module, datamodule=datamodule, ckpt_path=last_ckpt,
                            **_fit_kwargs(trainer, trust=trust_checkpoint))
        if trainer.interrupted:
            status = "interrupted"
        else:
            trainer.save_checkpoint(run_dir / CHECKPOINT_DIR / f"{LAST_NAME}.ckpt", weights_only=False)
            status = "finished"
    except NonFiniteLossError as exc:
        status = f"stopped: {exc}"
        raise
    except (KeyboardInterrupt, SystemExit):  # Lightning exits after Ctrl+C
        status = "interrupted"
        raise
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        if owner and trainer.is_global_zero:
            _merge_metrics(run_dir)
            _finish_record(run_dir, record, trainer, status, time.perf_counter() - started)
    return run_dir


def _start_record(
    run_dir: Path, cfg: TrainConfig, manifest: DatasetManifest, meta: dict[str, Any],
    module: L.LightningModule, previous: dict[str, Any] | None, last_ckpt: Path | None,
) -> dict[str, Any]:
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    path = run_dir / "run.json"
    record: dict[str, Any] = {}
    if previous is not None and path.is_file():
        import json

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


def _finish_record(run_dir: Path, record: dict[str, Any], trainer: L.Trainer, status: str, seconds: float) -> None:
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
    import json

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
