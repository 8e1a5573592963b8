"""Architecture registry: name -> how to build the network and which options it takes.

Library architectures (segmentation_models_pytorch) take an encoder; the project's
``resunet``, ``plain-unet`` and ``pix2pix`` do not. Every network built here has an
``encoder`` attribute (the part that ``freeze_encoder`` freezes and that encoder
weights load into) and returns logits ``(N, num_classes, H, W)``, except a ``pix2pix``
generator built with ``out_channels`` (its ``output_channels`` attribute says how many).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import segmentation_models_pytorch as smp
from torch import nn

from mineralseg.errors import ConfigError
from mineralseg.lookup import closest, resolve
from mineralseg.models.pix2pix import Pix2PixGenerator
from mineralseg.models.plain_unet import PlainUNet
from mineralseg.models.resunet import ResUNet

#: smp constructor arguments the factory sets itself (a user value would break the
#: uniform "logits (N, C, H, W)" contract or bypass weight handling).
_RESERVED_SMP_ARGS = frozenset(
    {"self", "encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params", "kwargs"}
)


@dataclass(frozen=True)
class Architecture:
    """One buildable architecture.

    Attributes
    ----------
    name : str
        Canonical (lower-case) name.
    build : callable
        ``build(encoder_library_name | None, num_classes, in_channels, **options) -> nn.Module``.
    takes_encoder : bool
        Whether an encoder name is required (library architectures) or refused.
    options : tuple of str
        Keyword options accepted by ``build`` (``decoder_channels``, ``depth`` ...).
    summary : str
        One line for listings.
    """

    name: str
    build: Callable[..., nn.Module]
    takes_encoder: bool
    options: tuple[str, ...]
    summary: str

    def check_options(self, options: dict) -> None:
        """Raise :class:`ConfigError` for an option this architecture does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            guess = closest(unknown[0], self.options)
            did_you_mean = f" (did you mean '{guess}'?)" if guess else ""
            valid = ", ".join(self.options) or "none"
            raise ConfigError(
                f"{self.name} does not take option(s) {', '.join(unknown)}{did_you_mean}; valid options: {valid}"
            )


def _smp_architecture(name: str, cls: type, summary: str) -> Architecture:
    options = tuple(p for p in inspect.signature(cls.__init__).parameters if p not in _RESERVED_SMP_ARGS)

    def build(encoder: str, num_classes: int, in_channels: int, **kw) -> nn.Module:
        return cls(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes, **kw)

    return Architecture(name, build, True, options, summary)


def _project_architecture(name: str, cls: type, summary: str) -> Architecture:
    options = tuple(
        p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
    )

    def build(encoder: None, num_classes: int, in_channels: int, **kw) -> nn.Module:
        return cls(num_classes, in_channels, **kw)

    return Architecture(name, build, False, options, summary)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        _smp_architecture("unet", smp.Unet, "U-Net decoder on a pretrained-able encoder (smp)"),
        _smp_architecture("linknet", smp.Linknet, "LinkNet: additive skips, light decoder (smp)"),
        _smp_architecture("fpn", smp.FPN, "Feature Pyramid Network (smp)"),
        _smp_architecture("deeplabv3plus", smp.DeepLabV3Plus, "DeepLabV3+: dilated encoder and ASPP (smp)"),
        _project_architecture("resunet", ResUNet, "the study's residual U-Net, 16-32-64-128-256 filters"),
        _project_architecture("plain-unet", PlainUNet, "the study's 'custom model': plain U-Net"),
        _project_architecture("pix2pix", Pix2PixGenerator, "pix2pix U-Net generator, trained with a gan: section"),
    )
}

_ALIASES = {
    "deeplabv3+": "deeplabv3plus",
    "deeplab-v3-plus": "deeplabv3plus",
    "res-unet": "resunet",
    "res_unet": "resunet",
    "plain_unet": "plain-unet",
    "plainunet": "plain-unet",
    "custom": "plain-unet",
    "custom-model": "plain-unet",
    "pix2pix-unet": "pix2pix",
}


def architecture_names() -> list[str]:
    """Canonical architecture names."""
    return list(ARCHITECTURES)


def resolve_architecture(name: object) -> Architecture:
    """Look up an architecture by name (case-insensitive, aliases accepted).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the valid names and the closest match.
    """
    return ARCHITECTURES[resolve(name, ARCHITECTURES, _ALIASES, kind="architecture")]
