"""Confusion-matrix metrics: hand-worked values, sklearn agreement, accumulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from mineralseg.errors import DataError, UserError
from mineralseg.evaluate import metrics as metrics_mod
from mineralseg.evaluate.metrics import (
    ConfusionMatrix,
    SegmentationMetrics,
    confusion_matrix,
    metrics_from_confusion,
)

# truth / prediction worked out by hand (C = 3, 255 = ignored):
#   truth  [[0, 0, 1],      pred [[0, 1, 1],
#           [1, 2, 255]]          [1, 1, 2]]
# counted pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,1); the ignored pixel is skipped.
#   matrix rows truth: [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
#   class 0: TP 1 FP 0 FN 1 -> IoU 1/2, F1 2/3, precision 1, recall 1/2
#   class 1: TP 2 FP 2 FN 0 -> IoU 2/4, F1 4/6, precision 1/2, recall 1
#   class 2: TP 0 FP 0 FN 1 -> IoU 0, F1 0, precision 0/0 = undefined, recall 0
#   mean IoU (0.5 + 0.5 + 0) / 3 = 1/3, mean F1 (2/3 + 2/3 + 0) / 3 = 4/9,
#   pixel accuracy 3 / 5 = 0.6
TRUTH = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 1, 2]], dtype=np.uint8)
NAMES = ["pore", "quartz", "albite"]


def test_hand_computed_matrix_and_scores():
    m = confusion_matrix(TRUTH, PRED, 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    r = metrics_from_confusion(m, NAMES)
    assert r["iou"] == pytest.approx({"pore": 0.5, "quartz": 0.5, "albite": 0.0})
    assert r["f1"] == pytest.approx({"pore": 2 / 3, "quartz": 2 / 3, "albite": 0.0})
    assert r["precision"]["pore"] == pytest.approx(1.0)
    assert r["precision"]["quartz"] == pytest.approx(0.5)
    assert r["precision"]["albite"] is None  # never predicted: 0/0
    assert r["recall"] == pytest.approx({"pore": 0.5, "quartz": 1.0, "albite": 0.0})
    assert r["support"] == {"pore": 2, "quartz": 2, "albite": 1}
    assert r["predicted"] == {"pore": 1, "quartz": 4, "albite": 0}
    assert r["miou"] == pytest.approx(1 / 3)
    assert r["mean_f1"] == pytest.approx(4 / 9)
    assert r["pixel_accuracy"] == pytest.approx(0.6)
    assert r["num_pixels"] == 5
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert json.loads(json.dumps(r)) == r  # JSON-friendly (no NaN, no numpy types)


def test_absent_class_is_nan_and_excluded_from_mean():
    # same data with a 4th class that appears in neither truth nor prediction
    r = metrics_from_confusion(confusion_matrix(TRUTH, PRED, 4), NAMES + ["clay"])
    assert r["iou"]["clay"] is None and r["f1"]["clay"] is None
    assert r["classes_in_mean"] == NAMES
    assert r["miou"] == pytest.approx(1 / 3)  # not (1/3 * 3 + 0) / 4, not (... + 1) / 4
    # a class that is predicted but absent from the truth counts as IoU 0
    m = confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2)
    r2 = metrics_from_confusion(m)
    assert r2["iou"] == {"class_0": 0.5, "class_1": 0.0}
    assert r2["miou"] == pytest.approx(0.25)


def test_empty_matrix_gives_undefined_scores():
    r = metrics_from_confusion(np.zeros((2, 2), dtype=np.int64), ["a", "b"])
    assert r["miou"] is None and r["pixel_accuracy"] is None and r["classes_in_mean"] == []


def test_agrees_with_sklearn_on_random_data_with_ignore_pixels():
    rng = np.random.default_rng(0)
    c = 5
    truth = rng.integers(0, c, size=(4, 37, 41)).astype(np.uint8)
    # predictions right 60 % of the time, uniform otherwise
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, c, truth.shape)).astype(np.uint8)
    truth[rng.random(truth.shape) < 0.15] = 255
    keep = truth != 255
    t, p = truth[keep], pred[keep]
    labels = list(range(c))

    m = confusion_matrix(truth, pred, c)
    np.testing.assert_array_equal(m, sk_confusion_matrix(t, p, labels=labels))
    r = metrics_from_confusion(m)
    iou = [r["iou"][f"class_{k}"] for k in labels]
    np.testing.assert_allclose(iou, jaccard_score(t, p, labels=labels, average=None))
    np.testing.assert_allclose([r["f1"][f"class_{k}"] for k in labels],
                               f1_score(t, p, labels=labels, average=None))
    np.testing.assert_allclose([r["precision"][f"class_{k}"] for k in labels],
                               precision_score(t, p, labels=labels, average=None))
    np.testing.assert_allclose([r["recall"][f"class_{k}"] for k in labels],
                               recall_score(t, p, labels=labels, average=None))
    assert r["miou"] == pytest.approx(jaccard_score(t, p, labels=labels, average="macro"))
    assert r["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))
    assert r["num_pixels"] == keep.sum()


def test_accumulation_over_batches_equals_one_computation(monkeypatch):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, size=(6, 20, 20))
    pred = rng.integers(0, 4, size=(6, 20, 20))
    truth[rng.random(truth.shape) < 0.1] = 255
    whole = confusion_matrix(truth, pred, 4)

    cm = ConfusionMatrix(4)
    for k in range(6):  # mixes numpy and torch inputs
        t, p = truth[k], pred[k]
        cm.update(torch.from_numpy(t) if k % 2 else t, torch.from_numpy(p) if k % 2 else p)
    np.testing.assert_array_equal(cm.matrix, whole)
    assert cm.matrix.dtype == np.int64 and cm.total == (truth != 255).sum()

    a, b = ConfusionMatrix(4).update(truth[:2], pred[:2]), ConfusionMatrix(4).update(truth[2:], pred[2:])
    np.testing.assert_array_equal(a.merge(b).matrix, whole)

    # the memory-bounding chunk loop gives the same counts
    monkeypatch.setattr(metrics_mod, "_CHUNK_PIXELS", 7)
    np.testing.assert_array_equal(confusion_matrix(truth, pred, 4), whole)


def test_prediction_at_ignored_pixels_does_not_count():
    truth = np.array([0, 255, 255])
    base = confusion_matrix(truth, np.array([0, 0, 0]), 2)
    other = confusion_matrix(truth, np.array([0, 1, 200]), 2)  # 200 is out of range but ignored
    np.testing.assert_array_equal(base, other)
    assert base.sum() == 1


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="class id 7, outside 0..2"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 3)
    with pytest.raises(DataError, match="prediction holds class id 3"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(DataError, match=r"differ in shape: \(2,\) vs \(3,\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]), 3)
    with pytest.raises(DataError, match="integer class ids"):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 3)
    with pytest.raises(UserError, match="cannot merge"):
        ConfusionMatrix(3).merge(ConfusionMatrix(2))
    with pytest.raises(UserError, match="2 class names"):
        metrics_from_confusion(np.zeros((3, 3)), ["a", "b"])


def test_torchmetrics_wrapper_matches_numpy_and_sums_states():
    gen = torch.Generator().manual_seed(2)
    c = 4
    metric = SegmentationMetrics(c, class_names=["pore", "quartz", "albite", "clay"])
    reference = ConfusionMatrix(c)
    for _ in range(3):
        logits = torch.randn(2, c, 9, 11, generator=gen)
        target = torch.randint(0, c - 1, (2, 9, 11), generator=gen)  # class 3 never true
        target[:, 0, :] = 255
        metric.update(logits, target)
        reference.update(target, logits.argmax(1))
    np.testing.assert_array_equal(metric.confmat.numpy(), reference.matrix)
    out = metric.compute()
    expected = metrics_from_confusion(reference, metric.class_names)
    assert float(out["miou"]) == pytest.approx(expected["miou"])
    assert float(out["iou_quartz"]) == pytest.approx(expected["iou"]["quartz"])
    assert float(out["pixel_accuracy"]) == pytest.approx(expected["pixel_accuracy"])
    assert all(v.ndim == 0 for v in out.values())  # log_dict-ready scalars

    # class ids (not logits) are accepted; merging two states sums the matrices (DDP)
    other = SegmentationMetrics(c)
    other.update(torch.tensor([[0, 1]]), torch.tensor([[0, 255]]))
    before = metric.confmat.clone()
    metric.merge_state(other)
    assert int((metric.confmat - before).sum()) == 1 and int(metric.confmat[0, 0] - before[0, 0]) == 1


def test_torchmetrics_wrapper_absent_class_is_nan_not_in_mean():
    metric = SegmentationMetrics(3)
    # truth 0,0,1 predicted 0,1,1: IoU0 = 1/2, IoU1 = 1/2, class 2 absent -> NaN
    metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 1]]))
    out = metric.compute()
    assert math.isnan(float(out["iou_class_2"]))
    assert float(out["miou"]) == pytest.approx(0.5)
    with pytest.raises(DataError, match="expected 0..2"):
        metric.update(torch.tensor([[5]]), torch.tensor([[0]]))
