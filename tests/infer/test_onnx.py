"""ONNX export of a checkpoint and prediction with ONNX Runtime (mineralseg.infer.onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mineralseg.cli import main
from mineralseg.model_card import ModelCard
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.infer import predict_classes, predict_probabilities
from mineralseg.infer.onnx import OnnxPredictor, export_onnx, load_onnx

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ["pore", "quartz", "feldspar", "clay"]
COLORS = [[0, 0, 0], [255, 192, 192], [200, 100, 0], [0, 128, 0]]


def write_checkpoint(path: Path, arch: str = "unet", encoder: str | None = "resnet18", **options) -> Path:
    """A checkpoint as ``mineralseg train`` writes it, of a randomly initialised model."""
    from mineralseg.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, encoder, num_classes=len(CLASSES), encoder_weights=None, **options)
    with torch.no_grad():  # random BatchNorm statistics, so that eval mode is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    meta = {
        "class_names": CLASSES, "class_colors": COLORS, "ignore_index": 255, "num_classes": len(CLASSES),
        "in_channels": 1, "mean": 0.45, "std": 0.22, "input_size": 64, "tile_size": 64, "out_size": 64,
        "sem_scale": 2, "arch": arch, "encoder": encoder, "model_options": options,
    }  # fmt: skip
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "mineralseg": {"meta": meta, "config": {}}, "epoch": 3}, path)
    return path


def _image(shape, seed=0) -> np.ndarray:
    """Smooth blobs plus noise: classes change across the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blobs = 80 * np.sin(yy / 9.0) * np.cos(xx / 13.0) + 120
    return np.clip(blobs + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onnx")
    ckpt = write_checkpoint(root / "unet.ckpt")
    return ckpt, export_onnx(ckpt, root / "model.onnx")


def test_onnx_probabilities_equal_pytorch(exported):
    """Same windows, same blending: ONNX Runtime's probabilities are PyTorch's within 1e-3,
    for any batch size and window size (the graph's batch and spatial axes are free)."""
    ckpt, onnx_path = exported
    model, card = load_checkpoint_model(ckpt)
    predictor, onnx_meta = load_onnx(onnx_path, threads=1)
    assert onnx_meta["input_divisor"] == 32 and onnx_meta["onnx"] == str(onnx_path)
    image = _image((150, 121))
    for window, overlap, batch_size, zoom in [(64, 16, 3, 1.0), (96, 32, 2, 1.0), (48, 16, 4, 1.5)]:
        kwargs = dict(mean=card.mean, std=card.std, window=window, overlap=overlap, batch_size=batch_size,
                      zoom=zoom, multiple=onnx_meta["input_divisor"])  # fmt: skip
        want = predict_probabilities(model, image, **kwargs)
        got = predict_probabilities(predictor, image, **kwargs)
        assert got.shape == want.shape == (4, 150, 121)
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert len(np.unique(want.argmax(0))) > 1  # a map with several classes, not a constant
    assert (predict_classes(predictor, image, **kwargs) == want.argmax(0)).mean() > 0.999


def test_onnx_file_describes_the_checkpoint(exported):
    ckpt, onnx_path = exported
    _, card = load_checkpoint_model(ckpt)
    _, meta = load_onnx(onnx_path)
    from_onnx = ModelCard.from_dict(meta)
    for key in ("class_names", "class_colors", "mean", "std", "input_size", "tile_size", "sem_scale", "arch", "encoder"):
        assert getattr(from_onnx, key) == getattr(card, key), key
    assert meta["min_input_size"] == 32 and meta["checkpoint"] == str(ckpt)


def test_predictor_returns_torch_logits_on_the_input_device(exported):
    predictor = OnnxPredictor(exported[1], threads=1)
    out = predictor(torch.zeros(1, 1, 32, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 32, 64) and out.dtype == torch.float32


def test_a_model_exported_without_an_input_size_takes_any_valid_size(tmp_path):
    """Traced at the smallest valid side (1 x 1 deepest features) the graph would be pinned to it."""
    from mineralseg.infer.onnx import export_model
    from mineralseg.models import build_model

    model = build_model("unet", "resnet18", num_classes=3, decoder_channels=(16, 8, 8, 8, 8)).eval()
    predictor = OnnxPredictor(export_model(model, tmp_path / "m.onnx"), threads=1)
    for shape in [(1, 1, 32, 32), (3, 1, 96, 64)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            np.testing.assert_allclose(predictor(x).numpy(), model(x).numpy(), atol=1e-4)


def test_a_run_folder_exports_through_the_cli(trained_run, tmp_path, capsys):
    out = tmp_path / "sub" / "run.onnx"
    assert main(["export", str(trained_run), str(out)]) == 0
    assert f"ONNX model: {out}" in capsys.readouterr().out
    predictor, meta = load_onnx(out)
    model, card = load_checkpoint_model(trained_run)
    assert meta["class_names"] == list(card.class_names) and meta["arch"] == "plain-unet"
    image = _image((70, 90), seed=1)
    kwargs = dict(mean=meta["mean"], std=meta["std"], window=64, overlap=16, multiple=meta["input_divisor"])
    np.testing.assert_allclose(predict_probabilities(predictor, image, **kwargs),
                               predict_probabilities(model, image, **kwargs), atol=1e-3)  # fmt: skip
    assert [p.name for p in out.parent.iterdir()] == ["run.onnx"]  # no temporary files left


def test_bad_inputs_give_one_line_and_no_file(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    with pytest.raises(UserError, match="checkpoint or run folder not found"):
        export_onnx(tmp_path / "missing.ckpt", out)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(DataError, match="cannot read checkpoint"):
        export_onnx(text, out)
    assert main(["export", str(text), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read checkpoint") and str(text) in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["notes.ckpt"]


def test_loading_something_else_than_an_exported_model_fails_clearly(tmp_path):
    import onnx

    with pytest.raises(UserError, match="ONNX model not found"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match="is not an ONNX model"):
        load_onnx(junk)
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([node], "g", [value], [onnx.helper.make_tensor_value_info("y", 1, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(DataError, match="not written by `mineralseg export`"):
        load_onnx(foreign)
