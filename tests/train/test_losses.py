"""Losses: hand-computed values, ignore pixels, perfect predictions, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mineralseg.errors import ConfigError, DataError
from mineralseg.train.losses import (
    LOSS_NAMES,
    build_loss,
    class_weights_from_frequencies,
    focal_loss,
    lovasz_softmax,
    soft_dice_loss,
)

# A 1 x 2 x 2 x 2 case worked by hand. Logits are log-probabilities, so softmax
# gives back exactly these class probabilities (p0, p1) per pixel:
#   pixel a (0.75, 0.25) truth 0     pixel b (0.50, 0.50) truth 1
#   pixel c (0.25, 0.75) truth 1     pixel d (0.90, 0.10) truth 0
# Dice class 0: 2 (0.75 + 0.9) / ((0.75 + 0.5 + 0.25 + 0.9) + 2) = 3.3 / 4.4 = 0.75
# Dice class 1: 2 (0.5 + 0.75) / ((0.25 + 0.5 + 0.75 + 0.1) + 2) = 2.5 / 3.6
# p_t per pixel: 0.75, 0.5, 0.75, 0.9
P0 = torch.tensor([[0.75, 0.50], [0.25, 0.90]])
LOGITS = torch.stack([P0, 1 - P0]).log().unsqueeze(0)  # (1, 2, 2, 2)
TARGET = torch.tensor([[[0, 1], [1, 0]]])
DICE0, DICE1 = 0.75, 2.5 / 3.6
PT = [0.75, 0.5, 0.75, 0.9]


def test_dice_hand_computed_plain_and_weighted():
    assert build_loss("dice")(LOGITS, TARGET).item() == pytest.approx(1 - (DICE0 + DICE1) / 2, abs=1e-6)
    weighted = build_loss("dice", class_weights=[1.0, 3.0])(LOGITS, TARGET).item()
    assert weighted == pytest.approx(1 - (DICE0 + 3 * DICE1) / 4, abs=1e-6)


def test_focal_ce_and_combined_hand_computed():
    ce = sum(-math.log(p) for p in PT) / 4
    focal = sum(-((1 - p) ** 2) * math.log(p) for p in PT) / 4
    assert build_loss("ce")(LOGITS, TARGET).item() == pytest.approx(ce, abs=1e-6)
    assert build_loss("focal", gamma=2.0)(LOGITS, TARGET).item() == pytest.approx(focal, abs=1e-6)
    combined = build_loss("dice_focal", class_weights=[1.0, 3.0], focal_weight=0.5)
    terms = combined.terms(LOGITS, TARGET)
    dice_w = 1 - (DICE0 + 3 * DICE1) / 4  # class weights go to the Dice term only
    assert terms["dice"].item() == pytest.approx(dice_w, abs=1e-6)
    assert terms["focal"].item() == pytest.approx(focal, abs=1e-6)
    assert combined(LOGITS, TARGET).item() == pytest.approx(dice_w + 0.5 * focal, abs=1e-6)


def test_dice_class_inclusion_rule():
    # truth is all class 0; class 1 absent from the truth.
    # (a) class 1 predicted (arg max) at the 2nd pixel: probs (0.75, 0.25), (0.25, 0.75)
    #     D0 = 2 (0.75 + 0.25) / (1.0 + 2) = 2/3, D1 = 0 (included) -> loss 1 - (2/3) / 2 = 2/3
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    probs = torch.tensor([[[[0.75, 0.25]], [[0.25, 0.75]]]])
    assert soft_dice_loss(probs, target).item() == pytest.approx(2 / 3, abs=1e-6)
    # (b) class 1 never predicted: probs (0.75, 0.25) twice
    #     D0 = 2 * 1.5 / (1.5 + 2) = 6/7; class 1 excluded -> loss 1/7
    probs = torch.tensor([[[[0.75, 0.75]], [[0.25, 0.25]]]])
    assert soft_dice_loss(probs, target).item() == pytest.approx(1 / 7, abs=1e-6)


def test_lovasz_equals_jaccard_loss_for_one_hot_probabilities():
    # truth 0 0 1 1 2, prediction 0 1 1 1 0:
    # IoU0 = 1/3 (TP 1, FP 1, FN 1), IoU1 = 2/3 (TP 2, FP 1), IoU2 = 0 -> mean(1 - IoU) = 2/3
    target = torch.tensor([[[0, 0, 1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0]]])
    probs = F.one_hot(pred, 4).movedim(-1, 1).float()  # class 3 absent: not averaged
    assert lovasz_softmax(probs, target).item() == pytest.approx(2 / 3, abs=1e-6)
    # averaging over all 4 classes adds class 3 with a perfect score (1 - IoU = 0)
    assert lovasz_softmax(probs, target, classes="all").item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_perfect_prediction_gives_about_zero(name):
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8), generator=gen)  # class 3 of 4 never occurs
    logits = 30.0 * F.one_hot(target, 4).movedim(-1, 1).float()
    weights = None if name == "lovasz" else [1.0, 2.0, 3.0, 4.0]
    assert build_loss(name, class_weights=weights)(logits, target).item() == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_pixels_do_not_affect_loss_or_gradient(name):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, 6, generator=gen)
    target = torch.randint(0, 3, (2, 6, 6), generator=gen)
    ignored = torch.rand(2, 6, 6, generator=gen) < 0.3
    target[ignored] = 255
    loss_fn = build_loss(name, class_weights=None if name == "lovasz" else [1.0, 2.0, 0.5])
    other = logits.clone()
    other[ignored.unsqueeze(1).expand_as(other)] = 100 * torch.randn(int(ignored.sum()) * 3, generator=gen)
    other.requires_grad_(True)
    a = loss_fn(logits, target)
    b = loss_fn(other, target)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    b.backward()
    assert torch.isfinite(other.grad).all()
    assert other.grad[ignored.unsqueeze(1).expand_as(other)].abs().max() == 0
    assert other.grad.abs().sum() > 0  # gradient flows through the valid pixels


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_pixels_ignored_gives_zero_without_nan(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    loss = build_loss(name)(logits, target)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def test_focal_with_gamma_zero_equals_cross_entropy():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 7, 7, generator=gen)
    target = torch.randint(0, 5, (3, 7, 7), generator=gen)
    target[:, :2] = 255
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 1.5])
    ref = F.cross_entropy(logits, target, weight=weights, ignore_index=255)
    assert focal_loss(logits, target, gamma=0.0, class_weights=weights).item() == pytest.approx(ref.item(), rel=1e-5)
    assert build_loss("ce", class_weights=weights)(logits, target).item() == pytest.approx(ref.item(), rel=1e-5)
    # gamma > 0 down-weights easy pixels: always below CE
    assert focal_loss(logits, target, gamma=2.0).item() < F.cross_entropy(logits, target, ignore_index=255).item()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'lovasz'"):
        build_loss("lovaz")
    with pytest.raises(ConfigError, match="3 values but the model predicts 2 classes"):
        build_loss("dice", class_weights=[1, 2, 3])(LOGITS, TARGET)
    with pytest.raises(ConfigError, match="non-negative"):
        build_loss("ce", class_weights=[1, -2])
    with pytest.raises(DataError, match="class id 4, outside 0..1"):
        build_loss("dice_focal")(LOGITS, torch.tensor([[[0, 4], [1, 0]]]))
    with pytest.raises(DataError, match=r"does not match logits"):
        build_loss("ce")(LOGITS, TARGET[:, :1])


def test_class_weights_from_frequencies():
    # inverse 1 / (C f): f = (1/2, 1/4, 1/4), C = 3 -> (2/3, 4/3, 4/3); counts work the same
    np.testing.assert_allclose(class_weights_from_frequencies([200, 100, 100]), [2 / 3, 4 / 3, 4 / 3])
    # inverse_sqrt: 1 / sqrt(1.5), 1 / sqrt(0.75)
    np.testing.assert_allclose(class_weights_from_frequencies([0.5, 0.25, 0.25], "inverse_sqrt"),
                               [1 / math.sqrt(1.5), 1 / math.sqrt(0.75), 1 / math.sqrt(0.75)])
    # median: median(0.6, 0.3, 0.1) = 0.3 -> (0.5, 1, 3)
    np.testing.assert_allclose(class_weights_from_frequencies([0.6, 0.3, 0.1], "median"), [0.5, 1, 3])
    # clip: inverse gives 1/2.7, 1/0.27, 1/0.03; ratio limited to 10 x the smallest
    w = class_weights_from_frequencies([0.9, 0.09, 0.01], clip=10)
    np.testing.assert_allclose(w, [1 / 2.7, 10 / 2.7, 10 / 2.7])
    # a class that never occurs gets the largest weight of the others
    np.testing.assert_allclose(class_weights_from_frequencies([0.5, 0.5, 0.0]), [2 / 3] * 3)
    with pytest.raises(ConfigError, match="valid: inverse, inverse_sqrt, median"):
        class_weights_from_frequencies([1, 1], "balanced")
    with pytest.raises(ConfigError, match="not all 0"):
        class_weights_from_frequencies([0, 0])
