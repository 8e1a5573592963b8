"""Shared fixtures: tiny prepared datasets in the ``mineralseg prepare`` layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep the 2 shared CPU cores for the test processes themselves.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

TINY_CLASSES = ("pore", "quartz", "clay")
TINY_COLORS = ((0, 0, 0), (255, 192, 192), (0, 128, 0))
# Grey levels of the tiny classes: pore dark; quartz and clay equally bright, clay
# told apart by a checkerboard texture (the model must use texture, not only grey).
_PORE_GREY, _BRIGHT_GREY, _TEXTURE_AMPLITUDE = 40, 170, 60


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in 0..1 (bilinear upsampling of a coarse grid)."""
    coarse = rng.random((cells + 1, cells + 1))
    x = np.linspace(0, cells, size)
    i = np.minimum(x.astype(int), cells - 1)
    f = x - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def tiny_tile(rng: np.random.Generator, size: int, *, with_clay: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: uint8 SEM-like image and class ids 0..2."""
    mask = np.where(_smooth_field(rng, size, 4) < 0.45, 0, 1).astype(np.uint8)
    if with_clay:
        mask[(_smooth_field(rng, size, 3) > 0.6) & (mask == 1)] = 2
    yy, xx = np.mgrid[:size, :size]
    checker = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)
    grey = np.where(mask == 0, _PORE_GREY, _BRIGHT_GREY).astype(np.float64)
    grey += np.where(mask == 2, _TEXTURE_AMPLITUDE * checker, 0.0)
    grey += rng.normal(0, 4, grey.shape)
    return np.clip(grey, 0, 255).astype(np.uint8), mask


def write_tiny_dataset(
    root: Path,
    *,
    n_tiles: int = 24,
    size: int = 64,
    splits: tuple[int, int, int] = (16, 4, 4),
    seed: int = 0,
    clay_every: int = 4,
    ignore_rows: int = 0,
    class_names: tuple[str, ...] = TINY_CLASSES,
) -> Path:
    """Write a prepared dataset of ``n_tiles`` tiles to ``root`` and return it.

    Clay (class 2) is rare: only every ``clay_every``-th tile holds it. With
    ``ignore_rows`` > 0 the first rows of every mask are ignore_index (255).
    """
    assert sum(splits) == n_tiles
    rng = np.random.default_rng(seed)
    split_of = ["train"] * splits[0] + ["val"] * splits[1] + ["test"] * splits[2]
    tiles = []
    for i in range(n_tiles):
        sample = f"s{i % 2}"
        image, mask = tiny_tile(rng, size, with_clay=i % clay_every == 0)
        if ignore_rows:
            mask[:ignore_rows] = 255
        tid = f"{sample}_t{i:03d}"
        img_rel, msk_rel = f"tiles/{sample}/{tid}_sem.png", f"tiles/{sample}/{tid}_mask.png"
        (root / "tiles" / sample).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / img_rel)
        Image.fromarray(mask).save(root / msk_rel)
        counts = np.bincount(mask[mask != 255].ravel(), minlength=len(class_names))[: len(class_names)]
        tiles.append({
            "id": tid, "sample": sample, "row": i // 2, "col": 0, "split": split_of[i],
            "image": img_rel, "mask": msk_rel, "class_counts": [int(c) for c in counts],
            "ignored": int((mask == 255).sum()),
        })
    manifest = {
        "version": 1,
        "schema": {"names": list(class_names), "colors": [list(c) for c in TINY_COLORS[: len(class_names)]],
                   "ignore_index": 255, "level": "groups", "palette": "tiny"},
        "tile_size": size,
        "out_size": size,
        "sem_scale": 1,
        "normalisation": {"method": "none"},
        "samples": ["s0", "s1"],
        "tiles": tiles,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 24-tile, 64 px, 3-class dataset (16 train / 4 val / 4 test); do not modify."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "dataset")


def tiny_train_config(dataset: Path, runs: Path, **changes) -> dict:
    """A training config that trains a small plain U-Net in seconds on the CPU."""
    cfg = {
        "dataset": str(dataset),
        "run": {"root": str(runs), "name": "tiny"},
        "seed": 0,
        "model": {"arch": "plain-unet", "encoder": None, "options": {"base_width": 8, "depth": 3}},
        "augment": {"enabled": False},
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 2, "batch_size": 4, "num_workers": 0, "accelerator": "cpu",
                    "devices": 1, "progress_bar": False, "log_every_n_steps": 1},
    }
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    """A finished 4-epoch training run on ``tiny_dataset``; do not modify."""
    from mineralseg.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train(tiny_train_config(tiny_dataset, runs, **{"trainer.max_epochs": 4}))
