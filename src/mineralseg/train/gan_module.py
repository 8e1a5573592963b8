"""The LightningModule for pix2pix: a generator and a PatchGAN discriminator trained
against each other (manual optimisation, two Adam optimisers).

Two modes (``gan.mode`` of :class:`~mineralseg.train.config.TrainConfig`):

``segment``  (SEM -> mineral map)
    ``G(SEM)`` gives class logits; the discriminator sees ``(SEM, softmax(logits))``
    against ``(SEM, one-hot(labels))``. Generator loss: adversarial +
    ``weight`` x (cross-entropy + ``dice`` x soft Dice). Validation logs what
    :class:`~mineralseg.train.module.SegmentationModule` logs (``val_miou`` ...), so
    checkpoint selection, the model card and the experiment tables treat it as any CNN.
``synthesize``  (mineral map -> SEM)
    ``G(one-hot(labels))`` gives an image in [-1, 1] (tanh); the discriminator sees
    ``(one-hot, generated)`` against ``(one-hot, real SEM)``, the real SEM being the
    normalised 8-bit tile mapped to [-1, 1]. Generator loss: adversarial + ``weight`` x
    L1. Validation logs ``val_l1`` (lower is better).

Unlabelled pixels (``ignore_index``) are all-zero one-hot vectors, are masked out of
the generated probabilities the discriminator sees, and do not count in the
cross-entropy. The generator is ``self.model`` (state-dict prefix ``model.``, as for
every CNN), the discriminator ``self.discriminator``.

Lightning counts each optimiser step: ``trainer.global_step`` (and so
``trainer.max_steps`` and ``checkpoint_every_n_steps``) grows by 2 per batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mineralseg.errors import ConfigError
from mineralseg.evaluate.metrics import SegmentationMetrics
from mineralseg.io.atomic import atomic_path
from mineralseg.models import build_model
from mineralseg.models.pix2pix import PatchDiscriminator, one_hot_labels, tanh_to_grey
from mineralseg.train.config import TrainConfig
from mineralseg.train.losses import build_loss
from mineralseg.train.module import add_model_card, log_validation_scores

__all__ = ["GANModule", "generator_spec", "sample_grid"]

#: Optimiser steps Lightning counts per batch (generator + discriminator).
STEPS_PER_BATCH = 2
#: Grey of unlabelled pixels in sample grids.
_UNLABELLED_RGB = (128, 128, 128)
#: White gap between panels of a sample grid, in pixels.
_GAP = 2


def generator_spec(cfg: TrainConfig, num_classes: int) -> tuple[int, dict[str, Any]]:
    """Input channels and ``build_model`` options of the generator of a GAN config.

    ``segment``: 1 input channel (SEM), ``num_classes`` logits. ``synthesize``:
    ``num_classes`` one-hot input channels, one tanh output channel.
    """
    options = dict(cfg.model.options)
    if cfg.gan is not None and cfg.gan.mode == "synthesize":
        return num_classes, {**options, "out_channels": 1, "output": "tanh"}
    return 1, options


class GANModule(L.LightningModule):
    """pix2pix training (see the module docstring).

    Parameters
    ----------
    config : dict
        Resolved :class:`~mineralseg.train.config.TrainConfig` with a ``gan`` section,
        as plain data.
    meta : dict
        The model card as stored in checkpoints (``class_names``, ``class_colors``,
        ``ignore_index``, ``in_channels``, ``model_options``, ``mean``, ``std``,
        ``gan_mode``).
    pretrained : bool
        Unused (pix2pix has no pretrained weights); accepted so that training builds
        every module the same way.

    Notes
    -----
    Logged: ``train_loss`` (= ``train_loss_g``), ``train_loss_g``, ``train_loss_d``,
    ``train_loss_adv``, ``train_loss_pixel``, ``lr``; validation: ``val_loss`` and, in
    segment mode, ``val_miou``, ``val_iou_<class>``, ``val_mean_f1``,
    ``val_pixel_accuracy``, ``val_pixels``; in synthesize mode ``val_l1`` (mean absolute
    error in [-1, 1] units). Sample grids go to ``<run>/samples/step-<batch>.png``.
    """

    def __init__(self, config: dict[str, Any], meta: dict[str, Any], *, pretrained: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "meta": meta})
        self.automatic_optimization = False
        self.cfg = TrainConfig.model_validate(config)
        if self.cfg.gan is None:
            raise ValueError("GANModule needs a config with a gan: section")
        self.gan = self.cfg.gan
        self.meta = meta
        self.num_classes = len(meta["class_names"])
        self.ignore_index = int(meta["ignore_index"])
        self.mean, self.std = float(meta["mean"]), float(meta["std"])
        in_channels, options = generator_spec(self.cfg, self.num_classes)
        self.model = build_model(
            self.cfg.model.arch, None, num_classes=self.num_classes, in_channels=in_channels, **options
        )
        out_channels = int(getattr(self.model.net, "output_channels", self.num_classes))
        d = self.gan.discriminator
        self.discriminator = PatchDiscriminator(
            in_channels + out_channels, base_filters=d.base_filters, layers=d.layers, norm=d.norm
        )
        self.channels_last = bool(self.cfg.trainer.channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        if self.gan.mode == "segment":
            self.ce = build_loss("ce", ignore_index=self.ignore_index)
            self.dice = build_loss("dice", ignore_index=self.ignore_index) if self.gan.dice else None
            self.val_metrics = SegmentationMetrics(
                self.num_classes, class_names=meta["class_names"], ignore_index=self.ignore_index
            )

    def check_input_size(self, input_size: int) -> None:
        """ConfigError when the discriminator cannot score ``input_size`` inputs (the
        generator's sizes are checked like every model's)."""
        smallest = self.discriminator.min_input_size
        if input_size < smallest:
            layers = self.gan.discriminator.layers
            raise ConfigError(
                f"input_size {input_size} is below {smallest}, the smallest input a {layers}-layer PatchGAN "
                f"discriminator scores; use input_size >= {smallest} or fewer gan.discriminator.layers"
            )

    # ------------------------------------------------------------------ pieces
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generator: (N, 1, H, W) SEM -> (N, C, H, W) logits (segment), or
        (N, C, H, W) one-hot maps -> (N, 1, H, W) SEM in [-1, 1] (synthesize)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _condition_and_real(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(generator input, real output the discriminator sees, (N, 1, H, W) labelled mask)."""
        x, y = batch["image"], batch["mask"]
        valid = (y != self.ignore_index).unsqueeze(1)
        onehot = one_hot_labels(y, self.num_classes, self.ignore_index)
        if self.gan.mode == "segment":
            return x, onehot, valid
        return onehot, self.sem_to_tanh(x), valid

    def sem_to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised SEM ``(u8 / 255 - mean) / std`` -> the same grey levels in [-1, 1]."""
        return (x.float() * self.std + self.mean) * 2.0 - 1.0

    def _generated(self, raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of the generator's output: masked class
        probabilities (segment) or the image itself (synthesize)."""
        if self.gan.mode == "segment":
            return torch.softmax(raw.float(), dim=1) * valid
        return raw.float()

    def _adversarial(self, scores: torch.Tensor, real: bool) -> torch.Tensor:
        scores = scores.float()
        target = torch.full_like(scores, 1.0 if real else 0.0)
        if self.gan.adversarial == "lsgan":
            return F.mse_loss(scores, target)
        return F.binary_cross_entropy_with_logits(scores, target)

    def _judge(self, condition: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([condition.float(), output.float()], dim=1)
        if self.channels_last:
            pair = pair.contiguous(memory_format=torch.channels_last)
        return self.discriminator(pair)

    def pixel_loss(self, raw: torch.Tensor, batch: dict[str, torch.Tensor], real: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (+ ``dice`` x Dice) against the labels, or L1 against the real SEM,
        in float32 (also under autocast)."""
        with torch.autocast(device_type=raw.device.type, enabled=False):
            if self.gan.mode == "segment":
                logits, y = raw.float(), batch["mask"]
                loss = self.ce(logits, y)
                if self.dice is not None:
                    loss = loss + self.gan.dice * self.dice(logits, y)
                return loss
            return F.l1_loss(raw.float(), real.float())

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        condition, real, valid = self._condition_and_real(batch)
        raw = self(condition)
        fake = self._generated(raw, valid)
        n = condition.shape[0]

        self.toggle_optimizer(opt_d)
        loss_d = 0.5 * (self._adversarial(self._judge(condition, real), True)
                        + self._adversarial(self._judge(condition, fake.detach()), False))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        loss_adv = self._adversarial(self._judge(condition, fake), True)
        loss_pixel = self.pixel_loss(raw, batch, real)
        loss_g = loss_adv + self.gan.weight * loss_pixel
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.log("train_loss", loss_g.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({"train_loss_g": loss_g.detach(), "train_loss_d": loss_d.detach(),
                       "train_loss_adv": loss_adv.detach(), "train_loss_pixel": loss_pixel.detach()},
                      on_step=True, on_epoch=True, batch_size=n)
        self.log("lr", opt_g.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=n)
        self._maybe_save_samples(batch, raw.detach())

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        g = self.gan
        betas = (g.beta1, g.beta2)
        opt_g = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=g.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=g.lr_d, betas=betas)
        return [opt_g, opt_d]

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        condition, real, _ = self._condition_and_real(batch)
        raw = self(condition)
        n = condition.shape[0]
        loss = self.pixel_loss(raw, batch, real)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        if self.gan.mode == "segment":
            self.val_metrics.update(raw.detach(), batch["mask"])
        else:
            self.log("val_l1", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=n, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.gan.mode == "segment":
            log_validation_scores(self, self.val_metrics, self.meta["class_names"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        add_model_card(self, checkpoint)

    # ------------------------------------------------------------------ samples
    def _maybe_save_samples(self, batch: dict[str, torch.Tensor], raw: torch.Tensor) -> None:
        every = self.gan.sample_every
        if every is None or self._trainer is None or not self.trainer.is_global_zero:
            return
        step = self.trainer.global_step // STEPS_PER_BATCH - 1  # this batch (both steps are done)
        if step % every:
            return
        k = min(self.gan.sample_count, raw.shape[0])
        grey = self._grey(batch["image"][:k])
        labels = batch["mask"][:k].cpu().numpy()
        if self.gan.mode == "segment":
            panels = [grey, labels, raw[:k].argmax(1).cpu().numpy()]
        else:
            panels = [labels, grey, tanh_to_grey(raw[:k, 0]).cpu().numpy()]
        grid = sample_grid(panels, self.meta["class_colors"])
        folder = Path(self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"step-{step:07d}.png") as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")

    def _grey(self, x: torch.Tensor) -> np.ndarray:
        """(k, 1, H, W) normalised SEM -> (k, H, W) uint8."""
        return tanh_to_grey(self.sem_to_tanh(x[:, 0])).cpu().numpy()


def sample_grid(panels: list[np.ndarray], class_colors) -> np.ndarray:
    """Side-by-side panels, one row per sample, as an RGB image.

    Parameters
    ----------
    panels : list of (k, H, W) arrays
        uint8 arrays are grey images; integer arrays of another dtype are class ids
        (coloured with ``class_colors``; ids outside it grey).
    class_colors : sequence of (r, g, b)

    Returns
    -------
    (k * (H + 2) - 2, len(panels) * (W + 2) - 2, 3) uint8 array
        White 2-px gaps between panels and rows.
    """
    k, h, w = panels[0].shape
    palette = np.array([*class_colors, _UNLABELLED_RGB], dtype=np.uint8)
    out = np.full((k * (h + _GAP) - _GAP, len(panels) * (w + _GAP) - _GAP, 3), 255, dtype=np.uint8)
    for col, panel in enumerate(panels):
        if panel.dtype == np.uint8:
            rgb = np.repeat(panel[..., None], 3, axis=-1)
        else:
            ids = np.where((panel >= 0) & (panel < len(class_colors)), panel, len(class_colors))
            rgb = palette[ids]
        for row in range(k):
            y, x = row * (h + _GAP), col * (w + _GAP)
            out[y:y + h, x:x + w] = rgb[row]
    return out
