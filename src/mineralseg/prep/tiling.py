"""Cutting the working grid into training tiles.

Tiles are ``tile_size x tile_size`` squares on the working grid, laid edge to edge
(stride = tile_size, no overlap). The grid of whole tiles is centred on the image (the
leftover margin is split between both sides), tiles with less than
``min_sample_fraction`` of their pixels inside the sample are skipped, and each kept
tile is resized to ``out_size`` by :func:`mineralseg.resize.resize_tile` (SEM: area average
when shrinking, bilinear when enlarging; mask: centre-aligned nearest neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError
from mineralseg.resize import resize_tile

__all__ = ["CutTile", "cut_tiles", "tile_positions"]


@dataclass
class CutTile:
    """One tile as cut from a sample, with its pixels, before it is written.

    :func:`cut_tiles` yields these; the dataset folder's ``manifest.json`` then records
    each written tile as a :class:`mineralseg.data.manifest.Tile` (paths, split, counts),
    which is what training and evaluation read.

    Attributes
    ----------
    row, col : int
        Top-left corner on the working grid.
    image : (out_size, out_size) uint8 ndarray
    mask : (out_size, out_size) uint8 ndarray
        Class ids ``0..n_classes-1`` or ``ignore_index``.
    class_counts : list of int
        Pixels of each class in ``mask``.
    ignored : int
        Pixels of ``mask`` equal to ``ignore_index``.
    sample_fraction : float
        Share of the tile (before resizing) inside the sample.
    """

    row: int
    col: int
    image: np.ndarray
    mask: np.ndarray
    class_counts: list[int]
    ignored: int
    sample_fraction: float


def _grid_starts(n: int, tile: int) -> np.ndarray:
    """Start offsets of whole tiles along one axis, the grid centred on ``n`` pixels."""
    count = n // tile
    offset = (n - count * tile) // 2
    return offset + tile * np.arange(count)


def tile_positions(
    sample_mask: np.ndarray,
    tile_size: int,
    min_sample_fraction: float,
    *,
    sample_name: str = "sample",
) -> list[tuple[int, int, float]]:
    """Top-left corners of the tiles to keep, with their sample fraction.

    Parameters
    ----------
    sample_mask : (H, W) bool ndarray
        Sample pixels on the working grid.
    tile_size : int
        Tile side on the working grid (> 0).
    min_sample_fraction : float
        Keep tiles with at least this share of sample pixels (0..1); 0 keeps every
        tile (the mount around the sample included).
    sample_name : str
        Used in the error message.

    Returns
    -------
    list of (row, col, fraction)
        Row-major order.

    Raises
    ------
    DataError
        The image is smaller than one tile, or no tile has enough sample inside.
    """
    if tile_size <= 0:
        raise ValueError(f"tile_size must be > 0, got {tile_size}")
    h, w = sample_mask.shape
    rows, cols = _grid_starts(h, tile_size), _grid_starts(w, tile_size)
    if rows.size == 0 or cols.size == 0:
        raise DataError(
            f"sample {sample_name!r}: the working grid ({h} x {w} px) is smaller than one tile of "
            f"{tile_size} px; lower tile_size or raise sem_scale"
        )
    # Sample fraction of every tile from one block sum over the centred grid.
    r0, c0 = int(rows[0]), int(cols[0])
    grid = sample_mask[r0 : r0 + rows.size * tile_size, c0 : c0 + cols.size * tile_size]
    fractions = grid.reshape(rows.size, tile_size, cols.size, tile_size).mean(axis=(1, 3), dtype=np.float64)
    keep = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if fractions[i, j] >= min_sample_fraction:
                keep.append((int(r), int(c), float(fractions[i, j])))
    if not keep or not any(f > 0 for _, _, f in keep):
        raise DataError(
            f"no tile of {tile_size} px has >= {min_sample_fraction:.0%} of sample {sample_name!r} inside "
            f"(best: {fractions.max():.2%}); lower tile_size or min_sample_fraction"
        )
    return keep


def cut_tiles(
    image: np.ndarray,
    classes: np.ndarray,
    positions: list[tuple[int, int, float]],
    *,
    tile_size: int,
    out_size: int,
    n_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> Iterator[CutTile]:
    """Cut, resize and count the tiles at ``positions``.

    Parameters
    ----------
    image : (H, W) uint8 ndarray
        Normalised SEM on the working grid.
    classes : (H, W) uint8 ndarray
        Class ids on the working grid (``ignore_index`` for unknown pixels).
    positions : list of (row, col, fraction)
        From :func:`tile_positions`.
    tile_size, out_size : int
    n_classes : int
        Number of classes (ids ``0..n_classes-1``).
    ignore_index : int

    Yields
    ------
    CutTile

    Raises
    ------
    ValueError
        Image and classes of different shapes, or a class id out of range.
    """
    if image.shape != classes.shape:
        raise ValueError(f"image shape {image.shape} differs from class map shape {classes.shape}")
    for r, c, frac in positions:
        img = np.ascontiguousarray(image[r : r + tile_size, c : c + tile_size])
        msk = np.ascontiguousarray(classes[r : r + tile_size, c : c + tile_size])
        img, msk = resize_tile(img, msk, out_size)
        counts = np.bincount(msk.ravel(), minlength=256)
        bad = np.nonzero(counts[n_classes:])[0] + n_classes
        bad = bad[bad != ignore_index]
        if bad.size:
            raise ValueError(f"class ids {bad.tolist()} out of range 0..{n_classes - 1} (ignore {ignore_index})")
        yield CutTile(
            row=r,
            col=c,
            image=img,
            mask=msk,
            class_counts=[int(v) for v in counts[:n_classes]],
            ignored=int(counts[ignore_index]),
            sample_fraction=frac,
        )
