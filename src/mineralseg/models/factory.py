"""One factory for every model: ``build_model(arch, encoder, num_classes=...)``.

Valid input sizes are found, not tabulated: the network is built once more on the
``meta`` device (no memory, no arithmetic) and run on empty inputs of growing
multiples of its stride. This catches encoders whose feature maps do not align with a
decoder (timm's unpadded ``tu-inception_v3`` with LinkNet) at build time, gives
:func:`min_input_size` for any encoder the libraries offer, and finds parameters no
output depends on (one backward pass on the twin), which are then never trained.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.models.architectures import Architecture, resolve_architecture
from mineralseg.models.encoders import STUDY_ENCODERS, EncoderSpec, resolve_encoder
from mineralseg.models.segmentation_model import SegmentationModel, set_encoder_frozen
from mineralseg.models.weights import load_encoder_weights

log = logging.getLogger(__name__)

#: Fewest classes: a binary pore/solid mask is 2 classes with softmax, so every model
#: has the same (N, C, H, W) logits and the same losses and metrics.
MIN_CLASSES = 2
#: Most classes: the study's palette has 24 colours; 30 leaves room for finer schemes.
MAX_CLASSES = 30
#: Largest input side tried when searching for the smallest valid input.
MAX_PROBE_SIZE = 1024
#: Multiples of the stride tried, in order (a few small ones, then coarser steps).
_PROBE_MULTIPLES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
#: Batch of the shape probe: 2, since batch-norm in training mode needs 2 values.
_PROBE_BATCH = 2
#: Exceptions the libraries raise for options or encoders they do not support.
_LIBRARY_REFUSALS = (
    ValueError, TypeError, KeyError, AttributeError, AssertionError, RuntimeError, NotImplementedError
)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {span}, got {value!r}")
    return value


def _resolve(arch: str, encoder: str | None) -> tuple[Architecture, EncoderSpec | None]:
    spec = resolve_architecture(arch)
    if spec.takes_encoder and encoder is None:
        raise ConfigError(
            f"{spec.name} needs an encoder, e.g. one of the study's: {', '.join(STUDY_ENCODERS)}"
        )
    if not spec.takes_encoder and encoder is not None:
        raise ConfigError(f"{spec.name} takes no encoder (got {encoder!r}); leave encoder empty")
    return spec, resolve_encoder(encoder) if spec.takes_encoder else None


def _label(arch: Architecture, encoder: EncoderSpec | None) -> str:
    return f"{arch.name}/{encoder.name}" if encoder else arch.name


def _construct_raw(
    arch: Architecture, encoder: EncoderSpec | None, num_classes: int, in_channels: int, options: dict[str, Any]
) -> nn.Module:
    arch.check_options(options)
    return arch.build(encoder.library_name if encoder else None, num_classes, in_channels, **options)


def _construct(
    arch: Architecture, encoder: EncoderSpec | None, num_classes: int, in_channels: int, options: dict[str, Any]
) -> nn.Module:
    """Build the raw network; library refusals become a :class:`ConfigError`."""
    try:
        return _construct_raw(arch, encoder, num_classes, in_channels, options)
    except ConfigError:
        raise
    except _LIBRARY_REFUSALS as exc:
        if encoder:
            what = f"{arch.name} cannot be combined with encoder {encoder.name!r}"
        else:
            what = f"cannot build {arch.name}"
        raise ConfigError(f"{what}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Geometry:
    """What the shape probe found out about a network.

    Attributes
    ----------
    divisor : int
        Input sides must be multiples of it.
    min_size : int
        Smallest valid input side (a multiple of ``divisor``).
    unused : tuple of str
        Names of parameters (relative to the network) that no output depends on,
        e.g. the classifier head conv smp's EfficientNet encoders keep, or the deeper
        stages when ``encoder_depth`` < 5.
    """

    divisor: int
    min_size: int
    unused: tuple[str, ...]


_geometry_cache: dict[tuple, Geometry] = {}


def _meta_twin(
    arch: Architecture,
    encoder: EncoderSpec | None,
    in_channels: int,
    options: dict[str, Any],
    net: nn.Module | None,
) -> nn.Module:
    """The network on the meta device: built there, or (for modules that cannot be) copied there."""
    try:
        with torch.device("meta"):
            twin = _construct_raw(arch, encoder, MIN_CLASSES, in_channels, options)
    except ConfigError:
        raise
    except Exception:  # e.g. Tensor.item() in a constructor; a real build tells what is wrong
        if net is None:
            net = _construct(arch, encoder, MIN_CLASSES, in_channels, options)
        twin = copy.deepcopy(net)
    # some constructors make tensors with legacy constructors that ignore the device context
    return twin.to("meta")


def _stride(net: nn.Module) -> int:
    """Input side divisor of a built network."""
    divisor = getattr(net, "input_divisor", None) or getattr(getattr(net, "encoder", None), "output_stride", None)
    return int(divisor or 32)


def _runs_at(net: nn.Module, size: int, in_channels: int, num_classes: int) -> str | None:
    """Shape-only forward at ``size`` (meta tensors); ``None`` if fine, else why not."""
    x = torch.empty(_PROBE_BATCH, in_channels, size, size, device="meta")
    try:
        with torch.no_grad():
            y = net(x)
    except Exception as exc:  # any failure means "not at this size"
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    # a network whose outputs are not class scores (a pix2pix image generator) says how many it has
    want = (_PROBE_BATCH, int(getattr(net, "output_channels", None) or num_classes), size, size)
    return None if tuple(y.shape) == want else f"output shape {tuple(y.shape)} instead of {want}"


def _unused_parameters(net: nn.Module, size: int, in_channels: int) -> tuple[str, ...]:
    """Names of parameters that get no gradient from a forward/backward pass at ``size``."""
    net(torch.empty(_PROBE_BATCH, in_channels, size, size, device="meta")).sum().backward()
    return tuple(name for name, p in net.named_parameters() if p.requires_grad and p.grad is None)


def _geometry(
    arch: Architecture,
    encoder: EncoderSpec | None,
    in_channels: int,
    options: dict[str, Any],
    net: nn.Module | None = None,
) -> Geometry:
    """Probe a meta-device twin of the network (cached per architecture, encoder and options)."""
    key = (arch.name, encoder.library_name if encoder else None, in_channels, repr(sorted(options.items())))
    if key in _geometry_cache:
        return _geometry_cache[key]
    twin = _meta_twin(arch, encoder, in_channels, options, net).eval()
    divisor = _stride(twin)
    sizes = [k * divisor for k in _PROBE_MULTIPLES if k * divisor <= MAX_PROBE_SIZE]
    reason = "no size tried"
    for size in sizes:
        reason = _runs_at(twin, size, in_channels, MIN_CLASSES)
        if reason is None:
            # a valid minimum must be followed by valid larger sizes, not a lucky one-off
            reason = _runs_at(twin, size + divisor, in_channels, MIN_CLASSES)
            if reason is None:
                geometry = Geometry(divisor, size, _unused_parameters(twin, size, in_channels))
                _geometry_cache[key] = geometry
                return geometry
    raise ConfigError(
        f"{_label(arch, encoder)} fails for every input size from {divisor} to {sizes[-1]} px "
        f"(the encoder's feature maps do not align with this decoder): {reason}"
    )


def input_divisor(arch: str, encoder: str | None = None, *, in_channels: int = 1, **options: Any) -> int:
    """Number the input height and width must be multiples of (32 for most, 16 for resunet).

    Parameters are those of :func:`build_model` (options such as ``encoder_depth``
    or ``depth`` change it).

    Raises
    ------
    ConfigError
        Unknown names, or a combination that cannot be built.
    """
    a, e = _resolve(arch, encoder)
    return _geometry(a, e, _check_int("in_channels", in_channels, 1), options).divisor


def min_input_size(arch: str, encoder: str | None = None, *, in_channels: int = 1, **options: Any) -> int:
    """Smallest input side the model accepts (a multiple of :func:`input_divisor`).

    Equal to the divisor for every architecture/encoder of the study (32, or 16 for
    resunet and plain-unet); larger for unpadded timm encoders such as
    ``tu-inception_v3`` (96).

    Raises
    ------
    ConfigError
        Unknown names, or a combination that cannot be built.
    """
    a, e = _resolve(arch, encoder)
    return _geometry(a, e, _check_int("in_channels", in_channels, 1), options).min_size


def build_model(
    arch: str,
    encoder: str | None = None,
    *,
    num_classes: int,
    in_channels: int = 1,
    encoder_weights: str | None = None,
    freeze_encoder: bool = False,
    **options: Any,
) -> SegmentationModel:
    """Build a segmentation model by name.

    Parameters
    ----------
    arch : str
        ``unet``, ``linknet``, ``fpn``, ``deeplabv3plus`` (segmentation_models_pytorch,
        need an encoder), ``resunet``, ``plain-unet`` or ``pix2pix`` (this project, no
        encoder; ``pix2pix`` is the GAN generator, see :mod:`mineralseg.models.pix2pix`).
        Case-insensitive; ``deeplabv3+``, ``custom`` (= plain-unet) are accepted.
    encoder : str, optional
        Backbone of a library architecture: the study's ``resnet18``, ``vgg16``,
        ``vgg19``, ``inceptionv3``, ``inceptionresnetv2``, ``efficientnet-b3``,
        ``efficientnet-b4``; any smp encoder; or ``tu-<timm model>``.
    num_classes : int
        Output channels, 2..30 (a binary mask is 2 classes).
    in_channels : int
        Input channels; 1 for greyscale SEM (default).
    encoder_weights : str or path-like, optional
        ``None`` (random), ``"imagenet"`` (or another weight set of the encoder), or a
        weight file; see :mod:`mineralseg.models.weights`. RGB weights are adapted to
        ``in_channels`` by summing the first convolution's kernels.
    freeze_encoder : bool
        Freeze the encoder (see :func:`~mineralseg.models.set_encoder_frozen`).
    **options
        Architecture options: smp's constructor arguments (``decoder_channels``,
        ``encoder_depth``, ``decoder_attention_type`` ...), resunet's ``filters``,
        plain-unet's ``base_width``, ``depth``, ``batch_norm``, ``dropout``; pix2pix's
        ``base_filters``, ``depth``, ``norm``, ``dropout``, ``out_channels``, ``output``.

    Returns
    -------
    SegmentationModel
        ``model(x)`` maps ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``;
        ``H`` and ``W`` must be multiples of ``model.input_divisor`` and at least
        ``model.min_input_size``.

    Raises
    ------
    ConfigError
        Unknown architecture, encoder or option (with the closest valid name), an
        encoder the architecture cannot use, a class count out of range, or weights
        that cannot be obtained or do not fit.

    Examples
    --------
    >>> model = build_model("unet", "efficientnet-b3", num_classes=4)
    >>> model(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 4, 64, 64])
    """
    a, e = _resolve(arch, encoder)
    _check_int("num_classes", num_classes, MIN_CLASSES, MAX_CLASSES)
    _check_int("in_channels", in_channels, 1)
    net = _construct(a, e, num_classes, in_channels, options)
    geometry = _geometry(a, e, in_channels, options, net)
    model = SegmentationModel(
        net,
        arch=a.name,
        encoder=e.name if e else None,
        num_classes=num_classes,
        in_channels=in_channels,
        input_divisor=geometry.divisor,
        min_input_size=geometry.min_size,
        options=options,
        unused_parameters=geometry.unused,
    )
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    if freeze_encoder:
        if encoder_weights is None:
            log.warning("freezing the randomly initialised encoder of %s (encoder_weights is None)", model.name)
        set_encoder_frozen(model, True)
    return model
