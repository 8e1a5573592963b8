"""pix2pix networks (Isola et al. 2017): U-Net generator and PatchGAN discriminator.

The generator is an encoder-decoder with skips: every encoder level halves the size
with a 4 x 4 stride-2 convolution (LeakyReLU 0.2 before it, normalisation after, none
on the outermost and innermost levels), every decoder level doubles it with a 4 x 4
stride-2 transposed convolution (ReLU before, normalisation after) and concatenates
the encoder feature of its level. Widths are ``base_filters * 2**k``, capped at 8 x
``base_filters``. Dropout in the decoder levels just outside the innermost one is
the generator's noise source (pix2pix has no noise input).

The discriminator is a PatchGAN: a stack of 4 x 4 convolutions that scores each
overlapping patch of the (condition, output) pair as real or fake; with 3 layers
each score sees a 70 x 70 patch (:func:`receptive_field`).

References
----------
P. Isola, J.-Y. Zhu, T. Zhou, A. A. Efros, "Image-to-image translation with conditional
adversarial networks", CVPR 2017.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.models._checks import check_input, checks_enabled

__all__ = [
    "NORMS", "OUTPUTS", "PatchDiscriminator", "Pix2PixGenerator", "init_pix2pix_weights", "one_hot_labels",
    "receptive_field", "tanh_to_grey",
]

#: Default base width: pix2pix's 64 (the study used 32).
DEFAULT_BASE_FILTERS = 64
#: Default number of stride-2 levels: pix2pix's ``unet_256`` (input sides multiples of 256).
DEFAULT_DEPTH = 8
#: Deepest generator: 9 levels need inputs of 512 px or more.
MAX_DEPTH = 9
#: Widths stop doubling at this multiple of the base width (as in pix2pix).
_MAX_WIDTH_FACTOR = 8
#: Decoder levels with dropout, counted outwards from the innermost (pix2pix: 3 at depth 8).
_DROPOUT_LEVELS = 3
#: Standard deviation of the N(0, std) initial weights (pix2pix).
INIT_STD = 0.02
#: Normalisations the networks accept.
NORMS = ("batch", "instance")
#: Generator outputs: class logits (segment) or a tanh image in [-1, 1] (synthesize).
OUTPUTS = ("logits", "tanh")
#: Default PatchGAN depth (70 x 70 receptive field).
DEFAULT_LAYERS = 3

Norm = Literal["batch", "instance"]


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _check_choice(what: str, value: object, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ConfigError(f"{what} must be one of {', '.join(valid)}, got {value!r}")
    return str(value)


def _check_positive_int(what: str, value: object, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{what} must be an integer {span}, got {value!r}")
    return value


def init_pix2pix_weights(module: nn.Module, std: float = INIT_STD) -> None:
    """Initialise as pix2pix does, in place: convolutions N(0, std), biases 0, batch-norm
    scales N(1, std) and shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class Pix2PixGenerator(nn.Module):
    """pix2pix U-Net generator.

    Parameters
    ----------
    num_classes : int
        Classes of the schema; the output channels unless ``out_channels`` is given.
    in_channels : int
        Input channels: 1 for greyscale SEM (segment), the class count for one-hot
        label maps (synthesize).
    base_filters : int
        Width of the outermost level (pix2pix 64, the study 32).
    depth : int
        Stride-2 levels, 2..9; input sides must be multiples of ``2**depth`` (default 8:
        multiples of 256, e.g. the study's 768 px).
    norm : {"batch", "instance"}
        Normalisation inside the network (default batch, as pix2pix).
    dropout : float
        Dropout probability in the decoder levels just outside the innermost one (up to
        3 of them), 0 <= p < 1; default 0.5 (pix2pix). Active in training only.
    out_channels : int, optional
        Output channels; default ``num_classes`` (1 for a synthesize generator).
    output : {"logits", "tanh"}
        ``logits``: raw class scores (segment); ``tanh``: an image in [-1, 1]
        (synthesize).

    Notes
    -----
    ``forward(x)``: ``(N, in_channels, H, W)`` float -> ``(N, out_channels, H, W)``.
    The innermost level is ``H / 2**depth`` pixels; it has no normalisation, so the
    smallest input (``2**depth``, a 1 x 1 innermost level) also works with instance norm.

    Examples
    --------
    >>> net = Pix2PixGenerator(4, base_filters=8, depth=3)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 4, 32, 32])
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        *,
        base_filters: int = DEFAULT_BASE_FILTERS,
        depth: int = DEFAULT_DEPTH,
        norm: Norm = "batch",
        dropout: float = 0.5,
        out_channels: int | None = None,
        output: Literal["logits", "tanh"] = "logits",
    ):
        super().__init__()
        _check_positive_int("pix2pix base_filters", base_filters)
        _check_positive_int("pix2pix depth", depth, 2, MAX_DEPTH)
        _check_choice("pix2pix norm", norm, NORMS)
        _check_choice("pix2pix output", output, OUTPUTS)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"pix2pix dropout must be in [0, 1), got {dropout!r}")
        out = num_classes if out_channels is None else _check_positive_int("pix2pix out_channels", out_channels)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_channels = out
        self.output = output
        self.input_divisor = 2**depth
        widths = [base_filters * min(2**k, _MAX_WIDTH_FACTOR) for k in range(depth)]
        bias = norm == "instance"  # batch norm has its own shift

        down: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=bias)]
        for k in range(1, depth):
            layers = [nn.LeakyReLU(0.2), nn.Conv2d(widths[k - 1], widths[k], 4, 2, 1, bias=bias or k == depth - 1)]
            if k < depth - 1:
                layers.append(_norm_layer(norm, widths[k]))
            down.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(down)

        up: list[nn.Module] = []  # up[k] brings level k + 1 to level k (innermost first in forward)
        for k in range(depth - 1):
            # level k + 1's output, concatenated with its skip unless it is the innermost
            in_ch = widths[k + 1] * (1 if k + 1 == depth - 1 else 2)
            layers = [nn.ReLU(), nn.ConvTranspose2d(in_ch, widths[k], 4, 2, 1, bias=bias), _norm_layer(norm, widths[k])]
            if dropout > 0 and depth - 2 - _DROPOUT_LEVELS <= k < depth - 2:  # not the innermost level's
                layers.append(nn.Dropout(float(dropout)))
            up.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(up)
        head: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out, 4, 2, 1)]
        if output == "tanh":
            head.append(nn.Tanh())
        self.head = nn.Sequential(*head)
        init_pix2pix_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if checks_enabled():
            check_input(
                tuple(x.shape), in_channels=self.in_channels, divisor=self.input_divisor,
                min_size=self.input_divisor, model="pix2pix",
            )
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()  # the innermost level
        for block in reversed(self.decoder):
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.head(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator conditioned on the generator's input.

    Parameters
    ----------
    in_channels : int
        Channels of the condition plus channels of the (real or generated) output:
        ``1 + C`` for segment (SEM, class probabilities), ``C + 1`` for synthesize.
    base_filters : int
        Width of the first convolution (pix2pix 64); doubled per layer up to 8 x.
    layers : int
        Stride-2 convolutions (default 3: a 70 x 70 receptive field, see
        :func:`receptive_field`).
    norm : {"batch", "instance"}
        Normalisation after every convolution but the first and the last.

    Notes
    -----
    ``forward(x)``: ``(N, in_channels, H, W)`` -> ``(N, 1, H / 2**layers - 2, W / 2**layers - 2)``
    real/fake logits, one per patch. ``H`` and ``W`` must be at least ``2**(layers + 2)``
    (32 px for 3 layers).
    """

    def __init__(
        self, in_channels: int, *, base_filters: int = 64, layers: int = DEFAULT_LAYERS, norm: Norm = "batch"
    ):
        super().__init__()
        _check_positive_int("discriminator base_filters", base_filters)
        _check_positive_int("discriminator layers", layers, 1, 6)
        _check_choice("discriminator norm", norm, NORMS)
        self.in_channels = in_channels
        self.layers = layers
        bias = norm == "instance"
        width = base_filters
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for n in range(1, layers + 1):
            prev, width = width, base_filters * min(2**n, _MAX_WIDTH_FACTOR)
            stride = 2 if n < layers else 1
            blocks += [nn.Conv2d(prev, width, 4, stride, 1, bias=bias), _norm_layer(norm, width), nn.LeakyReLU(0.2)]
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        init_pix2pix_weights(self)

    @property
    def min_input_size(self) -> int:
        """Smallest input side giving at least one patch score."""
        return 2 ** (self.layers + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def receptive_field(net: nn.Module) -> int:
    """Side in input pixels that one output value of a chain of convolutions sees.

    Parameters
    ----------
    net : nn.Module
        A network whose convolutions (:class:`torch.nn.Conv2d`) are applied one after
        the other in the order ``net.modules()`` lists them (as in
        :class:`PatchDiscriminator`).

    Returns
    -------
    int
        ``r`` from ``r = 1; r = (r - 1) * stride + dilation * (kernel - 1) + 1`` over the
        convolutions from the last to the first: 70 for the default PatchGAN.

    Examples
    --------
    >>> receptive_field(PatchDiscriminator(5))
    70
    """
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    r = 1
    for conv in reversed(convs):
        r = (r - 1) * conv.stride[0] + conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
    return r


def one_hot_labels(labels: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Class-id maps as the input of a map -> SEM generator.

    Parameters
    ----------
    labels : (N, H, W) integer tensor
        Class ids ``0..num_classes - 1``; ``ignore_index`` (or any other value) marks
        pixels outside the section / without a label.
    num_classes : int
    ignore_index : int, optional
        Documents the unlabelled value; every value outside ``0..num_classes - 1`` gets
        an all-zero vector anyway.

    Returns
    -------
    (N, num_classes, H, W) float32 tensor
        1 at the pixel's class, 0 elsewhere; all zeros at unlabelled pixels.
    """
    ids = torch.arange(num_classes, device=labels.device).reshape(1, num_classes, 1, 1)
    return (labels.unsqueeze(1).long() == ids).float()


def tanh_to_grey(image: torch.Tensor) -> torch.Tensor:
    """A synthesize generator's output in [-1, 1] -> uint8 grey ``round((t + 1) * 127.5)``.

    The result is on the normalised 8-bit scale ``prepare`` stores in tiles (same shape).
    """
    return torch.round((image.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
