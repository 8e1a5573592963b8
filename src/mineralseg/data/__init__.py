"""Datasets, augmentation, rare-class sampling and the DataModule for training."""

from mineralseg.data.augment import AugmentConfig, build_augmentation
from mineralseg.data.datamodule import SegmentationDataModule
from mineralseg.data.dataset import TileDataset, intensity_stats, read_tile
from mineralseg.data.manifest import DatasetManifest, Tile, load_manifest, manifest_sha256
from mineralseg.data.sampler import rare_class_sampler, rare_class_weights

__all__ = [
    "AugmentConfig",
    "DatasetManifest",
    "SegmentationDataModule",
    "Tile",
    "TileDataset",
    "build_augmentation",
    "intensity_stats",
    "load_manifest",
    "manifest_sha256",
    "rare_class_sampler",
    "rare_class_weights",
    "read_tile",
]
