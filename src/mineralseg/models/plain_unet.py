"""Plain U-Net (Ronneberger et al. 2015): the study's "custom model".

Each level is a double 3 x 3 convolution (conv -> BN -> ReLU, twice); the encoder
halves the size with 2 x 2 max pooling and doubles the width, the decoder upsamples
with 2 x 2 transposed convolutions, concatenates the skip and applies a double
convolution. Widths are ``base_width * 2**k`` for ``k = 0..depth`` (16-32-64-128-256
by default), the deepest level being the bottleneck.

References
----------
O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for biomedical
image segmentation", MICCAI 2015.
"""

from __future__ import annotations

import torch
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.models._checks import check_input, checks_enabled

#: Default width of the first level: the study's small "custom model" (16-32-64-128-256).
DEFAULT_BASE_WIDTH = 16
#: Default number of poolings (the classic U-Net's four).
DEFAULT_DEPTH = 4
#: Deepest supported: at 7 poolings the smallest valid input is already 128 px.
MAX_DEPTH = 7


class DoubleConv(nn.Sequential):
    """(conv 3 x 3 -> [BN] -> ReLU) x 2, with optional dropout between the two."""

    def __init__(self, in_ch: int, out_ch: int, *, batch_norm: bool = True, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(((in_ch, out_ch), (out_ch, out_ch))):
            layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU(inplace=True))
            if i == 0 and dropout > 0:
                layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class PlainUNetEncoder(nn.Module):
    """Contracting path: returns ``[e_0, ..., e_depth]``, ``e_k`` of ``(N, widths[k], H / 2**k, W / 2**k)``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], *, batch_norm: bool, dropout: float):
        super().__init__()
        self.stages = nn.ModuleList([DoubleConv(in_channels, widths[0], batch_norm=batch_norm, dropout=dropout)])
        for prev, cur in zip(widths[:-1], widths[1:]):
            self.stages.append(
                nn.Sequential(nn.MaxPool2d(2), DoubleConv(prev, cur, batch_norm=batch_norm, dropout=dropout))
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _UpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, batch_norm: bool, dropout: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv = DoubleConv(2 * out_ch, out_ch, batch_norm=batch_norm, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class PlainUNet(nn.Module):
    """Plain U-Net returning per-class logits.

    Parameters
    ----------
    num_classes : int
        Output channels (logits).
    in_channels : int
        Input channels (1 for greyscale SEM).
    base_width : int
        Channels of the first level, doubled at each pooling; default 16.
    depth : int
        Number of poolings, 1..7; input sides must be multiples of ``2**depth``
        (16 by default).
    batch_norm : bool
        Batch normalisation after each convolution (default True).
    dropout : float
        Channel dropout probability inside each double convolution, 0 <= p < 1
        (default 0).

    Notes
    -----
    ``forward(x)``: ``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` logits.

    Examples
    --------
    >>> net = PlainUNet(num_classes=5, base_width=8, depth=3)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 5, 32, 32])
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        *,
        base_width: int = DEFAULT_BASE_WIDTH,
        depth: int = DEFAULT_DEPTH,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if isinstance(base_width, bool) or not isinstance(base_width, int) or base_width < 1:
            raise ConfigError(f"plain-unet base_width must be a positive integer, got {base_width!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise ConfigError(f"plain-unet depth must be an integer from 1 to {MAX_DEPTH}, got {depth!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"plain-unet dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_divisor = 2**depth
        widths = tuple(base_width * 2**k for k in range(depth + 1))
        opts = dict(batch_norm=bool(batch_norm), dropout=float(dropout))
        self.encoder = PlainUNetEncoder(in_channels, widths, **opts)
        self.decoder = nn.ModuleList(
            _UpBlock(deep, shallow, **opts) for deep, shallow in zip(reversed(widths[1:]), reversed(widths[:-1]))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if checks_enabled():
            check_input(
                tuple(x.shape), in_channels=self.in_channels, divisor=self.input_divisor,
                min_size=self.input_divisor, model="plain-unet",
            )
        features = self.encoder(x)
        x = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            x = block(x, skip)
        return self.head(x)
