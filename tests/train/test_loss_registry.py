"""The loss registry (mineralseg.train.losses.LOSSES): names, aliases, errors, config check."""

from __future__ import annotations

import pytest
import torch

from mineralseg.config import parse_config
from mineralseg.errors import ConfigError
from mineralseg.train.config import LossConfig
from mineralseg.train.losses import (
    LOSS_NAMES,
    LOSSES,
    CrossEntropyLoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    build_loss,
    resolve_loss,
)

EXPECTED_CLASSES = {
    "dice_focal": DiceFocalLoss,
    "ce": CrossEntropyLoss,
    "lovasz": LovaszSoftmaxLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
}


def test_registry_lists_every_loss_once_with_a_summary():
    assert LOSS_NAMES == ("dice_focal", "ce", "lovasz", "dice", "focal")
    assert set(LOSSES) == set(EXPECTED_CLASSES)
    for name, loss in LOSSES.items():
        assert loss.name == name
        assert len(loss.summary) > 10


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_name_builds_its_class_and_passes_the_settings(name):
    module = build_loss(name, class_weights=[1.0, 2.0], focal_weight=0.25, gamma=3.0, ignore_index=7)
    assert type(module) is EXPECTED_CLASSES[name]
    assert module.ignore_index == 7
    if name == "lovasz":
        assert module.class_weights is None  # Lovasz takes no class weights
    else:
        assert module.class_weights.tolist() == [1.0, 2.0]
    if name == "dice_focal":
        assert (module.focal_weight, module.gamma) == (0.25, 3.0)
    if name == "focal":
        assert module.gamma == 3.0
    if name == "ce":
        assert module.gamma == 0.0


@pytest.mark.parametrize("spelling", ["dice-focal", "DICE_FOCAL", " Dice-Focal "])
def test_case_and_hyphen_spellings_resolve(spelling):
    assert resolve_loss(spelling).name == "dice_focal"
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 0]]])
    assert type(build_loss(spelling)) is DiceFocalLoss
    assert torch.isfinite(build_loss(spelling)(logits, target))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("lovaz", r"^unknown loss 'lovaz' \(did you mean 'lovasz'\?\); valid losses: dice_focal, ce, lovasz, dice, focal$"),
        ("dicefocal", r"^unknown loss 'dicefocal' \(did you mean 'dice_focal'\?\); valid losses: "),
        ("hinge", r"^unknown loss 'hinge'; valid losses: dice_focal, ce, lovasz, dice, focal$"),
        (3, r"^unknown loss 3; valid losses: "),
    ],
)
def test_unknown_names_list_the_valid_ones_and_the_closest(name, message):
    with pytest.raises(ConfigError, match=message):
        build_loss(name)


def test_config_validation_uses_the_registry():
    assert parse_config({"name": "dice-focal"}, LossConfig).name == "dice_focal"  # stored canonical
    with pytest.raises(ConfigError, match=r"train.yaml: name: .*unknown loss 'focall' \(did you mean 'focal'\?\)"):
        parse_config({"name": "focall"}, LossConfig, source="train.yaml")
