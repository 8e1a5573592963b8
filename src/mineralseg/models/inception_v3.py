"""Inception-v3 encoder with "same" padding, so its feature maps align with U-Net skips.

The timm/torchvision Inception-v3 uses unpadded ("valid") 3 x 3 convolutions and
poolings: a 64 x 64 input shrinks to nothing, and the stage outputs are not exactly
H/2, H/4, ... H/32, so LinkNet (which adds skip and decoder maps) cannot use it at
any size. The original study used the Keras ``segmentation_models`` backbone, which
rebuilt Inception-v3 with ``padding="same"`` everywhere for this reason. This module
does the same on top of timm's ``InceptionV3``: parameter names and shapes are
unchanged, so timm/torchvision ImageNet state dicts load as they are (classifier
dropped), and any input whose sides are multiples of 32 gives stage outputs of
exactly ``H / 2**k``.

The class follows segmentation_models_pytorch's encoder interface and is registered
in its encoder table (see :mod:`mineralseg.models.encoders`), so every smp decoder
can use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders._base import EncoderMixin
from timm.models.inception_v3 import InceptionV3
from torch import nn

#: Channels of the input and of the five stage outputs (strides 2, 4, 8, 16, 32);
#: the stage ends are timm's feature taps (Conv2d_2b_3x3, Conv2d_4a_3x3, Mixed_5d,
#: Mixed_6e, Mixed_7c).
INCEPTION_V3_OUT_CHANNELS = (3, 64, 192, 288, 768, 2048)


def _same_pad_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 stride-2 max pooling that halves even sizes exactly."""
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class InceptionV3Encoder(InceptionV3, EncoderMixin):
    """Inception-v3 feature extractor returning ``depth + 1`` maps (input first).

    Parameters
    ----------
    out_channels : sequence of int
        Channels of the returned maps; :data:`INCEPTION_V3_OUT_CHANNELS`.
    depth : int
        Number of stages, 1..5; the deepest map has stride ``2**depth``.
    output_stride : int
        Must be 32: the encoder downsamples with poolings and cannot be dilated.

    Notes
    -----
    ``forward(x)`` takes ``(N, C, H, W)`` with ``H`` and ``W`` multiples of
    ``2**depth`` and returns ``[x, f1, ..., f_depth]`` with ``f_k`` of shape
    ``(N, out_channels[k], H / 2**k, W / 2**k)``.
    """

    def __init__(self, out_channels, depth: int = 5, output_stride: int = 32, **kwargs):
        if not 1 <= depth <= 5:
            raise ValueError(f"InceptionV3Encoder depth should be in range [1, 5], got {depth}")
        super().__init__(num_classes=0, aux_logits=False, **kwargs)
        self._depth = depth
        self._in_channels = 3
        self._out_channels = list(out_channels)
        self._output_stride = output_stride
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                module.padding = (1, 1)
            elif isinstance(module, nn.MaxPool2d):
                module.padding = 1
        # classification head: not part of an encoder (no parameters with num_classes=0)
        del self.global_pool, self.head_drop, self.fc

    def make_dilated(self, *args, **kwargs):
        raise ValueError(
            "the inceptionv3 encoder downsamples with poolings and does not support a "
            "dilated (output_stride 8 or 16) mode"
        )

    def _reduction_b(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_6a with a padded pooling branch (timm pools without padding)."""
        block = self.Mixed_6a
        b3 = block.branch3x3(x)
        bd = block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, _same_pad_max_pool(x)], 1)

    def _reduction_d(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_7a with a padded pooling branch."""
        block = self.Mixed_7a
        b3 = block.branch3x3_2(block.branch3x3_1(x))
        b7 = block.branch7x7x3_1(x)
        b7 = block.branch7x7x3_4(block.branch7x7x3_3(block.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, _same_pad_max_pool(x)], 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        if self._depth >= 1:
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            features.append(x)
        if self._depth >= 2:
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.Pool1(x)))
            features.append(x)
        if self._depth >= 3:
            x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.Pool2(x))))
            features.append(x)
        if self._depth >= 4:
            x = self._reduction_b(x)
            x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
            features.append(x)
        if self._depth >= 5:
            x = self._reduction_d(x)
            x = self.Mixed_7c(self.Mixed_7b(x))
            features.append(x)
        return features
