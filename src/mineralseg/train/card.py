"""The model card of a training run, built from its config and dataset.

The card itself (fields, reading, writing) is :mod:`mineralseg.model_card`; this module
fills it in for a new run (:func:`training_card`, with :func:`loss_class_weights`) and
checks a resumed run's card against the dataset and config (:func:`resumed_card`,
:func:`check_same_kind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mineralseg.data.manifest import SPLITS, DatasetManifest
from mineralseg.errors import ConfigError, DataError
from mineralseg.evaluate.checkpoint import read_card, read_checkpoint
from mineralseg.model_card import ModelCard, training_grid
from mineralseg.train.config import TrainConfig
from mineralseg.train.gan_module import generator_spec
from mineralseg.train.losses import class_weights_from_frequencies

__all__ = ["check_same_kind", "loss_class_weights", "resumed_card", "training_card"]


def loss_class_weights(cfg: TrainConfig, manifest: DatasetManifest) -> list[float] | None:
    """The loss's class weights for a new run: None, the config's list, or from the train split's frequencies.

    Raises
    ------
    ConfigError
        ``loss.class_weights`` lists another number of values than the dataset has classes.
    """
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


def resumed_card(
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


def check_same_kind(card: ModelCard, cfg: TrainConfig, run_dir: Path) -> None:
    """ConfigError when a resumed run would switch between a CNN and the pix2pix modes."""
    mode = cfg.gan.mode if cfg.gan is not None else None
    if card.gan_mode != mode:
        def kind(m: str | None) -> str:
            return f"pix2pix gan.mode {m}" if m else "a CNN (no gan: section)"

        raise ConfigError(
            f"cannot resume {run_dir}: it trains {kind(card.gan_mode)} but the config gives {kind(mode)}; "
            "resume with the run's own config, or start a new run"
        )
