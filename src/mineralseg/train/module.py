"""The LightningModule for segmentation: model + loss + optimisation + metrics.

Checkpoints describe themselves: ``hyper_parameters`` hold the resolved training
config and a ``meta`` dict (class names and colours, ignore_index, input
normalisation, sizes, architecture, dataset hash), and ``on_save_checkpoint`` adds
the same ``meta`` under ``checkpoint["mineralseg"]`` with the package versions, so
:func:`mineralseg.evaluate.checkpoint.load_checkpoint_model` rebuilds the model from
the file alone.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mineralseg.evaluate.metrics import SegmentationMetrics
from mineralseg.models import build_model
from mineralseg.train.config import TrainConfig
from mineralseg.model_card import CARD_VERSION, META_KEY
from mineralseg.train.losses import build_loss

__all__ = ["SegmentationModule", "add_model_card", "log_validation_scores"]
# Steps per cosine period when the epoch length is unknown (iterable loaders).
_FALLBACK_T0_STEPS = 1000


class SegmentationModule(L.LightningModule):
    """Segmentation model trained with the study's recipe.

    Parameters
    ----------
    config : dict
        Resolved :class:`~mineralseg.train.config.TrainConfig` as plain data.
    meta : dict
        Self-description stored in checkpoints; needs at least ``class_names``,
        ``ignore_index``, ``in_channels`` and ``class_weights`` (list or None).
    pretrained : bool
        Load ``model.encoder_weights`` when building the model (True for a new run).
        False (the default, also used by ``load_from_checkpoint``) when the weights come
        from a checkpoint anyway: no download, no weights file needed.

    Notes
    -----
    Logged metrics: ``train_loss`` (step and epoch), ``lr`` (per step), ``val_loss``, ``val_miou``
    (one confusion matrix over the whole validation split, summed across processes),
    ``val_iou_<class>``, ``val_mean_f1``, ``val_pixel_accuracy`` and ``val_pixels``
    (labelled pixels counted in the validation matrix).
    """

    def __init__(self, config: dict[str, Any], meta: dict[str, Any], *, pretrained: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "meta": meta})
        self.cfg = TrainConfig.model_validate(config)
        self.meta = meta
        m = self.cfg.model
        self.model = build_model(
            m.arch,
            m.encoder,
            num_classes=len(meta["class_names"]),
            in_channels=int(meta.get("in_channels", 1)),
            encoder_weights=m.encoder_weights if pretrained else None,
            freeze_encoder=m.freeze_encoder,
            **m.options,
        )
        self.channels_last = bool(self.cfg.trainer.channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Exponential moving average of the weights (and BN statistics): validated and
        # evaluated instead of the raw weights when on. Saved as "ema.module.*".
        self.ema: AveragedModel | None = None
        if self.cfg.optim.ema_decay is not None:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.optim.ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)
        self.loss_fn = build_loss(
            self.cfg.effective_loss,
            class_weights=meta.get("class_weights"),
            focal_weight=self.cfg.loss.focal_weight,
            gamma=self.cfg.loss.gamma,
            ignore_index=int(meta["ignore_index"]),
        )
        self.val_metrics = SegmentationMetrics(
            len(meta["class_names"]), class_names=meta["class_names"], ignore_index=int(meta["ignore_index"])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) normalised images -> (N, C, H, W) logits."""
        return self._run(self.model, x)

    def _run(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return net(x)

    def eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the weights that are validated: the moving average when on."""
        return self._run(self.model if self.ema is None else self.ema.module, x)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss of a batch (a 0-d tensor), computed in float32 (also under
        bf16/fp16 autocast: softmax, log and the Dice sums lose too much in half precision)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss_fn(logits.float(), target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["mask"]
        loss = self.compute_loss(self(x), y)
        n = x.shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["image"], batch["mask"]
        logits = self.eval_forward(x)
        loss = self.compute_loss(logits, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.val_metrics.update(logits.detach(), y)

    def on_validation_epoch_end(self) -> None:
        log_validation_scores(self, self.val_metrics, self.meta["class_names"])

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        try:
            _ = trainer.estimated_stepping_batches  # sets up the train loader
            n = trainer.num_training_batches
        except Exception:  # no trainer attached / unknown length
            return _FALLBACK_T0_STEPS
        if not n or math.isinf(n):
            return _FALLBACK_T0_STEPS
        return max(1, int(n) // max(1, trainer.accumulate_grad_batches))

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        t0 = o.t0_steps or self._steps_per_epoch()
        scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=o.t_mult, eta_min=o.eta_min)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        add_model_card(self, checkpoint)


def log_validation_scores(module: L.LightningModule, metrics: SegmentationMetrics, class_names) -> None:
    """Log one validation epoch's scores from ``metrics`` and reset it.

    Logs ``val_miou`` (progress bar), ``val_mean_f1``, ``val_pixel_accuracy``,
    ``val_pixels`` and ``val_iou_<class>``: what checkpoint selection, the model card
    and the experiment tables read. Shared by every module that segments.
    """
    scores = metrics.compute()  # synced across processes by torchmetrics
    with metrics.sync_context():  # compute() restores the local state after it
        pixels = metrics.confmat.sum().double()
    metrics.reset()
    module.log("val_miou", scores["miou"].float(), prog_bar=True)
    logged = {"val_mean_f1": scores["mean_f1"], "val_pixel_accuracy": scores["pixel_accuracy"],
              "val_pixels": pixels}
    for name in class_names:
        logged[f"val_iou_{name}"] = scores[f"iou_{name}"]
    module.log_dict({k: v.float() for k, v in logged.items()})


def add_model_card(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Store the model card (``module.meta`` plus the validation scores that led to this
    checkpoint), the resolved config and the package versions under ``checkpoint["mineralseg"]``."""
    from mineralseg.versions import package_versions

    meta = dict(module.meta)
    scores = module.trainer.callback_metrics if module._trainer is not None else {}
    ious = {n: float(scores[f"val_iou_{n}"]) for n in meta["class_names"] if f"val_iou_{n}" in scores}
    if ious:  # the scores of the validation that led to this checkpoint
        meta["validation_iou"] = ious
        meta["validation_miou"] = float(scores["val_miou"]) if "val_miou" in scores else None
    checkpoint[META_KEY] = {
        "version": CARD_VERSION,
        "meta": meta,
        "config": module.hparams["config"],
        "versions": package_versions(),
    }
