"""``mineralseg predict``: one way to map an image, written as it goes, never half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mineralseg.cli import main
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.evaluate.evaluate import evaluate, predict_sample
from mineralseg.infer import predict as predict_mod
from mineralseg.io.labels import OUTSIDE, read_labels_table
from mineralseg.infer.predict import (
    PredictSettings,
    output_folder,
    predict,
    predict_image,
    section_mask,
    working_scale,
)

from conftest import mosaic_dataset

NO_OUTLINE = PredictSettings(sem_px=1, outline="none")
REAL_BSE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-bse" / "BSE_Image.jpg"


def _read(path):
    return tifffile.imread(path)


@pytest.fixture(scope="module")
def mosaic(trained_run, tiny_dataset, tmp_path_factory):
    """The tiny dataset with a whole 128 x 128 test sample, and that sample as a TIFF."""
    root = tmp_path_factory.mktemp("mosaic")
    dataset, image, labels = mosaic_dataset(tiny_dataset, root / "dataset")
    tifffile.imwrite(root / "mosaic.tif", image)
    return dataset, image, labels, root / "mosaic.tif"


def test_predict_equals_evaluate_sample_context(trained_run, mosaic, tmp_path):
    dataset, image, labels, tif = mosaic
    (result,) = predict(trained_run, [tif], tmp_path / "out", NO_OUTLINE, progress=False)
    assert result.out == tmp_path / "out" / "mosaic" and result.working_shape == image.shape
    predicted = _read(result.out / "labels.tif")
    model, card = load_checkpoint_model(trained_run)
    np.testing.assert_array_equal(predicted, predict_sample(model, card, image))
    # evaluate --context sample scores the same prediction: its confusion matrix is that of labels.tif.
    scored = evaluate(trained_run, dataset, out=tmp_path / "eval", panels=0, progress=False, context="sample")
    c = card.num_classes
    keep = labels != 255
    expected = np.bincount(labels[keep].astype(int) * c + predicted[keep], minlength=c * c).reshape(c, c)
    np.testing.assert_array_equal(np.array(scored["confusion_matrix"]), expected)
    for name in ("labels.tif", "uncertainty.tif", "map.png", "overlay.png", "sem_preview.png", "mineralogy.csv",
                 "mineralogy.json", "card.json", "run.json", "report.html"):
        assert (result.out / name).is_file(), name


def test_labels_tif_round_trips_with_its_class_table(trained_run, mosaic, tmp_path):
    _, image, _, tif = mosaic
    (result,) = predict(trained_run, [tif], tmp_path, PredictSettings(sem_px=1, outline="none", pixel_size_um=0.5),
                        progress=False)
    table = read_labels_table(result.out / "labels.tif")
    _, card = load_checkpoint_model(trained_run)
    assert table["class_names"] == list(card.class_names)
    assert table["class_colors"] == [list(c) for c in card.class_colors]
    assert table["values"][str(OUTSIDE)] == "outside the section" and table["pixel_size_um"] == 0.5
    with tifffile.TiffFile(result.out / "labels.tif") as f:
        page = f.pages[0]
        assert page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.PALETTE
        colormap = page.colormap
    for i, colour in enumerate(card.class_colors):  # viewers show each class in its colour
        assert [int(v) // 257 for v in colormap[:, i]] == list(colour)
    with pytest.raises(DataError, match="not a labels.tif written by"):
        read_labels_table(tif)


def test_mineralogy_sums_to_100_and_equals_a_bincount_of_the_labels(trained_run, mosaic, tmp_path):
    _, image, _, tif = mosaic
    (result,) = predict(trained_run, [tif], tmp_path, PredictSettings(sem_px=1, outline="none", pixel_size_um=2.0),
                        progress=False)
    labels = _read(result.out / "labels.tif")
    m = json.loads((result.out / "mineralogy.json").read_text())
    counts = np.bincount(labels[labels != OUTSIDE].ravel(), minlength=3)
    assert [r["pixels"] for r in m["classes"]] == counts.tolist()
    pixels = list(result.mineralogy.pixels)
    assert pixels == counts.tolist() and result.mineralogy.section_pixels == labels.size
    assert sum(result.mineralogy.area_percent) == pytest.approx(100.0)
    assert list(result.mineralogy.area_percent) == pytest.approx((100 * counts / counts.sum()).tolist())
    assert result.mineralogy.porosity_percent == pytest.approx(100 * counts[0] / counts.sum())  # class "pore"
    assert result.mineralogy.area_mm2[1] == pytest.approx(counts[1] * (2.0e-3) ** 2)
    unc = _read(result.out / "uncertainty.tif")
    assert unc.dtype == np.uint8 and unc.shape == labels.shape
    assert result.mineralogy.uncertain_pixels == int((unc > 127.5).sum())


def test_a_bigger_image_is_resampled_to_the_working_grid_on_disk(trained_run, mosaic, tmp_path, monkeypatch):
    """Twice the resolution with --sem-px 2 gives the same map; a working image above the
    in-memory limit goes through a zarr array and gives the same map too."""
    _, image, _, tif = mosaic
    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.kron(image, np.ones((2, 2), np.uint8)), tile=(64, 64))
    monkeypatch.setattr(predict_mod, "IN_MEMORY_MAX_PIXELS", 1000)
    monkeypatch.setattr(predict_mod, "PREVIEW_SIDE", 64)
    (small,) = predict(trained_run, [tif], tmp_path / "a", NO_OUTLINE, progress=False)
    (large,) = predict(trained_run, [big], tmp_path / "b", PredictSettings(sem_px=2, outline="none"), progress=False)
    np.testing.assert_array_equal(_read(large.out / "labels.tif"), _read(small.out / "labels.tif"))
    assert not (large.out / "_working.zarr").exists()


def test_16_bit_and_float_images_map_like_the_8_bit_one(tmp_path):
    """With percentile normalisation, the bit depth of the input does not matter."""
    from mineralseg.model_card import ModelCard

    class Threshold(torch.nn.Module):  # class 1 where the normalised grey is above its mean
        def forward(self, x):
            return torch.cat([-x, x], dim=1) * 10

    card = ModelCard(class_names=("pore", "quartz"), class_colors=((0, 0, 0), (255, 192, 192)), ignore_index=255,
                     arch="test", mean=0.5, std=0.25, input_size=32, tile_size=32, out_size=32, sem_scale=1,
                     sem_normalisation={"method": "percentile", "low": 0.5, "high": 99.5, "drift": False},
                     sem_px_per_working_px=1.0)
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(128, 40, (96, 80)), 0, 255).astype(np.uint8)
    maps = {}
    for name, img in (("u8", grey), ("u16", grey.astype(np.uint16) * 257 + 11), ("f32", grey.astype(np.float32) / 255)):
        tifffile.imwrite(tmp_path / f"{name}.tif", img)
        r = predict_image(Threshold(), card, tmp_path / f"{name}.tif", tmp_path / name, PredictSettings(outline="none"),
                          progress=False)
        maps[name] = _read(r.out / "labels.tif")
    assert (maps["u16"] == maps["u8"]).mean() > 0.999 and (maps["f32"] == maps["u8"]).mean() > 0.999
    with pytest.raises(UserError, match="expects 8-bit grey levels that are already normalised"):
        predict_image(Threshold(), card, tmp_path / "u16.tif", tmp_path / "n", PredictSettings(normalise="none"))
    assert not (tmp_path / "n").exists()


def test_section_outline_auto_keeps_rock_from_edge_to_edge():
    rng = np.random.default_rng(1)
    rock = np.clip(rng.normal(150, 30, (200, 200)), 0, 255)
    rock[rng.random((200, 200)) < 0.1] = 20  # pores
    mask, how = section_mask(rock, "auto")
    assert mask.all() and how.startswith("whole image")
    mounted = np.full((200, 200), 15.0)
    yy, xx = np.mgrid[:200, :200]
    disk = (yy - 100) ** 2 + (xx - 100) ** 2 < 70**2
    mounted[disk] = rock[disk]
    mask, how = section_mask(mounted, "auto")
    assert abs(int(mask.sum()) - int(disk.sum())) < 0.03 * disk.sum() and how.startswith("section outline")
    assert section_mask(mounted, "none")[0].all()
    with pytest.raises(DataError, match="outline: sem: .* use --outline none"):
        section_mask(np.full((50, 50), 7.0), "sem")


def test_outside_the_section_is_left_out_of_the_mineralogy(trained_run, mosaic, tmp_path):
    _, image, _, _ = mosaic
    framed = np.full((256, 256), 5, np.uint8)
    framed[64:192, 64:192] = np.maximum(image, 100)  # a section clearly brighter than its mount
    path = tmp_path / "framed.png"
    Image.fromarray(framed).save(path)
    (result,) = predict(trained_run, [path], tmp_path / "o", PredictSettings(sem_px=1, outline="sem"), progress=False)
    labels = _read(result.out / "labels.tif")
    assert (labels[:40] == OUTSIDE).all() and (labels[:, :40] == OUTSIDE).all()
    assert (labels[64:192, 64:192] != OUTSIDE).mean() > 0.97
    assert result.mineralogy.section_pixels == int((labels != OUTSIDE).sum())


def test_working_scale_comes_from_options_or_card(trained_run):
    _, card = load_checkpoint_model(trained_run)
    assert card.sem_px_per_working_px is None  # the tiny dataset has no run.json
    with pytest.raises(UserError, match="pass --sem-px F"):
        working_scale(card)
    assert working_scale(card, sem_px=3)[0] == 3
    known = card.replace(sem_px_per_working_px=4.0, sem_pixel_size_um=0.25)
    assert working_scale(known)[0] == 4.0
    assert working_scale(known, pixel_size_um=0.5)[0] == pytest.approx(2.0)  # a coarser image needs less downscaling


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_input_gives_one_error_line_and_no_output(trained_run, mosaic, tmp_path, capsys):
    _, _, _, tif = mosaic
    out = tmp_path / "out"
    not_ckpt = tmp_path / "model.ckpt"
    not_ckpt.write_text("hello")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    cases = [
        ([str(not_ckpt), str(tif), "--out", str(out), "--sem-px", "1"], "cannot read checkpoint"),
        ([str(trained_run), str(tmp_path / "missing.tif"), "--out", str(out), "--sem-px", "1"], "image not found"),
        ([str(trained_run), str(not_image), "--out", str(out), "--sem-px", "1"], "notes.png"),
        ([str(trained_run), str(tif), "--out", str(out)], "pass --sem-px"),
        ([str(trained_run), str(tif), "--out", str(out), "--sem-px", "0.5"], "coarser than the model's working grid"),
        ([str(trained_run), str(tif), "--out", str(out), "--sem-px", "1", "--outline", "round"], "unknown outline"),
    ]
    for args, message in cases:
        code, _, err = _cli(["predict", *args], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, err)
        assert not (out / "mosaic").exists() and not (out / "notes").exists()
    code, stdout, err = _cli(["predict", str(trained_run), str(tif), "--out", str(out), "--sem-px", "1",
                              "--outline", "none"], capsys)
    assert code == 0 and "report:" in stdout and "porosity" in stdout
    code, _, err = _cli(["predict", str(trained_run), str(tif), "--out", str(out), "--sem-px", "1"], capsys)
    assert code == 2 and "already exists (use --overwrite" in err


def test_an_interrupted_or_failed_run_leaves_nothing_that_looks_complete(trained_run, mosaic, tmp_path, monkeypatch):
    _, image, _, _ = mosaic
    tif = tmp_path / "two_by_two.tif"  # 2 x 2 windows: the first band is written before the interrupt
    tifffile.imwrite(tif, np.kron(image, np.ones((2, 2), np.uint8)))
    model, card = load_checkpoint_model(trained_run)
    calls = {"n": 0}

    def interrupting(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return model(x)

    with pytest.raises(KeyboardInterrupt):
        predict_image(interrupting, card, tif, tmp_path / "a", NO_OUTLINE, progress=False)
    assert calls["n"] == 4
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a*"))

    import errno

    def full_disk(self, strip):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mineralseg.io.writers.TiffBlockWriter.write", full_disk)
    with pytest.raises(UserError, match="no space left on the device while writing"):
        predict_image(model, card, tif, tmp_path / "b", NO_OUTLINE, progress=False)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))


def test_output_folders_are_named_after_the_images(tmp_path):
    assert output_folder(tmp_path, "/x/SEM_01.ome.tif") == tmp_path / "SEM_01"
    assert output_folder(tmp_path, "a/b.raw") == tmp_path / "b"
    with pytest.raises(UserError, match="same file name"):
        predict("unused", [tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif"], tmp_path)
    shutil.rmtree(tmp_path)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not REAL_BSE.is_file(), reason="../shared/data/real-bse is absent")
def test_a_real_bse_jpeg_from_another_instrument_goes_through(trained_run, tmp_path):
    """The real BSE image (an RGB JPEG with three equal channels) is mapped, and its report
    says which data the model was trained on."""
    _, card = load_checkpoint_model(trained_run)
    (result,) = predict(trained_run, [REAL_BSE], tmp_path, PredictSettings(sem_px=1), progress=False)
    labels = _read(result.out / "labels.tif")
    assert labels.shape == (751, 1000) and set(np.unique(labels)) <= {0, 1, 2, OUTSIDE}
    assert sum(result.mineralogy.area_percent) == pytest.approx(100.0)
    html = (result.out / "report.html").read_text()
    assert "trained on" in html and card.dataset in html and "BSE_Image.jpg" in html


def test_the_report_renders_in_chromium(trained_run, mosaic, chromium, tmp_path):
    """Every image of report.html loads in a real browser, nothing is fetched from outside,
    and the mineralogy table and the model card are there."""
    _, _, _, tif = mosaic
    command = f"mineralseg predict {trained_run} {tif} --out {tmp_path} --sem-px 1 --pixel-size 0.5"
    (result,) = predict(trained_run, [tif], tmp_path, PredictSettings(sem_px=1, pixel_size_um=0.5), progress=False,
                        command=command)
    found, dom = chromium.probe(result.out / "report.html")
    assert found["violations"] == []
    assert len(found["images"]) >= 5  # SEM, map, overlay, uncertainty, bar chart
    assert all(i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0 for i in found["images"])
    for text in ("Modal mineralogy", "area mm²", "Model card", "quartz", "porosity", "--pixel-size 0.5"):
        assert text in dom, text
    assert dom.count("<table") >= 3


def test_onnx_runtime_maps_like_pytorch(trained_run, mosaic, tmp_path):
    """--engine onnxruntime (exported on the fly) and an .onnx file from `mineralseg export`
    give the PyTorch map (probabilities within 1e-3, so at most a few tie pixels differ)."""
    from mineralseg.infer.onnx import export_onnx

    _, _, _, tif = mosaic
    (torch_run,) = predict(trained_run, [tif], tmp_path / "t", NO_OUTLINE, progress=False)
    (ort_run,) = predict(trained_run, [tif], tmp_path / "o", PredictSettings(sem_px=1, outline="none",
                                                                            engine="onnxruntime"), progress=False)
    onnx = export_onnx(trained_run, tmp_path / "model.onnx")
    (file_run,) = predict(onnx, [tif], tmp_path / "f", NO_OUTLINE, progress=False)
    want = _read(torch_run.out / "labels.tif")
    for run in (ort_run, file_run):
        assert (_read(run.out / "labels.tif") == want).mean() > 0.999
    with pytest.raises(UserError, match="unknown engine 'tensorrt'"):
        PredictSettings(engine="tensorrt")


@pytest.mark.slow
def test_a_dask_cluster_of_two_workers_maps_like_the_local_run(trained_run, mosaic, tmp_path):
    """--scheduler local:2: the image is cut on the window grid, so the labels are identical."""
    _, image, _, _ = mosaic
    tif = tmp_path / "big.tif"  # 13 rows of windows: two tasks of 8 rows share the work
    tifffile.imwrite(tif, np.kron(image, np.ones((16, 16), np.uint8)))
    (local,) = predict(trained_run, [tif], tmp_path / "local", NO_OUTLINE, progress=False)
    settings = PredictSettings(sem_px=1, outline="none", scheduler="local:2")
    (cluster,) = predict(trained_run, [tif], tmp_path / "cluster", settings, progress=False)
    np.testing.assert_array_equal(_read(cluster.out / "labels.tif"), _read(local.out / "labels.tif"))
    assert cluster.mineralogy.pixels == local.mineralogy.pixels
    assert not (cluster.out / "uncertainty.tif").exists() and cluster.mineralogy.uncertain_pixels is None
    assert (cluster.out / "report.html").is_file() and not (cluster.out / "_labels.zarr").exists()
    with pytest.raises(UserError, match="--probabilities is not available with --scheduler"):
        PredictSettings(scheduler="local:2", probabilities=True)


def test_grey_levels_are_mapped_as_the_training_data_were(tmp_path):
    """A user scale (none + scale) and pooled dataset levels are fixed mappings from the card;
    per-sample percentiles come from the image itself."""
    from mineralseg.model_card import ModelCard

    class Identity(torch.nn.Module):  # class 1 where the normalised grey is above mid-grey
        def forward(self, x):
            return torch.cat([-x, x], dim=1) * 10

    base = dict(class_names=("pore", "quartz"), class_colors=((0, 0, 0), (255, 192, 192)), ignore_index=255,
                arch="test", mean=0.5, std=0.25, input_size=32, tile_size=32, out_size=32, sem_scale=1,
                sem_px_per_working_px=1.0)
    ramp = np.tile(np.linspace(0, 4000, 64), (48, 1)).astype(np.uint16)  # 0 .. 4000 of a 16-bit range
    tifffile.imwrite(tmp_path / "ramp.tif", ramp)
    cases = {
        "scale": ({"method": "none", "scale": [0, 65535]}, 0.0),  # all below mid-grey: class 0 everywhere
        "pooled": ({"method": "percentile", "scope": "dataset", "dataset": {"low_value": 0.0, "high_value": 2000.0,  # x > 1000
                                                                           "drift": None}}, 0.75),
        "own": ({"method": "percentile", "low": 0, "high": 100, "drift": False}, 0.5),
    }
    for name, (norm, quartz) in cases.items():
        card = ModelCard(sem_normalisation=norm, **base)
        r = predict_image(Identity(), card, tmp_path / "ramp.tif", tmp_path / name, PredictSettings(outline="none"),
                          progress=False)
        assert r.mineralogy.area_percent[1] == pytest.approx(100 * quartz, abs=4), name
