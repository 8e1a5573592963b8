"""Tests of whole-image prediction (mineralseg.infer) and evaluate(context="sample")."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mineralseg.data import load_manifest
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.evaluate.evaluate import evaluate
from mineralseg.infer import edge_weights, predict_classes, predict_probabilities, window_starts


class PixelModel(torch.nn.Module):
    """Logits from each pixel alone (a 1x1 convolution); counts the windows it sees."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, classes, 1)
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.conv(x)


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _whole(model: PixelModel, image: np.ndarray, mean: float, std: float) -> np.ndarray:
    x = torch.from_numpy((image.astype(np.float32) / 255 - mean) / std)[None, None]
    with torch.no_grad():
        return torch.softmax(model(x), 1)[0].numpy()


@pytest.mark.parametrize("length, window, step", [(100, 32, 24), (32, 32, 24), (10, 32, 24), (97, 40, 40)])
def test_window_starts_cover_the_length(length, window, step):
    starts = window_starts(length, window, step)
    covered = np.zeros(max(length, window), bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered[:length].all()
    assert starts[0] == 0 and starts[-1] == max(0, length - window)
    assert all(b - a <= step for a, b in zip(starts, starts[1:]))


def test_edge_weights_fall_to_the_edges_but_never_to_zero():
    w = edge_weights(32, 8)
    assert w.shape == (32, 32) and w.min() > 0 and w.max() == 1.0
    assert w[16, 16] == 1.0 and w[0, 0] < w[4, 4] < w[16, 16]
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    assert (edge_weights(8, 0) == 1).all()


def test_overlapping_windows_reproduce_a_pixelwise_model_exactly():
    """A model without context must give the same map however the image is cut."""
    model = PixelModel().eval()
    image = _image((70, 53))
    probs = predict_probabilities(model, image, mean=0.4, std=0.2, window=32, overlap=8, batch_size=3)
    assert probs.shape == (3, 70, 53)
    np.testing.assert_allclose(probs, _whole(model, image, 0.4, 0.2), atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    classes = predict_classes(model, image, mean=0.4, std=0.2, window=32, overlap=8)
    np.testing.assert_array_equal(classes, probs.argmax(0))


def test_an_image_smaller_than_a_window_is_padded_and_cropped_back():
    model = PixelModel().eval()
    image = _image((20, 9), seed=1)
    probs = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=8)
    assert probs.shape == (3, 20, 9) and model.windows == 1
    np.testing.assert_allclose(probs, _whole(model, image, 0.5, 0.25), atol=1e-5)


def test_windows_without_needed_pixels_are_skipped():
    model = PixelModel().eval()
    image = _image((96, 96), seed=2)
    full = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=0)
    n_all, model.windows = model.windows, 0
    needed = np.zeros(image.shape, bool)
    needed[5:20, 70:90] = True
    part = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=0, needed=needed)
    assert n_all == 9 and model.windows == 1
    np.testing.assert_allclose(part[:, needed], full[:, needed], atol=1e-6)
    assert (part[:, 40:, :40] == 0).all()  # not covered: probability 0
    with pytest.raises(ValueError, match="needed has shape"):
        predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=0, needed=needed[:10])
    with pytest.raises(ValueError, match="overlap"):
        predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=32)


def test_zoom_resizes_windows_for_the_model_and_back():
    """A model trained on tiles resized x2 sees windows resized x2; the map keeps the image's size."""
    seen = []

    class Recorder(PixelModel):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    model = Recorder().eval()
    flat = np.full((40, 40), 128, np.uint8)  # constant: resizing changes nothing
    probs = predict_probabilities(model, flat, mean=0.5, std=0.25, window=40, overlap=0, zoom=2.0)
    assert seen == [(96, 96)]  # 80 rounded up to a multiple of 32
    assert probs.shape == (3, 40, 40)
    np.testing.assert_allclose(probs, _whole(model, flat, 0.5, 0.25), atol=1e-5)


def test_flips_average_each_window_over_its_four_flips():
    class Ramp(PixelModel):  # not flip-equivariant: adds a left-to-right ramp to class 0
        def forward(self, x):
            out = super().forward(x).clone()
            out[:, 0] += torch.linspace(-2, 2, x.shape[-1])
            return out

    image = _image((32, 32), seed=3)
    model = Ramp().eval()
    got = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=0, flips=True)
    assert model.windows == 4
    x = torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.25)[None, None]
    with torch.no_grad():
        want = sum(torch.softmax(torch.flip(model(torch.flip(x, d)), d) if d else model(x), 1)
                   for d in ((), (3,), (2,), (2, 3)))[0].numpy() / 4
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=0)
    assert not np.allclose(plain, got, atol=1e-3)  # the flips did change something
    equivariant = PixelModel().eval()  # a pixelwise model ignores flips
    np.testing.assert_allclose(
        predict_probabilities(equivariant, image, mean=0.5, std=0.25, window=32, overlap=0, flips=True),
        _whole(equivariant, image, 0.5, 0.25), atol=1e-5)


def _mosaic_dataset(tiny_dataset, root):
    """Copy of the tiny dataset whose 4 test tiles sit 2 x 2 in one sample with its whole images."""
    shutil.copytree(tiny_dataset, root)
    raw = json.loads((root / "manifest.json").read_text())
    size = raw["tile_size"]
    image = np.zeros((2 * size, 2 * size), np.uint8)
    labels = np.zeros_like(image)
    test = [t for t in raw["tiles"] if t["split"] == "test"]
    for k, t in enumerate(test):
        r, c = (k // 2) * size, (k % 2) * size
        image[r : r + size, c : c + size] = np.asarray(Image.open(root / t["image"]))
        labels[r : r + size, c : c + size] = np.asarray(Image.open(root / t["mask"]))
        t.update(sample="mosaic", row=r, col=c)
    raw["samples"].append("mosaic")
    (root / "samples" / "mosaic").mkdir(parents=True)
    Image.fromarray(image).save(root / "samples" / "mosaic" / "sem_aligned.png")
    Image.fromarray(labels).save(root / "samples" / "mosaic" / "labels_aligned.png")
    (root / "manifest.json").write_text(json.dumps(raw))
    return root, image, labels


def test_evaluate_with_sample_context_predicts_each_sample_whole(trained_run, tiny_dataset, tmp_path):
    dataset, image, labels = _mosaic_dataset(tiny_dataset, tmp_path / "mosaic")
    tiles = evaluate(trained_run, dataset, out=tmp_path / "t", panels=0, progress=False)
    whole = evaluate(trained_run, dataset, out=tmp_path / "s", panels=2, progress=False, context="sample")
    assert whole["context"] == "sample" and tiles["context"] == "tile"
    assert whole["num_pixels"] == tiles["num_pixels"] == load_manifest(dataset).class_counts("test").sum()
    assert whole["window"] == 3 * 64 and whole["overlap"] == 32
    assert "panels.png" in whole["figures"]
    # The same confusion matrix from the whole mosaic predicted independently.
    model, meta = load_checkpoint_model(trained_run)
    pred = predict_classes(model, image, mean=meta["mean"], std=meta["std"], window=192, overlap=32)
    c = len(meta["class_names"])
    keep = labels != 255
    expected = np.bincount(labels[keep].astype(int) * c + pred[keep], minlength=c * c).reshape(c, c)
    np.testing.assert_array_equal(np.array(whole["confusion_matrix"]), expected)


def test_sample_context_needs_the_whole_sample_images(trained_run, tiny_dataset, tmp_path):
    with pytest.raises(DataError, match="context 'sample' needs the whole sample images"):
        evaluate(trained_run, tiny_dataset, out=tmp_path / "x", progress=False, context="sample")
    with pytest.raises(UserError, match="flips .* needs context 'sample'"):
        evaluate(trained_run, tiny_dataset, out=tmp_path / "z", progress=False, flips=True)
    with pytest.raises(UserError, match="unknown context 'tiles'; choose one of tile, sample"):
        evaluate(trained_run, tiny_dataset, out=tmp_path / "y", progress=False, context="tiles")
    assert not any((tmp_path / n).exists() for n in "xyz")
