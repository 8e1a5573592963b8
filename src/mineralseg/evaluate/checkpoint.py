"""Rebuild a trained model from its checkpoint file alone.

Checkpoints written by :mod:`mineralseg.train` carry a model card
(:class:`mineralseg.model_card.ModelCard`): class names and colours, ignore_index,
input normalisation, input/tile sizes, the working grid, architecture and encoder, the
training data and the resolved training config. The model is rebuilt without pretrained weights (no
download, no weights file needed) and then given the trained state.

Checkpoints are pickles, and unpickling can run code. Every checkpoint is therefore
opened with ``torch.load(weights_only=True)`` and an explicit allow-list of the few
non-tensor types the project's checkpoints may hold (:data:`CHECKPOINT_TYPES`); a file
that needs anything else is refused with a clear error. ``trust=True`` (the CLI's
``--trust-checkpoint``) opens a file fully, for the user's own older files only.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mineralseg.errors import DataError, UserError
from mineralseg.model_card import META_KEY, ModelCard

if TYPE_CHECKING:  # importing mineralseg.data loads Lightning: seconds that predict does not need
    from mineralseg.data.manifest import DatasetManifest

__all__ = ["CHECKPOINT_TYPES", "PURPOSES", "check_dataset_matches", "check_grid_matches", "check_purpose",
           "load_checkpoint_file", "load_checkpoint_model", "read_card", "read_checkpoint", "resolve_checkpoint"]

_MODEL_PREFIX = "model."
_EMA_PREFIX = "ema.module."

#: Types beyond tensors and plain data (dicts, lists, numbers, strings) that checkpoints
#: written by ``mineralseg train`` (through Lightning) may hold: today's hold none, but a
#: path in a config or a callback's state is harmless to rebuild. Nothing else is
#: unpickled unless the user trusts the file.
CHECKPOINT_TYPES: tuple[type, ...] = (pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
                                      pathlib.PureWindowsPath)


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


def load_checkpoint_file(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """``torch.load`` a checkpoint on the CPU without running code from it.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    trust : bool
        Open the file fully (``weights_only=False``): a pickle can run any code, so
        only for files the user made (the CLI's ``--trust-checkpoint``).

    Returns
    -------
    object
        What the file holds (for a checkpoint, a dict).

    Raises
    ------
    UserError
        No file at ``path``.
    DataError
        Unreadable file, or a file that needs types outside :data:`CHECKPOINT_TYPES`
        (nothing from it is run).
    """
    path = Path(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(list(CHECKPOINT_TYPES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as exc:
        found = _unsupported_global(str(exc))
        if found is None:  # not a pickle torch can read at all
            raise DataError(f"cannot read checkpoint {path}: {_short_reason(str(exc))}") from None
        raise DataError(
            f"refusing to open {path}: it needs {found}, which is beyond the tensors and types mineralseg "
            "checkpoints hold, and opening it could run code from the file; if you made this file yourself, "
            "pass --trust-checkpoint (trust=True)"
        ) from None
    except Exception as exc:  # corrupt / truncated file
        raise DataError(f"cannot read checkpoint {path}: {exc}") from None


def _unsupported_global(message: str) -> str | None:
    """``os.system`` from torch's 'Unsupported global: GLOBAL os.system' message."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _short_reason(message: str) -> str:
    """The line of torch's weights-only error that says what went wrong."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("Unsupported", "Unpickling", "WeightsUnpickler"))), None)
    return detail or (lines[0] if lines else "unreadable")


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file safely (on the CPU) and check it describes itself.

    Parameters
    ----------
    path : path-like
    trust : bool
        See :func:`load_checkpoint_file`.

    Returns
    -------
    dict
        The raw checkpoint (``state_dict``, ``mineralseg`` entry, ...).

    Raises
    ------
    DataError
        Unreadable file, a file needing more than :data:`CHECKPOINT_TYPES` (unless
        ``trust``), or a checkpoint not written by ``mineralseg train``.
    """
    path = Path(path)
    ckpt = load_checkpoint_file(path, trust=trust)
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


#: What a caller wants a checkpoint for (see :func:`load_checkpoint_model`).
PURPOSES = ("segment", "synthesize")


def check_purpose(card: ModelCard, purpose: str, path: str | os.PathLike = "checkpoint") -> None:
    """UserError when a checkpoint cannot serve ``purpose``.

    Parameters
    ----------
    card : ModelCard
    purpose : {"segment", "synthesize"}
        ``segment``: SEM -> class logits (every CNN and a pix2pix ``gan_mode: segment``);
        ``synthesize``: label map -> SEM (only ``gan_mode: synthesize``).
    path : path-like
        Names the checkpoint in the message.

    Raises
    ------
    UserError
        One line naming the checkpoint, what it is and which command takes it.
    ValueError
        ``purpose`` is not one of :data:`PURPOSES` (a programming error).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if purpose == "segment" and card.gan_mode == "synthesize":
        raise UserError(
            f"{path} is a pix2pix map -> SEM (synthesize) checkpoint; use `mineralseg synthesize` with it, "
            "or give a segmentation checkpoint (a CNN or a pix2pix trained with gan.mode: segment)"
        )
    if purpose == "synthesize" and card.gan_mode != "synthesize":
        what = "a pix2pix SEM -> map (segment)" if card.gan_mode == "segment" else f"a {card.model_name} segmentation"
        raise UserError(
            f"{path} is {what} checkpoint, not a map -> SEM generator; `mineralseg synthesize` needs a "
            "checkpoint trained with gan.mode: synthesize (use this one with evaluate / predict)"
        )


def load_checkpoint_model(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    trust: bool = False,
    purpose: str = "segment",
) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model of a checkpoint (or of a run folder's best checkpoint).

    Parameters
    ----------
    path : path-like
        A ``.ckpt`` file or a run folder (see :func:`resolve_checkpoint`).
    map_location : str or torch.device
        Device of the returned model.
    trust : bool
        Open the file fully (see :func:`load_checkpoint_file`); only for your own files.
    purpose : {"segment", "synthesize"}
        ``segment`` (default; evaluate, predict, export, compare): refuses a pix2pix
        map -> SEM checkpoint. ``synthesize``: refuses every checkpoint but a pix2pix
        map -> SEM one (``card.gan_mode == "synthesize"``). See :func:`check_purpose`.

    Returns
    -------
    model : torch.nn.Module
        In eval mode (dropout off). ``segment``: maps (N, in_channels, S, S) normalised
        images (``(uint8 / 255 - mean) / std``) to (N, C, S, S) logits.
        ``synthesize``: maps (N, C, S, S) one-hot class maps (all zeros at unlabelled
        pixels) to (N, 1, S, S) SEM in [-1, 1] (grey ``round((t + 1) * 127.5)``).
    card : ModelCard
        Classes, input normalisation and sizes, working grid, training data, and the
        provenance (``checkpoint``, ``epoch``, ``global_step``, ``weights``, ``config``).

    Raises
    ------
    UserError / DataError
        Missing or foreign file; a checkpoint of the wrong kind for ``purpose``;
        weights that do not fit the rebuilt model.
    """
    from mineralseg.models import build_model

    ckpt_path, _ = resolve_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path, trust=trust)
    card = read_card(ckpt, ckpt_path)
    check_purpose(card, purpose, ckpt_path)
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


#: Normalisation settings that decide the grey levels a model sees (per-sample
#: statistics such as the fitted offsets are not compared: they differ by sample).
_NORMALISATION_SETTINGS = ("method", "low", "high", "drift")


def check_grid_matches(card: ModelCard, manifest: DatasetManifest, *, checkpoint: Any = "checkpoint") -> None:
    """DataError when a dataset was prepared on another grid or grey scale than a model's.

    Compares the card's ``sem_scale``, ``tile_size`` and ``sem_normalisation`` (its
    ``method``, ``low``, ``high`` and ``drift``; not the per-sample statistics) with the
    dataset's. Normalisation settings the card does not record are not compared.

    Parameters
    ----------
    card : ModelCard
    manifest : DatasetManifest
        The dataset to evaluate on.
    checkpoint : object
        Names the checkpoint in the message.

    Raises
    ------
    DataError
        One line naming the setting and both values, and what to do.
    """
    differences = []
    if float(card.sem_scale) != float(manifest.sem_scale):
        differences.append(f"sem_scale {card.sem_scale} vs {manifest.sem_scale}")
    if int(card.tile_size) != int(manifest.tile_size):
        differences.append(f"tile_size {card.tile_size} vs {manifest.tile_size}")
    trained_norm = card.sem_normalisation
    if trained_norm:
        for key in _NORMALISATION_SETTINGS:
            if key in trained_norm or key in manifest.normalisation:
                a, b = trained_norm.get(key), manifest.normalisation.get(key)
                if a != b:
                    differences.append(f"normalisation {key} {a!r} vs {b!r}")
    if differences:
        raise DataError(
            f"{checkpoint} was trained on another grid or grey scale than dataset {manifest.root} "
            f"(checkpoint vs dataset: {'; '.join(differences)}); prepare the dataset with the checkpoint's "
            "settings (sem_scale, tile_size, normalise)"
        )
