"""Segmentation metrics from ONE confusion matrix over the whole evaluation set.

The original study computed IoU per tile with a smoothing term of 1 and averaged
the tiles, which flatters small classes: a tile without any albite that predicts
no albite scores IoU = (0 + 1) / (0 + 1) = 1. Here every pixel of the evaluation
set is counted once in a single confusion matrix, and the scores follow from its
totals without any smoothing term:

- IoU_c       = TP / (TP + FP + FN)
- F1_c        = 2 TP / (2 TP + FP + FN)       (the Dice coefficient)
- precision_c = TP / (TP + FP)
- recall_c    = TP / (TP + FN)
- pixel accuracy = trace / total

A score whose denominator is 0 is undefined and reported as NaN (``None`` in the
JSON-friendly dict): a class absent from both truth and prediction has no IoU or
F1, and it is left out of the means (``miou``, ``mean_f1``...) instead of being
counted as a perfect 1 or a failed 0. Pixels whose truth is the ignore index
(255) are skipped, whatever was predicted there.

Rows of the matrix are the truth, columns the prediction (the convention of
:func:`sklearn.metrics.confusion_matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchmetrics

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.io.atomic import json_ready

# Pixels per chunk in ConfusionMatrix.update: bounds the int64 temporaries to
# about 3 x 8 x 4M = 100 MB whatever the size of the map being scored.
_CHUNK_PIXELS = 1 << 22


def _as_numpy(a: Any, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise DataError(f"{what} must hold integer class ids, got dtype {a.dtype}")
    return a


def check_class_range(values: np.ndarray, num_classes: int, what: str) -> None:
    """DataError naming ``what`` when an id of ``values`` (ignore pixels already removed)
    lies outside ``0 .. num_classes - 1``."""
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{what} holds class id {bad}, outside 0..{num_classes - 1} "
            f"(num_classes={num_classes}; only the ignore index may lie outside)"
        )


def confusion_matrix(
    truth: Any, pred: Any, num_classes: int, *, ignore_index: int | None = IGNORE_INDEX
) -> np.ndarray:
    """Count (truth, prediction) pairs of class ids.

    Parameters
    ----------
    truth, pred : array_like or torch.Tensor of int, same shape (any)
        Class ids in ``0..num_classes-1``; ``truth`` may also hold ``ignore_index``.
    num_classes : int
        Number of classes C.
    ignore_index : int or None
        Truth value of pixels to skip (default 255); None skips nothing.

    Returns
    -------
    (C, C) ndarray of int64
        ``m[t, p]`` = number of pixels with truth ``t`` predicted as ``p``.

    Raises
    ------
    DataError
        Shapes differ, ids are not integers, or an id (outside ignored pixels)
        is not in ``0..C-1``.

    Examples
    --------
    >>> confusion_matrix([0, 1, 1, 255], [0, 1, 0, 1], 2)
    array([[1, 0],
           [1, 1]])
    """
    truth = _as_numpy(truth, "truth")
    pred = _as_numpy(pred, "prediction")
    if truth.shape != pred.shape:
        raise DataError(
            f"truth and prediction differ in shape: {truth.shape} vs {pred.shape}"
        )
    truth, pred = truth.reshape(-1), pred.reshape(-1)
    if num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {num_classes}")
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, truth.size, _CHUNK_PIXELS):
        t = truth[start : start + _CHUNK_PIXELS]
        p = pred[start : start + _CHUNK_PIXELS]
        if ignore_index is not None:
            keep = t != ignore_index
            if not keep.all():
                t, p = t[keep], p[keep]
        check_class_range(t, num_classes, "truth")
        check_class_range(p, num_classes, "prediction")
        idx = t.astype(np.int64) * num_classes + p.astype(np.int64)
        counts += np.bincount(idx, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulate one confusion matrix over many (truth, prediction) batches.

    Parameters
    ----------
    num_classes : int
        Number of classes C.
    ignore_index : int or None
        Truth value of pixels to skip (default 255).

    Attributes
    ----------
    matrix : (C, C) ndarray of int64
        Rows truth, columns prediction.

    Examples
    --------
    >>> cm = ConfusionMatrix(2)
    >>> cm.update([0, 1], [0, 0]).update([1, 255], [1, 1]).matrix
    array([[1, 0],
           [1, 1]])
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, truth: Any, pred: Any) -> ConfusionMatrix:
        """Add the pixels of one batch (any shape, see :func:`confusion_matrix`); returns self."""
        self.matrix += confusion_matrix(
            truth, pred, self.num_classes, ignore_index=self.ignore_index
        )
        return self

    def merge(self, other: ConfusionMatrix | np.ndarray) -> ConfusionMatrix:
        """Add another matrix of the same size (e.g. from another worker); returns self."""
        m = other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if m.shape != self.matrix.shape:
            raise UserError(
                f"cannot merge a confusion matrix of shape {m.shape} into one of shape "
                f"{self.matrix.shape}"
            )
        self.matrix += m.astype(np.int64)
        return self

    def reset(self) -> None:
        """Set all counts back to zero."""
        self.matrix[...] = 0

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def metrics(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Scores of the accumulated matrix, see :func:`metrics_from_confusion`."""
        return metrics_from_confusion(self, class_names)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class scores and their means from a confusion matrix (NaN where undefined).

    Parameters
    ----------
    matrix : (C, C) array of counts
        Rows truth, columns prediction.

    Returns
    -------
    dict
        ``iou``, ``f1``, ``precision``, ``recall`` : (C,) float64 arrays (NaN where the
        denominator is 0); ``support`` (pixels of each true class) and ``predicted``
        (pixels predicted as each class) : (C,) int64; ``miou``, ``mean_f1``,
        ``mean_precision``, ``mean_recall`` : means over the defined (non-NaN)
        classes, NaN if none is defined; ``pixel_accuracy`` : float (NaN if empty).
    """
    m = np.asarray(matrix, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UserError(f"a confusion matrix must be square, got shape {m.shape}")
    tp = np.diag(m).astype(np.float64)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    total = m.sum()
    out: dict[str, np.ndarray | float] = {
        "iou": iou,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "support": support,
        "predicted": predicted,
        "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
    }
    for name, values in (("miou", iou), ("mean_f1", f1), ("mean_precision", precision),
                         ("mean_recall", recall)):
        defined = values[~np.isnan(values)]
        out[name] = float(defined.mean()) if defined.size else math.nan
    return out


def metrics_from_confusion(
    cm: ConfusionMatrix | np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """All scores of a confusion matrix as a JSON-friendly dict.

    Parameters
    ----------
    cm : ConfusionMatrix or (C, C) array of counts
        Rows truth, columns prediction.
    class_names : sequence of C str, optional
        Keys of the per-class dicts; default ``class_0``, ``class_1``...

    Returns
    -------
    dict
        ``class_names`` (list), ``iou``, ``f1``, ``precision``, ``recall`` (dicts
        name -> float, or None where undefined), ``support`` and ``predicted``
        (name -> int pixel counts), ``miou``, ``mean_f1``, ``mean_precision``,
        ``mean_recall``, ``pixel_accuracy`` (float or None), ``classes_in_mean``
        (names whose IoU is defined and enters ``miou``), ``num_pixels`` (int) and
        ``confusion_matrix`` (list of C lists of int; rows truth, columns prediction).

    Notes
    -----
    Undefined scores (0/0) are None rather than NaN so the dict is valid JSON;
    a class absent from both truth and prediction is excluded from the means.

    Examples
    --------
    >>> m = metrics_from_confusion(np.array([[3, 1], [0, 0]]), ["pore", "quartz"])
    >>> m["iou"], m["miou"]
    ({'pore': 0.75, 'quartz': 0.0}, 0.375)
    """
    matrix = cm.matrix if isinstance(cm, ConfusionMatrix) else np.asarray(cm)
    s = scores_from_confusion(matrix)
    c = matrix.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(c)]
    if len(names) != c:
        raise UserError(
            f"{len(names)} class names given for a {c} x {c} confusion matrix: {names}"
        )
    result: dict[str, Any] = {"class_names": names}
    for key in ("iou", "f1", "precision", "recall"):
        result[key] = {n: json_ready(float(v)) for n, v in zip(names, s[key])}
    for key in ("support", "predicted"):
        result[key] = {n: int(v) for n, v in zip(names, s[key])}
    for key in ("miou", "mean_f1", "mean_precision", "mean_recall", "pixel_accuracy"):
        result[key] = json_ready(float(s[key]))
    result["classes_in_mean"] = [n for n, v in zip(names, s["iou"]) if not math.isnan(v)]
    result["num_pixels"] = int(matrix.sum())
    result["confusion_matrix"] = np.asarray(matrix, dtype=np.int64).tolist()
    return result


class SegmentationMetrics(torchmetrics.Metric):
    """Confusion-matrix metrics for Lightning (state summed across DDP processes).

    Parameters
    ----------
    num_classes : int
        Number of classes C.
    class_names : sequence of C str, optional
        Used in the keys of :meth:`compute` (``iou_<name>``); default ``class_<i>``.
    ignore_index : int or None
        Target value to skip (default 255).
    **kwargs
        Passed to :class:`torchmetrics.Metric`.

    Notes
    -----
    The state is one (C, C) int64 matrix ``confmat`` (rows truth, columns
    prediction) with ``dist_reduce_fx="sum"``, so DDP sums the counts exactly
    before :meth:`compute`. The scores follow the module docstring: no smoothing,
    NaN for undefined classes, which are left out of the means.

    Examples
    --------
    In a LightningModule::

        self.val_metrics = SegmentationMetrics(num_classes, class_names=names)
        ...  # validation_step
        self.val_metrics.update(logits, target)
        ...  # on_validation_epoch_end
        self.log_dict({f"val_{k}": v for k, v in self.val_metrics.compute().items()})
        self.val_metrics.reset()
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = IGNORE_INDEX,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        names = list(class_names) if class_names is not None else None
        if names is not None and len(names) != num_classes:
            raise UserError(f"{len(names)} class names given for {num_classes} classes: {names}")
        self.class_names = names or [f"class_{i}" for i in range(num_classes)]
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Add a batch.

        Parameters
        ----------
        preds : (N, C, H, W) float logits/probabilities, or (N, H, W) int class ids
        target : (N, H, W) int class ids (``ignore_index`` skipped)
        """
        c = self.num_classes
        if preds.is_floating_point():
            if preds.ndim != target.ndim + 1 or preds.shape[1] != c:
                raise DataError(
                    f"logits of shape {tuple(preds.shape)} do not match targets of shape "
                    f"{tuple(target.shape)} with {c} classes (expected (N, {c}, H, W))"
                )
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise DataError(
                f"predictions of shape {tuple(preds.shape)} do not match targets of shape "
                f"{tuple(target.shape)}"
            )
        t = target.reshape(-1).long()
        p = preds.reshape(-1).long()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            t, p = t[keep], p[keep]
        if t.numel() == 0:
            return
        lo = torch.minimum(t.min(), p.min())
        hi = torch.maximum(t.max(), p.max())
        if lo < 0 or hi >= c:  # one device sync per batch; bincount would sync anyway
            raise DataError(
                f"class ids {int(lo)}..{int(hi)} in targets/predictions, expected 0..{c - 1}"
            )
        counts = torch.bincount(t * c + p, minlength=c * c)
        self.confmat += counts.reshape(c, c)

    def compute(self) -> dict[str, torch.Tensor]:
        """Scalar (0-d float64) tensors, ready for ``LightningModule.log_dict``.

        Keys: ``miou``, ``mean_f1``, ``pixel_accuracy``, and ``iou_<name>``,
        ``f1_<name>`` per class. The full matrix is :attr:`confmat`.
        """
        m = self.confmat.double()
        tp = torch.diagonal(m)
        fp = m.sum(dim=0) - tp
        fn = m.sum(dim=1) - tp
        iou = tp / (tp + fp + fn)  # 0/0 -> NaN in torch, no warning
        f1 = 2 * tp / (2 * tp + fp + fn)
        out = {
            "miou": torch.nanmean(iou),
            "mean_f1": torch.nanmean(f1),
            "pixel_accuracy": tp.sum() / m.sum(),
        }
        for i, name in enumerate(self.class_names):
            out[f"iou_{name}"] = iou[i]
        for i, name in enumerate(self.class_names):
            out[f"f1_{name}"] = f1[i]
        return out

    def to_confusion(self) -> ConfusionMatrix:
        """The accumulated counts as a numpy :class:`ConfusionMatrix`."""
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        cm.matrix[...] = self.confmat.detach().cpu().numpy()
        return cm


def majority_class_miou(confusion: Any) -> float:
    """Mean IoU of predicting the most frequent true class everywhere (the floor any
    useful model clears), on the pixels of a confusion matrix.

    Parameters
    ----------
    confusion : array-like
        (C, C) pixel counts, rows the true class (e.g. ``metrics["confusion_matrix"]``).

    Returns
    -------
    float
        The majority class's share of the pixels divided by the number of classes
        present in the truth (absent classes are left out of the mean, as in
        :func:`metrics_from_confusion`); 0.0 for an empty matrix.
    """
    support = np.asarray(confusion, dtype=np.float64).sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    # IoU of the majority class is its share of all pixels; every other class scores 0.
    return float(support.max() / support.sum() / present.sum())
