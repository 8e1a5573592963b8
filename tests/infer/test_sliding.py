"""Tests of whole-image prediction (mineralseg.infer) and evaluate(context="sample")."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from mineralseg.data import load_manifest
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.evaluate.evaluate import evaluate
from mineralseg.infer import (
    edge_weights,
    predict_class_bands,
    predict_classes,
    predict_probabilities,
    predict_probability_bands,
    window_starts,
)

from conftest import mosaic_dataset


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


class ContextModel(PixelModel):
    """Logits from a 5x5 neighbourhood: a window's edge pixels differ from the whole image's."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__(classes)
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(1, classes, 5, padding=2)


def _reference(model, image, mean, std, window, overlap, needed=None):
    """Blend every window into one whole-image sum: what the banded version must equal."""
    h, w = image.shape
    weights = edge_weights(window, overlap)
    acc, wsum = np.zeros((3, h, w), np.float32), np.zeros((h, w), np.float32)
    for r in window_starts(h, window, window - overlap):
        for c in window_starts(w, window, window - overlap):
            if needed is not None and not needed[r : r + window, c : c + window].any():
                continue
            p = _whole(model, image[r : r + window, c : c + window], mean, std)
            acc[:, r : r + window, c : c + window] += p * weights
            wsum[r : r + window, c : c + window] += weights
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_banded_blending_equals_blending_the_whole_image(batch_size):
    """Rows leave the band once final; batches that span window rows change nothing."""
    model = ContextModel().eval()
    image = _image((150, 77), seed=4)
    want = _reference(model, image, 0.4, 0.2, 32, 12)
    got = predict_probabilities(model, image, mean=0.4, std=0.2, window=32, overlap=12, batch_size=batch_size)
    np.testing.assert_allclose(got, want, atol=1e-5)
    classes = predict_classes(model, image, mean=0.4, std=0.2, window=32, overlap=12, batch_size=batch_size)
    np.testing.assert_array_equal(classes, want.argmax(0))


def test_banded_blending_with_skipped_rows_of_windows():
    model = ContextModel().eval()
    image = _image((160, 64), seed=5)
    needed = np.zeros(image.shape, bool)
    needed[0:10, 0:10] = needed[120:130, 40:50] = True  # rows 32..~100 have no window
    want = _reference(model, image, 0.5, 0.25, 32, 8, needed=needed)
    got = predict_probabilities(model, image, mean=0.5, std=0.25, window=32, overlap=8, needed=needed, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got[:, 40:90] == 0).all()
    classes = predict_classes(model, image, mean=0.5, std=0.25, window=32, overlap=8, needed=needed)
    np.testing.assert_array_equal(classes[needed], want.argmax(0)[needed])
    assert (classes[40:90] == 0).all()
    # the bands themselves: contiguous, top to bottom, None where no window reached
    bands = [(a, b, None if p is None else p.copy())
             for a, b, p in predict_probability_bands(model, image, mean=0.5, std=0.25, window=32, overlap=8,
                                                      needed=needed, batch_size=2)]
    assert bands[0][0] == 0 and bands[-1][1] == 160
    assert all(prev[1] == nxt[0] for prev, nxt in zip(bands, bands[1:]))
    assert any(p is None for _, _, p in bands) and all(p is None or p.shape == (3, b - a, 64) for a, b, p in bands)


def test_predict_classes_writes_into_a_given_array_and_reads_any_sliceable_image(tmp_path):
    model = ContextModel().eval()
    image = _image((90, 70), seed=6)
    on_disk = np.lib.format.open_memmap(tmp_path / "sem.npy", mode="w+", dtype=np.uint8, shape=image.shape)
    on_disk[:] = image
    out = np.lib.format.open_memmap(tmp_path / "classes.npy", mode="w+", dtype=np.uint8, shape=image.shape)
    got = predict_classes(model, on_disk, mean=0.5, std=0.25, window=32, overlap=8, out=out)
    assert got is out
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "classes.npy"), _reference(model, image, 0.5, 0.25, 32, 8).argmax(0))
    with pytest.raises(ValueError, match="out has shape"):
        predict_classes(model, image, mean=0.5, std=0.25, window=32, out=np.zeros((5, 5), np.uint8))


def test_class_bands_go_straight_to_a_strip_writer(tmp_path):
    """Bands come top to bottom, each row once: a tiled TIFF written strip by strip holds the map."""
    import tifffile

    from mineralseg.io import TiffBlockWriter, open_image

    model = ContextModel().eval()
    image = _image((120, 80), seed=8)
    np.save(tmp_path / "sem.npy", image)
    lazy = open_image(tmp_path / "sem.npy")  # positioned reads, window by window
    with TiffBlockWriter(tmp_path / "classes.tif", image.shape, np.uint8, tile=(32, 32)) as writer:
        rows = 0
        for start, stop, classes in predict_class_bands(model, lazy, mean=0.5, std=0.25, window=32, overlap=8):
            assert start == rows and classes.shape == (stop - start, 80) and classes.dtype == np.uint8
            writer.write(classes)
            rows = stop
    want = _reference(model, image, 0.5, 0.25, 32, 8).argmax(0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "classes.tif"), want)


def test_predict_classes_holds_a_band_not_the_image_probabilities():
    """Peak numpy memory: the class map plus a band, against (C, H, W) float32 for probabilities."""
    import tracemalloc

    model = PixelModel().eval()
    image = _image((6000, 64), seed=7)
    full_probs = 3 * image.size * 4  # 4.6 MB
    kwargs = dict(mean=0.5, std=0.25, window=32, overlap=8, batch_size=4)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        predict_classes(model, image, **kwargs)
        banded = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        predict_probabilities(model, image, **kwargs)
        whole = tracemalloc.get_traced_memory()[1]
        # Only the first and last rows wanted, batches larger than all windows: a batch
        # must not stretch the band across the skipped rows.
        needed = np.zeros(image.shape, bool)
        needed[:5], needed[-5:] = True, True
        tracemalloc.reset_peak()
        sparse = predict_classes(model, image, **{**kwargs, "batch_size": 64}, needed=needed)
        sparse_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert whole > full_probs
    assert banded < image.size + full_probs / 10  # the uint8 map plus small change
    # the map, `needed` and its padded copy, the zero rows of the skipped part: 4 bytes a pixel
    assert sparse_peak < 4 * image.size + full_probs / 10
    np.testing.assert_array_equal(sparse[needed], predict_classes(model, image, **kwargs)[needed])


def test_evaluate_with_sample_context_predicts_each_sample_whole(trained_run, tiny_dataset, tmp_path):
    dataset, image, labels = mosaic_dataset(tiny_dataset, tmp_path / "mosaic")
    tiles = evaluate(trained_run, dataset, out=tmp_path / "t", panels=0, progress=False)
    whole = evaluate(trained_run, dataset, out=tmp_path / "s", panels=2, progress=False, context="sample")
    assert whole["context"] == "sample" and tiles["context"] == "tile"
    assert whole["num_pixels"] == tiles["num_pixels"] == load_manifest(dataset).class_counts("test").sum()
    assert whole["window"] == 3 * 64 and whole["overlap"] == 32
    assert "panels.png" in whole["figures"]
    # The same confusion matrix from the whole mosaic predicted independently.
    model, card = load_checkpoint_model(trained_run)
    pred = predict_classes(model, image, mean=card.mean, std=card.std, window=192, overlap=32)
    c = card.num_classes
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
