"""Training callbacks: stop cleanly when the loss stops being finite."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mineralseg.errors import UserError

__all__ = ["NaNGuard", "NonFiniteLossError", "last_checkpoint"]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class NaNGuard(Callback):
    """Stop training when the loss is not finite, before it reaches the weights.

    The check runs in ``on_before_backward``, so the optimiser never applies the
    gradients of a NaN/inf loss and no checkpoint is written after it: the last
    checkpoint on disk stays the last good one. In distributed training the
    decision is shared (any process with a bad loss stops all of them).

    Raises
    ------
    NonFiniteLossError
        ``loss became NaN at step N; last good checkpoint: PATH`` (a
        :class:`~mineralseg.errors.UserError`).
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        value = "NaN" if bool(torch.isnan(loss.detach()).any()) else "infinite"
        raise NonFiniteLossError(
            f"loss became {value} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"last good checkpoint: {last_checkpoint(trainer) or 'none saved yet'} "
            "(try a lower optim.lr, precision 32, or trainer.gradient_clip_val)"
        )


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The most recently written checkpoint of the trainer's ModelCheckpoint callbacks."""
    paths: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            for p in (cb.last_model_path, cb.best_model_path):
                if p and Path(p).is_file():
                    paths.append(Path(p))
    if not paths:
        return None
    return max(paths, key=lambda p: p.stat().st_mtime_ns)

