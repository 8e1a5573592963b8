"""Generated SEM/label pairs as extra training data (``synthetic_pairs:`` in a train config).

``mineralseg synthesize`` writes pairs of a generated SEM-like image (``sem.tif``) and its
class ids on the same working grid (``labels.tif``), listed in ``pairs.json``. Training
draws a fixed share of every batch from them: random ``tile_size`` crops of the pairs,
mostly inside the section (the dataset's ``min_sample_fraction`` rule of ``prepare``),
resized to ``input_size`` and augmented exactly as the dataset's own tiles
(:class:`GeneratedTileDataset`); :class:`MixedBatchSampler` puts ``round(share *
batch_size)`` of them into each batch. Validation and test see real tiles only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mineralseg.data.dataset import TileDataset
from mineralseg.resize import resize_tile
from mineralseg.data.manifest import DatasetManifest, manifest_sha256
from mineralseg.errors import ConfigError, DataError
from mineralseg.io.labels import OUTSIDE

__all__ = ["GeneratedPair", "GeneratedTileDataset", "MixedBatchSampler", "MixedDataset", "PairSet",
           "dataset_min_sample_fraction", "generated_per_batch", "load_pairs"]

#: The list of pairs in a ``mineralseg synthesize`` output folder.
PAIRS_NAME = "pairs.json"
#: Crop corners are looked for on a grid of this fraction of the tile side (then jittered
#: within one grid step).
_GRID_PER_TILE = 4


@dataclass(frozen=True)
class GeneratedPair:
    """One generated pair: ``sem`` (uint8 SEM-like image) and ``labels`` (class ids, 255
    outside), both ``shape`` on the working grid."""

    name: str
    sem: Path
    labels: Path
    shape: tuple[int, int]


@dataclass(frozen=True)
class PairSet:
    """The pairs of a ``synthesize`` output folder (:func:`load_pairs`).

    Attributes
    ----------
    root : Path
    class_names : list of str
    sem_scale, tile_size : float, int
        The generator's working grid (working px per label px; tile side).
    pairs : list of GeneratedPair
    sha256 : str
        Of ``pairs.json`` (identifies the pairs in run records).
    """

    root: Path
    class_names: list[str]
    sem_scale: float
    tile_size: int
    pairs: list[GeneratedPair]
    sha256: str

    def record(self, share: float) -> dict[str, Any]:
        """What a training run's ``run.json`` keeps about the pairs it used."""
        return {"path": str(self.root), "pairs_sha256": self.sha256, "share": share,
                "pairs": [p.name for p in self.pairs]}


def load_pairs(path: str | os.PathLike, manifest: DatasetManifest) -> PairSet:
    """Read ``PATH/pairs.json`` and check the pairs fit a dataset.

    Parameters
    ----------
    path : path-like
        A folder written by ``mineralseg synthesize``.
    manifest : DatasetManifest
        The training dataset.

    Returns
    -------
    PairSet

    Raises
    ------
    DataError
        Missing folder, ``pairs.json`` or pair files; class names other than the
        dataset's (both lists named); another working grid (``sem_scale``) than the
        dataset's; a pair smaller than one tile.
    """
    root = Path(path)
    file = root / PAIRS_NAME
    if not root.is_dir():
        raise DataError(f"synthetic_pairs: folder not found: {root}")
    if not file.is_file():
        raise DataError(f"synthetic_pairs: {root} holds no {PAIRS_NAME}; give a folder written by "
                        "`mineralseg synthesize`")
    try:
        raw = json.loads(file.read_text())
        names = [str(n) for n in raw["class_names"]]
        grid = dict(raw["working_grid"])
        entries = list(raw["pairs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"synthetic_pairs: cannot read {file}: {exc!r}") from None
    if names != list(manifest.class_names):
        raise DataError(f"synthetic_pairs: {file} has classes {names} but dataset {manifest.root} has "
                        f"{list(manifest.class_names)}; generate pairs with a generator trained on this class schema")
    sem_scale = float(grid.get("sem_scale", manifest.sem_scale))
    if not math.isclose(sem_scale, float(manifest.sem_scale), rel_tol=1e-6):
        raise DataError(f"synthetic_pairs: {file} was generated on a working grid of sem_scale {sem_scale:g} but "
                        f"dataset {manifest.root} has sem_scale {manifest.sem_scale:g}; crops would be at another "
                        "scale than the tiles")
    if not entries:
        raise DataError(f"synthetic_pairs: {file} lists no pairs")
    pairs = []
    for e in entries:
        pair = GeneratedPair(str(e["name"]), root / e["sem"], root / e["labels"],
                             (int(e["shape"][0]), int(e["shape"][1])))
        for f in (pair.sem, pair.labels):
            if not f.is_file():
                raise DataError(f"synthetic_pairs: {file} lists {f}, which is missing")
        if min(pair.shape) < manifest.tile_size:
            raise DataError(f"synthetic_pairs: pair {pair.name!r} ({pair.shape[0]} x {pair.shape[1]} px) is smaller "
                            f"than one tile of {manifest.tile_size} px")
        pairs.append(pair)
    return PairSet(root.resolve(), names, sem_scale, int(grid.get("tile_size", manifest.tile_size)), pairs,
                   manifest_sha256(file))


#: Share of a crop inside the section when the dataset has no ``prepare`` record (a
#: dataset written by other means): half, as ``prepare``'s own default. (``data`` sits
#: beside ``prep`` in the layers, so it does not read prep's config model.)
FALLBACK_MIN_INSIDE = 0.5


def dataset_min_sample_fraction(root: str | os.PathLike) -> float:
    """``min_sample_fraction`` the dataset was prepared with (its ``run.json``), else
    :data:`FALLBACK_MIN_INSIDE`."""
    try:
        value = json.loads((Path(root) / "run.json").read_text())["config"]["min_sample_fraction"]
        return float(value)
    except (OSError, ValueError, KeyError, TypeError):
        return FALLBACK_MIN_INSIDE


def _inside_blocks(labels: Any, step: int) -> np.ndarray:
    """(ceil(H / step), ceil(W / step)) int64 counts of inside pixels per block, read in strips."""
    h, w = (int(n) for n in labels.shape)
    nb_c = -(-w // step)
    out = np.zeros((-(-h // step), nb_c), np.int64)
    for i, r0 in enumerate(range(0, h, step)):
        inside = np.asarray(labels[r0 : r0 + step]) != OUTSIDE
        padded = np.zeros((inside.shape[0], nb_c * step), bool)
        padded[:, :w] = inside
        out[i] = padded.reshape(inside.shape[0], nb_c, step).sum(axis=(0, 2))
    return out


class GeneratedTileDataset(Dataset):
    """Random tile crops of generated pairs, prepared like the dataset's own tiles.

    Item ``i`` is a crop near the ``i``-th candidate corner (corners on a grid of a quarter
    tile whose crop has at least ``min_fraction`` of its pixels inside the section),
    jittered by up to one grid step with torch's generator (seeded by Lightning per
    worker). Items are dicts like :class:`~mineralseg.data.dataset.TileDataset`'s.

    Parameters
    ----------
    pairs : PairSet
    like : TileDataset
        The real training tiles: input size, normalisation, augmentation and
        ``ignore_index`` are taken from it, so generated tiles go through the same steps.
    tile_size : int
        Crop side on the working grid (the dataset's).
    min_fraction : float
        Share of a crop that must be inside the section (:func:`dataset_min_sample_fraction`).

    Raises
    ------
    DataError
        No crop of any pair has ``min_fraction`` inside.
    """

    def __init__(self, pairs: PairSet, like: TileDataset, *, tile_size: int, min_fraction: float) -> None:
        from mineralseg.io import open_image

        self.pairs = pairs
        self.like = like
        self.tile_size = int(tile_size)
        self.step = max(1, self.tile_size // _GRID_PER_TILE)
        k = self.tile_size // self.step  # blocks per crop side
        found = []
        for p, pair in enumerate(pairs.pairs):
            with open_image(pair.labels) as labels:
                blocks = _inside_blocks(labels, self.step)
            sums = np.pad(blocks.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            rows = (pair.shape[0] - self.tile_size) // self.step + 1
            cols = (pair.shape[1] - self.tile_size) // self.step + 1
            win = sums[k : k + rows, k : k + cols] - sums[:rows, k : k + cols] - sums[k : k + rows, :cols] + sums[:rows, :cols]
            ok = np.argwhere(win >= min_fraction * (k * self.step) ** 2)
            found.append(np.column_stack([np.full(len(ok), p), ok * self.step]))
        self.candidates = np.concatenate(found).astype(np.int64)
        if not len(self.candidates):
            raise DataError(f"synthetic_pairs: no crop of {self.tile_size} px of the pairs in {pairs.root} has "
                            f">= {min_fraction:.0%} of its pixels inside the section")
        self._open: dict[int, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self.candidates)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own files
        return {**self.__dict__, "_open": {}}

    def _images(self, p: int) -> tuple[Any, Any]:
        from mineralseg.io import open_image

        if p not in self._open:
            pair = self.pairs.pairs[p]
            self._open[p] = (open_image(pair.sem), open_image(pair.labels))
        return self._open[p]

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) uint8 ``tile_size`` crop near candidate ``index``, before resizing;
        pixels outside the section are ``ignore_index`` in the mask."""
        p, r, c = (int(v) for v in self.candidates[index])
        h, w = self.pairs.pairs[p].shape
        dr, dc = (int(v) for v in torch.randint(self.step, (2,)))
        r, c = min(r + dr, h - self.tile_size), min(c + dc, w - self.tile_size)
        sem, labels = self._images(p)
        image = np.asarray(sem[r : r + self.tile_size, c : c + self.tile_size])
        mask = np.asarray(labels[r : r + self.tile_size, c : c + self.tile_size]).copy()
        mask[mask == OUTSIDE] = self.like.manifest.ignore_index
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = resize_tile(*self.crop(index), self.like.input_size)
        return self.like.item(image, mask, index)


class MixedDataset(Dataset):
    """The real training tiles (indices ``0 .. n_real - 1``) followed by generated ones;
    every item says which it is (``"synthetic"``: bool)."""

    def __init__(self, real: Dataset, generated: GeneratedTileDataset) -> None:
        self.real, self.generated = real, generated
        self.n_real = len(real)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n_real + len(self.generated)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < self.n_real:
            return {**self.real[index], "synthetic": False}
        return {**self.generated[index - self.n_real], "synthetic": True}


def generated_per_batch(share: float, batch_size: int) -> int:
    """Generated tiles in each batch: ``round(share * batch_size)``.

    Raises
    ------
    ConfigError
        A share that rounds to no tile.
    """
    n = round(share * batch_size)
    if n < 1:
        raise ConfigError(f"synthetic_pairs.share {share:g} of a batch of {batch_size} tiles is no tile; raise the "
                          f"share to at least {1 / batch_size:.3g} or the batch size")
    return n


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of a :class:`MixedDataset` with exactly ``generated`` generated tiles each.

    An epoch has as many batches as the real tiles alone give (``max(1, n_real //
    batch_size)``, the last incomplete batch dropped), so a run with generated pairs
    takes the same number of optimiser steps. Real tiles come from one shuffled stream
    over all epochs (each tile once before any repeats; an epoch shows about ``1 - share``
    of them and the next one goes on) or, with ``weights``, are drawn with replacement
    by the rare-class weights; generated tiles are drawn uniformly with replacement.
    Draws use torch's global generator (seeded by ``seed_everything``).

    Parameters
    ----------
    n_real, n_generated : int
    batch_size : int
    generated : int
        Generated tiles per batch (:func:`generated_per_batch`), at most ``batch_size``.
    weights : (n_real,) array-like, optional
        Rare-class sampling weights of the real tiles.
    """

    def __init__(self, n_real: int, n_generated: int, batch_size: int, generated: int,
                 weights: Any = None) -> None:
        self.n_real, self.n_generated = int(n_real), int(n_generated)
        self.batch_size, self.generated = int(batch_size), int(generated)
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.double)
        self.batches = max(1, self.n_real // self.batch_size)
        self._stream: Iterator[int] | None = None

    def __len__(self) -> int:
        return self.batches

    def _real(self) -> Iterator[int]:
        while True:
            if self.weights is not None:
                yield from torch.multinomial(self.weights, self.n_real, replacement=True).tolist()
            else:
                yield from torch.randperm(self.n_real).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        if self._stream is None:  # one stream over all epochs: the real tiles an epoch leaves come next
            self._stream = self._real()
        real = self._stream
        n_real = self.batch_size - self.generated
        for _ in range(self.batches):
            batch = [next(real) for _ in range(n_real)]
            batch += (self.n_real + torch.randint(self.n_generated, (self.generated,))).tolist()
            yield batch
