"""The training config (``mineralseg train CONFIG``): pydantic models and loading.

Example (every key optional except ``dataset``; paths are relative to the config
file's folder)::

    dataset: ../data/demo-dataset     # a folder made by `mineralseg prepare`
    run: {root: runs, name: unet-resnet18}
    seed: 0
    input_size: 128                  # tiles resized on the fly (the study: 128/256/512)
    approach: imagenet_full          # imagenet_full | imagenet_frozen | random (or leave out)
    model: {arch: unet, encoder: resnet18}
    loss: {name: dice_focal, focal_weight: 1.0, gamma: 2.0, class_weights: auto}
    imbalance: {loss_weights: true, focal_term: true, rare_sampler: false}
    augment: {rotate: 15, shift: 0.05, shear: 10, zoom: 0.3, hflip: true, vflip: true}
    optim: {lr: 1.0e-3, t0_steps: null, t_mult: 2, eta_min: 1.0e-6}
    trainer: {max_epochs: 50, batch_size: 8, precision: auto, devices: auto}
    synthetic_pairs: {path: ../generated, share: 0.25}   # optional: `mineralseg synthesize` output

A pix2pix GAN instead of a CNN (see docs/gan.md)::

    model: {arch: pix2pix, options: {base_filters: 32, depth: 8, norm: batch, dropout: 0.5}}
    gan: {mode: segment, weight: 100, adversarial: bce, discriminator: {layers: 3},
          lr_g: 2.0e-4, lr_d: 2.0e-4, beta1: 0.5, sample_every: 500}

A misspelt key is a :class:`~mineralseg.errors.ConfigError` that lists the valid keys.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from mineralseg.config import StrictModel, load_yaml, parse_config
from mineralseg.data.augment import AugmentConfig
from mineralseg.errors import ConfigError
from mineralseg.train.losses import resolve_loss as _resolve_loss

__all__ = [
    "APPROACHES",
    "AugmentConfig",
    "DiscriminatorConfig",
    "GANConfig",
    "ImbalanceConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SyntheticPairsConfig",
    "TrainConfig",
    "TrainerConfig",
    "apply_overrides",
    "load_train_config",
]

# The study's three training approaches -> (encoder_weights, freeze_encoder).
APPROACHES: dict[str, tuple[str | None, bool]] = {
    "imagenet_full": ("imagenet", False),
    "imagenet_frozen": ("imagenet", True),
    "random": (None, False),
}
Approach = Literal["imagenet_full", "imagenet_frozen", "random"]


class RunConfig(StrictModel):
    """Where a run's folder goes: ``<root>/<name>-<timestamp>/``."""

    root: Path = Path("runs")
    name: str | None = Field(None, description="default: <arch>-<encoder>-<input_size>")


class ModelConfig(StrictModel):
    """Architecture and encoder (see :func:`mineralseg.models.build_model`)."""

    arch: str = "unet"
    encoder: str | None = "resnet18"
    encoder_weights: str | None = Field(None, description="null | imagenet | path to a weights file")
    freeze_encoder: bool = False
    options: dict[str, Any] = Field(
        default_factory=dict, description="architecture options, e.g. {base_width: 8} for plain-unet"
    )


class LossConfig(StrictModel):
    """Loss (see :func:`mineralseg.train.losses.build_loss`)."""

    name: str = Field("dice_focal", description="a loss of mineralseg.train.losses.LOSSES")
    focal_weight: float = Field(1.0, ge=0, description="c in Dice + c * Focal")
    gamma: float = Field(2.0, ge=0, description="focal exponent")
    class_weights: Literal["auto", "none"] | list[float] = Field(
        "auto", description="auto: from the train split's class frequencies; none; or one weight per class"
    )
    weight_method: Literal["inverse", "inverse_sqrt", "median"] = "inverse"

    @field_validator("name")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        try:
            return _resolve_loss(value).name
        except ConfigError as exc:  # pydantic reports ValueErrors with the key's location
            raise ValueError(str(exc)) from None


class ImbalanceConfig(StrictModel):
    """The study's three independent ways of handling class imbalance."""

    loss_weights: bool = Field(True, description="class weights in the loss (loss.class_weights)")
    focal_term: bool = Field(True, description="false: dice_focal -> dice, focal -> ce")
    rare_sampler: bool = Field(False, description="draw tiles with rare classes more often")
    sampler_power: float = Field(0.5, ge=0, description="tile weight: mean of class_freq ** -power")


class OptimConfig(StrictModel):
    """Adam with CosineAnnealingWarmRestarts stepped per batch."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    t0_steps: int | None = Field(None, ge=1, description="first cosine period in optimiser steps; null: one epoch")
    t_mult: int = Field(2, ge=1, description="period growth factor after each restart")
    eta_min: float = Field(1e-6, ge=0)
    ema_decay: float | None = Field(
        None, ge=0, lt=1,
        description="keep an exponential moving average of the weights (e.g. 0.999); validation, the best "
        "checkpoint's model and evaluation then use the averaged weights; null: off",
    )


class TrainerConfig(StrictModel):
    """Lightning Trainer settings."""

    max_epochs: int = Field(50, ge=-1, description="-1: no limit (then set max_time)")
    max_time: str | None = Field(None, description='wall-clock limit "DD:HH:MM:SS"')
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(2, ge=0)
    precision: Literal["auto", "32", "32-true", "16-mixed", "bf16-mixed", "64"] = Field(
        "auto",
        description="auto: bf16-mixed on a GPU that has bf16 (else 16-mixed); on the CPU bf16-mixed "
        "when the processor computes bf16 natively (AMX or AVX512-BF16, about 2-3x faster), else 32",
    )
    channels_last: bool = Field(
        True, description="channels-last memory format for the model and batches (faster convolutions)"
    )
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    log_every_n_steps: int = Field(10, ge=1)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="also save last.ckpt every N steps (default: every epoch)"
    )
    progress_bar: bool = True
    deterministic: bool = False
    gradient_clip_val: float | None = Field(None, gt=0)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("max_time")
    @classmethod
    def _max_time_format(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value):
            raise ValueError(f'max_time must be "DD:HH:MM:SS", got {value!r}')
        return value


class DiscriminatorConfig(StrictModel):
    """PatchGAN discriminator (see :class:`mineralseg.models.pix2pix.PatchDiscriminator`)."""

    layers: int = Field(3, ge=1, le=6, description="stride-2 convolutions; 3: 70 x 70 patches")
    base_filters: int = Field(64, ge=1, description="width of the first convolution (pix2pix: 64)")
    norm: Literal["batch", "instance"] = "batch"


class GANConfig(StrictModel):
    """Adversarial (pix2pix) training of a ``model.arch: pix2pix`` generator.

    ``segment``: SEM -> class map, generator loss = adversarial + weight x cross-entropy
    (+ dice x soft Dice); ``synthesize``: class map -> SEM, adversarial + weight x L1.
    """

    mode: Literal["segment", "synthesize"] = "segment"
    weight: float = Field(
        100.0, ge=0, description="lambda: weight of the pixel loss (CE or L1) against the adversarial one"
    )
    dice: float = Field(0.0, ge=0, description="segment only: weight of a soft Dice term added to the cross-entropy")
    adversarial: Literal["bce", "lsgan"] = Field(
        "bce", description="bce: BCE with logits (pix2pix); lsgan: least squares"
    )
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    lr_g: float = Field(2e-4, gt=0, description="Adam learning rate of the generator")
    lr_d: float = Field(2e-4, gt=0, description="Adam learning rate of the discriminator")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of both optimisers (pix2pix: 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1)
    sample_every: int | None = Field(
        500, ge=1, description="save a sample grid (input | truth | generated) every N batches; null: never"
    )
    sample_count: int = Field(4, ge=1, le=16, description="rows of each sample grid")

    @model_validator(mode="after")
    def _dice_needs_segment(self) -> GANConfig:
        if self.dice and self.mode != "segment":
            raise ValueError(f"gan.dice ({self.dice}) only applies to mode segment; remove it for mode {self.mode}")
        return self


#: Architecture trained by the GAN module (and only by it).
GAN_ARCH = "pix2pix"


def _is_gan_arch(arch: object) -> bool:
    return isinstance(arch, str) and arch.strip().lower() in (GAN_ARCH, "pix2pix-unet")
class SyntheticPairsConfig(StrictModel):
    """Generated pairs as extra training data (see :mod:`mineralseg.data.synthetic_pairs`)."""

    path: Path = Field(description="a folder written by `mineralseg synthesize` (with pairs.json)")
    share: float = Field(
        0.25, gt=0, le=1,
        description="share of every training batch drawn from crops of the generated pairs (1: generated only)",
    )


class TrainConfig(StrictModel):
    """A complete training run."""

    dataset: Path
    run: RunConfig = RunConfig()
    seed: int = 0
    input_size: int | None = Field(None, ge=16, description="tile side fed to the model; null: out_size")
    approach: Approach | None = Field(
        None, description="imagenet_full | imagenet_frozen | random: sets model.encoder_weights/freeze_encoder"
    )
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    imbalance: ImbalanceConfig = ImbalanceConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    gan: GANConfig | None = Field(
        None, description="adversarial pix2pix training (needs model.arch: pix2pix); null: a CNN"
    )

    @model_validator(mode="before")
    @classmethod
    def _pix2pix_has_no_encoder(cls, data: Any) -> Any:
        # the default encoder (resnet18) belongs to the CNNs: a pix2pix config need not unset it
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            model = data["model"]
            if _is_gan_arch(model.get("arch")) and "encoder" not in model:
                return {**data, "model": {**model, "encoder": None}}
        return data

    @model_validator(mode="after")
    def _gan_section_matches_arch(self) -> TrainConfig:
        gan_arch = _is_gan_arch(self.model.arch)
        if self.gan is not None and not gan_arch:
            raise ValueError(
                f"a gan: section trains a pix2pix generator, but model.arch is {self.model.arch!r}; "
                f"set model.arch: {GAN_ARCH} or remove the gan: section"
            )
        if self.gan is None and gan_arch:
            raise ValueError(
                f"model.arch {self.model.arch!r} is trained adversarially: add a gan: section "
                "(gan: {mode: segment} or {mode: synthesize})"
            )
        if self.gan is not None:
            fixed = sorted(set(self.model.options) & {"out_channels", "output"})
            if fixed:
                raise ValueError(f"model.options {', '.join(fixed)} follow from gan.mode; remove them")
            if self.optim.ema_decay is not None:
                raise ValueError("optim.ema_decay is not supported with a gan: section; remove it")
            if self.trainer.gradient_clip_val is not None:
                raise ValueError(
                    "trainer.gradient_clip_val is not supported with a gan: section (two optimisers, "
                    "manual optimisation); remove it"
                )
            if self.model.encoder_weights is not None or self.model.freeze_encoder:
                raise ValueError(
                    f"{GAN_ARCH} has no pretrained encoder: remove model.encoder_weights / freeze_encoder "
                    "(and approach)"
                )
        return self
    synthetic_pairs: SyntheticPairsConfig | None = Field(
        None, description="generated pairs mixed into every training batch; null: real tiles only"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_approach(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("approach"):
            return data
        approach = data["approach"]
        if approach not in APPROACHES:
            return data  # the field validator reports it with the valid values
        weights, freeze = APPROACHES[approach]
        model = dict(data.get("model") or {})
        if weights == "imagenet" and model.get("encoder_weights") not in (None, "imagenet"):
            weights = model["encoder_weights"]  # a local ImageNet weights file
        for key, value in (("encoder_weights", weights), ("freeze_encoder", freeze)):
            if key in model and model[key] != value:
                raise ValueError(
                    f"approach {approach!r} sets model.{key} to {value!r} but the config gives "
                    f"{model[key]!r}; remove one of them"
                )
            model[key] = value
        return {**data, "model": model}

    @property
    def effective_loss(self) -> str:
        """The loss name after the ``imbalance.focal_term`` switch."""
        if not self.imbalance.focal_term:
            return {"dice_focal": "dice", "focal": "ce"}.get(self.loss.name, self.loss.name)
        return self.loss.name

    def run_name(self) -> str:
        """``run.name`` or ``<arch>-<encoder>-<input_size>`` (``<arch>-<gan mode>-<input_size>`` for a GAN)."""
        if self.run.name:
            return self.run.name
        parts = [self.model.arch, self.model.encoder, self.gan.mode if self.gan else None,
                 str(self.input_size) if self.input_size else None]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON/YAML-safe) form; paths as strings."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    data = copy.deepcopy(data)
    if isinstance(data.get("dataset"), str | os.PathLike):
        p = Path(data["dataset"]).expanduser()
        data["dataset"] = str(p if p.is_absolute() else (base / p))
    pairs = data.get("synthetic_pairs")
    if isinstance(pairs, dict) and isinstance(pairs.get("path"), str | os.PathLike):
        p = Path(pairs["path"]).expanduser()
        data["synthetic_pairs"] = {**pairs, "path": str(p if p.is_absolute() else (base / p))}
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("root"), str | os.PathLike):
        p = Path(run["root"]).expanduser()
        data["run"] = {**run, "root": str(p if p.is_absolute() else (base / p))}
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _normalise_overrides(overrides: Any) -> dict[str, Any]:
    """``{"a.b": v}`` / nested dicts / ``["a.b=v", ...]`` -> one nested dict."""
    if overrides is None:
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides:
            if "=" not in str(text):
                raise ConfigError(f"override {text!r} is not of the form key.path=value")
            key, value = str(text).split("=", 1)
            items.append((key.strip(), yaml.safe_load(value)))
    nested: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, dict) and "." not in key:
            nested = _merge(nested, {key: value})
        else:
            _set_dotted(nested, key, value)
    return nested


def apply_overrides(data: dict[str, Any], overrides: Any) -> dict[str, Any]:
    """Merge overrides into a config dict.

    Parameters
    ----------
    data : dict
        Config as plain data.
    overrides : dict or list of str, optional
        ``{"trainer.max_epochs": 3}``, ``{"trainer": {"max_epochs": 3}}`` or
        ``["trainer.max_epochs=3"]`` (values parsed as YAML).

    Returns
    -------
    dict
        A new dict. Overriding ``approach`` drops the base's ``model.encoder_weights``
        and ``model.freeze_encoder`` (unless also overridden), so the new approach
        applies instead of conflicting with the resolved old one. A local weights file
        in ``model.encoder_weights`` is kept: the ``imagenet_*`` approaches use it.
    """
    nested = _normalise_overrides(overrides)
    base = copy.deepcopy(data)
    if "approach" in nested and isinstance(base.get("model"), dict):
        given = nested.get("model") or {}
        for key in ("encoder_weights", "freeze_encoder"):
            local_file = (
                key == "encoder_weights"
                and base["model"].get(key) not in (None, "imagenet")
                and nested["approach"] != "random"
            )
            if key not in given and not local_file:  # a local ImageNet file stays for imagenet_*
                base["model"].pop(key, None)
    return _merge(base, nested)


def load_train_config(
    source: str | os.PathLike | dict[str, Any] | TrainConfig, *, overrides: Any = None
) -> TrainConfig:
    """Load and validate a training config.

    Parameters
    ----------
    source : path-like, dict or TrainConfig
        A YAML file (relative paths inside resolve against its folder), a dict
        (relative paths resolve against the current folder) or a config.
    overrides : dict or list of str, optional
        See :func:`apply_overrides`.

    Returns
    -------
    TrainConfig
        With absolute ``dataset`` and ``run.root``.

    Raises
    ------
    ConfigError
        Missing or invalid file, unknown keys (the message lists the valid ones),
        values out of range.
    """
    if isinstance(source, TrainConfig):
        data, base, where = source.to_dict(), Path.cwd(), "config"
    elif isinstance(source, dict):
        data, base, where = source, Path.cwd(), "config"
    else:
        path = Path(source)
        data, base, where = load_yaml(path), path.resolve().parent, str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        where = f"{where} (with overrides)"
    if "dataset" not in data:
        raise ConfigError(f"{where}: missing key 'dataset' (the folder made by `mineralseg prepare`)")
    return parse_config(_resolve_paths(data, base), TrainConfig, source=where)
