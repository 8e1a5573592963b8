"""``mineralseg train``: one training run in its own folder, resumable.

:func:`train` loads the config and dataset, builds the model card and the module,
assembles the Lightning Trainer (loggers, checkpoints, progress bar) and fits it in the
run folder. The folder's layout, ``run.json`` and distributed launches are
:mod:`mineralseg.train.run_folder`; ``metrics.csv`` is :mod:`mineralseg.train.csv_log`;
the model card is :mod:`mineralseg.train.card`; ``precision: auto`` is
:mod:`mineralseg.train.precision`.

``train(config, resume=RUN)`` continues from ``RUN/checkpoints/last.ckpt`` in the
same folder (epochs and steps continue, metrics.csv is merged).
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from mineralseg.console import is_verbose, quiet_third_party, show_progress
from mineralseg.data.datamodule import SegmentationDataModule
from mineralseg.data.manifest import load_manifest
from mineralseg.errors import ConfigError, UserError
from mineralseg.evaluate.checkpoint import CHECKPOINT_TYPES
from mineralseg.io.atomic import atomic_path, write_json
from mineralseg.train.callbacks import NaNGuard, NonFiniteLossError
from mineralseg.train.card import (
    check_same_kind,
    loss_class_weights,
    resumed_card,
    training_card,
)
from mineralseg.train.config import TrainConfig, load_train_config
from mineralseg.train.csv_log import AtomicCSVLogger, merge_metrics, set_aside_metrics
from mineralseg.train.gan_module import GANModule
from mineralseg.train.module import SegmentationModule
from mineralseg.train.precision import device_info, precision
from mineralseg.train.run_folder import (
    BEST_NAME,
    CHECKPOINT_DIR,
    LAST_NAME,
    RUN_DIR_ENV,
    finish_record,
    is_global_zero,
    resolve_resume,
    run_folder,
    start_record,
)

__all__ = ["train"]


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
        AtomicCSVLogger(save_dir=run_dir, name="", version=""),
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
        precision=precision(cfg),
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=_progress_bar(cfg),
        enable_model_summary=is_verbose(),
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip_val,
        logger=loggers,
        callbacks=_callbacks(cfg, run_dir / CHECKPOINT_DIR),
        **limits,
    )


def _fit_kwargs(trainer: L.Trainer, *, trust: bool = False) -> dict[str, Any]:
    # Lightning >= 2.5 asks whether resumed checkpoints may hold more than weights. Ours
    # hold loop and optimiser states as plain data, opened like any checkpoint: weights
    # only (plus CHECKPOINT_TYPES, allowed around fit()) unless the user trusts the file.
    return {"weights_only": not trust} if "weights_only" in inspect.signature(trainer.fit).parameters else {}


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
        run_dir, last_ckpt = resolve_resume(resume)
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
        previous, old_card = resumed_card(last_ckpt, run_dir, manifest, trust=trust_checkpoint,
                                           allow_changed_dataset=allow_changed_dataset)
        mean, std, weights = old_card.mean, old_card.std, old_card.class_weights
        check_same_kind(old_card, cfg, run_dir)
    else:
        weights = loss_class_weights(cfg, manifest)

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

    owner = is_global_zero()
    created = False
    if run_dir is None:
        run_dir, created = run_folder(cfg, owner)
    record = start_record(run_dir, cfg, manifest, meta, module, previous, last_ckpt) if owner else {}
    if owner and datamodule.synthetic_record() is not None:
        record["synthetic_pairs"] = datamodule.synthetic_record()
    if owner:
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(cfg.to_yaml())
        if previous is not None:
            set_aside_metrics(run_dir, int(previous.get("global_step", 0)))

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
        record["device"] = device_info(trainer)
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
            merge_metrics(run_dir)
            finish_record(run_dir, record, trainer, status, time.perf_counter() - started)
    return run_dir
