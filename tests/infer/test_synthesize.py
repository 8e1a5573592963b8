"""``mineralseg synthesize`` (map -> SEM with a pix2pix generator) and ``synthetic_pairs:``
in training, tested with tiny exact generators built here (no GAN checkpoint needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mineralseg.cli import main
from mineralseg.errors import DataError, UserError
from mineralseg.infer import synthesize as synth_mod
from mineralseg.infer.synthesize import (
    PAIRS_NAME,
    SynthesizeSettings,
    grey_from_output,
    load_generator,
    read_class_map,
    synthesize,
    synthesize_map,
)
from mineralseg.io.labels import OUTSIDE, labels_colormap, labels_description, read_labels_table
from mineralseg.model_card import ModelCard
from mineralseg.models.pix2pix import one_hot_labels

from conftest import TINY_CLASSES, TINY_COLORS

#: Generator output of each tiny class, and the grey levels they give (exact: no .5 ties).
LEVELS = (-0.6, 0.2, 0.9)
GREYS = (51, 153, 242)


class PerClassGrey(torch.nn.Module):
    """A pixel-wise generator: each class gets its level, an all-zero (outside) pixel 0.
    Remembers the largest input it was given."""

    input_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(LEVELS))
        self.largest = 0
        self.calls = 0

    def forward(self, x):
        self.largest = max(self.largest, x.numel())
        self.calls += 1
        return (x * self.levels[None, :, None, None]).sum(dim=1, keepdim=True)


def _card(**changes) -> ModelCard:
    base = dict(class_names=TINY_CLASSES, class_colors=TINY_COLORS, ignore_index=255, arch="pix2pix-test", mean=0.0,
                std=1.0, input_size=32, tile_size=32, out_size=32, sem_scale=2.0, gan_mode="synthesize",
                sem_px_per_working_px=4.0, checkpoint="gen.ckpt")
    return ModelCard(**{**base, **changes})


def _labels(shape=(40, 30), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (shape[0] // 5 + 1, shape[1] // 5 + 1)).astype(np.uint8)
    ids = np.kron(coarse, np.ones((5, 5), np.uint8))[: shape[0], : shape[1]]
    ids[:3, :] = OUTSIDE
    ids[rng.random(shape) < 0.02] = OUTSIDE
    return ids


def _expected(labels: np.ndarray, s: int) -> np.ndarray:
    up = np.kron(labels, np.ones((s, s), np.uint8))
    lut = np.zeros(256, np.uint8)
    lut[:3] = GREYS
    return lut[up]


@pytest.fixture
def fake_checkpoint(monkeypatch, tmp_path):
    """``gen.ckpt`` opens as a PerClassGrey generator with :func:`_card`; any other path goes
    to the real loader."""
    from mineralseg.evaluate import checkpoint as ckpt

    real = ckpt.load_checkpoint_model
    path = tmp_path / "gen.ckpt"
    path.write_bytes(b"stand-in")
    made = []

    def fake(p, *, map_location="cpu", trust=False, **kwargs):
        if str(p) != str(path):
            return real(p, map_location=map_location, trust=trust, **kwargs)
        made.append(PerClassGrey())
        return made[-1], _card(checkpoint=str(path))

    monkeypatch.setattr(ckpt, "load_checkpoint_model", fake)
    return path, made


def test_one_hot_leaves_outside_pixels_all_zero():
    x = one_hot_labels(torch.from_numpy(np.array([[[0, 2], [OUTSIDE, 1]]], np.uint8)), 3).numpy()
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert x[0, :, 1, 0].sum() == 0 and x[0, 2, 0, 1] == 1 and x.sum() == 3
    assert grey_from_output(np.array([-1.0, 0.0, 1.0, 1.5])).tolist() == [0, 128, 255, 255]


@pytest.mark.parametrize("input_size", [32, 64])
def test_band_by_band_equals_the_generator_on_the_whole_map(input_size):
    """Many overlapping windows, blended band by band, give what the (pixel-wise) generator
    gives on the whole upsampled map at once; the one-hot of the whole map is never built."""
    labels = _labels((60, 45))
    card = _card(input_size=input_size)
    gen = PerClassGrey()
    out = synthesize_map(gen, labels, card, batch_size=2)
    assert out.shape == (120, 90) and out.dtype == np.uint8
    calls, largest = gen.calls, gen.largest
    up = np.kron(labels, np.ones((2, 2), np.uint8))
    whole = gen(one_hot_labels(torch.from_numpy(up[None]), 3)).detach().numpy()[0, 0]
    want = grey_from_output(whole)
    want[up == OUTSIDE] = 0
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out, _expected(labels, 2))
    assert calls == 10  # 5 rows x 4 columns of windows, 2 per pass ...
    assert largest <= 2 * 3 * input_size**2 < 3 * up.size  # ... never the whole one-hot


def test_a_fractional_scale_upsamples_by_centred_nearest_neighbour():
    labels = _labels((40, 30))
    out = synthesize_map(PerClassGrey(), labels, _card(), scale=1.5)
    assert out.shape == (60, 45)
    rows, cols = (np.floor((np.arange(n) + 0.5) / 1.5).astype(int) for n in (60, 45))
    np.testing.assert_array_equal(out, _expected(labels, 1)[np.ix_(rows, cols)])


def test_synthesize_writes_the_pair_folders_and_pairs_json(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    labels = _labels()
    Image.fromarray(labels).save(tmp_path / "map_a.png")
    rgb = np.zeros(labels.shape + (3,), np.uint8)  # the same map as colours; outside as predict's map.png
    from mineralseg.infer.predict import _colour_lut

    rgb[:] = _colour_lut(_card())[labels]
    Image.fromarray(rgb).save(tmp_path / "map_b.png")
    out = tmp_path / "out"
    results = synthesize(ckpt, [tmp_path / "map_a.png", tmp_path / "map_b.png"], out, progress=False,
                         command="mineralseg synthesize test")
    assert [r.out for r in results] == [out / "map_a", out / "map_b"]
    for r in results:
        sem = tifffile.imread(r.out / "sem.tif")
        ids = tifffile.imread(r.out / "labels.tif")
        assert sem.shape == ids.shape == (80, 60) and sem.dtype == ids.dtype == np.uint8
        np.testing.assert_array_equal(sem, _expected(labels, 2))
        np.testing.assert_array_equal(ids, np.kron(labels, np.ones((2, 2), np.uint8)))
        with tifffile.TiffFile(r.out / "sem.tif") as f:
            assert f.pages[0].is_tiled and f.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        with tifffile.TiffFile(r.out / "labels.tif") as f:
            assert f.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE
        assert read_labels_table(r.out / "labels.tif")["class_names"] == list(TINY_CLASSES)
        preview = np.asarray(Image.open(r.out / "preview.png"))
        assert preview.shape[0] == 80 and preview.shape[1] > 120  # map | SEM side by side
        record = json.loads((r.out / "run.json").read_text())
        assert record["input"]["sha256"] and record["seed"] == 0 and record["versions"]
        assert record["working_grid"]["working_px_per_map_px"] == 2.0 and record["checkpoint"] == str(ckpt)
    pairs = json.loads((out / PAIRS_NAME).read_text())
    assert pairs["class_names"] == list(TINY_CLASSES) and pairs["working_grid"]["tile_size"] == 32
    assert [(p["name"], p["sem"], p["labels"]) for p in pairs["pairs"]] == [
        ("map_a", "map_a/sem.tif", "map_a/labels.tif"), ("map_b", "map_b/sem.tif", "map_b/labels.tif")]
    # A later run into the same folder adds its pair to the list.
    tifffile.imwrite(tmp_path / "map_c.tif", labels[:20])
    synthesize(ckpt, [tmp_path / "map_c.tif"], out, progress=False)
    assert [p["name"] for p in json.loads((out / PAIRS_NAME).read_text())["pairs"]] == ["map_a", "map_b", "map_c"]


def test_a_labels_tif_of_predict_is_already_on_the_working_grid(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    labels = _labels()
    card = _card()
    path = tmp_path / "labels.tif"
    from mineralseg.infer.predict import _colour_lut

    tifffile.imwrite(path, labels, photometric="palette", colormap=labels_colormap(_colour_lut(card)),
                     description=labels_description(card.class_names, card.class_colors), metadata=None)
    cmap = read_class_map(path, card)
    assert cmap.kind == "labels.tif" and cmap.default_scale == 1.0
    (r,) = synthesize(ckpt, [path], tmp_path / "o", progress=False)
    np.testing.assert_array_equal(tifffile.imread(r.out / "sem.tif"), _expected(labels, 1))
    (r,) = synthesize(ckpt, [path], tmp_path / "o", SynthesizeSettings(sem_scale=3), progress=False, overwrite=True)
    assert r.working_shape == (120, 90)
    # A map of a coarser grid (8 SEM px per pixel; the generator's working px is 4 SEM px) is upsampled by 2.
    tifffile.imwrite(path, labels, description=labels_description(card.class_names, card.class_colors,
                                                                  image_px_per_pixel=8.0), metadata=None)
    cmap = read_class_map(path, card)
    assert cmap.default_scale == 2.0 and "8 SEM px per pixel" in cmap.scale_source


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_inputs_give_one_error_line_and_no_output(fake_checkpoint, trained_run, tmp_path, capsys):
    ckpt, _ = fake_checkpoint
    labels = _labels()
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, labels, description=labels_description(("pore", "quartz", "feldspar"), TINY_COLORS),
                     metadata=None)
    unknown_ids = labels.copy()
    unknown_ids[10:12, :] = 7
    unknown_ids[20, :5] = 9
    Image.fromarray(unknown_ids).save(tmp_path / "ids.png")
    rgb = np.asarray(TINY_COLORS, np.uint8)[np.minimum(labels, 2)]
    rgb[5:7, :4] = (12, 34, 56)
    Image.fromarray(rgb).save(tmp_path / "colours.png")
    good = tmp_path / "good.png"
    Image.fromarray(labels).save(good)
    out = tmp_path / "out"
    cases = [
        ([str(ckpt), str(other)], ("its classes ['pore', 'quartz', 'feldspar'] are not the generator's "
                                   "['pore', 'quartz', 'clay']")),
        ([str(ckpt), str(tmp_path / "ids.png")], ("class ids 7 x60, 9 x5 are not classes of the generator, which "
                                                  "knows 0 pore, 1 quartz, 2 clay (and 255 outside the section)")),
        ([str(ckpt), str(tmp_path / "colours.png")], ("8 pixels have colours that are not the generator's class "
                                                      "colours: (12, 34, 56) x8")),
        ([str(trained_run), str(good)], "is a plain-unet segmentation checkpoint, not a map -> SEM generator"),
        ([str(ckpt), str(tmp_path / "missing.png")], "label map not found"),
        ([str(ckpt), str(good), "--sem-scale", "0"], "sem-scale must be a positive number"),
        ([str(ckpt), str(good), str(tmp_path / "x" / "good.png")], "same file name"),
    ]
    for args, message in cases:
        code, _, err = _cli(["synthesize", *args, "--out", str(out)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, err)
        assert not out.exists()
    code, stdout, err = _cli(["synthesize", str(ckpt), str(good), "--out", str(out)], capsys)
    assert code == 0 and "80 x 60 px SEM" in stdout and "pairs.json" in stdout, err
    code, _, err = _cli(["synthesize", str(ckpt), str(good), "--out", str(out)], capsys)
    assert code == 2 and "already exists (use --overwrite" in err


def test_a_pairs_json_of_other_classes_is_not_mixed_in(fake_checkpoint, tmp_path):
    ckpt, _ = fake_checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / PAIRS_NAME).write_text(json.dumps({"class_names": ["a", "b"], "working_grid": {"sem_scale": 2.0,
                                              "tile_size": 32}, "pairs": []}))  # fmt: skip
    Image.fromarray(_labels()).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"lists pairs of classes \['a', 'b'\].*choose another --out"):
        synthesize(ckpt, [tmp_path / "m.png"], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [PAIRS_NAME]


def test_a_failed_run_leaves_no_folder(fake_checkpoint, tmp_path, monkeypatch):
    ckpt, made = fake_checkpoint
    Image.fromarray(_labels((120, 100))).save(tmp_path / "big.png")
    real = PerClassGrey.forward

    def interrupted(self, x):
        if self.calls == 3:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(PerClassGrey, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthesize(ckpt, [tmp_path / "big.png"], tmp_path / "out", SynthesizeSettings(batch_size=1), progress=False)
    assert made[-1].calls == 3
    assert not (tmp_path / "out" / "big").exists() and not (tmp_path / "out" / PAIRS_NAME).exists()
    assert not [p for p in (tmp_path / "out").glob(".*")]


def test_load_generator_refuses_a_pix2pix_of_the_other_mode(monkeypatch):
    """The loader's own purpose check refuses it (one message, evaluate.checkpoint.check_purpose)."""
    from mineralseg.evaluate import checkpoint as ckpt

    seg = _card(gan_mode="segment", arch="pix2pix")

    def loader(p, *, purpose="segment", **kw):
        ckpt.check_purpose(seg, purpose, p)
        return PerClassGrey(), seg

    monkeypatch.setattr(ckpt, "load_checkpoint_model", loader)
    with pytest.raises(UserError, match=r"seg.ckpt is a pix2pix SEM -> map \(segment\) checkpoint, not a map -> SEM"):
        load_generator("seg.ckpt")
    assert synth_mod.SYNTHESIZE_MODE == "synthesize"


# --------------------------------------------------------------------------- synthetic_pairs: in training
def _generated_pairs(tmp_path, monkeypatch, *, classes=TINY_CLASSES, sem_scale=1.0) -> Path:
    """A synthesize output folder for the tiny dataset (64-px tiles, sem_scale 1): two maps
    of 150 x 130 px with a 20-px mount around the section, through `synthesize` itself."""
    from mineralseg.evaluate import checkpoint as ckpt

    card = _card(tile_size=64, input_size=64, sem_scale=sem_scale, class_names=classes)
    monkeypatch.setattr(ckpt, "load_checkpoint_model", lambda p, **kw: (PerClassGrey(), card))
    tmp_path.mkdir(parents=True, exist_ok=True)
    maps = []
    for k in range(2):
        ids = _labels((150, 130), seed=k)
        ids[:20], ids[-20:], ids[:, :20], ids[:, -20:] = OUTSIDE, OUTSIDE, OUTSIDE, OUTSIDE
        maps.append(tmp_path / f"map{k}.png")
        Image.fromarray(ids).save(maps[-1])
    out = tmp_path / "generated"
    synthesize(tmp_path / "gen.ckpt", maps, out, progress=False)
    return out


def test_batches_hold_the_stated_share_of_generated_tiles(tiny_dataset, tmp_path, monkeypatch):
    from mineralseg.data import SegmentationDataModule
    from mineralseg.data.augment import AugmentConfig

    pairs = _generated_pairs(tmp_path, monkeypatch)
    for share, per_batch in ((0.25, 1), (0.5, 2), (1.0, 4)):
        dm = SegmentationDataModule(tiny_dataset, batch_size=4, synthetic_pairs=pairs, synthetic_share=share,
                                    mean=0.5, std=0.25, augment=AugmentConfig(enabled=False))
        torch.manual_seed(0)
        batches = list(dm.train_dataloader())
        assert len(batches) == 4  # 16 real tiles / 4: as many steps per epoch as without the pairs
        for b in batches:
            flags = b["synthetic"]
            assert int(flags.sum()) == per_batch and b["image"].shape == (4, 1, 64, 64)
            grey = np.rint((b["image"][flags, 0].numpy() * 0.25 + 0.5) * 255).astype(int)
            mask = b["mask"][flags].numpy()
            assert set(np.unique(grey)) <= {0, *GREYS}  # crops of the generated images ...
            lut = np.full(256, 0)
            lut[:3] = GREYS
            np.testing.assert_array_equal(grey, lut[mask])  # ... aligned with their labels
            assert ((mask != 255).mean(axis=(1, 2)) >= 0.4).all()  # mostly inside the section
        real = torch.cat([b["index"][~b["synthetic"]] for b in batches]).tolist()
        assert len(set(real)) == len(real) == 16 - 4 * per_batch  # real tiles shuffled, none twice in an epoch
        if per_batch == 2:  # the next epoch goes on with the real tiles this one left out
            loader = dm.train_dataloader()
            two = [i for _ in range(2) for b in loader for i in b["index"][~b["synthetic"]].tolist()]
            assert sorted(two) == list(range(16))
    assert dm.val_dataloader().dataset is dm.datasets["val"]  # validation: real tiles only
    rare = SegmentationDataModule(tiny_dataset, batch_size=4, synthetic_pairs=pairs, synthetic_share=0.25,
                                  rare_sampler=True, augment=AugmentConfig())  # the study's augmentation
    batches = list(rare.train_dataloader())
    assert [int(b["synthetic"].sum()) for b in batches] == [1, 1, 1, 1]
    assert all(b["image"].shape == (4, 1, 64, 64) and b["mask"].shape == (4, 64, 64) for b in batches)


def test_training_with_synthetic_pairs_records_them_and_feeds_the_share(tiny_dataset, tmp_path, monkeypatch):
    from conftest import tiny_train_config

    from mineralseg.train import train
    from mineralseg.train.module import SegmentationModule

    pairs = _generated_pairs(tmp_path, monkeypatch)
    seen = []
    step = SegmentationModule.training_step

    def counting(self, batch, batch_idx):
        seen.append(int(batch["synthetic"].sum()))
        loss = step(self, batch, batch_idx)
        assert torch.isfinite(loss)
        return loss

    monkeypatch.setattr(SegmentationModule, "training_step", counting)
    cfg = tiny_train_config(tiny_dataset, tmp_path / "runs", **{"trainer.max_epochs": 1,
                                                                 "synthetic_pairs": {"path": str(pairs), "share": 0.5}})
    run = train(cfg)
    assert seen == [2, 2, 2, 2]
    record = json.loads((run / "run.json").read_text())
    used = record["synthetic_pairs"]
    from mineralseg.data.manifest import manifest_sha256

    assert used["path"] == str(pairs.resolve()) and used["share"] == 0.5 and used["generated_per_batch"] == 2
    assert used["pairs_sha256"] == manifest_sha256(pairs / PAIRS_NAME) and used["pairs"] == ["map0", "map1"]
    assert record["status"] == "finished"


def test_synthetic_pairs_config_errors_stop_before_training(tiny_dataset, tmp_path, monkeypatch):
    from conftest import tiny_train_config

    from mineralseg.errors import ConfigError
    from mineralseg.train import train
    from mineralseg.train.config import load_train_config

    pairs = _generated_pairs(tmp_path, monkeypatch)
    other = _generated_pairs(tmp_path / "o", monkeypatch, classes=("pore", "quartz", "feldspar"))
    coarse = _generated_pairs(tmp_path / "c", monkeypatch, sem_scale=2.0)
    runs = tmp_path / "runs"
    cases = [
        ({"path": str(pairs), "share": 0}, ConfigError, "share"),
        ({"path": str(pairs), "share": 1.5}, ConfigError, "share"),
        ({"path": str(pairs), "fraction": 0.5}, ConfigError, "share"),  # misspelt key: the valid ones listed
        ({"path": str(pairs), "share": 0.1}, ConfigError, "share 0.1 of a batch of 4 tiles is no tile"),
        ({"path": str(tmp_path / "nowhere")}, DataError, "synthetic_pairs: folder not found"),
        ({"path": str(tmp_path)}, DataError, "holds no pairs.json"),
        ({"path": str(other)}, DataError, (r"has classes \['pore', 'quartz', 'feldspar'\] but dataset .* has "
                                           r"\['pore', 'quartz', 'clay'\]")),
        ({"path": str(coarse)}, DataError, "sem_scale 2 but dataset .* has sem_scale 1"),
    ]
    for pairs_cfg, error, message in cases:
        with pytest.raises(error, match=message):
            train(tiny_train_config(tiny_dataset, runs, synthetic_pairs=pairs_cfg))
    assert not runs.exists() or not any(runs.iterdir())
    # A relative path is read from the config file's folder.
    (tmp_path / "train.yaml").write_text(f"dataset: {tiny_dataset}\nsynthetic_pairs: {{path: generated}}\n")
    cfg = load_train_config(tmp_path / "train.yaml")
    assert cfg.synthetic_pairs.path == pairs and cfg.synthetic_pairs.share == 0.25


def test_the_crop_fallback_is_prepares_default():
    from mineralseg.data.synthetic_pairs import FALLBACK_MIN_INSIDE
    from mineralseg.prep.config import PrepareConfig

    assert FALLBACK_MIN_INSIDE == PrepareConfig.model_fields["min_sample_fraction"].default
