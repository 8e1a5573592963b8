"""Rebuild a trained model from its checkpoint file alone.

Checkpoints written by :mod:`mineralseg.train` carry a model card
(:class:`mineralseg.model_card.ModelCard`): class names and colours, ignore_index,
input normalisation, input/tile sizes, the working grid, architecture and encoder, the
training data and the resolved training config. The model is rebuilt without pretrained weights (no
download, no weights file needed) and then given the trained state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mineralseg.errors import DataError, UserError
from mineralseg.model_card import META_KEY, ModelCard

if TYPE_CHECKING:  # importing mineralseg.data loads Lightning: seconds that predict does not need
    from mineralseg.data.manifest import DatasetManifest

__all__ = ["check_dataset_matches", "load_checkpoint_model", "read_card", "read_checkpoint", "resolve_checkpoint"]

_MODEL_PREFIX = "model."
_EMA_PREFIX = "ema.module."


def resolve_checkpoint(run_or_checkpoint: str | os.PathLike) -> tuple[Path, Path | None]:
    """The checkpoint file of a run folder or a checkpoint path, and the run folder.

    A run folder gives ``checkpoints/best.ckpt`` (``last.ckpt`` when no best one was
    saved). A checkpoint inside ``RUN/checkpoints/`` gives ``RUN`` as its run folder.

    Raises
    ------
    UserError
        Nothing found at the path, or a run folder without checkpoints.
    """
    path = Path(run_or_checkpoint)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate, path
        raise UserError(f"{path} holds no checkpoints/best.ckpt or checkpoints/last.ckpt")
    if not path.is_file():
        raise UserError(f"checkpoint or run folder not found: {path}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    if run_dir is not None and not (run_dir / "config.yaml").is_file():
        run_dir = None
    return path, run_dir


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file (on the CPU) and check it describes itself.

    Returns
    -------
    dict
        The raw checkpoint (``state_dict``, ``mineralseg`` entry, ...).

    Raises
    ------
    DataError
        Unreadable file, or a checkpoint not written by ``mineralseg train``.
    """
    path = Path(path)
    try:
        # Lightning checkpoints hold loop and callback states next to the tensors;
        # only load checkpoints you trust (as for any pickle-based file).
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if META_KEY not in ckpt and "meta" not in (ckpt.get("hyper_parameters") or {}):
        raise DataError(f"{path} was not written by `mineralseg train`: it does not describe its classes and inputs")
    return ckpt


def read_card(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> ModelCard:
    """The model card of a checkpoint read by :func:`read_checkpoint`, with its provenance."""
    entry = ckpt.get(META_KEY) or {}
    hparams = ckpt.get("hyper_parameters") or {}
    meta = dict(entry.get("meta") or hparams.get("meta") or {})
    meta.update(
        config=entry.get("config") or hparams.get("config"),
        versions=entry.get("versions", {}),
        epoch=ckpt.get("epoch"),
        global_step=ckpt.get("global_step"),
        checkpoint=str(path),
        weights="moving average" if any(k.startswith(_EMA_PREFIX) for k in ckpt["state_dict"]) else "trained",
    )
    return ModelCard.from_dict(meta, where=str(path))


def load_checkpoint_model(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model of a checkpoint (or of a run folder's best checkpoint).

    Parameters
    ----------
    path : path-like
        A ``.ckpt`` file or a run folder (see :func:`resolve_checkpoint`).
    map_location : str or torch.device
        Device of the returned model.

    Returns
    -------
    model : torch.nn.Module
        In eval mode; maps (N, in_channels, S, S) normalised images
        (``(uint8 / 255 - mean) / std``) to (N, C, S, S) logits.
    card : ModelCard
        Classes, input normalisation and sizes, working grid, training data, and the
        provenance (``checkpoint``, ``epoch``, ``global_step``, ``weights``, ``config``).

    Raises
    ------
    UserError / DataError
        Missing or foreign file; weights that do not fit the rebuilt model.
    """
    from mineralseg.models import build_model

    ckpt_path, _ = resolve_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path)
    card = read_card(ckpt, ckpt_path)
    model = build_model(
        card.arch,
        card.encoder,
        num_classes=card.num_classes,
        in_channels=card.in_channels,
        encoder_weights=None,
        freeze_encoder=False,
        **card.model_options,
    )
    # A run with a moving average of the weights is validated (and ranked) with it.
    prefix = _EMA_PREFIX if card.weights == "moving average" else _MODEL_PREFIX
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"{ckpt_path}: the weights do not fit {card.model_name}: {first}") from None
    return model.to(map_location).eval(), card


def check_dataset_matches(card: ModelCard, manifest: DatasetManifest, *, checkpoint: Any = "checkpoint") -> None:
    """DataError when a dataset's class schema differs from the one a model was trained on."""
    trained = list(card.class_names)
    if trained != list(manifest.class_names):
        raise DataError(
            f"{checkpoint} was trained on {len(trained)} classes {trained} but dataset {manifest.root} has "
            f"{manifest.num_classes} classes {manifest.class_names}; evaluate on a dataset prepared with "
            "the same palette and class level"
        )
    if card.ignore_index != manifest.ignore_index:
        raise DataError(
            f"{checkpoint} uses ignore_index {card.ignore_index} but dataset {manifest.root} "
            f"uses {manifest.ignore_index}"
        )
