"""Losses for multi-class segmentation: Dice + c * Focal (the study's), CE, Lovasz.

All losses take raw ``logits`` of shape (N, C, H, W) (any float dtype; computed in
float32) and ``target`` class ids of shape (N, H, W) (int64), and skip pixels whose
target is ``ignore_index`` (255): they add nothing to any sum, count or normaliser.

Dice here is exact over the whole batch, without the smoothing term that many
Dice losses add to numerator and denominator (the study's IoU had one of 1),
which pulls the score of small classes towards 1. A tiny epsilon only guards
0/0. Which classes enter the mean is explicit: a class present in the batch's
target, or predicted (highest probability) somewhere in it, counts; a class
absent from both has an undefined Dice and is left out, as IoU is left out of
the mean IoU in :mod:`mineralseg.evaluate.metrics`.

Examples
--------
>>> loss_fn = build_loss("dice_focal", class_weights=[1.0, 2.0, 2.0, 1.0], focal_weight=1.0)
>>> logits = torch.randn(2, 4, 8, 8, requires_grad=True)
>>> target = torch.randint(0, 4, (2, 8, 8))
>>> loss_fn(logits, target).backward()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import ConfigError, DataError
from mineralseg.lookup import resolve

# Guards 0/0 only: a class enters the Dice mean only if it is in the target
# (denominator >= 1) or has the highest probability at some pixel (denominator >= 1/C), so a
# clamp at 1e-7 never changes the value of a class that counts.
_EPS = 1e-7

WeightsLike = Sequence[float] | np.ndarray | torch.Tensor | None


def _weights_tensor(weights: WeightsLike, what: str) -> torch.Tensor | None:
    if weights is None:
        return None
    if isinstance(weights, torch.Tensor):
        w = weights.detach().cpu().float().reshape(-1)
    else:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32)).reshape(-1)
    if w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(
            f"{what} must be finite, non-negative and not all zero, got {w.tolist()}"
        )
    return w


def _check_weights(w: torch.Tensor | None, num_classes: int, what: str) -> None:
    if w is not None and w.numel() != num_classes:
        raise ConfigError(
            f"{what} has {w.numel()} values but the model predicts {num_classes} classes"
        )


def check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> None:
    """Raise :class:`DataError` unless logits (N, C, ...) and target (N, ...) fit.

    Checks shapes, dtypes and that target ids lie in ``0..C-1`` or equal
    ``ignore_index`` (one device synchronisation).
    """
    if logits.ndim < 2 or not logits.is_floating_point():
        raise DataError(f"logits must be float (N, C, H, W), got {logits.dtype} {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise DataError(
            f"target of shape {tuple(target.shape)} does not match logits "
            f"{tuple(logits.shape)} (expected {expected})"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise DataError(f"target must hold integer class ids, got {target.dtype}")
    c = logits.shape[1]
    bad = (target < 0) | (target >= c)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bad.any():
        value = int(target[bad].reshape(-1)[0])
        raise DataError(
            f"target holds class id {value}, outside 0..{c - 1} and not the ignore index "
            f"{ignore_index} (logits have {c} channels)"
        )


def _one_hot_valid(target: torch.Tensor, num_classes: int, ignore_index: int | None):
    """(N, C, ...) float one-hot of target (zero at ignored pixels), (N, 1, ...) valid mask."""
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        valid = target != ignore_index
    valid = valid.unsqueeze(1)
    onehot = (target.unsqueeze(1) == _class_ids(num_classes, target)) & valid
    return onehot.float(), valid


def _class_ids(num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """0..C-1 shaped (1, C, 1, ...) to broadcast against (N, 1, ...) class maps."""
    shape = (1, num_classes) + (1,) * (like.ndim - 1)
    return torch.arange(num_classes, device=like.device).reshape(shape)


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> torch.Tensor:
    """Multi-class soft Dice loss over the whole batch, weighted mean over classes.

    Parameters
    ----------
    probs : (N, C, H, W) float tensor
        Class probabilities (softmax over dim 1).
    target : (N, H, W) int64 tensor
        Class ids, or ``ignore_index``.
    class_weights : (C,) float tensor, optional
        Weight of each class's Dice in the mean (default all 1).
    ignore_index : int or None
        Target value of pixels to skip.

    Returns
    -------
    0-d tensor
        ``1 - sum_c w_c m_c D_c / sum_c w_c m_c`` with
        ``D_c = 2 sum(p_c y_c) / (sum p_c + sum y_c)`` over all valid pixels of the
        batch and ``m_c = 1`` if class c is in the target or has the highest probability
        at some valid pixel, else 0. 0 when no class qualifies (every pixel ignored).

    Notes
    -----
    Weights are normalised by their sum over the included classes, so a perfect
    prediction gives 0 whatever the weights (a plain mean of ``w_c D_c``, as in
    some Keras implementations, does not). A predicted class absent from
    the target has D_c = 0: it raises the loss value, like the 0 IoU it earns,
    while the false positives are corrected through the other classes' Dice
    (softmax couples them) and the focal term.
    """
    c = probs.shape[1]
    onehot, valid = _one_hot_valid(target, c, ignore_index)
    p = probs * valid
    dims = (0, *range(2, probs.ndim))
    intersection = (p * onehot).sum(dims)
    denominator = p.sum(dims) + onehot.sum(dims)
    dice = 2 * intersection / denominator.clamp_min(_EPS)
    top = probs.detach()
    predicted = (top == top.amax(1, keepdim=True)) & valid  # (ties count for both classes)
    include = (onehot.sum(dims) > 0) | (predicted.sum(dims) > 0)
    w = torch.ones(c, device=probs.device) if class_weights is None else class_weights
    w = w.to(probs.device) * include
    w_sum = w.sum()
    loss = 1 - (w * dice).sum() / w_sum.clamp_min(_EPS)
    return torch.where(w_sum > 0, loss, (probs * 0).sum())


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> torch.Tensor:
    """Multi-class focal loss ``-alpha w_t (1 - p_t)^gamma log p_t``, weighted mean.

    Parameters
    ----------
    logits : (N, C, H, W) float tensor
    target : (N, H, W) int64 tensor
    gamma : float
        Focusing exponent (>= 0); 0 gives cross-entropy.
    alpha : float, optional
        Global scale (the study's Keras focal loss used 0.25); default 1.
    class_weights : (C,) float tensor, optional
        Per-class weight ``w_t`` of each pixel's true class.
    ignore_index : int or None
        Target value of pixels to skip.

    Returns
    -------
    0-d tensor
        ``alpha * sum(w_t FL) / sum(w_t)`` over valid pixels, the normalisation of
        :func:`torch.nn.functional.cross_entropy` with ``weight``: with
        ``gamma=0`` and ``alpha=None`` this equals it exactly. 0 if every pixel
        is ignored.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target)).long()
    logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    if gamma == 0:
        per_pixel = -logpt
    else:
        per_pixel = -((1 - logpt.exp()).clamp_min(0) ** gamma) * logpt
    w = valid.float()
    if class_weights is not None:
        w = w * class_weights.to(logits.device)[t]
    loss = (w * per_pixel).sum() / w.sum().clamp_min(1e-12)
    return loss if alpha is None else alpha * loss


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at sorted errors."""
    n_fg = fg_sorted.sum()
    intersection = n_fg - fg_sorted.cumsum(0)
    union = n_fg + (1 - fg_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    classes: str = "present",
) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., CVPR 2018) over the whole batch.

    Parameters
    ----------
    probs : (N, C, H, W) float tensor
        Class probabilities.
    target : (N, H, W) int64 tensor
    ignore_index : int or None
        Target value of pixels to skip.
    classes : {"present", "all"}
        Average over the classes present in the target (default) or all classes.

    Returns
    -------
    0-d tensor
        Mean over classes of the Lovasz extension of ``1 - IoU_c`` evaluated at the
        errors ``|y_c - p_c|``. For one-hot ``probs`` it equals ``1 - IoU_c``
        exactly. 0 if every pixel is ignored.
    """
    if classes not in ("present", "all"):
        raise ConfigError(f"lovasz classes must be 'present' or 'all', got {classes!r}")
    c = probs.shape[1]
    p = probs.movedim(1, -1).reshape(-1, c)
    t = target.reshape(-1)
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if t.numel() == 0:
        return (probs * 0).sum()
    if classes == "present":
        chosen = torch.nonzero(torch.bincount(t, minlength=c)).reshape(-1).tolist()
    else:
        chosen = list(range(c))
    losses = []
    for k in chosen:
        fg = (t == k).to(p.dtype)
        errors = (fg - p[:, k]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    return torch.stack(losses).mean()


class _SegLoss(nn.Module):
    """Holds ignore_index and optional class weights (a non-persistent buffer)."""

    def __init__(self, *, class_weights: WeightsLike = None, ignore_index: int | None = IGNORE_INDEX):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer(
            "class_weights", _weights_tensor(class_weights, "class_weights"), persistent=False
        )

    def _prepare(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        check_inputs(logits, target, self.ignore_index)
        _check_weights(self.class_weights, logits.shape[1], "class_weights")


class DiceLoss(_SegLoss):
    """Soft Dice on softmax(logits), see :func:`soft_dice_loss`."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._prepare(logits, target)
        return soft_dice_loss(
            logits.float().softmax(1), target,
            class_weights=self.class_weights, ignore_index=self.ignore_index,
        )


class FocalLoss(_SegLoss):
    """Focal loss, see :func:`focal_loss`; ``class_weights`` weight each pixel's true class."""

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if gamma < 0:
            raise ConfigError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma, self.alpha = float(gamma), alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._prepare(logits, target)
        return focal_loss(
            logits, target, gamma=self.gamma, alpha=self.alpha,
            class_weights=self.class_weights, ignore_index=self.ignore_index,
        )


class CrossEntropyLoss(FocalLoss):
    """Weighted cross-entropy (the focal loss with gamma = 0); 0 when all pixels are ignored."""

    def __init__(self, **kwargs: Any):
        super().__init__(gamma=0.0, **kwargs)


class LovaszSoftmaxLoss(_SegLoss):
    """Lovasz-softmax on softmax(logits), see :func:`lovasz_softmax` (no class weights)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._prepare(logits, target)
        return lovasz_softmax(logits.float().softmax(1), target, ignore_index=self.ignore_index)


class DiceFocalLoss(_SegLoss):
    """The study's loss: ``Dice(class_weights) + focal_weight * Focal(gamma)``.

    As in the study, class weights go into the Dice term only; the focal term
    takes its own optional ``focal_alpha`` scale.
    """

    def __init__(
        self, *, focal_weight: float = 1.0, gamma: float = 2.0,
        focal_alpha: float | None = None, **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if focal_weight < 0 or gamma < 0:
            raise ConfigError(f"focal_weight and gamma must be >= 0, got {focal_weight}, {gamma}")
        self.focal_weight, self.gamma, self.focal_alpha = float(focal_weight), float(gamma), focal_alpha

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"dice", "focal", "loss"}`` as 0-d tensors (for logging the parts)."""
        self._prepare(logits, target)
        dice = soft_dice_loss(
            logits.float().softmax(1), target,
            class_weights=self.class_weights, ignore_index=self.ignore_index,
        )
        focal = focal_loss(
            logits, target, gamma=self.gamma, alpha=self.focal_alpha, ignore_index=self.ignore_index
        )
        return {"dice": dice, "focal": focal, "loss": dice + self.focal_weight * focal}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(logits, target)["loss"]


@dataclass(frozen=True)
class Loss:
    """One buildable loss.

    Attributes
    ----------
    name : str
        Canonical (lower-case) name, as written in a training config.
    cls : type
        The loss module; built as ``cls(ignore_index=..., **the settings it takes)``.
    settings : tuple of str
        Which settings of :func:`build_loss` it takes besides ``ignore_index``
        (``class_weights``, ``focal_weight``, ``gamma``); it ignores the others.
    summary : str
        One line for listings and docs.
    """

    name: str
    cls: type[nn.Module]
    settings: tuple[str, ...]
    summary: str

    def build(self, *, ignore_index: int | None, **settings: Any) -> nn.Module:
        """The loss module from ``build_loss``'s settings (those it does not take are dropped)."""
        return self.cls(ignore_index=ignore_index, **{k: settings[k] for k in self.settings})


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("dice_focal", DiceFocalLoss, ("class_weights", "focal_weight", "gamma"),
             "Dice + focal_weight * Focal, class weights in the Dice term (the study's)"),
        Loss("ce", CrossEntropyLoss, ("class_weights",), "weighted cross-entropy"),
        Loss("lovasz", LovaszSoftmaxLoss, (), "Lovasz-softmax, a convex surrogate of 1 - IoU (no class weights)"),
        Loss("dice", DiceLoss, ("class_weights",), "soft Dice over the batch, weighted mean over classes"),
        Loss("focal", FocalLoss, ("class_weights", "gamma"), "focal loss, class weights per pixel's true class"),
    )
}

#: Canonical loss names, in the order of :data:`LOSSES`.
LOSS_NAMES = tuple(LOSSES)

# Accepted other spellings: "-" and "_" are the same in a loss name.
_ALIASES = {name.replace("_", "-"): name for name in LOSSES if "_" in name}


def resolve_loss(name: object) -> Loss:
    """Look up a loss by name (case-insensitive; ``-`` and ``_`` are the same).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the valid names and the closest match.
    """
    return LOSSES[resolve(name, LOSSES, _ALIASES, kind="loss")]


def build_loss(
    name: str = "dice_focal",
    *,
    class_weights: WeightsLike = None,
    focal_weight: float = 1.0,
    gamma: float = 2.0,
    ignore_index: int | None = IGNORE_INDEX,
) -> nn.Module:
    """Build a loss module by name, called as ``loss(logits (N,C,H,W), target (N,H,W))``.

    Parameters
    ----------
    name : str
        A key of :data:`LOSSES`: ``dice_focal``: Dice + focal_weight * Focal (the
        study's; weights in Dice); ``ce``: weighted cross-entropy; ``lovasz``:
        Lovasz-softmax (ignores ``class_weights``); ``dice``: soft Dice; ``focal``: focal
        loss (weights per pixel's true class). Case-insensitive; ``-`` and ``_`` are the
        same.
    class_weights : sequence of C floats, optional
        Non-negative; see :func:`class_weights_from_frequencies` for ``auto``.
    focal_weight : float
        ``c`` in Dice + c * Focal.
    gamma : float
        Focal exponent.
    ignore_index : int or None
        Target value to skip (255).

    Raises
    ------
    ConfigError
        Unknown name (the message lists valid names and the closest one), or invalid
        weights.
    """
    return resolve_loss(name).build(
        class_weights=class_weights, focal_weight=focal_weight, gamma=gamma, ignore_index=ignore_index
    )


WEIGHT_METHODS = ("inverse", "inverse_sqrt", "median")


def class_weights_from_frequencies(
    freq: Sequence[float] | np.ndarray, method: str = "inverse", *, clip: float | None = 10.0
) -> np.ndarray:
    """Class weights from class frequencies (``class weights: auto``).

    Parameters
    ----------
    freq : (C,) array_like of float >= 0
        Pixel counts or fractions per class (e.g. from ``class_stats.json``);
        normalised to fractions ``f`` first.
    method : {"inverse", "inverse_sqrt", "median"}
        ``1 / (C f)`` (weight 1 for a class at the uniform share 1/C, the
        "balanced" rule of scikit-learn), ``1 / sqrt(C f)`` (milder), or median
        frequency balancing ``median(f) / f`` (Eigen & Fergus 2015; the median
        over the classes that occur; weight 1 for the median class).
    clip : float or None
        Largest allowed ratio between the largest and the smallest weight
        (default 10, so a class at 0.1 % of the pixels cannot dominate the
        loss); larger weights are lowered to ``clip * min``. None: no clipping.

    Returns
    -------
    (C,) ndarray of float64
        A class with frequency 0 gets the largest weight of the classes that
        occur (it is at least as rare as any of them), before clipping.

    Raises
    ------
    ConfigError
        Unknown method, clip < 1, or frequencies not finite, negative or all 0.

    Notes
    -----
    "inverse" and "median" are proportional to each other. The losses in this
    module normalise their weights (weighted means), so the two train
    identically; they differ only in the scale that is shown.

    Examples
    --------
    >>> class_weights_from_frequencies([2, 1, 1])
    array([0.66666667, 1.33333333, 1.33333333])
    """
    if method not in WEIGHT_METHODS:
        raise ConfigError(f"unknown class-weight method '{method}'; valid: {', '.join(WEIGHT_METHODS)}")
    if clip is not None and not clip >= 1:
        raise ConfigError(f"class-weight clip is a max/min ratio and must be >= 1, got {clip}")
    f = np.asarray(freq, dtype=np.float64)
    if f.ndim != 1 or f.size == 0 or not np.isfinite(f).all() or (f < 0).any() or f.sum() <= 0:
        raise ConfigError(
            f"class frequencies must be a non-empty list of finite values >= 0, not all 0; got {f.tolist()}"
        )
    f = f / f.sum()
    present = f > 0
    w = np.empty_like(f)
    if method == "inverse":
        w[present] = 1.0 / (f.size * f[present])
    elif method == "inverse_sqrt":
        w[present] = 1.0 / np.sqrt(f.size * f[present])
    else:
        w[present] = np.median(f[present]) / f[present]
    w[~present] = w[present].max()
    if clip is not None:
        w = np.minimum(w, clip * w.min())
    return w
