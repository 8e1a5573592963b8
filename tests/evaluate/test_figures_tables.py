"""Report figures (valid, non-trivial PNGs in the schema colours) and result tables."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.figures import (
    plot_confusion,
    plot_lr_schedule,
    plot_panels,
    plot_training_curves,
)
from mineralseg.evaluate.tables import format_count, format_duration, results_table, write_results

NAMES = ["pores_background", "quartz", "albite", "clay_accessories"]
COLORS = np.array([[255, 255, 255], [255, 192, 192], [0, 255, 255], [128, 128, 0]], dtype=np.uint8)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5_000):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > min_bytes
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]  # atomic: no leftovers
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def _has_color(rgb, color, min_pixels=50):
    return int(np.all(rgb == np.asarray(color), axis=-1).sum()) >= min_pixels


def test_plot_panels_draws_class_colors_and_ignore(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 32, 32), dtype=np.uint8)
    truths = np.zeros((2, 32, 32), dtype=np.uint8)
    truths[:, :, 8:16], truths[:, :, 16:24], truths[:, :, 24:] = 1, 2, 3
    truths[0, :4] = 255  # ignored strip
    preds = np.where(truths == 255, 0, truths).astype(np.uint8)
    preds[1] = 2  # second row: albite everywhere, no quartz predicted there
    out = plot_panels(images, truths, preds, NAMES, COLORS, tmp_path / "panels.png",
                      row_labels=["tile a", "tile b"])
    assert out == tmp_path / "panels.png"
    rgb = _check_png(out)
    for color in COLORS[1:]:  # quartz, albite, clay appear as drawn map colours
        assert _has_color(rgb, color)
    assert _has_color(rgb, (128, 128, 128))  # ignore colour: grey is free in this palette


def test_plot_panels_extra_columns(tmp_path):
    """An extra class-map column (a second reference) is drawn, wider figure, its colour shows."""
    img = np.random.default_rng(1).integers(0, 256, size=(32, 32), dtype=np.uint8)
    zeros = np.zeros((32, 32), np.uint8)  # truth and prediction: pores only
    other = np.full((32, 32), 3, np.uint8)  # the extra column alone holds clay
    plain = _check_png(plot_panels([img], [zeros], [zeros], NAMES, COLORS, tmp_path / "a.png"))
    wide = _check_png(plot_panels([img], [zeros], [zeros], NAMES, COLORS, tmp_path / "b.png",
                                  extra=[("generator truth", [other])],
                                  titles=("SEM", "labels", "U-Net", "overlay")))
    assert wide.shape[1] > plain.shape[1] * 1.15
    big = 5_000  # a drawn map column, not just the legend patch
    assert _has_color(wide, COLORS[3], big) and not _has_color(plain, COLORS[3], big)
    with pytest.raises(DataError, match="extra column"):
        plot_panels([img], [zeros], [zeros], NAMES, COLORS, tmp_path / "c.png", extra=[("x", [])])
    with pytest.raises(DataError, match="generator truth"):
        plot_panels([img], [zeros], [zeros], NAMES, COLORS, tmp_path / "c.png",
                    extra=[("generator truth", [other[:5]])])


def test_plot_panels_rejects_mismatches(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(DataError, match="same \\(H, W\\)"):
        plot_panels([img], [np.zeros((8, 9), np.uint8)], [img], NAMES, COLORS, tmp_path / "x.png")
    with pytest.raises(DataError, match="class id 7"):
        plot_panels([img], [np.full((8, 8), 7, np.uint8)], [img], NAMES, COLORS, tmp_path / "x.png")
    with pytest.raises(UserError, match=r"class_colors must be \(4, 3\)"):
        plot_panels([img], [img], [img], NAMES, COLORS[:3], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("normalize", ["true", "pred", "all", None])
def test_plot_confusion(tmp_path, normalize):
    cm = np.array([[50, 3, 0, 1], [4, 30, 2, 0], [0, 5, 12, 3], [0, 0, 0, 0]])  # empty last row
    _check_png(plot_confusion(cm, NAMES, tmp_path / "cm.png", normalize=normalize))


def test_plot_confusion_rejects_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="does not fit 4 classes"):
        plot_confusion(np.eye(3), NAMES, tmp_path / "cm.png")
    with pytest.raises(UserError, match="normalize must be"):
        plot_confusion(np.eye(4), NAMES, tmp_path / "cm.png", normalize="rows")


def _lightning_csv(path):
    # what CSVLogger writes: each row fills only the columns logged at that step
    lines = ["epoch,step,lr-Adam,train_loss,val_loss,val_miou"]
    for epoch in range(4):
        for k in range(5):
            step = epoch * 5 + k
            lines.append(f"{epoch},{step},{1e-3 * 0.5 ** epoch},{1.0 / (step + 1)},,")
        lines.append(f"{epoch},{epoch * 5 + 4},,,{0.8 - 0.1 * epoch},{0.3 + 0.1 * epoch}")
    lines.append(",,,,,")  # an empty trailing row
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plot_training_curves_from_csv_and_mapping(tmp_path):
    csv_path = _lightning_csv(tmp_path / "metrics.csv")
    _check_png(plot_training_curves(csv_path, tmp_path / "curves.png"))
    # only some columns, from a mapping with NaN rows
    out = plot_training_curves({"epoch": [0, 1, 2], "val_miou": [0.2, float("nan"), 0.4]},
                               tmp_path / "curves2.png")
    _check_png(out, min_bytes=3_000)


def test_plot_training_curves_without_metrics_raises(tmp_path):
    with pytest.raises(DataError, match="no numeric metric columns"):
        plot_training_curves({"epoch": [0, 1], "note": ["a", "b"]}, tmp_path / "c.png")
    with pytest.raises(DataError, match="metrics file not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "c.png")


def test_plot_lr_schedule(tmp_path):
    steps = np.arange(200)
    lrs = 1e-3 * 0.5 * (1 + np.cos(np.pi * (steps % 50) / 50))  # cosine with restarts
    _check_png(plot_lr_schedule(steps, lrs, tmp_path / "lr.png"))
    with pytest.raises(UserError, match="equal length"):
        plot_lr_schedule([0, 1], [1e-3], tmp_path / "lr2.png")
    _check_png(plot_lr_schedule(steps, 1e-3 * 0.9 ** steps, tmp_path / "lr_log.png", log=True))
    with pytest.raises(UserError, match="rates > 0"):
        plot_lr_schedule([0, 1], [1e-3, 0.0], tmp_path / "lr3.png", log=True)


def test_number_formats():
    assert [format_duration(s) for s in (45, 750, 7512)] == ["45s", "12m 30s", "2h 05m"]
    assert [format_count(n) for n in (812, 512_000, 14_328_000, 999_960, 1.2e9)] == [
        "812", "512.0K", "14.3M", "1.0M", "1.2B"]


ROWS = [
    {"model": "Unet + resnet18", "iou": {"pores_background": 0.62, "quartz": 0.55, "albite": 0.41,
                                         "clay_accessories": 0.42},
     "train_time_s": 750, "params": 14_328_000},
    {"model": "Unet + inceptionv3", "iou": [0.63, 0.58, 0.45, 0.44], "miou": 0.5251,
     "train_time_s": 1800.4, "params": 29_900_000},
    {"model": "ResUnet | v2", "iou": {"pores_background": 0.62, "quartz": 0.56, "albite": 0.45,
                                      "clay_accessories": None},
     "train_time_s": None, "params": 8_200_000},
]


def _md_cells(markdown):
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines[2:]]


def test_results_table_markdown_format_and_bold():
    md, _ = results_table(ROWS, NAMES)
    header = md.splitlines()[0]
    assert header == ("| Model | pores_background | quartz | albite | clay_accessories | mean IoU"
                      " | train time | parameters |")
    cells = _md_cells(md)
    assert cells[0] == ["Unet + resnet18", "0.62", "0.55", "0.41", "0.42", "0.50",
                        "**12m 30s**", "14.3M"]
    assert cells[1] == ["Unet + inceptionv3", "**0.63**", "**0.58**", "**0.45**", "**0.44**",
                        "0.53", "30m 00s", "29.9M"]
    # albite ties at 0.45 -> bold in both rows; missing IoU and time show "-";
    # the mean IoU of the last row is over its 3 defined classes: 1.63 / 3 = 0.543
    assert cells[2] == ["ResUnet \\| v2", "0.62", "0.56", "**0.45**", "-", "**0.54**", "-",
                        "**8.2M**"]


def test_results_table_csv_parses_back_to_the_numbers():
    _, text = results_table(ROWS, NAMES)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in parsed] == [r["model"] for r in ROWS]
    assert float(parsed[0]["iou_quartz"]) == 0.55
    assert [float(parsed[1][f"iou_{n}"]) for n in NAMES] == ROWS[1]["iou"]
    assert float(parsed[1]["miou"]) == 0.5251
    assert float(parsed[0]["miou"]) == sum([0.62, 0.55, 0.41, 0.42]) / 4  # computed when absent
    assert float(parsed[2]["miou"]) == sum([0.62, 0.56, 0.45]) / 3  # undefined class left out
    assert [r["train_time_s"] for r in parsed] == ["750.0", "1800.4", ""]
    assert [int(r["params"]) for r in parsed] == [14_328_000, 29_900_000, 8_200_000]
    assert parsed[2]["iou_clay_accessories"] == ""


def test_results_table_options_and_errors():
    md, text = results_table(ROWS[:2], NAMES, columns=("model", "miou", "pixel_accuracy"),
                             decimals=3)
    assert _md_cells(md) == [["Unet + resnet18", "0.500", "-"], ["Unet + inceptionv3", "**0.525**", "-"]]
    assert text.splitlines()[0] == "model,miou,pixel_accuracy"
    # a single value in a column is not bolded
    md, _ = results_table([{"model": "a", "params": 5}, {"model": "b"}], ["q"], columns=("model", "params"))
    assert "**" not in md.split("\n\n")[0]
    with pytest.raises(UserError, match="unknown results column 'flops'"):
        results_table(ROWS, NAMES, columns=("model", "flops"))
    with pytest.raises(UserError, match="row 0 needs a 'model'"):
        results_table([{"iou": [0.1]}], ["q"])
    with pytest.raises(UserError, match="2 IoU values for 4 classes"):
        results_table([{"model": "m", "iou": [0.1, 0.2]}], NAMES)
    with pytest.raises(UserError, match="params must be a number"):
        results_table([{"model": "m", "params": "many"}], NAMES)


def test_write_results(tmp_path):
    md_path, csv_path = write_results(ROWS, NAMES, tmp_path / "out")
    md, text = results_table(ROWS, NAMES)
    assert md_path.read_text() == md and csv_path.read_text() == text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.md"]
