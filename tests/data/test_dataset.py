"""Tests of mineralseg.data: manifest, tile dataset, augmentation, sampler, datamodule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import WeightedRandomSampler

from mineralseg.data import (
    AugmentConfig,
    SegmentationDataModule,
    TileDataset,
    build_augmentation,
    intensity_stats,
    load_manifest,
    rare_class_sampler,
    rare_class_weights,
)
from mineralseg.errors import DataError

from conftest import write_tiny_dataset


def test_manifest_reads_schema_tiles_and_splits(tiny_dataset):
    m = load_manifest(tiny_dataset)
    assert m.class_names == ["pore", "quartz", "clay"]
    assert m.ignore_index == 255 and m.out_size == 64 and m.num_classes == 3
    assert [len(m.split(s)) for s in ("train", "val", "test")] == [16, 4, 4]
    assert m.split("train")[0].image.is_file()
    freq = m.class_frequencies("train")
    assert freq.shape == (3,) and freq.sum() == pytest.approx(1.0)
    assert freq[2] < freq[0] and freq[2] < freq[1]  # clay is the rare class
    assert len(m.sha256) == 64
    assert m.schema_name == "tiny"


def test_manifest_errors_name_the_problem(tmp_path, tiny_dataset):
    with pytest.raises(DataError, match="not found"):
        load_manifest(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no manifest.json"):
        load_manifest(tmp_path)
    raw = json.loads((tiny_dataset / "manifest.json").read_text())
    raw["tiles"][3]["class_counts"] = [1, 2]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="2 class counts for 3 classes"):
        load_manifest(tmp_path)
    raw = json.loads((tiny_dataset / "manifest.json").read_text())
    raw["tiles"] = [t for t in raw["tiles"] if t["split"] != "test"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="'test' split has no tiles"):
        load_manifest(tmp_path).split("test")


def test_dataset_resizes_and_normalises(tiny_dataset):
    m = load_manifest(tiny_dataset)
    full = TileDataset(m, "val", mean=0.25, std=0.5)
    item = full[1]
    raw = np.asarray(Image.open(m.split("val")[1].image)).astype(np.float32) / 255.0
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"][0].numpy(), (raw - 0.25) / 0.5, atol=1e-6)
    assert item["mask"].dtype == torch.int64 and item["index"] == 1

    small = TileDataset(m, "val", input_size=32)
    item = small[1]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (32, 32)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 2}
    # area averaging: the 32 px image is the 2x2 mean of the 64 px one
    expected = raw.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=1 / 255)

    evaluation = TileDataset(m, "val", input_size=32, resize_mask=False)
    assert evaluation[0]["mask"].shape == (64, 64)


def test_intensity_stats_match_numpy(tiny_dataset):
    m = load_manifest(tiny_dataset)
    pixels = np.concatenate([np.asarray(Image.open(t.image)).ravel() for t in m.split("train")]) / 255.0
    mean, std = intensity_stats(m.split("train"))
    assert mean == pytest.approx(pixels.mean(), rel=1e-6)
    assert std == pytest.approx(pixels.std(), rel=1e-6)


def test_augmentation_keeps_masks_valid_and_aligned(tiny_dataset):
    m = load_manifest(tiny_dataset)
    aug = build_augmentation(AugmentConfig(shear=30, noise=0.0, brightness=0, contrast=0), ignore_index=255)
    aug.set_random_seed(0)
    ds = TileDataset(m, "train")
    saw_ignore = False
    for i in range(len(ds)):
        image, mask = ds.load(i)
        out = aug(image=image, mask=mask)
        img, msk = out["image"], out["mask"]
        assert msk.dtype == np.uint8 and msk.shape == mask.shape and img.shape == image.shape
        assert set(np.unique(msk).tolist()) <= {0, 1, 2, 255}
        saw_ignore |= bool((msk == 255).any())
        # image and mask moved together: pores stay dark, quartz stays bright
        if (msk == 0).sum() > 50:
            assert np.median(img[msk == 0]) < 100
        if (msk == 1).sum() > 50:
            assert np.median(img[msk == 1]) > 110
    assert saw_ignore  # pixels brought in from outside the tile are ignored


def test_augmentation_switches():
    assert build_augmentation(AugmentConfig(enabled=False)) is None
    off = AugmentConfig(rotate=0, shift=0, shear=0, zoom=0, hflip=False, vflip=False,
                        brightness=0, contrast=0, noise=0)
    assert build_augmentation(off) is None
    only_flip = build_augmentation(off.model_copy(update={"hflip": True}))
    assert [type(t).__name__ for t in only_flip.transforms] == ["HorizontalFlip"]


def test_rare_class_weights_known_answer():
    # freq = [0.95, 0.05]; rarity (power 1) = [1/0.95, 20]
    w = rare_class_weights([[90, 10], [100, 0], [0, 0]], power=1)
    r = np.array([1 / 0.95, 20.0])
    raw = np.array([(90 * r[0] + 10 * r[1]) / 100, r[0], 0.0])
    np.testing.assert_allclose(w, raw / raw.sum())
    np.testing.assert_allclose(rare_class_weights([[5, 1], [1, 5]], power=0), [0.5, 0.5])
    with pytest.raises(DataError, match="no labelled pixels"):
        rare_class_weights([[0, 0]])


def test_sampler_draws_rare_class_tiles_more_often(tiny_dataset):
    counts = load_manifest(tiny_dataset).class_counts("train")
    has_clay = counts[:, 2] > 0
    assert 0 < has_clay.mean() < 0.5
    sampler = rare_class_sampler(counts, power=1.0, num_samples=4000, seed=0)
    drawn = np.array(list(sampler))
    assert len(drawn) == 4000
    rare_share = has_clay[drawn].mean()
    assert rare_share > has_clay.mean() + 0.15  # uniform sampling would give has_clay.mean()


def test_datamodule_loaders(tiny_dataset):
    dm = SegmentationDataModule(tiny_dataset, input_size=32, batch_size=4, augment=AugmentConfig(),
                                rare_sampler=True, sampler_power=1.0)
    expected_mean, expected_std = intensity_stats(load_manifest(tiny_dataset).split("train"))
    assert (dm.mean, dm.std) == pytest.approx((expected_mean, expected_std))
    dm.setup("fit")
    train = dm.train_dataloader()
    assert isinstance(train.sampler, WeightedRandomSampler)
    batch = next(iter(train))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["mask"].shape == (4, 32, 32)
    assert len(train) == 4  # 16 tiles / 4, last incomplete batch dropped
    val = list(dm.val_dataloader())
    assert sum(b["image"].shape[0] for b in val) == 4


def test_dataset_rejects_wrong_tile_size(tmp_path):
    root = write_tiny_dataset(tmp_path / "ds", n_tiles=6, splits=(4, 1, 1))
    raw = json.loads((root / "manifest.json").read_text())
    raw["out_size"] = 32
    (root / "manifest.json").write_text(json.dumps(raw))
    ds = TileDataset(load_manifest(root), "train")
    with pytest.raises(DataError, match="out_size 32"):
        ds[0]
