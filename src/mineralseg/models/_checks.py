"""Input-shape checks shared by the models: errors that say what to pad to."""

from __future__ import annotations

import torch

from mineralseg.errors import DataError


def padded_size(size: int, divisor: int, min_size: int) -> int:
    """Smallest valid side length >= ``size``: a multiple of ``divisor``, at least ``min_size``."""
    return max(-(-size // divisor) * divisor, min_size)


def checks_enabled() -> bool:
    """False while tracing, scripting, compiling or exporting (shapes are symbolic there)."""
    return not (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


def check_input(shape: tuple[int, ...], *, in_channels: int, divisor: int, min_size: int, model: str) -> None:
    """Raise :class:`DataError` unless ``shape`` is ``(N, in_channels, H, W)`` with valid sides.

    Parameters
    ----------
    shape : tuple of int
        Shape of the input batch.
    in_channels : int
        Channels the model expects.
    divisor : int
        ``H`` and ``W`` must be multiples of it.
    min_size : int
        ``H`` and ``W`` must be at least this.
    model : str
        Model name for the message (``"unet/resnet18"``).

    Raises
    ------
    DataError
        Wrong rank or channels, or sides that are too small or not multiples of
        ``divisor``; the message gives the padded shape to use.
    """
    if len(shape) != 4:
        raise DataError(f"{model}: expected an input batch of shape (N, {in_channels}, H, W), got {tuple(shape)}")
    if shape[1] != in_channels:
        raise DataError(f"{model}: expected {in_channels} input channel(s), got input of shape {tuple(shape)}")
    h, w = int(shape[2]), int(shape[3])
    if h % divisor or w % divisor or h < min_size or w < min_size:
        ph, pw = padded_size(h, divisor, min_size), padded_size(w, divisor, min_size)
        raise DataError(
            f"{model}: input height and width must be multiples of {divisor} and at least "
            f"{min_size}, got {h} x {w} (shape {tuple(shape)}); pad or crop to {ph} x {pw}"
        )
