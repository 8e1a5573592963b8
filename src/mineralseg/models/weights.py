"""Encoder weights: ImageNet downloads, local weight files, greyscale adaptation.

``encoder_weights`` (in :func:`~mineralseg.models.build_model` and the config) is

- ``None``: random initialisation;
- a weight-set name, usually ``"imagenet"`` (smp encoders may offer others:
  ``"ssl"``, ``"advprop"`` ...). A local copy at :func:`default_weights_path` is
  used when present; otherwise the library downloads it (Hugging Face hub). Offline,
  a :class:`~mineralseg.errors.ConfigError` says where to put a local file;
- a path to a weight file (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``).

Weight file format
------------------
A state dict (mapping of names to tensors) of the **encoder module**, i.e. of
``smp.encoders.get_encoder(<library name>, in_channels=3).state_dict()``; this is
``model.encoder.state_dict()`` of a model built with ``in_channels=3``, and exactly
what :func:`save_encoder_weights` writes. Also accepted, so existing files work:

- the state dict of the whole torchvision / timm / efficientnet-pytorch / Cadene
  classifier the smp encoder derives from (``torchvision.models.resnet18().state_dict()``,
  ``timm.create_model("inception_v3").state_dict()``): classifier heads (``fc``,
  ``classifier``, ``last_linear``, ``_fc``, ``head``, ``AuxLogits``) are dropped;
- names wrapped in ``module.`` / ``model.`` prefixes, and whole-model checkpoints
  (a Lightning ``{"state_dict": ...}`` or a :class:`SegmentationModel` state dict),
  from which the tensors under an ``encoder.`` prefix are taken.

Any other missing or unexpected name is an error that counts them and shows examples.

Greyscale adaptation
--------------------
A file made for 3 input channels (RGB) loads into a model with ``in_channels=1`` by
**summing** the first convolution's kernels over the input channels (as smp's
``patch_first_conv`` does): a grey image ``g`` fed to the summed kernel gives the
response the RGB kernel gives to ``(g, g, g)``. For ``in_channels`` of 2 or more
than 3 the RGB kernels are repeated cyclically and scaled by ``3 / in_channels``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.io.atomic import atomic_path
from mineralseg.models.encoders import (
    INCEPTIONV3_TIMM_WEIGHTS,
    EncoderSpec,
    file_safe,
    pretrained_tags,
    resolve_encoder,
)
from mineralseg.models.segmentation_model import SegmentationModel

log = logging.getLogger(__name__)

#: Environment variable naming the folder of local weight files.
WEIGHTS_DIR_ENV = "MINERALSEG_WEIGHTS_DIR"
#: Folder of local weight files when the variable is unset.
DEFAULT_WEIGHTS_DIR = "~/.cache/mineralseg/weights"
#: File suffixes read as weight files (safetensors, or torch pickles read with weights_only).
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
#: Input channels of pretrained files (RGB).
PRETRAINED_IN_CHANNELS = 3
#: Seconds to wait for the hub's host before treating the machine as offline: the
#: hub client otherwise retries for about 45 s before it gives up.
NETWORK_CHECK_TIMEOUT_S = 3.0

# classifier heads of the classifiers the encoders derive from (compared in lower case)
_HEAD_PREFIXES = ("fc.", "classifier.", "last_linear.", "_fc.", "head.", "auxlogits.", "aux_logits.")
# wrappers around module names (DataParallel, torch.compile, timm universal encoder)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_ENCODER_SEGMENT = "encoder."
# how many key names an error message shows
_EXAMPLES = 3
# wrapper keys of checkpoints that hold the state dict one level down
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "encoder")


def default_weights_dir() -> Path:
    """Folder of local weight files: ``$MINERALSEG_WEIGHTS_DIR`` or ``~/.cache/mineralseg/weights``."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()


def default_weights_path(encoder: str, weights: str = "imagenet") -> Path:
    """Where a local copy of the ``weights`` set of ``encoder`` is looked for.

    ``<weights dir>/<encoder>-<weights>.pth`` with the canonical encoder name, e.g.
    ``~/.cache/mineralseg/weights/efficientnet-b3-imagenet.pth``.

    Raises
    ------
    ConfigError
        Unknown encoder name.
    """
    name = resolve_encoder(encoder).name
    return default_weights_dir() / f"{file_safe(name)}-{file_safe(weights)}.pth"


def looks_like_path(weights: str | os.PathLike) -> bool:
    """Whether an ``encoder_weights`` value names a file rather than a weight set."""
    if isinstance(weights, os.PathLike):
        return True
    text = str(weights)
    return text.lower().endswith(WEIGHT_SUFFIXES) or "/" in text or os.sep in text or Path(text).is_file()


def adapt_first_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn RGB first-convolution kernels into kernels for ``in_channels`` inputs.

    Parameters
    ----------
    weight : (O, 3, kh, kw) tensor
        Pretrained kernels.
    in_channels : int
        Channels of the new model (>= 1).

    Returns
    -------
    (O, in_channels, kh, kw) tensor
        The sum over the RGB channels for 1 channel; otherwise the RGB kernels
        repeated cyclically and scaled by ``3 / in_channels`` (smp's rule).
    """
    if in_channels == weight.shape[1]:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file into a ``{name: tensor}`` dict on the CPU.

    ``.safetensors`` files are read with safetensors; other suffixes with
    ``torch.load(weights_only=True)`` (no arbitrary code runs). A checkpoint that
    holds the state dict under ``state_dict`` / ``model_state_dict`` / ``model`` /
    ``encoder`` is unwrapped.

    Raises
    ------
    ConfigError
        Missing or unreadable file, or contents that are not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"encoder weights file not found: {path}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is a bad file from the user's point of view
        why = f"{type(exc).__name__}: {_first_line(exc)}"
        raise ConfigError(f"cannot read encoder weights {path}: {why}") from None
    for key in _STATE_DICT_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ConfigError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{path}: {len(bad)} entries are not tensors (e.g. {_examples(list(map(str, bad)))})")
    return dict(obj)


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _is_head(key: str) -> bool:
    return _strip_wrappers(key).lower().startswith(_HEAD_PREFIXES)


def _match_keys(source: list[str], target: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map source names to target names; also return the source names that had to match.

    Tried in turn, the mapping that matches most names wins: names as they are;
    names without wrapper prefixes; the part after ``encoder.`` of a whole-model
    checkpoint (then only those names have to match).
    """
    target_set = set(target)
    normalised: dict[str, str | None] = {}
    for t in target:
        n = _strip_wrappers(t)
        normalised[n] = None if n in normalised else t  # None marks an ambiguous name
    exact = {s: s for s in source if s in target_set}
    by_norm = {s: normalised[_strip_wrappers(s)] for s in source if normalised.get(_strip_wrappers(s))}
    inner = {}
    for s in source:
        i = ("." + s).find("." + _ENCODER_SEGMENT)
        if i >= 0:
            inner[s] = s[i + len(_ENCODER_SEGMENT):]
    from_encoder = {
        s: normalised[_strip_wrappers(k)] for s, k in inner.items() if normalised.get(_strip_wrappers(k))
    }
    # max() keeps the first of equals: prefer names as they are, then unwrapped names
    return max(((exact, source), (by_norm, source), (from_encoder, list(inner))), key=lambda c: len(c[0]))


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES])
    return f"{shown}, ..." if len(names) > _EXAMPLES else shown


def load_encoder_state_dict(
    encoder: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, name: str = "the"
) -> list[str]:
    """Load ``state_dict`` into ``encoder``, adapting an RGB first convolution.

    Parameters
    ----------
    encoder : nn.Module
        Target encoder (modified in place).
    state_dict : mapping of str to tensor
        Weights in one of the formats described in this module's docstring.
    source : str
        Where the weights come from (a path, "imagenet download"), for messages.
    name : str
        Encoder name for messages.

    Returns
    -------
    list of str
        Names of the tensors whose input channels were adapted (the first convolution
        when a 3-channel file is loaded into a model with another channel count).

    Raises
    ------
    ConfigError
        Names that do not match (counts and examples of missing and unexpected
        names), or tensors of the wrong shape.
    """
    target = encoder.state_dict()
    mapping, considered = _match_keys(list(state_dict), list(target))
    matched_targets = set(mapping.values())
    missing = [k for k in target if k not in matched_targets and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in considered if k not in mapping and not _is_head(k)]
    if missing or unexpected:
        raise ConfigError(
            f"{source} does not fit {name} encoder: {len(missing)} missing key(s)"
            f"{' (e.g. ' + _examples(missing) + ')' if missing else ''}, {len(unexpected)} unexpected key(s)"
            f"{' (e.g. ' + _examples(unexpected) + ')' if unexpected else ''}; expected the state dict of the "
            f"encoder module, as written by mineralseg.models.save_encoder_weights"
        )
    merged = dict(target)
    adapted, wrong = [], []
    for src_key, tgt_key in mapping.items():
        value, want = state_dict[src_key], target[tgt_key]
        if value.shape != want.shape and _is_rgb_first_conv(value, want) and not adapted:
            value = adapt_first_conv_weight(value, want.shape[1])
            adapted.append(tgt_key)
        if value.shape != want.shape:
            wrong.append(f"{tgt_key}: file {tuple(value.shape)}, model {tuple(want.shape)}")
            continue
        merged[tgt_key] = value.to(dtype=want.dtype)
    if wrong:
        raise ConfigError(
            f"{source}: {len(wrong)} tensor(s) have the wrong shape for {name} encoder (e.g. {_examples(wrong)}); "
            f"was the file saved for another encoder or depth?"
        )
    encoder.load_state_dict(merged, strict=True)
    return adapted


def _is_rgb_first_conv(value: torch.Tensor, want: torch.Tensor) -> bool:
    return (
        value.ndim == 4
        and want.ndim == 4
        and value.shape[1] == PRETRAINED_IN_CHANNELS
        and value.shape[0] == want.shape[0]
        and value.shape[2:] == want.shape[2:]
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _network_reachable(host: str) -> bool:
    """Whether a TCP connection to ``host``:443 opens quickly (assumed yes behind a proxy)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        with socket.create_connection((host, 443), timeout=NETWORK_CHECK_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make the hub client use its local cache only (fails fast instead of retrying)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _reference_encoder(spec: EncoderSpec, depth: int, weights: str | None) -> nn.Module:
    """The 3-channel encoder as the library builds it, with ``weights`` downloaded (or random)."""
    import segmentation_models_pytorch as smp

    if weights is None or spec.source == "project":
        return smp.encoders.get_encoder(spec.library_name, in_channels=PRETRAINED_IN_CHANNELS, depth=depth)
    library_weights = weights if spec.source == "smp" else True  # tu-: variant given by the name's tag
    return smp.encoders.get_encoder(
        spec.library_name, in_channels=PRETRAINED_IN_CHANNELS, depth=depth, weights=library_weights
    )


def _download(spec: EncoderSpec, weights: str, depth: int) -> dict[str, torch.Tensor]:
    """Fetch a pretrained 3-channel encoder state dict through the libraries (may raise anything)."""
    if spec.source == "project":
        import timm

        classifier = timm.create_model(INCEPTIONV3_TIMM_WEIGHTS, pretrained=True)
        reference = _reference_encoder(spec, depth, None)
        load_encoder_state_dict(
            reference, classifier.state_dict(), source=INCEPTIONV3_TIMM_WEIGHTS, name=spec.name
        )
        return reference.state_dict()
    return _reference_encoder(spec, depth, weights).state_dict()


def _check_tag(spec: EncoderSpec, weights: str) -> None:
    tags = pretrained_tags(spec)
    if weights not in tags:
        raise ConfigError(
            f"encoder {spec.name!r} has no pretrained weights {weights!r}; use null (random init), "
            f"one of {', '.join(tags)}, or a path to a {'/'.join(WEIGHT_SUFFIXES)} file"
        )


def pretrained_state_dict(
    encoder: str, weights: str = "imagenet", *, encoder_depth: int = 5
) -> dict[str, torch.Tensor]:
    """Download a pretrained encoder and return its 3-channel state dict (the file format).

    Parameters
    ----------
    encoder : str
        Encoder name (study, smp or ``tu-`` name).
    weights : str
        Weight set, see :func:`~mineralseg.models.encoders.pretrained_tags`.
    encoder_depth : int
        Encoder depth the state dict is for (5, the default of every architecture).

    Raises
    ------
    ConfigError
        Unknown encoder or weight set, or the download failed (offline); the message
        says where to put a local file.
    """
    spec = resolve_encoder(encoder)
    _check_tag(spec, weights)
    host = _hub_host()
    online = _network_reachable(host)
    try:
        with contextlib.nullcontext() if online else _hub_offline():
            state = _download(spec, weights, encoder_depth)
    except Exception as exc:  # network, hub and cache errors all come in library-specific types
        reason = f"no network ({host} unreachable)" if not online else "download failed"
        why = f"{reason}: {type(exc).__name__}: {_first_line(exc)}"
        raise ConfigError(_offline_message(spec, weights, why)) from None
    return {k: v.detach().clone() for k, v in state.items()}


def _offline_message(spec: EncoderSpec, weights: str, reason: str) -> str:
    target = default_weights_path(spec.name, weights)
    return (
        f"cannot get the {weights!r} weights of encoder {spec.name!r} ({reason}). On a machine with "
        f"internet run: mineralseg export-weights {spec.name} (or in Python: "
        f"mineralseg.models.save_encoder_weights('{spec.name}', weights='{weights}')) and copy the file it "
        f"writes to {target} "
        f"(then encoder_weights: {weights} finds it; the folder is ${WEIGHTS_DIR_ENV} or {DEFAULT_WEIGHTS_DIR}), "
        f"or put it anywhere and set encoder_weights: /path/to/{target.name} in the model section of the config"
    )


def load_encoder_weights(model: SegmentationModel, weights: str | os.PathLike) -> None:
    """Load pretrained or saved weights into ``model.encoder`` (in place).

    Parameters
    ----------
    model : SegmentationModel
        Model built with random weights.
    weights : str or path-like
        A weight-set name (``"imagenet"``: local copy at :func:`default_weights_path`
        if present, else a download) or a weight file (see the module docstring).

    Raises
    ------
    ConfigError
        Unknown weight set, missing/unreadable/mismatched file, no pretrained weights
        for ``resunet``/``plain-unet``, or a failed download.
    """
    if looks_like_path(weights):
        path = Path(weights).expanduser()
        state, source = read_state_dict(path), str(path)
    else:
        weights = str(weights)
        if model.encoder_name is None:
            raise ConfigError(
                f"{model.arch} has no pretrained encoder weights {weights!r}: use encoder_weights: null "
                f"or a path to weights saved from a {model.arch} encoder"
            )
        spec = resolve_encoder(model.encoder_name)
        _check_tag(spec, weights)
        local = default_weights_path(spec.name, weights)
        depth = model.options.get("encoder_depth", 5)
        if local.is_file():
            state, source = read_state_dict(local), str(local)
        else:
            state, source = pretrained_state_dict(spec.name, weights, encoder_depth=depth), f"{weights} download"
    adapted = load_encoder_state_dict(model.encoder, state, source=source, name=model.encoder_name or model.arch)
    model.encoder_weights = str(weights)
    note = f" (first conv {', '.join(adapted)} adapted to {model.in_channels} channel(s))" if adapted else ""
    log.info("loaded encoder weights of %s from %s%s", model.name, source, note)


def save_encoder_weights(
    source: str | SegmentationModel,
    path: str | os.PathLike | None = None,
    *,
    weights: str = "imagenet",
    encoder_depth: int = 5,
) -> Path:
    """Write an encoder weight file in the format ``encoder_weights`` reads.

    Parameters
    ----------
    source : str or SegmentationModel
        An encoder name: its pretrained ``weights`` are downloaded (needs network)
        and saved as the 3-channel encoder state dict. Or a model: its encoder's
        current state dict is saved (with the model's input channels).
    path : path-like, optional
        Output file (``.pth``/``.pt``/``.bin`` or ``.safetensors``). Default for an
        encoder name: :func:`default_weights_path`, where ``encoder_weights: imagenet``
        looks first. Required for a model.
    weights : str
        Weight set to download (encoder names only).
    encoder_depth : int
        Encoder depth (encoder names only; 5 unless the model sets ``encoder_depth``).

    Returns
    -------
    Path
        The file written (atomically).

    Raises
    ------
    ConfigError
        Unknown encoder or weight set, a failed download, a bad suffix, or no path for a model.
    """
    if isinstance(source, SegmentationModel):
        if path is None:
            raise ConfigError("save_encoder_weights: give a path when saving the encoder of a model")
        state = source.encoder.state_dict()
        meta = {
            "encoder": source.encoder_name or source.arch,
            "in_channels": str(source.in_channels),
            "weights": "model",
        }
    else:
        spec = resolve_encoder(source)
        state = pretrained_state_dict(spec.name, weights, encoder_depth=encoder_depth)
        path = default_weights_path(spec.name, weights) if path is None else path
        meta = {"encoder": spec.name, "in_channels": str(PRETRAINED_IN_CHANNELS), "weights": weights}
    path = Path(path).expanduser()
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"encoder weights file {path} must end in one of {', '.join(WEIGHT_SUFFIXES)}")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"format": "mineralseg-encoder/1", **meta})
        else:
            torch.save(tensors, tmp)
    log.info("wrote encoder weights of %s to %s", meta["encoder"], path)
    return path
