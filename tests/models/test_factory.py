"""Tests of mineralseg.models: factory, project architectures, weights, freezing."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from mineralseg.errors import ConfigError, DataError
from mineralseg.models import (
    STUDY_ENCODERS,
    PlainUNet,
    ResUNet,
    adapt_first_conv_weight,
    build_model,
    input_divisor,
    min_input_size,
    model_info,
    save_encoder_weights,
    set_encoder_frozen,
)
from mineralseg.models import weights as weights_module
from mineralseg.models.inception_v3 import INCEPTION_V3_OUT_CHANNELS
from mineralseg.models.resunet import ResidualUnit

# every architecture x encoder combination of the study, plus the extra smp decoders
STUDY_CASES = (
    [("unet", e) for e in STUDY_ENCODERS]
    + [("linknet", e) for e in STUDY_ENCODERS]
    + [("fpn", "resnet18"), ("deeplabv3plus", "resnet18"), ("resunet", None), ("plain-unet", None)]
)
HEAVY_ENCODERS = {"inceptionresnetv2", "vgg16", "vgg19"}  # 4-5 s of CPU each


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: the suite shares two cores; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _first_conv(module: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def _case_id(case) -> str:
    return f"{case[0]}-{case[1]}" if case[1] else case[0]


@pytest.mark.parametrize(
    "arch, encoder",
    [
        pytest.param(*c, id=_case_id(c), marks=[pytest.mark.slow] if c[1] in HEAVY_ENCODERS else [])
        for c in STUDY_CASES
    ],
)
def test_study_models_forward_backward(arch, encoder):
    # all study combinations take 64 x 64 (the inceptionv3 encoder is "same"-padded)
    assert min_input_size(arch, encoder) <= 64
    for num_classes in (2, 5):
        torch.manual_seed(0)
        model = build_model(arch, encoder, num_classes=num_classes)
        assert _first_conv(model.encoder).in_channels == 1
        model.train()
        x = torch.randn(2, 1, 64, 64)
        y = model(x)
        assert y.shape == (2, num_classes, 64, 64)
        assert torch.isfinite(y).all()
        loss = F.cross_entropy(y, torch.randint(0, num_classes, (2, 64, 64)))
        loss.backward()
        # every parameter gets a gradient, except those no output depends on, which are
        # known beforehand and kept out of training (smp's EfficientNet head conv)
        without_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert without_grad == list(model.unused_parameters)
        assert bool(without_grad) == encoder.startswith("efficientnet") if encoder else not without_grad
        assert not any(p.requires_grad for n, p in model.named_parameters() if n in without_grad)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert _first_conv(model.encoder).weight.grad.abs().sum() > 0


def test_thirty_classes_and_class_range():
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", num_classes=30)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 30, 64, 64)
    for bad in (1, 31, 2.0, True):
        with pytest.raises(ConfigError, match="num_classes"):
            build_model("plain-unet", num_classes=bad)
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("plain-unet", num_classes=2, in_channels=0)


def test_three_channel_input_and_rebuild_from_config():
    torch.manual_seed(0)
    model = build_model("LinkNet", "EfficientNetB3", num_classes=4, in_channels=3)
    assert model.arch == "linknet" and model.encoder_name == "efficientnet-b3"
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    twin = build_model(**model.build_config)
    twin.load_state_dict(model.state_dict())
    model.eval()
    twin.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), twin(x))


def test_names_are_case_insensitive_and_aliases_resolve():
    assert build_model("DeepLabV3+", "ResNet18", num_classes=2).arch == "deeplabv3plus"
    assert build_model("custom", num_classes=2, base_width=4, depth=2).arch == "plain-unet"
    assert build_model("UNet", "Inception_V3", num_classes=2).encoder_name == "inceptionv3"


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(arch="unnet", encoder="resnet18"), r"architecture 'unnet' \(did you mean 'unet'\?\).*resunet"),
        (dict(arch="unet", encoder="resnet19"), r"encoder 'resnet19' \(did you mean 'resnet18'\?\).*vgg16"),
        (dict(arch="unet", encoder="efficientnet-b33"), r"did you mean 'efficientnet-b3'"),
        (dict(arch="unet", encoder="tu-resnet181"), r"did you mean 'tu-resnet18'"),
        (dict(arch="unet", encoder=None), r"unet needs an encoder.*inceptionv3"),
        (dict(arch="resunet", encoder="resnet18"), r"resunet takes no encoder"),
        (dict(arch="unet", encoder="resnet18", decoder_chanels=(8,)), r"did you mean 'decoder_channels'"),
        (dict(arch="resunet", depth=3), r"resunet does not take option\(s\) depth; valid options: filters"),
        (dict(arch="deeplabv3plus", encoder="vgg16"), r"deeplabv3plus cannot be combined with encoder 'vgg16'"),
        (dict(arch="deeplabv3plus", encoder="inceptionv3"), r"cannot be combined.*dilated"),
        (dict(arch="linknet", encoder="tu-inception_v3"), r"fails for every input size"),
    ],
)
def test_bad_names_and_combinations_raise_config_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(num_classes=2, **kwargs)


def test_input_divisor_min_size_and_shape_errors():
    assert input_divisor("unet", "resnet18") == 32
    assert input_divisor("deeplabv3plus", "resnet18") == 16
    assert input_divisor("resunet") == 16
    assert input_divisor("plain-unet", depth=3) == 8
    assert input_divisor("unet", "resnet18", encoder_depth=4, decoder_channels=(64, 32, 16, 8)) == 16
    for encoder in STUDY_ENCODERS:
        assert min_input_size("unet", encoder) == 32
    # timm's own (unpadded) Inception-v3 needs 96 px and works with U-Net only
    assert min_input_size("unet", "tu-inception_v3") == 96
    model = build_model("resunet", num_classes=3)
    assert model(torch.zeros(2, 1, 48, 80)).shape == (2, 3, 48, 80)
    with pytest.raises(DataError, match=r"multiples of 16.*40 x 64.*pad or crop to 48 x 64"):
        model(torch.zeros(1, 1, 40, 64))
    with pytest.raises(DataError, match="1 input channel"):
        model(torch.zeros(1, 3, 64, 64))
    unet = build_model("unet", "resnet18", num_classes=2)
    with pytest.raises(DataError, match=r"multiples of 32.*pad or crop to 64 x 32"):
        unet(torch.zeros(1, 1, 48, 32))


def test_inceptionv3_encoder_halves_exactly():
    model = build_model("unet", "inceptionv3", num_classes=2)
    features = model.encoder(torch.zeros(1, 1, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c if k else 1, 64 // 2**k, 96 // 2**k) for k, c in enumerate(INCEPTION_V3_OUT_CHANNELS)
    ]


def test_resunet_structure():
    net = ResUNet(num_classes=4)
    assert [s.shortcut[0].out_channels for s in net.encoder.stages] == [16, 32, 64, 128, 256]
    assert [u.shortcut[0].out_channels for u in net.decoder] == [256, 128, 64, 32]
    # decoder units take upsampled features concatenated with the skip
    assert [u.shortcut[0].in_channels for u in net.decoder] == [256 + 128, 256 + 64, 128 + 32, 64 + 16]
    assert net.input_divisor == 16
    assert ResUNet(num_classes=2, filters=(8, 16, 32)).input_divisor == 4
    with pytest.raises(ConfigError, match="filters"):
        ResUNet(num_classes=2, filters=(8,))


def test_residual_unit_adds_projection_shortcut():
    torch.manual_seed(0)
    unit = ResidualUnit(3, 8, stride=2).eval()
    last_conv = unit.residual[1][2]
    torch.nn.init.zeros_(last_conv.weight)
    torch.nn.init.zeros_(last_conv.bias)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(unit(x), unit.shortcut(x))
        assert unit(x).shape == (2, 8, 8, 8)


def test_plain_unet_options():
    net = PlainUNet(num_classes=3, base_width=8, depth=3, dropout=0.1)
    assert [_first_conv(s).out_channels for s in net.encoder.stages] == [8, 16, 32, 64]
    assert net(torch.zeros(2, 1, 24, 40)).shape == (2, 3, 24, 40)
    assert PlainUNet(num_classes=2, base_width=32).encoder.stages[0][0].out_channels == 32
    for bad in (dict(depth=0), dict(depth=8), dict(base_width=0), dict(dropout=1.0)):
        with pytest.raises(ConfigError, match="plain-unet"):
            PlainUNet(num_classes=2, **bad)


def test_adapt_first_conv_weight_rules():
    w = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    assert torch.equal(adapt_first_conv_weight(w, 1)[:, 0, 0, 0], torch.tensor([0.0 + 1 + 2, 3.0 + 4 + 5]))
    two = adapt_first_conv_weight(w, 2)
    assert torch.allclose(two[:, :, 0, 0], w[:, :2, 0, 0] * 1.5)
    four = adapt_first_conv_weight(w, 4)
    assert torch.allclose(four[:, 3], w[:, 0] * 0.75)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_rgb_weights_file_loads_into_greyscale_model(tmp_path, suffix):
    torch.manual_seed(1)
    rgb = build_model("unet", "resnet18", num_classes=2, in_channels=3)
    # move batch-norm statistics away from their defaults so buffers are compared too
    rgb.encoder.bn1.running_mean.uniform_()
    path = save_encoder_weights(rgb, tmp_path / f"resnet18-rgb{suffix}")
    assert path.is_file()
    torch.manual_seed(2)
    grey = build_model("unet", "resnet18", num_classes=2, encoder_weights=path)
    assert grey.encoder_weights == str(path)
    expected = rgb.encoder.conv1.weight.sum(dim=1, keepdim=True)
    assert grey.encoder.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(grey.encoder.conv1.weight, expected)
    assert torch.equal(grey.encoder.layer1[0].conv1.weight, rgb.encoder.layer1[0].conv1.weight)
    assert torch.equal(grey.encoder.bn1.running_mean, rgb.encoder.bn1.running_mean)
    # a grey image through the summed kernel == the RGB kernel on (g, g, g)
    g = torch.randn(1, 1, 32, 32)
    assert torch.allclose(grey.encoder.conv1(g), rgb.encoder.conv1(g.repeat(1, 3, 1, 1)), atol=1e-5)


def test_weights_from_classifier_and_model_checkpoints(tmp_path):
    import timm
    import torchvision

    torch.manual_seed(0)
    classifier = torchvision.models.resnet18().state_dict()  # has an fc head, dropped on load
    torch.save(classifier, tmp_path / "tv.pt")
    model = build_model("fpn", "resnet18", num_classes=2, encoder_weights=str(tmp_path / "tv.pt"))
    assert torch.allclose(model.encoder.conv1.weight, classifier["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.encoder.layer4[1].bn2.weight, classifier["layer4.1.bn2.weight"])
    # timm's Inception-v3 classifier: what "imagenet" loads into the padded inceptionv3 encoder
    inception = timm.create_model("inception_v3").state_dict()
    torch.save(inception, tmp_path / "incv3.pth")
    model = build_model("linknet", "inceptionv3", num_classes=2, encoder_weights=tmp_path / "incv3.pth")
    conv = model.encoder.Conv2d_1a_3x3.conv.weight
    assert torch.allclose(conv, inception["Conv2d_1a_3x3.conv.weight"].sum(1, keepdim=True))
    # a whole-model checkpoint, Lightning style: the encoder part is taken
    source = build_model("unet", "resnet18", num_classes=3)
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "run.ckpt.pth")
    target = build_model("linknet", "resnet18", num_classes=2, encoder_weights=tmp_path / "run.ckpt.pth")
    assert torch.equal(target.encoder.conv1.weight, source.encoder.conv1.weight)


def test_mismatched_weights_files_raise_clear_errors(tmp_path):
    torch.manual_seed(0)
    state = build_model("unet", "resnet18", num_classes=2, in_channels=3).encoder.state_dict()
    broken = dict(state)
    del broken["layer2.0.conv1.weight"]
    broken["extra.weight"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.pth")
    counts = (
        r"1 missing key\(s\) \(e\.g\. layer2\.0\.conv1\.weight\), "
        r"1 unexpected key\(s\) \(e\.g\. extra\.weight\)"
    )
    with pytest.raises(ConfigError, match=counts):
        build_model("unet", "resnet18", num_classes=2, encoder_weights=tmp_path / "broken.pth")
    reshaped = dict(state)
    reshaped["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(reshaped, tmp_path / "reshaped.pth")
    wrong_shape = r"1 tensor\(s\) have the wrong shape.*layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\)"
    with pytest.raises(ConfigError, match=wrong_shape):
        build_model("unet", "resnet18", num_classes=2, encoder_weights=tmp_path / "reshaped.pth")
    with pytest.raises(ConfigError, match="missing key"):  # another encoder's file
        build_model("unet", "vgg16", num_classes=2, encoder_weights=tmp_path / "broken.pth")
    with pytest.raises(ConfigError, match="encoder weights file not found: .*nothere.pth"):
        build_model("unet", "resnet18", num_classes=2, encoder_weights=tmp_path / "nothere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read encoder weights .*junk.pth"):
        build_model("unet", "resnet18", num_classes=2, encoder_weights=tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match=r"no pretrained weights 'imagenet21k'.*imagenet, ssl, swsl"):
        build_model("unet", "resnet18", num_classes=2, encoder_weights="imagenet21k")
    with pytest.raises(ConfigError, match="resunet has no pretrained encoder weights"):
        build_model("resunet", num_classes=2, encoder_weights="imagenet")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (any connection attempt fails), empty hub cache and weights folder."""
    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.mark.parametrize("encoder", ["resnet18", "inceptionv3"])
def test_imagenet_offline_says_where_to_put_the_file(offline, encoder):
    expected = offline / f"{encoder}-imagenet.pth"
    with pytest.raises(ConfigError) as info:
        build_model("unet", encoder, num_classes=2, encoder_weights="imagenet")
    message = str(info.value)
    assert "no network" in message
    assert str(expected) in message
    assert f"encoder_weights: /path/to/{encoder}-imagenet.pth" in message
    assert f"save_encoder_weights('{encoder}'" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="no network"):
        save_encoder_weights(encoder)
    assert not expected.exists()


def test_imagenet_uses_local_file_offline(offline):
    torch.manual_seed(3)
    rgb = build_model("linknet", "efficientnet-b3", num_classes=2, in_channels=3)
    save_encoder_weights(rgb, offline / "efficientnet-b3-imagenet.pth")
    grey = build_model("unet", "EfficientNetB3", num_classes=2, encoder_weights="imagenet")
    first = rgb.encoder._conv_stem.weight
    assert torch.allclose(grey.encoder._conv_stem.weight, first.sum(1, keepdim=True))
    assert grey.encoder_weights == "imagenet"


def test_failed_download_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(weights_module, "_network_reachable", lambda host: True)

    def fail(*args, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(weights_module, "_download", fail)
    expected = r"download failed: ConnectionError: connection reset by peer.*resnet18-imagenet.pth"
    with pytest.raises(ConfigError, match=expected):
        build_model("unet", "resnet18", num_classes=2, encoder_weights="imagenet")


def test_frozen_encoder_does_not_change_while_decoder_trains():
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", num_classes=3, freeze_encoder=True)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.net.decoder.state_dict().items()}
    info = model_info(model)
    assert info["encoder_frozen"] is True
    assert info["params_trainable"] == info["params_total"] - info["params_encoder"] > 0
    # an optimiser over all parameters: frozen ones get no gradient, so no update
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    assert model.training and not any(m.training for m in model.encoder.modules())
    assert model.net.decoder.training
    for _ in range(3):
        x = torch.randn(2, 1, 64, 64)
        target = torch.randint(0, 3, (2, 64, 64))
        optimiser.zero_grad()
        F.cross_entropy(model(x), target).backward()
        optimiser.step()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key
    changed = [k for k, v in model.net.decoder.state_dict().items() if not torch.equal(v, decoder_before[k])]
    assert any(k.endswith("running_mean") for k in changed)
    assert any(k.endswith("weight") for k in changed)
    # unfreezing: encoder trains again and follows the model's mode
    set_encoder_frozen(model, False)
    assert all(m.training for m in model.encoder.modules())
    assert all(p.requires_grad for p in model.parameters())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimiser.zero_grad()
    F.cross_entropy(model(torch.randn(2, 1, 64, 64)), torch.randint(0, 3, (2, 64, 64))).backward()
    optimiser.step()
    assert not torch.equal(model.encoder.conv1.weight, encoder_before["conv1.weight"])
    assert not torch.equal(model.encoder.bn1.running_mean, encoder_before["bn1.running_mean"])


def test_unused_encoder_stages_are_never_trained():
    model = build_model("unet", "resnet18", num_classes=2, encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    assert model.input_divisor == 16
    layer4 = {f"net.encoder.layer4.{n}" for n, _ in model.encoder.layer4.named_parameters()}
    assert set(model.unused_parameters) == layer4
    info = model_info(model)
    assert info["params_unused"] == sum(p.numel() for p in model.encoder.layer4.parameters()) > 0
    assert info["params_trainable"] == info["params_total"] - info["params_unused"]
    set_encoder_frozen(model, True)
    set_encoder_frozen(model, False)
    assert not any(p.requires_grad for p in model.encoder.layer4.parameters())
    assert all(p.requires_grad for p in model.encoder.layer3.parameters())


def test_model_info_counts_parameters():
    model = build_model("resunet", num_classes=5)
    info = model_info(model)
    assert info["params_total"] == sum(p.numel() for p in model.parameters())
    assert info["params_encoder"] == sum(p.numel() for p in model.net.encoder.parameters())
    assert info["params_trainable"] == info["params_total"]
    assert (info["arch"], info["encoder"], info["num_classes"], info["in_channels"]) == ("resunet", None, 5, 1)
    assert (info["input_divisor"], info["min_input_size"]) == (16, 16)
    plain = model_info(torch.nn.Linear(3, 2))
    assert plain == {"params_total": 8, "params_trainable": 8, "params_encoder": 0, "params_unused": 0}
