"""Read a prepared dataset folder: ``manifest.json`` with its tiles and class schema.

The layout is written by ``mineralseg prepare`` (see ``docs/CONTRACTS.md``,
"Dataset layout")::

    DATASET/manifest.json
    DATASET/tiles/<sample>/<id>_sem.png    uint8 greyscale, out_size x out_size
    DATASET/tiles/<sample>/<id>_mask.png   uint8 class ids 0..C-1, ignore_index 255

:func:`load_manifest` validates the parts training and evaluation rely on and
returns a :class:`DatasetManifest` with absolute tile paths.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mineralseg.errors import DataError

__all__ = ["DatasetManifest", "Tile", "load_manifest", "manifest_sha256", "SPLITS"]

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Tile:
    """One tile of a prepared dataset, as recorded in its ``manifest.json`` (paths absolute).

    The record training and evaluation read; the pixels stay in the PNG files. Not to be
    confused with :class:`mineralseg.prep.tiling.CutTile`, the tile with its pixels that
    ``prepare`` cuts before writing these files.

    Attributes
    ----------
    id : str
        Unique tile id (``<sample>_t<k>``).
    sample : str
        Sample the tile was cut from.
    row, col : int
        Top-left corner on the sample's working grid.
    split : {"train", "val", "test"}
    image, mask : Path
        The uint8 PNG files (SEM grey levels; class ids or ``ignore_index``).
    class_counts : tuple of int
        Pixels of each class in the mask.
    ignored : int
        Pixels of the mask equal to ``ignore_index``.
    """

    id: str
    sample: str
    row: int
    col: int
    split: str
    image: Path
    mask: Path
    class_counts: tuple[int, ...]
    ignored: int = 0


@dataclass(frozen=True)
class DatasetManifest:
    """A prepared dataset: class schema, tile geometry and the tiles.

    Attributes
    ----------
    root : Path
        Dataset folder.
    class_names : list of str
        One name per class id (``C`` classes).
    class_colors : list of (r, g, b)
        Display colour per class.
    ignore_index : int
        Mask value of unlabelled pixels (255).
    tile_size, out_size : int
        Tile side on the working grid, and in the PNG files.
    sem_scale : float
        SEM pixels per label pixel on the working grid.
    normalisation : dict
        How ``prepare`` normalised the SEM grey levels (recorded, not re-applied).
    tiles : list of Tile
    sha256 : str
        Hash of the ``manifest.json`` bytes (identifies the dataset in run records).
    """

    root: Path
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    ignore_index: int
    tile_size: int
    out_size: int
    sem_scale: float
    normalisation: dict[str, Any]
    tiles: list[Tile]
    sha256: str
    schema_name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def split(self, name: str) -> list[Tile]:
        """Tiles of one split (``train``, ``val``, ``test``); empty split -> DataError."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        tiles = [t for t in self.tiles if t.split == name]
        if not tiles:
            counts = {s: sum(t.split == s for t in self.tiles) for s in SPLITS}
            raise DataError(f"{self.path}: the {name!r} split has no tiles (tiles per split: {counts})")
        return tiles

    def class_counts(self, split: str) -> np.ndarray:
        """(N, C) int64 pixel counts per class of the tiles of ``split``."""
        return np.array([t.class_counts for t in self.split(split)], dtype=np.int64).reshape(-1, self.num_classes)

    def class_frequencies(self, split: str = "train") -> np.ndarray:
        """(C,) float64 fraction of the labelled pixels of ``split`` in each class."""
        total = self.class_counts(split).sum(axis=0).astype(np.float64)
        if total.sum() <= 0:
            raise DataError(f"{self.path}: the {split!r} split has no labelled pixels")
        return total / total.sum()

    def schema_dict(self) -> dict[str, Any]:
        """The class schema as plain data (stored in checkpoints)."""
        return {
            "name": self.schema_name,
            "names": list(self.class_names),
            "colors": [list(c) for c in self.class_colors],
            "ignore_index": self.ignore_index,
        }


def manifest_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _get(d: dict, keys: tuple[str, ...], where: str) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    raise DataError(f"{where}: missing key {keys[0]!r}")


def _schema(raw: dict, where: str) -> tuple[list[str], list[tuple[int, int, int]], int, str | None]:
    schema = raw.get("schema")
    if not isinstance(schema, dict):
        raise DataError(f"{where}: missing 'schema' mapping (class names, colours, ignore_index)")
    names = _get(schema, ("names", "class_names", "groups"), f"{where} schema")
    if names and isinstance(names[0], dict):  # [{name, color}, ...]
        colors = [tuple(int(v) for v in n["color"]) for n in names]
        names = [str(n["name"]) for n in names]
    else:
        names = [str(n) for n in names]
        colors = [tuple(int(v) for v in c) for c in _get(schema, ("colors", "colours"), f"{where} schema")]
    if not names:
        raise DataError(f"{where}: the schema lists no classes")
    if len(colors) != len(names):
        raise DataError(f"{where}: schema has {len(names)} class names but {len(colors)} colours")
    ignore = int(schema.get("ignore_index", 255))
    return names, colors, ignore, schema.get("palette") or schema.get("name")


def _tile(entry: dict, root: Path, n_classes: int, where: str) -> Tile:
    try:
        counts = tuple(int(c) for c in entry["class_counts"])
        tile = Tile(
            id=str(entry["id"]),
            sample=str(entry.get("sample", "")),
            row=int(entry.get("row", 0)),
            col=int(entry.get("col", 0)),
            split=str(entry["split"]),
            image=root / entry["image"],
            mask=root / entry["mask"],
            class_counts=counts,
            ignored=int(entry.get("ignored", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: tile entry {entry.get('id', '?')!r} is invalid ({exc!r})") from None
    if len(counts) != n_classes:
        raise DataError(
            f"{where}: tile {tile.id!r} has {len(counts)} class counts for {n_classes} classes"
        )
    if tile.split not in SPLITS:
        raise DataError(f"{where}: tile {tile.id!r} has split {tile.split!r}; expected one of {SPLITS}")
    return tile


def load_manifest(dataset: str | os.PathLike) -> DatasetManifest:
    """Load ``DATASET/manifest.json``.

    Parameters
    ----------
    dataset : path-like
        The dataset folder (or the manifest file itself).

    Returns
    -------
    DatasetManifest

    Raises
    ------
    DataError
        Missing folder or manifest, invalid JSON, missing keys, tiles whose class
        counts do not match the schema.
    """
    path = Path(dataset)
    if path.is_file() and path.name == MANIFEST_NAME:
        path = path.parent
    manifest = path / MANIFEST_NAME
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    if not manifest.is_file():
        raise DataError(
            f"{path} is not a prepared dataset: no {MANIFEST_NAME} in it (make one with `mineralseg prepare`)"
        )
    where = str(manifest)
    try:
        raw = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {where}: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object")
    names, colors, ignore, schema_name = _schema(raw, where)
    out_size = int(_get(raw, ("out_size",), where))
    tile_size = int(raw.get("tile_size", out_size))
    entries = raw.get("tiles")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: the manifest lists no tiles")
    root = path.resolve()
    tiles = [_tile(e, root, len(names), where) for e in entries]
    return DatasetManifest(
        root=root,
        class_names=names,
        class_colors=colors,
        ignore_index=ignore,
        tile_size=tile_size,
        out_size=out_size,
        sem_scale=float(raw.get("sem_scale", 1)),
        normalisation=dict(raw.get("normalisation") or {}),
        tiles=tiles,
        sha256=manifest_sha256(manifest),
        schema_name=schema_name,
        raw=raw,
    )
