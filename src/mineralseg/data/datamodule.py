"""LightningDataModule over a prepared dataset: train/val/test loaders."""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from mineralseg.data.augment import AugmentConfig, build_augmentation
from mineralseg.data.dataset import TileDataset, intensity_stats
from mineralseg.data.manifest import DatasetManifest, load_manifest
from mineralseg.data.sampler import rare_class_sampler, rare_class_weights
from mineralseg.data.synthetic_pairs import (
    GeneratedTileDataset,
    MixedBatchSampler,
    MixedDataset,
    PairSet,
    dataset_min_sample_fraction,
    generated_per_batch,
    load_pairs,
)
from mineralseg.errors import ConfigError

__all__ = ["SegmentationDataModule"]


class SegmentationDataModule(L.LightningDataModule):
    """Loaders of the ``train`` / ``val`` / ``test`` splits of a dataset.

    Parameters
    ----------
    dataset : DatasetManifest or path-like
        A loaded manifest or the dataset folder.
    input_size : int, optional
        Side the tiles are resized to (default: the tiles' ``out_size``).
    batch_size : int
    num_workers : int
        DataLoader worker processes (0: load in the main process).
    augment : AugmentConfig, optional
        Training augmentation (None or ``enabled: false``: none).
    rare_sampler : bool
        Draw training tiles with :func:`~mineralseg.data.sampler.rare_class_sampler`
        instead of shuffling.
    sampler_power : float
        Exponent of the rare-class weights.
    mean, std : float, optional
        Input normalisation; computed from the train split when not given (the values
        are stored in the checkpoints, so inference normalises the same way).
    cache : {"auto", True, False}
        Keep resized tiles in memory.
    pin_memory : bool
    synthetic_pairs : path-like, optional
        A ``mineralseg synthesize`` output folder: ``synthetic_share`` of every training
        batch are crops of its generated pairs (:mod:`mineralseg.data.synthetic_pairs`),
        prepared and augmented like the real tiles; validation and test are untouched.
    synthetic_share : float
        Share of each training batch drawn from the generated pairs, in (0, 1].

    Raises
    ------
    ConfigError / DataError
        A batch size below 1; generated pairs of other classes or another grid, a
        share that rounds to no tile, no crop mostly inside the section.
    """

    def __init__(
        self,
        dataset: DatasetManifest | str | os.PathLike,
        *,
        input_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: AugmentConfig | None = None,
        rare_sampler: bool = False,
        sampler_power: float = 0.5,
        mean: float | None = None,
        std: float | None = None,
        cache: Literal["auto"] | bool = "auto",
        pin_memory: bool = False,
        synthetic_pairs: str | os.PathLike | None = None,
        synthetic_share: float = 0.25,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.manifest = dataset if isinstance(dataset, DatasetManifest) else load_manifest(dataset)
        self.input_size = int(input_size or self.manifest.out_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = augment
        self.rare_sampler = rare_sampler
        self.sampler_power = float(sampler_power)
        self.cache = cache
        self.pin_memory = pin_memory
        if mean is None or std is None:
            mean, std = intensity_stats(self.manifest.split("train"))
        self.mean, self.std = float(mean), float(std)
        self.datasets: dict[str, TileDataset] = {}
        self.pairs: PairSet | None = None
        self.generated: GeneratedTileDataset | None = None
        if synthetic_pairs is not None:
            if not 0 < synthetic_share <= 1:
                raise ConfigError(f"synthetic_pairs.share must be in (0, 1], got {synthetic_share}")
            self.synthetic_share = float(synthetic_share)
            self.generated_per_batch = generated_per_batch(self.synthetic_share, self.batch_size)
            self.pairs = load_pairs(synthetic_pairs, self.manifest)
            self.generated = GeneratedTileDataset(self.pairs, self._get("train"), tile_size=self.manifest.tile_size,
                                                  min_fraction=dataset_min_sample_fraction(self.manifest.root))

    def synthetic_record(self) -> dict | None:
        """What the run record keeps about the generated pairs (None without them)."""
        if self.pairs is None or self.generated is None:
            return None
        return {**self.pairs.record(self.synthetic_share), "generated_per_batch": self.generated_per_batch,
                "batch_size": self.batch_size, "crop_corners": len(self.generated)}

    def dataset(self, split: str, *, train: bool = False) -> TileDataset:
        """The :class:`TileDataset` of a split (augmented when ``train``)."""
        transform = None
        if train and self.augment is not None:
            transform = build_augmentation(self.augment, ignore_index=self.manifest.ignore_index)
        return TileDataset(
            self.manifest, split, input_size=self.input_size, mean=self.mean, std=self.std,
            transform=transform, cache=self.cache,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._get("train")
        if stage in (None, "fit", "validate"):
            self._get("val")
        if stage in (None, "test"):
            self._get("test")

    def _get(self, split: str) -> TileDataset:
        if split not in self.datasets:
            self.datasets[split] = self.dataset(split, train=split == "train")
        return self.datasets[split]

    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(
            self._get(split),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        ds = self._get("train")
        if self.generated is not None:
            trainer = self.trainer
            if trainer is not None and trainer.world_size > 1:
                raise ConfigError("synthetic_pairs: training on several devices is not supported yet (every process "
                                  "would draw the same batches); use trainer.devices: 1")
            weights = rare_class_weights(ds.class_counts(), power=self.sampler_power) if self.rare_sampler else None
            sampler = MixedBatchSampler(len(ds), len(self.generated), self.batch_size, self.generated_per_batch,
                                        weights=weights)
            return DataLoader(MixedDataset(ds, self.generated), batch_sampler=sampler, num_workers=self.num_workers,
                              pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        # A last batch of one tile breaks BatchNorm statistics: drop it when possible.
        drop_last = len(ds) > self.batch_size
        if self.rare_sampler:
            sampler = rare_class_sampler(ds.class_counts(), power=self.sampler_power)
            return self._loader("train", sampler=sampler, drop_last=drop_last)
        return self._loader("train", shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
