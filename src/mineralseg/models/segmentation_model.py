"""The model object every builder returns: a network plus what it is.

:class:`SegmentationModel` wraps the network (``.net``), exposes its encoder
(``.encoder``), records how it was built (architecture, encoder, classes, input
channels, options) so a checkpoint can rebuild it, checks input shapes with errors
that say what to pad to, and implements encoder freezing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mineralseg.models._checks import check_input, checks_enabled


class SegmentationModel(nn.Module):
    """A segmentation network returning logits ``(N, num_classes, H, W)``.

    Build it with :func:`mineralseg.models.build_model`; the constructor only wraps.

    Parameters
    ----------
    net : nn.Module
        The network; must have an ``encoder`` attribute.
    arch : str
        Canonical architecture name.
    encoder : str or None
        Canonical encoder name (``None`` for ``resunet`` and ``plain-unet``).
    num_classes, in_channels : int
        Output and input channels.
    input_divisor, min_input_size : int
        Valid input sides: multiples of ``input_divisor`` that are at least
        ``min_input_size``.
    options : dict
        Architecture options passed to the builder (``decoder_channels`` ...).
    encoder_weights : str or None
        Where the encoder weights came from (``None``, ``"imagenet"``, a path), for
        the record.
    unused_parameters : tuple of str
        Names (relative to ``net``) of parameters no output depends on (smp's
        EfficientNet encoders keep their classifier's head conv); they are kept, so
        weight files still fit, but never trained (``requires_grad=False``).

    Notes
    -----
    While the encoder is frozen (:func:`set_encoder_frozen`), its parameters have
    ``requires_grad=False`` and the whole encoder stays in eval mode when
    ``model.train()`` is called: batch-norm running statistics do not move and
    dropout / drop-path inside the encoder is off, so it behaves exactly as at
    inference. Build optimisers from ``p for p in model.parameters() if p.requires_grad``.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        encoder: str | None,
        num_classes: int,
        in_channels: int,
        input_divisor: int,
        min_input_size: int,
        options: dict[str, Any] | None = None,
        encoder_weights: str | None = None,
        unused_parameters: tuple[str, ...] = (),
    ):
        super().__init__()
        if not isinstance(getattr(net, "encoder", None), nn.Module):
            raise TypeError(f"{type(net).__name__} has no 'encoder' submodule")
        self.net = net
        self.arch = arch
        self.encoder_name = encoder
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_divisor = input_divisor
        self.min_input_size = min_input_size
        self.options = dict(options or {})
        self.encoder_weights = encoder_weights
        self.encoder_frozen = False
        # parameters no output depends on stay out of training (and out of DDP's
        # gradient bookkeeping), whatever freezing does
        self.unused_parameters = tuple(f"net.{name}" for name in unused_parameters)
        params = dict(self.named_parameters())
        for name in self.unused_parameters:
            params[name].requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        """The encoder part of :attr:`net` (not registered twice in the state dict)."""
        return self.net.encoder

    @property
    def name(self) -> str:
        """``"arch/encoder"`` or ``"arch"``, for messages and tables."""
        return f"{self.arch}/{self.encoder_name}" if self.encoder_name else self.arch

    @property
    def build_config(self) -> dict[str, Any]:
        """Keyword arguments that make :func:`~mineralseg.models.build_model` rebuild this
        architecture (with random weights: restore them from the state dict)."""
        return {
            "arch": self.arch,
            "encoder": self.encoder_name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "freeze_encoder": self.encoder_frozen,
            **self.options,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` logits.

        Raises
        ------
        DataError
            Wrong channel count, or sides that are not multiples of
            :attr:`input_divisor` or smaller than :attr:`min_input_size`.
        """
        if checks_enabled():
            check_input(
                tuple(x.shape), in_channels=self.in_channels, divisor=self.input_divisor,
                min_size=self.min_input_size, model=self.name,
            )
        return self.net(x)

    def train(self, mode: bool = True) -> SegmentationModel:
        """Set training mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, encoder={self.encoder_name!r}, num_classes={self.num_classes}, "
            f"in_channels={self.in_channels}, encoder_frozen={self.encoder_frozen}"
        )


def set_encoder_frozen(model: SegmentationModel, frozen: bool = True) -> None:
    """Freeze or unfreeze the encoder of ``model`` in place.

    Frozen: encoder parameters get ``requires_grad=False`` and the encoder is put
    (and kept, across ``model.train()``) in eval mode, so batch-norm statistics stay
    as loaded. Unfrozen: parameters trainable again and the encoder follows the
    model's mode.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`SegmentationModel`.
    """
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"set_encoder_frozen needs a SegmentationModel, got {type(model).__name__}")
    model.encoder_frozen = bool(frozen)
    unused = {id(p) for name, p in model.named_parameters() if name in model.unused_parameters}
    for param in model.encoder.parameters():
        param.requires_grad_(not frozen and id(param) not in unused)
    model.train(model.training)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def model_info(model: nn.Module) -> dict[str, Any]:
    """Parameter counts and identity of a model, as plain JSON-able values.

    Returns
    -------
    dict
        ``params_total``, ``params_trainable``, ``params_encoder`` (0 when the model
        has no encoder), ``params_unused`` (kept but never trained), and for a
        :class:`SegmentationModel` also ``arch``,
        ``encoder``, ``num_classes``, ``in_channels``, ``encoder_weights``,
        ``encoder_frozen``, ``input_divisor``, ``min_input_size``.
    """
    encoder = getattr(model, "encoder", None)
    info: dict[str, Any] = {
        "params_total": _count(model.parameters()),
        "params_trainable": _count(p for p in model.parameters() if p.requires_grad),
        "params_encoder": _count(encoder.parameters()) if isinstance(encoder, nn.Module) else 0,
    }
    unused = set(getattr(model, "unused_parameters", ()))
    info["params_unused"] = _count(p for name, p in model.named_parameters() if name in unused)
    if isinstance(model, SegmentationModel):
        info.update(
            arch=model.arch,
            encoder=model.encoder_name,
            num_classes=model.num_classes,
            in_channels=model.in_channels,
            encoder_weights=model.encoder_weights,
            encoder_frozen=model.encoder_frozen,
            input_divisor=model.input_divisor,
            min_input_size=model.min_input_size,
        )
    return info
