"""ResUNet: the deep residual U-Net of Zhang, Liu & Wang (2018), as the study used it.

Pre-activation residual units (BN -> ReLU -> conv, twice, plus a 1 x 1 projection
shortcut with BN) replace U-Net's plain double convolutions. The study's version has
a stem and four downsampling residual units with 16-32-64-128-256 filters, a bridge
of two pre-activation convolutions, and a decoder that upsamples (nearest, x2),
concatenates the skip and applies a residual unit, with 256-128-64-32 filters::

    input -> stem(16) --------------------------------------------> cat -> res(32) -> 1x1 -> logits
               \\-> res(32, /2) ----------------------------> cat -> res(64) -^
                     \\-> res(64, /4) ---------------> cat -> res(128) -^
                           \\-> res(128, /8) ---> cat -> res(256) -^
                                 \\-> res(256, /16) -> bridge -^

References
----------
Z. Zhang, Q. Liu, Y. Wang, "Road extraction by deep residual U-Net",
IEEE Geoscience and Remote Sensing Letters 15(5), 749-753, 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.models._checks import check_input, checks_enabled

#: The study's filters: stem, then one entry per downsampling residual unit.
STUDY_FILTERS = (16, 32, 64, 128, 256)


class _PreActConv(nn.Sequential):
    """BN -> ReLU -> 3 x 3 conv (the paper's pre-activation ordering)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1),
        )


class _Shortcut(nn.Sequential):
    """1 x 1 projection (with the residual path's stride) followed by BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(nn.Conv2d(in_ch, out_ch, 1, stride=stride), nn.BatchNorm2d(out_ch))


class ResidualUnit(nn.Module):
    """Two pre-activation convolutions plus a projection shortcut.

    ``(N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(_PreActConv(in_ch, out_ch, stride), _PreActConv(out_ch, out_ch))
        self.shortcut = _Shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class ResUNetStem(nn.Module):
    """First unit: plain conv then a pre-activation conv (the input is not normalised by BN-ReLU first)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), _PreActConv(out_ch, out_ch))
        self.shortcut = _Shortcut(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class ResUNetEncoder(nn.Module):
    """Stem plus downsampling residual units; returns the map of every level.

    ``forward(x)`` returns ``[e_0, ..., e_L]`` with ``e_k`` of shape
    ``(N, filters[k], H / 2**k, W / 2**k)``, ``L = len(filters) - 1``.
    """

    def __init__(self, in_channels: int, filters: Sequence[int]):
        super().__init__()
        self.stages = nn.ModuleList([ResUNetStem(in_channels, filters[0])])
        for prev, cur in zip(filters[:-1], filters[1:]):
            self.stages.append(ResidualUnit(prev, cur, stride=2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class ResUNet(nn.Module):
    """Deep residual U-Net returning per-class logits.

    Parameters
    ----------
    num_classes : int
        Output channels (logits; apply softmax over dim 1 for probabilities).
    in_channels : int
        Input channels (1 for greyscale SEM).
    filters : sequence of int
        Stem width then one width per downsampling unit; default
        :data:`STUDY_FILTERS` ``(16, 32, 64, 128, 256)``. With ``L + 1`` entries the
        input sides must be multiples of ``2**L`` (16 by default).

    Notes
    -----
    ``forward(x)``: ``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)``
    logits. Raises :class:`~mineralseg.errors.DataError` for sides that are not
    multiples of :attr:`input_divisor`.

    Examples
    --------
    >>> net = ResUNet(num_classes=4)
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 4, 64, 64])
    """

    def __init__(self, num_classes: int, in_channels: int = 1, *, filters: Sequence[int] = STUDY_FILTERS):
        super().__init__()
        filters = tuple(filters)
        if len(filters) < 2 or any(not isinstance(f, int) or isinstance(f, bool) or f < 1 for f in filters):
            raise ConfigError(f"resunet filters must be two or more positive integers, got {filters!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_divisor = 2 ** (len(filters) - 1)
        self.encoder = ResUNetEncoder(in_channels, filters)
        deepest = filters[-1]
        self.bridge = nn.Sequential(_PreActConv(deepest, deepest), _PreActConv(deepest, deepest))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoder = nn.ModuleList()
        channels = deepest
        # decoder level j joins the skip of encoder level L-1-j and has the width of level L-j
        for skip_ch, out_ch in zip(reversed(filters[:-1]), reversed(filters[1:])):
            self.decoder.append(ResidualUnit(channels + skip_ch, out_ch))
            channels = out_ch
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if checks_enabled():
            check_input(
                tuple(x.shape), in_channels=self.in_channels, divisor=self.input_divisor,
                min_size=self.input_divisor, model="resunet",
            )
        features = self.encoder(x)
        x = self.bridge(features[-1])
        for unit, skip in zip(self.decoder, reversed(features[:-1])):
            x = unit(torch.cat([self.upsample(x), skip], dim=1))
        return self.head(x)
