"""Rare-class sampling: draw tiles that hold rare classes more often.

The study handled class imbalance partly by its "choice of tiles". Here each
training tile gets a weight from the rarity of the pixels it holds::

    rarity_c = freq_c ** -power            (freq_c: class fraction in the train split)
    w_i      = sum_c counts_ic * rarity_c / sum_c counts_ic

i.e. the mean rarity of the tile's labelled pixels, and tiles are drawn with
replacement with probability ``w_i / sum_j w_j``. ``power = 0`` is uniform
sampling; ``power = 1`` weights each pixel by the inverse of its class frequency.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from mineralseg.errors import DataError

__all__ = ["rare_class_sampler", "rare_class_weights"]


def rare_class_weights(class_counts: np.ndarray, *, power: float = 0.5) -> np.ndarray:
    """Sampling probability of each tile from its class pixel counts.

    Parameters
    ----------
    class_counts : (N, C) array_like of int >= 0
        Labelled pixels of each class in each tile (ignored pixels not counted).
    power : float >= 0
        Exponent of the inverse class frequency.

    Returns
    -------
    (N,) float64 ndarray
        Non-negative, sums to 1. Tiles without labelled pixels get 0 (they add
        nothing to the loss).

    Raises
    ------
    DataError
        Wrong shape, negative counts, or no labelled pixel at all.

    Examples
    --------
    >>> rare_class_weights([[90, 10], [100, 0]], power=1).round(3)
    array([0.737, 0.263])
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 2 or (counts < 0).any():
        raise DataError(f"class counts must be an (N, C) array of counts >= 0, got shape {counts.shape}")
    if power < 0:
        raise DataError(f"sampler power must be >= 0, got {power}")
    totals = counts.sum(axis=0)
    if totals.sum() <= 0:
        raise DataError("no labelled pixels in the training tiles: cannot weight them by class")
    freq = totals / totals.sum()
    rarity = np.where(freq > 0, np.power(np.where(freq > 0, freq, 1.0), -power), 0.0)
    per_tile = counts.sum(axis=1)
    w = np.divide(counts @ rarity, per_tile, out=np.zeros(len(counts)), where=per_tile > 0)
    return w / w.sum()


def rare_class_sampler(
    class_counts: np.ndarray, *, power: float = 0.5, num_samples: int | None = None, seed: int | None = None
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` over the tiles with :func:`rare_class_weights`.

    Parameters
    ----------
    class_counts : (N, C) array_like
    power : float
    num_samples : int, optional
        Draws per epoch (default N, so an epoch has as many batches as without it).
    seed : int, optional
        Seed of the sampler's own generator (None: torch's global generator, which
        ``seed_everything`` seeds).
    """
    w = rare_class_weights(class_counts, power=power)
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double),
        num_samples=int(num_samples or len(w)),
        replacement=True,
        generator=generator,
    )
