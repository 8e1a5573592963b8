"""Training: config, LightningModules (CNN, pix2pix GAN), callbacks, runs and experiment grids.

Public entry points (imported lazily, so that ``mineralseg.train.losses`` stays
cheap to import)::

    from mineralseg.train import train, run_summary, run_experiment, load_train_config
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "train": "mineralseg.train.run",
    "run_summary": "mineralseg.train.run_folder",
    "read_run_metrics": "mineralseg.runs",
    "run_experiment": "mineralseg.train.experiment",
    "load_train_config": "mineralseg.train.config",
    "TrainConfig": "mineralseg.train.config",
    "SegmentationModule": "mineralseg.train.module",
    "GANModule": "mineralseg.train.gan_module",
    "NaNGuard": "mineralseg.train.callbacks",
    "NonFiniteLossError": "mineralseg.train.callbacks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mineralseg.train' has no attribute {name!r}")
