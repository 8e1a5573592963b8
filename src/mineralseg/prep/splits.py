"""Train / val / test assignment of tiles: by whole sample or by spatial blocks.

Neighbouring tiles share grains, so a random tile split leaks the test set into training.
Two leak-free schemes:

* :func:`split_samples`: whole samples go to one split (explicit lists or seeded
  fractions over the samples).
* :func:`split_blocks`: within each sample, square groups of ``block_tiles x
  block_tiles`` tiles go whole to one split, seeded, aiming at the fractions in tiles.
  Grains cross block edges, so with ``guard`` the training and validation tiles that
  touch a test tile are dropped: no kept training tile touches a test tile.
* :func:`split_tile_groups`: the same for a folder of tile images whose names carry
  their row and column on a mosaic's grid (``..._r03_c07``): neighbouring images go
  whole to one split, so a test tile is not surrounded by training tiles.

Every split with a positive fraction gets something when there are enough samples or
blocks; otherwise a warning is logged (and returned in the notes).
"""

from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import numpy as np

__all__ = ["SPLITS", "split_blocks", "group_side", "split_samples", "split_tile_groups", "tile_grid_positions"]

SPLITS = ("train", "val", "test")
# When too few units exist for every split, the held-out splits are served in this
# order (a validation set is needed to pick checkpoints; a test set comes next).
_PRIORITY = ("train", "val", "test")
# Tile-image groups of a folder aim at no fewer than this (enough for three splits
# near their fractions); smaller groups are chosen until there are.
MIN_GROUPS = 8

log = logging.getLogger(__name__)


def _required(fractions: Mapping[str, float]) -> list[str]:
    return [s for s in _PRIORITY if fractions.get(s, 0) > 0]


def split_samples(
    samples: Sequence[str],
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    explicit: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, str]:
    """Assign whole samples to splits.

    Parameters
    ----------
    samples : sequence of str
        Sample names.
    fractions : mapping
        ``{"train": f, "val": f, "test": f}`` summing to 1 (used without ``explicit``).
    seed : int
        Seed of the random assignment.
    explicit : mapping, optional
        ``{sample: split}`` for every sample (from the config's lists).
    notes : list, optional
        Warnings are appended here as well as logged.

    Returns
    -------
    dict
        ``{sample: "train" | "val" | "test"}``.
    """
    if explicit:
        missing = [s for s in samples if s not in explicit]
        if missing:
            raise ValueError(f"samples without a split: {', '.join(missing)}")
        out = {s: explicit[s] for s in samples}
    else:
        n = len(samples)
        order = np.random.default_rng(seed).permutation(n)
        counts = _allocate(n, fractions)
        out, i = {}, 0
        for split in SPLITS:
            for _ in range(counts[split]):
                out[samples[order[i]]] = split
                i += 1
    _warn_empty(set(out.values()), fractions if not explicit else {}, "samples", notes)
    return out


def _allocate(n_units: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Number of equal-size units (samples) per split."""
    required = _required(fractions)
    counts = {s: 0 for s in SPLITS}
    # One unit for every required split while units last (train first).
    left = n_units
    for s in required:
        if left:
            counts[s] += 1
            left -= 1
    # The rest by largest deficit.
    for _ in range(left):
        deficit = {s: fractions.get(s, 0) * n_units - counts[s] for s in required}
        counts[max(deficit, key=deficit.get)] += 1
    return counts


def split_blocks(
    positions: Sequence[tuple[int, int]],
    tile_size: int,
    block_tiles: int,
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    name: str = "sample",
    notes: list[str] | None = None,
    guard: bool = False,
) -> list[str | None]:
    """Assign the tiles of one sample to splits by spatial blocks.

    Parameters
    ----------
    positions : sequence of (row, col)
        Top-left corners of the tiles on the working grid (a regular grid of step
        ``tile_size``).
    tile_size : int
    block_tiles : int
        Block side in tiles: all tiles of a block go to the same split.
    fractions : mapping
        Target share of tiles per split.
    seed : int
        Seed (combine it with the sample's index for different samples).
    name : str
        Sample name for warnings.
    notes : list, optional
        Warnings are appended here as well as logged.
    guard : bool
        Drop the train and val tiles that touch (share an edge or a corner with) a
        test tile. The test blocks stay whole, and the test tiles (scored once, at
        the end) share no grain with a kept training or validation tile. Train and val
        tiles may touch each other: validation picks checkpoints, where a slight
        optimism costs little, and small datasets keep their training tiles.

    Returns
    -------
    list of str or None
        The split of each tile, in the order of ``positions``; None for a tile
        dropped by ``guard``.

    Notes
    -----
    Blocks are visited in a seeded random order. Each required split (fraction > 0)
    first receives one block (val and test get a block before train gets a second
    one); then every block goes to the split furthest below its target tile count.
    """
    if not positions:
        return []
    pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    ti = (pos - pos.min(axis=0)) // tile_size
    bi = ti // max(1, block_tiles)
    keys, block_of_tile = np.unique(bi, axis=0, return_inverse=True)
    block_of_tile = block_of_tile.ravel()
    sizes = np.bincount(block_of_tile, minlength=len(keys))
    order = np.random.default_rng(seed).permutation(len(keys))
    required = _required(fractions)
    total = int(sizes.sum())
    counts = {s: 0 for s in SPLITS}
    block_split: dict[int, str] = {}
    pending = list(order)
    # Serve the held-out splits first with their smallest-so-far blocks (from the
    # shuffled order), then train, so that small fractions are not starved.
    for s in [r for r in required if r != "train"] + (["train"] if "train" in required else []):
        if not pending:
            break
        b = pending.pop(0)
        block_split[int(b)] = s
        counts[s] += int(sizes[b])
    for b in pending:
        deficit = {s: fractions.get(s, 0) * total - counts[s] for s in required}
        s = max(deficit, key=deficit.get)
        block_split[int(b)] = s
        counts[s] += int(sizes[b])
    _warn_empty({s for s, c in counts.items() if c}, fractions, f"blocks of sample {name!r}", notes)
    labels: list[str | None] = [block_split[int(b)] for b in block_of_tile]
    return _guard_band(ti, labels) if guard else labels


def _guard_band(grid: np.ndarray, labels: list[str | None]) -> list[str | None]:
    """``labels`` with None for every train or val tile whose 8-neighbourhood
    (``grid``: (N, 2) tile row/col indices) holds a test tile."""
    test = {(int(r), int(c)) for (r, c), s in zip(grid, labels) if s == "test"}
    out = list(labels)
    for i, (r, c) in enumerate(grid):
        if labels[i] != "test" and any((int(r) + dr, int(c) + dc) in test for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
            out[i] = None
    return out


def tile_grid_positions(names: Sequence[str], pattern: str) -> dict[str, tuple[str, int, int]]:
    """Mosaic, row and column of each tile image from its name.

    Parameters
    ----------
    names : sequence of str
        Image stems, e.g. ``"siteA_r03_c07"``.
    pattern : str
        Regular expression (case-insensitive) with named groups ``row`` and ``col``;
        the rest of the name (the match removed) names the mosaic.

    Returns
    -------
    dict
        ``{name: (mosaic, row, col)}`` for the names that match (others are left out).
    """
    grid = re.compile(pattern, re.IGNORECASE)
    out = {}
    for name in names:
        m = grid.search(name)
        if m:
            out[name] = (name[: m.start()] + "|" + name[m.end():], int(m.group("row")), int(m.group("col")))
    return out


def group_side(names: Sequence[str], pattern: str) -> int:
    """Default group side for :func:`split_tile_groups`: the largest of 4, 3, 2 that
    makes at least :data:`MIN_GROUPS` groups of neighbouring tile images, else 1."""
    where = tile_grid_positions(names, pattern).values()
    for b in (4, 3, 2):
        if len({(m, r // b, c // b) for m, r, c in where}) >= MIN_GROUPS:
            return b
    return 1


def split_tile_groups(
    names: Sequence[str],
    pattern: str,
    block_tiles: int | None,
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    notes: list[str] | None = None,
    guard: bool = False,
) -> list[str | None]:
    """Assign tile images to splits by groups of neighbours on their mosaic's grid.

    Parameters
    ----------
    names : sequence of str
        Image stems carrying row and column (:func:`tile_grid_positions`).
    pattern : str
        The row / column regular expression.
    block_tiles : int or None
        Group side in tile images: the images of a ``block_tiles x block_tiles`` group
        of one mosaic go to the same split. None: :func:`group_side`.
    fractions : mapping
        Target share of images per split.
    seed : int
    notes : list, optional
        Warnings are appended here as well as logged.
    guard : bool
        Leave out (None) the train and val images next to a test image (8-neighbourhood
        on their mosaic's grid): no kept training image touches a test image.

    Returns
    -------
    list of str or None
        The split of each name, in order (exactly what :func:`split_blocks` gives for
        the images laid out on one grid, the mosaics side by side and never sharing a
        group); None for images the guard band leaves out.

    Raises
    ------
    ValueError
        A name without row and column.
    """
    where = tile_grid_positions(names, pattern)
    missing = [n for n in names if n not in where]
    if missing:
        raise ValueError(f"{len(missing)} names carry no row and column ({', '.join(missing[:5])}) for pattern {pattern!r}")
    if block_tiles is None:
        block_tiles = group_side(names, pattern)
    mosaics = sorted({m for m, _, _ in where.values()})
    rows = [r for _, r, _ in where.values()]
    cols = [c for _, _, c in where.values()]
    b = max(1, block_tiles)
    # Mosaic k is shifted right by k whole strides of groups: no group spans two mosaics.
    stride = ((max(cols) - min(cols)) // b + 2) * b
    r0, c0 = min(rows) // b * b, min(cols) // b * b
    positions = [
        (where[n][1] - r0, where[n][2] - c0 + mosaics.index(where[n][0]) * stride) for n in names
    ]
    return split_blocks(positions, 1, b, fractions, seed=seed, name="tile images", notes=notes, guard=guard)


def _warn_empty(used: set[str], fractions: Mapping[str, float], what: str, notes: list[str] | None) -> None:
    empty = [s for s in _required(fractions) if s not in used]
    if empty:
        msg = f"split {', '.join(empty)} is empty: too few {what} for fractions {dict(fractions)}"
        log.warning(msg)
        if notes is not None:
            notes.append(msg)
