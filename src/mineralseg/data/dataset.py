"""Torch dataset over the tiles of a prepared dataset (one split).

Each item is a dict::

    {"image": (1, S, S) float32 tensor, normalised: (uint8 / 255 - mean) / std,
     "mask":  (S, S) int64 tensor of class ids 0..C-1 or ignore_index,
     "index": int, position of the tile in the split}

where ``S`` is ``input_size``: tiles (``out_size`` in the PNG files) are resized on the
fly by :func:`mineralseg.resize.resize_tile`: the image by area averaging (shrinking) or
bilinearly (enlarging), the mask by centre-aligned nearest neighbour. With
``resize_mask=False`` the mask keeps the tile's ``out_size``
(evaluation against the full-resolution labels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mineralseg.data.manifest import DatasetManifest, Tile
from mineralseg.errors import DataError
from mineralseg.resize import resize_image, resize_mask

__all__ = ["TileDataset", "intensity_stats", "read_tile"]

# Tiles are cached in memory (uint8, after resizing) when the split needs less than
# this: 512 MiB holds ~2,000 tiles of 512 x 512 (image + mask), the study's whole set
# at 256 px.
CACHE_LIMIT_BYTES = 512 << 20
# Tiles read to estimate the intensity mean/std: enough for 4 significant digits on
# SEM tiles, and bounded so that a big dataset does not stall the start of training.
STATS_MAX_TILES = 256
# A std below this (a constant image) would blow up the normalised values.
_MIN_STD = 1e-3


def _read_png(path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from None
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and what == "tile image":
        arr = arr[..., 0] if (arr[..., 0] == arr[..., 1]).all() else cv2.cvtColor(arr[..., :3], cv2.COLOR_RGB2GRAY)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise DataError(f"{what} {path} must be a 2-D uint8 image, got shape {arr.shape} dtype {arr.dtype}")
    return arr


def read_tile(tile: Tile, *, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a tile's image and mask.

    Parameters
    ----------
    tile : Tile
    size : int, optional
        Expected side (``out_size``); a tile of another shape raises DataError.

    Returns
    -------
    image : (H, W) uint8 ndarray
    mask : (H, W) uint8 ndarray
    """
    image = _read_png(tile.image, "tile image")
    mask = _read_png(tile.mask, "tile mask")
    if image.shape != mask.shape:
        raise DataError(f"tile {tile.id!r}: image {tile.image} is {image.shape} but mask {tile.mask} is {mask.shape}")
    if size is not None and image.shape != (size, size):
        raise DataError(f"tile {tile.id!r}: {tile.image} is {image.shape}, the manifest says out_size {size}")
    return image, mask


def intensity_stats(tiles: Sequence[Tile], *, max_tiles: int = STATS_MAX_TILES) -> tuple[float, float]:
    """Mean and std of the tile images scaled to 0..1 (evenly spaced subset of the tiles).

    Returns
    -------
    mean, std : float
        Over all pixels of the tiles read; std at least 1e-3.
    """
    if not tiles:
        raise DataError("no tiles to compute the intensity statistics from")
    step = max(1, len(tiles) // max_tiles)
    total = total_sq = count = 0.0
    for tile in list(tiles)[::step][:max_tiles]:
        img = _read_png(tile.image, "tile image").astype(np.float64) / 255.0
        total += img.sum()
        total_sq += np.square(img).sum()
        count += img.size
    mean = total / count
    std = max(float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), _MIN_STD)
    return float(mean), std


class TileDataset(Dataset):
    """Tiles of one split of a :class:`DatasetManifest`.

    Parameters
    ----------
    manifest : DatasetManifest
    split : {"train", "val", "test"}
    input_size : int, optional
        Side the tiles are resized to (default: the manifest's ``out_size``).
    mean, std : float
        Normalisation of the 0..1 image (from the training split, see
        :func:`intensity_stats`).
    transform : callable, optional
        ``albumentations`` pipeline called as ``transform(image=..., mask=...)`` on the
        resized uint8 tile (see :func:`mineralseg.data.augment.build_augmentation`).
    resize_mask : bool
        False keeps the mask at ``out_size`` (only without ``transform``).
    cache : {"auto", True, False}
        Keep resized tiles in memory ("auto": when the split fits in 512 MiB).

    Notes
    -----
    The augmentation is seeded from ``torch.initial_seed()`` once per process, so it
    follows Lightning's ``seed_everything(workers=True)`` and differs between workers.
    """

    def __init__(
        self,
        manifest: DatasetManifest,
        split: str,
        *,
        input_size: int | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        transform: Any = None,
        resize_mask: bool = True,
        cache: Literal["auto"] | bool = "auto",
    ) -> None:
        if transform is not None and not resize_mask:
            raise ValueError("augmentation needs the mask resized with the image (resize_mask=True)")
        if std <= 0:
            raise DataError(f"intensity std must be > 0, got {std}")
        self.manifest = manifest
        self.split = split
        self.tiles = manifest.split(split)
        self.input_size = int(input_size or manifest.out_size)
        self.mean, self.std = float(mean), float(std)
        self.transform = transform
        self.resize_mask = resize_mask
        mask_side = self.input_size if resize_mask else manifest.out_size
        need = len(self.tiles) * (self.input_size**2 + mask_side**2)
        self.cache_enabled = bool(need <= CACHE_LIMIT_BYTES) if cache == "auto" else bool(cache)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._seeded_for: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.tiles)

    def class_counts(self) -> np.ndarray:
        """(N, C) int64 class pixel counts of the tiles (from the manifest)."""
        return np.array([t.class_counts for t in self.tiles], dtype=np.int64).reshape(len(self), -1)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized (image, mask) uint8 arrays of tile ``index``, before augmentation."""
        if index in self._cache:
            return self._cache[index]
        image, mask = read_tile(self.tiles[index], size=self.manifest.out_size)
        image = resize_image(image, self.input_size)
        if self.resize_mask:
            mask = resize_mask(mask, self.input_size)
        if self.cache_enabled:
            self._cache[index] = (image, mask)
        return image, mask

    def _seed_transform(self) -> None:
        # albumentations draws from its own generator; seed it once per process from
        # torch's seed so that runs are reproducible and workers differ.
        key = (os.getpid(), torch.initial_seed())
        if key != self._seeded_for and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(torch.initial_seed() % (2**32))
            self._seeded_for = key

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) uint8 -> (1, H, W) float32 tensor ``(image / 255 - mean) / std``."""
        x = torch.from_numpy(image.astype(np.float32)).div_(255.0)
        return x.sub_(self.mean).div_(self.std).unsqueeze(0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        return self.item(image, mask, index)

    def item(self, image: np.ndarray, mask: np.ndarray, index: int) -> dict[str, Any]:
        """The item of a resized (image, mask) uint8 pair: augmented (with ``transform``)
        and normalised, as the split's own tiles are (also used for generated tiles)."""
        if self.transform is not None:
            self._seed_transform()
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": self.normalise(image),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "index": index,
        }
