"""Class schemas: mineral palettes, mineral -> group merging, colour/grey coding.

A :class:`ClassSchema` describes the minerals of a label map (name, RGB colour,
optional grey level) and how they merge into the groups a model is trained on.
Two *levels* of ids exist:

``"minerals"``
    index into :attr:`ClassSchema.minerals` (the order of the YAML list),
``"groups"``
    index into :attr:`ClassSchema.groups`.

Both use ``ignore_index`` (255 by default) for pixels that carry no label.

Schemas are YAML files (see ``configs/palettes/``)::

    name: sandstone-xrm
    description: free text
    ignore_index: 255
    minerals:
      - {name: air, color: [0, 0, 255], group: air, grey: 33}   # grey is optional
      ...
    groups:
      - {name: air, color: [0, 0, 255], grey: 33}                # grey is optional
      ...

Grey coding: when no ``grey`` values are given for a level, id ``k`` of ``n`` is coded
as ``round(k * 255 / (n - 1))`` (equidistant, like the original study); otherwise each
entry of that level must give its own ``grey``.

The built-in schemas (``qemscan24``, ``qemscan24-5groups``, ``sandstone-xrm``) live in
the package folder ``mineralseg/palettes`` (``configs/palettes`` links to them), so
:func:`load_schema` finds them in an editable install and in a wheel alike.
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from mineralseg.config import StrictModel, load_yaml, parse_config
from mineralseg.errors import ConfigError, DataError, UserError

__all__ = [
    "ClassSchema",
    "Group",
    "Mineral",
    "MaskCoding",
    "builtin_schemas",
    "guess_mask_coding",
    "inline_schema",
    "load_schema",
    "mask_values",
    "read_label_map",
]

Level = Literal["minerals", "groups"]
Unknown = Literal["reject", "nearest", "ignore"]
Coding = Literal["color", "grey", "index"]

# Ids are stored as uint8; one value is kept free as the internal "unknown colour"
# marker of the look-up tables and one for ignore_index, hence at most 254 classes.
MAX_CLASSES = 254
#: Label value of pixels that carry no truth (outside the sample, unknown colour, seam
#: fill): skipped by the losses, the metrics and the figures. A schema's ``ignore_index``
#: defaults to it; this is the one definition in the package.
IGNORE_INDEX = 255
# Unknown colours listed in an error message (the most frequent first); more would
# drown the message.
MAX_REPORTED_UNKNOWN = 10
# Pixels converted per chunk in colour look-ups: keeps temporaries (uint32 keys)
# at a few MB so that a 4,700 x 4,700 map converts in well under a second.
_CHUNK_PIXELS = 1 << 20
# Display colour for ignore_index pixels in ids_to_colors (magenta: absent from the
# built-in palettes).
DEFAULT_IGNORE_COLOR = (255, 0, 255)

# Display colours of inline classes given without one (Tableau 10 order, then evenly
# spaced hues); a two-class schema gets black / white, the colours of binary masks.
_INLINE_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
# Without class names, index-coded masks are read as classes 0..max only while max is
# below this (a grey-level mask with values up to 255 is not 256 classes).
MAX_GUESSED_CLASSES = 16

_PALETTE_PACKAGE = "mineralseg"
_PALETTE_FOLDER = "palettes"


# --------------------------------------------------------------------------- YAML model
RGB = tuple[int, int, int]


def _check_rgb(value: RGB) -> RGB:
    if any(not 0 <= int(v) <= 255 for v in value):
        raise ValueError(f"colour {list(value)} has a component outside 0..255")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


class MineralSpec(StrictModel):
    """One mineral entry of a schema YAML."""

    name: str = Field(min_length=1)
    color: RGB
    group: str
    grey: int | None = Field(default=None, ge=0, le=255)

    @field_validator("color")
    @classmethod
    def _rgb_range(cls, value: RGB) -> RGB:
        return _check_rgb(value)


class GroupSpec(StrictModel):
    """One group entry of a schema YAML."""

    name: str = Field(min_length=1)
    color: RGB
    grey: int | None = Field(default=None, ge=0, le=255)

    @field_validator("color")
    @classmethod
    def _rgb_range(cls, value: RGB) -> RGB:
        return _check_rgb(value)


def _check_unique(kind: str, values: list, labels: list[str]) -> None:
    seen: dict[Any, str] = {}
    for value, label in zip(values, labels):
        if value in seen:
            raise ValueError(f"{kind} {value!r} is used twice ({seen[value]!r} and {label!r})")
        seen[value] = label


def _check_greys(kind: str, items: list) -> None:
    greys = [it.grey for it in items]
    given = [g is not None for g in greys]
    if any(given) and not all(given):
        missing = [it.name for it in items if it.grey is None]
        raise ValueError(f"{kind}: give a grey value for every entry or for none (missing: {missing})")
    if all(given):
        _check_unique(f"{kind} grey value", greys, [it.name for it in items])


class SchemaSpec(StrictModel):
    """The YAML form of a class schema (validated; see the module docstring)."""

    name: str = Field(min_length=1)
    description: str = ""
    ignore_index: int = Field(default=IGNORE_INDEX, ge=0, le=255)
    minerals: list[MineralSpec] = Field(min_length=1, max_length=MAX_CLASSES)
    groups: list[GroupSpec] = Field(min_length=1, max_length=MAX_CLASSES)

    @model_validator(mode="after")
    def _consistent(self) -> "SchemaSpec":
        names = [m.name for m in self.minerals]
        _check_unique("mineral name", [n.lower() for n in names], names)
        _check_unique("mineral colour", [m.color for m in self.minerals], names)
        gnames = [g.name for g in self.groups]
        _check_unique("group name", [n.lower() for n in gnames], gnames)
        _check_unique("group colour", [g.color for g in self.groups], gnames)
        _check_greys("minerals", self.minerals)
        _check_greys("groups", self.groups)
        for m in self.minerals:
            if m.group not in gnames:
                raise ValueError(f"mineral {m.name!r} refers to group {m.group!r}, not one of {gnames}")
        unused = [g for g in gnames if g not in {m.group for m in self.minerals}]
        if unused:
            raise ValueError(f"groups {unused} have no minerals")
        n_max = max(len(self.minerals), len(self.groups))
        if self.ignore_index < n_max:
            raise ValueError(f"ignore_index {self.ignore_index} collides with a class id (0..{n_max - 1})")
        return self


# --------------------------------------------------------------------------- resolved schema
@dataclass(frozen=True)
class Mineral:
    """A mineral of a schema: ``group`` is the index into :attr:`ClassSchema.groups`."""

    name: str
    color: RGB
    group: int
    grey: int


@dataclass(frozen=True)
class Group:
    """A group (training class) of a schema."""

    name: str
    color: RGB
    grey: int


def _equidistant_greys(n: int) -> list[int]:
    if n == 1:
        return [0]
    return [int(round(k * 255 / (n - 1))) for k in range(n)]


class ClassSchema:
    """Minerals, groups and their colour / grey codings.

    Build it with :func:`load_schema` or :meth:`from_dict`. Instances are immutable;
    look-up tables are built on first use and cached.
    """

    def __init__(self, spec: SchemaSpec):
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.ignore_index = int(spec.ignore_index)
        gnames = [g.name for g in spec.groups]
        mgrey = [m.grey for m in spec.minerals]
        if mgrey[0] is None:
            mgrey = _equidistant_greys(len(spec.minerals))
        ggrey = [g.grey for g in spec.groups]
        if ggrey[0] is None:
            ggrey = _equidistant_greys(len(spec.groups))
        self.minerals: list[Mineral] = [
            Mineral(m.name, m.color, gnames.index(m.group), int(g)) for m, g in zip(spec.minerals, mgrey)
        ]
        self.groups: list[Group] = [Group(g.name, g.color, int(v)) for g, v in zip(spec.groups, ggrey)]
        # Internal marker for "colour / grey not in the palette" in look-up tables.
        self._unknown = 254 if self.ignore_index != 254 else 253
        self._lut_cache: dict[tuple[str, str], np.ndarray] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "schema") -> "ClassSchema":
        """Build a schema from its YAML mapping (e.g. one stored in a checkpoint).

        Raises
        ------
        ConfigError
            If the mapping is not a valid schema (message names ``source``).
        """
        return cls(parse_config(data, SchemaSpec, source=source))

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping of this schema (round-trips through :meth:`from_dict`)."""
        return self.spec.model_dump(mode="json", exclude_none=True)

    def classes_dict(self, level: Level = "groups") -> dict[str, Any]:
        """``{"names", "colors", "ignore_index"}`` of one level (for manifests, checkpoints)."""
        return {
            "names": self.level_names(level),
            "colors": [list(c) for c in self.level_colors(level).tolist()],
            "ignore_index": self.ignore_index,
        }

    def __repr__(self) -> str:
        return f"ClassSchema({self.name!r}, {len(self.minerals)} minerals, {len(self.groups)} groups)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassSchema) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.mineral_names), tuple(self.group_names)))

    # ------------------------------------------------------------------ tables
    @property
    def n_minerals(self) -> int:
        return len(self.minerals)

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def mineral_names(self) -> list[str]:
        return [m.name for m in self.minerals]

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    @cached_property
    def mineral_colors(self) -> np.ndarray:
        """(N, 3) uint8 RGB colour of each mineral id."""
        return np.array([m.color for m in self.minerals], dtype=np.uint8).reshape(-1, 3)

    @cached_property
    def group_colors(self) -> np.ndarray:
        """(G, 3) uint8 RGB colour of each group id."""
        return np.array([g.color for g in self.groups], dtype=np.uint8).reshape(-1, 3)

    @cached_property
    def mineral_to_group(self) -> np.ndarray:
        """(N,) uint8 group id of each mineral id."""
        return np.array([m.group for m in self.minerals], dtype=np.uint8)

    @cached_property
    def mineral_greys(self) -> np.ndarray:
        """(N,) uint8 grey level coding each mineral id."""
        return np.array([m.grey for m in self.minerals], dtype=np.uint8)

    @cached_property
    def group_greys(self) -> np.ndarray:
        """(G,) uint8 grey level coding each group id."""
        return np.array([g.grey for g in self.groups], dtype=np.uint8)

    def level_names(self, level: Level = "minerals") -> list[str]:
        """Names of the ids of ``level``."""
        return self.mineral_names if _level(level) == "minerals" else self.group_names

    def level_colors(self, level: Level = "minerals") -> np.ndarray:
        """(K, 3) uint8 colours of the ids of ``level``."""
        return self.mineral_colors if _level(level) == "minerals" else self.group_colors

    def level_greys(self, level: Level = "minerals") -> np.ndarray:
        """(K,) uint8 grey levels of the ids of ``level``."""
        return self.mineral_greys if _level(level) == "minerals" else self.group_greys

    def n_classes(self, level: Level = "minerals") -> int:
        """Number of ids at ``level``."""
        return self.n_minerals if _level(level) == "minerals" else self.n_groups

    def index(self, name: str, level: Level = "minerals") -> int:
        """Id of the mineral or group called ``name`` (case-insensitive).

        Raises
        ------
        UserError
            If there is no such name (the message lists the valid names).
        """
        names = self.level_names(level)
        lowered = [n.lower() for n in names]
        if name.lower() not in lowered:
            raise UserError(f"schema {self.name!r} has no {level[:-1]} {name!r}; valid: {', '.join(names)}")
        return lowered.index(name.lower())

    # ------------------------------------------------------------------ colours
    def _color_lut(self, level: Level) -> np.ndarray:
        """(2**24,) uint8: packed RGB key -> id, the unknown marker elsewhere (16 MB, cached)."""
        key = ("color", level)
        if key not in self._lut_cache:
            lut = np.full(1 << 24, self._unknown, dtype=np.uint8)
            lut[_pack(self.level_colors(level))] = np.arange(self.n_classes(level), dtype=np.uint8)
            self._lut_cache[key] = lut
        return self._lut_cache[key]

    def colors_to_ids(
        self,
        rgb: np.ndarray,
        *,
        level: Level = "minerals",
        unknown: Unknown = "reject",
        tolerance: float = 0,
        source: str = "label map",
    ) -> np.ndarray:
        """Convert a colour-coded label map to ids.

        Parameters
        ----------
        rgb : (H, W, 3) or (H, W, 4) uint8 ndarray
            Colour-coded map; an alpha channel is dropped.
        level : {"minerals", "groups"}
            Which palette the colours belong to (default: the mineral colours).
        unknown : {"reject", "nearest", "ignore"}
            What to do with colours not in the palette: raise a :class:`DataError` that
            lists up to 10 of them with pixel counts (default); map each to the nearest
            palette colour if its Euclidean RGB distance is <= ``tolerance`` (others are
            rejected as above); or set them to ``ignore_index``.
        tolerance : float
            Largest RGB distance accepted by ``unknown="nearest"``.
        source : str
            Name used in error messages (a file path, for example).

        Returns
        -------
        ids : (H, W) uint8 ndarray
            Ids of ``level``, ``ignore_index`` where ``unknown="ignore"`` applied.

        Raises
        ------
        DataError
            Not an RGB uint8 image, or unknown colours that are not accepted.

        Notes
        -----
        Each pixel's colour is packed into a 24-bit key and looked up in a cached
        table of 2**24 entries, in chunks of about a million pixels: O(H * W) time,
        a few MB of temporaries besides the output.
        """
        rgb = _as_rgb(rgb, source)
        unknown = _choice(unknown, ("reject", "nearest", "ignore"), "unknown")
        lut = self._color_lut(level)
        h, w = rgb.shape[:2]
        flat = rgb.reshape(-1, 3)
        out = np.empty(h * w, dtype=np.uint8)
        for start in range(0, h * w, _CHUNK_PIXELS):
            stop = min(start + _CHUNK_PIXELS, h * w)
            out[start:stop] = lut[_pack(flat[start:stop])]
        bad = out == self._unknown
        if bad.any():
            keys, counts = np.unique(_pack(flat[bad]), return_counts=True)
            ids = np.full(len(keys), self._unknown, dtype=np.uint8)
            if unknown == "ignore":
                ids[:] = self.ignore_index
            elif unknown == "nearest":
                ids = _nearest_ids(_unpack(keys), self.level_colors(level), float(tolerance), self._unknown)
            rejected = ids == self._unknown
            if rejected.any():
                hint = "" if unknown == "nearest" else "; use unknown='nearest' (with a tolerance) or 'ignore'"
                if unknown == "nearest":
                    hint = f"; none within tolerance {tolerance:g} of a palette colour"
                raise DataError(
                    f"{source}: {int(counts[rejected].sum())} pixels with {int(rejected.sum())} colours "
                    f"not in schema {self.name!r} ({level}): "
                    f"{_format_counts(_unpack(keys[rejected]), counts[rejected])}{hint}"
                )
            out[bad] = ids[np.searchsorted(keys, _pack(flat[bad]))]
        return out.reshape(h, w)

    def unknown_colors(self, rgb: np.ndarray, *, level: Level = "minerals") -> dict[RGB, int]:
        """Colours of ``rgb`` that are not in the palette, with their pixel counts.

        Returns
        -------
        dict
            ``{(r, g, b): count}``, most frequent first; empty if every colour is known.
        """
        rgb = _as_rgb(rgb, "label map")
        lut = self._color_lut(level)
        flat = rgb.reshape(-1, 3)
        found: dict[int, int] = {}
        for start in range(0, len(flat), _CHUNK_PIXELS):
            keys = _pack(flat[start : start + _CHUNK_PIXELS])
            keys = keys[lut[keys] == self._unknown]
            for k, c in zip(*np.unique(keys, return_counts=True)):
                found[int(k)] = found.get(int(k), 0) + int(c)
        items = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        return {tuple(int(v) for v in _unpack(np.array([k]))[0]): c for k, c in items}  # type: ignore[misc]

    def ids_to_colors(
        self,
        ids: np.ndarray,
        level: Level = "minerals",
        *,
        ignore_color: RGB = DEFAULT_IGNORE_COLOR,
    ) -> np.ndarray:
        """Colour-code an id map.

        Parameters
        ----------
        ids : (...) integer ndarray
            Ids of ``level`` or ``ignore_index``.
        level : {"minerals", "groups"}
        ignore_color : (r, g, b)
            Colour of ``ignore_index`` pixels (magenta by default).

        Returns
        -------
        rgb : ids.shape + (3,) uint8 ndarray

        Raises
        ------
        DataError
            If an id is neither a class of ``level`` nor ``ignore_index``.
        """
        table = np.zeros((256, 3), dtype=np.uint8)
        n = self.n_classes(level)
        table[:n] = self.level_colors(level)
        table[self.ignore_index] = _check_rgb(tuple(ignore_color))  # type: ignore[arg-type]
        return table[self._checked_ids(ids, level)]

    def to_groups(self, mineral_ids: np.ndarray) -> np.ndarray:
        """Map mineral ids to group ids; ``ignore_index`` stays ``ignore_index``.

        Parameters
        ----------
        mineral_ids : (...) integer ndarray

        Returns
        -------
        group_ids : same shape, uint8

        Raises
        ------
        DataError
            If an id is not a mineral id nor ``ignore_index``.
        """
        table = np.full(256, self.ignore_index, dtype=np.uint8)
        table[: self.n_minerals] = self.mineral_to_group
        return table[self._checked_ids(mineral_ids, "minerals")]

    # ------------------------------------------------------------------ grey coding
    def grey_to_ids(
        self,
        grey: np.ndarray,
        level: Level = "minerals",
        *,
        unknown: Unknown = "reject",
        tolerance: float = 0,
        source: str = "label map",
    ) -> np.ndarray:
        """Decode a grey-coded label map (see the module docstring for the coding).

        Parameters
        ----------
        grey : (H, W) uint8 ndarray
        level : {"minerals", "groups"}
        unknown, tolerance, source
            As in :meth:`colors_to_ids` (distance = absolute grey difference).

        Returns
        -------
        ids : (H, W) uint8 ndarray

        Raises
        ------
        DataError
            Not a 2-D uint8 image, or grey levels that are not codes and not accepted.
        """
        grey = np.asarray(grey)
        if grey.ndim == 3 and grey.shape[2] in (3, 4) and _equal_channels(grey[..., :3]):
            grey = grey[..., 0]
        if grey.ndim != 2 or grey.dtype != np.uint8:
            raise DataError(f"{source}: a grey-coded label map must be 2-D uint8, got shape {grey.shape} {grey.dtype}")
        unknown = _choice(unknown, ("reject", "nearest", "ignore"), "unknown")
        codes = self.level_greys(level).astype(int)
        table = np.full(256, self._unknown, dtype=np.uint8)
        table[codes] = np.arange(len(codes), dtype=np.uint8)
        counts = np.bincount(grey.ravel(), minlength=256)
        missing = np.flatnonzero((counts > 0) & (table == self._unknown))
        if unknown == "ignore":
            table[missing] = self.ignore_index
        elif unknown == "nearest":
            dist = np.abs(missing[:, None] - codes[None, :])
            near = dist.argmin(axis=1) if len(missing) else np.zeros(0, int)
            ok = dist[np.arange(len(missing)), near] <= tolerance if len(missing) else np.zeros(0, bool)
            table[missing[ok]] = near[ok]
        rejected = missing[table[missing] == self._unknown]
        if len(rejected):
            raise DataError(
                f"{source}: {int(counts[rejected].sum())} pixels with {len(rejected)} grey levels that code "
                f"no {level[:-1]} of schema {self.name!r} (codes {codes.tolist()}): "
                + _format_counts(rejected, counts[rejected])
            )
        return table[grey]

    def ids_to_grey(self, ids: np.ndarray, level: Level = "minerals", *, ignore_grey: int | None = None) -> np.ndarray:
        """Grey-code an id map (inverse of :meth:`grey_to_ids`).

        Parameters
        ----------
        ids : (...) integer ndarray
        level : {"minerals", "groups"}
        ignore_grey : int, optional
            Grey level for ``ignore_index`` pixels. Every grey level may be a code, so
            there is no safe default: without it, ignore pixels raise.

        Returns
        -------
        grey : same shape, uint8

        Raises
        ------
        DataError
            Ids outside the level, or ignore pixels without ``ignore_grey``.
        """
        ids = self._checked_ids(ids, level)
        table = np.zeros(256, dtype=np.uint8)
        table[: self.n_classes(level)] = self.level_greys(level)
        if ignore_grey is None:
            if (ids == self.ignore_index).any():
                raise DataError(
                    f"id map has ignore_index ({self.ignore_index}) pixels and no grey level for them: pass ignore_grey"
                )
        else:
            table[self.ignore_index] = int(ignore_grey)
        return table[ids]

    def _checked_ids(self, ids: np.ndarray, level: Level) -> np.ndarray:
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"id map must hold integers, got dtype {ids.dtype}")
        n = self.n_classes(level)
        if ids.size:
            ok = (ids >= 0) & ((ids < n) | (ids == self.ignore_index))
            if not ok.all():
                bad = np.unique(ids[~ok])[:MAX_REPORTED_UNKNOWN].tolist()
                raise DataError(
                    f"id map has values {bad} that are not {level} ids of schema {self.name!r} "
                    f"(0..{n - 1}) nor ignore_index {self.ignore_index}"
                )
        return ids.astype(np.uint8, copy=False)


# --------------------------------------------------------------------------- helpers
def _level(level: str) -> str:
    return _choice(level, ("minerals", "groups"), "level")


def _choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise UserError(f"invalid {what} {value!r}; choose one of {', '.join(valid)}")
    return value


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint32 key ``r << 16 | g << 8 | b``."""
    rgb = np.asarray(rgb)
    key = rgb[..., 0].astype(np.uint32) << 16
    key |= rgb[..., 1].astype(np.uint32) << 8
    key |= rgb[..., 2]
    return key


def _unpack(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.uint32)
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


def _nearest_ids(colors: np.ndarray, palette: np.ndarray, tolerance: float, marker: int) -> np.ndarray:
    """Nearest palette index of each colour, ``marker`` if farther than ``tolerance``."""
    out = np.full(len(colors), marker, dtype=np.uint8)
    pal = palette.astype(np.float32)
    for start in range(0, len(colors), 65536):
        c = colors[start : start + 65536].astype(np.float32)
        d2 = ((c[:, None, :] - pal[None, :, :]) ** 2).sum(axis=2)
        near = d2.argmin(axis=1)
        ok = np.sqrt(d2[np.arange(len(c)), near]) <= tolerance
        out[start : start + len(c)][ok] = near[ok]
    return out


def _format_counts(values: np.ndarray, counts: np.ndarray) -> str:
    order = np.argsort(-counts, kind="stable")
    shown = []
    for i in order[:MAX_REPORTED_UNKNOWN]:
        v = values[i]
        label = f"({', '.join(str(int(x)) for x in v)})" if np.ndim(v) else str(int(v))
        shown.append(f"{label} x{int(counts[i])}")
    more = f" and {len(order) - MAX_REPORTED_UNKNOWN} more" if len(order) > MAX_REPORTED_UNKNOWN else ""
    return ", ".join(shown) + more


def _equal_channels(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _as_rgb(rgb: np.ndarray, source: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        raise DataError(
            f"{source}: expected an RGB colour-coded label map, got a greyscale image of shape {rgb.shape} "
            "(use coding='grey' or coding='index')"
        )
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise DataError(f"{source}: expected an (H, W, 3) RGB label map, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise DataError(f"{source}: expected an 8-bit RGB label map, got dtype {rgb.dtype}")
    return rgb[..., :3]


# --------------------------------------------------------------------------- inline schemas
def _default_colors(n: int) -> list[RGB]:
    if n == 2:
        return [(0, 0, 0), (255, 255, 255)]
    colors = list(_INLINE_COLORS)
    for k in range(max(0, n - len(colors))):  # more classes: evenly spaced hues
        r, g, b = colorsys.hsv_to_rgb(k / max(1, n - len(colors)), 0.8, 0.9)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors[:n]


def inline_schema(entries: list[Any], *, name: str = "inline", source: str = "classes") -> ClassSchema:
    """A schema from classes listed in a config, each class its own group.

    Parameters
    ----------
    entries : list of str or dict
        Class names, or mappings ``{"name", "color": [r, g, b] (optional),
        "grey": 0..255 (optional)}``. The list order is the class index (index-coded
        masks); ``grey`` the grey level coding the class (grey-coded masks; give it for
        every class or none: equidistant levels ``round(k * 255 / (n - 1))`` otherwise,
        so two classes are 0 and 255); ``color`` the RGB colour (colour-coded masks and
        figures; a distinct colour is chosen when absent).
    name : str
        Schema name (recorded in the dataset manifest).
    source : str
        Where the entries come from, for error messages.

    Returns
    -------
    ClassSchema

    Raises
    ------
    ConfigError
        Fewer than two classes, repeated names, colours or grey levels.
    """
    items = [{"name": e} if isinstance(e, str) else {k: v for k, v in dict(e).items() if v is not None} for e in entries]
    if len(items) < 2:
        raise ConfigError(f"{source}: give at least two classes, got {len(items)}")
    taken = {tuple(it["color"]) for it in items if "color" in it}
    free = iter(c for c in _default_colors(len(items) + len(taken)) if c not in taken)
    classes = []
    for it in items:
        entry = {"name": str(it.get("name", "")), "color": list(it.get("color") or next(free))}
        if "grey" in it:
            entry["grey"] = it["grey"]
        classes.append(entry)
    data = {
        "name": name,
        "minerals": [{**c, "group": c["name"]} for c in classes],
        "groups": classes,
    }
    return ClassSchema.from_dict(data, source=source)


@dataclass(frozen=True)
class MaskCoding:
    """How a set of single-channel masks codes its classes (see :func:`guess_mask_coding`).

    Attributes
    ----------
    schema : ClassSchema
        One group per class, in class-index order.
    coding : {"grey", "index"}
        The ``label_coding`` that decodes the masks.
    summary : str
        One line for people: classes, their codes and pixel shares.
    """

    schema: ClassSchema
    coding: str
    summary: str


def mask_values(paths: list[Path] | tuple[Path, ...]) -> dict[int, int]:
    """Pixel count of every value in single-channel masks (palette PNGs: their indices).

    Parameters
    ----------
    paths : sequence of path-like
        Mask files (every one read whole: meant for folders of tiles).

    Returns
    -------
    dict
        ``{value: pixel count}`` over all files, values ascending.

    Raises
    ------
    DataError
        A colour mask (RGB with unequal channels: a palette with colours is needed),
        or a mask that is not 8- or 16-bit integers.
    """
    from mineralseg.io import read_image

    counts = np.zeros(1 << 16, np.int64)
    for path in paths:
        a = read_image(path, palette_indices=True)
        if a.ndim == 3 and a.shape[2] in (3, 4) and _equal_channels(a[..., :3]):
            a = a[..., 0]
        if a.ndim != 2:
            raise DataError(
                f"{path}: a colour mask of shape {a.shape}: list the classes with their colours "
                "(palette: [{name: ..., color: [r, g, b]}, ...]) and label_coding: color"
            )
        if a.dtype not in (np.uint8, np.uint16, np.bool_):
            raise DataError(f"{path}: mask values must be 8- or 16-bit integers, got dtype {a.dtype}")
        counts += np.bincount(a.astype(np.int64).ravel(), minlength=1 << 16)[: 1 << 16]
    return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}


def guess_mask_coding(values: dict[int, int], names: list[str] | None = None, *, source: str = "masks") -> MaskCoding:
    """Tell the classes of single-channel masks from the values they hold.

    Parameters
    ----------
    values : dict
        ``{value: pixel count}`` (:func:`mask_values`).
    names : list of str, optional
        Class names in index order. Without them: values within {0, 1} or {0, 255}
        are two classes (binary masks), small values 0..K-1 (K <= 16) are K classes,
        equidistant grey levels of n classes are n classes; the classes are called
        ``class0``, ``class1``, ...
    source : str
        Where the masks are, for messages.

    Returns
    -------
    MaskCoding
        With names: index coding when every value is below ``len(names)``, else grey
        coding when every value is an equidistant grey level of ``len(names)`` classes.

    Raises
    ------
    DataError
        Values that fit neither coding (the message lists them and what to give).
    """
    found = sorted(v for v, c in values.items() if c > 0)
    if not found:
        raise DataError(f"{source}: the masks hold no pixel")
    vset = set(found)
    coding = n = None
    if names is not None:
        n = len(names)
        if vset <= set(range(n)):
            coding = "index"
        elif vset <= set(_equidistant_greys(n)):
            coding = "grey"
    elif vset <= {0, 1}:
        coding, n = "index", 2
    elif vset <= {0, 255}:
        coding, n = "grey", 2
    elif found[-1] < MAX_GUESSED_CLASSES:
        coding, n = "index", found[-1] + 1
    else:
        n = next((k for k in range(2, MAX_GUESSED_CLASSES + 1) if vset <= set(_equidistant_greys(k))), None)
        coding = "grey" if n else None
    shown = ", ".join(str(v) for v in found[:MAX_REPORTED_UNKNOWN]) + (" ..." if len(found) > MAX_REPORTED_UNKNOWN else "")
    if coding is None:
        what = (f"class indices 0..{n - 1} nor the grey levels {_equidistant_greys(n)} of the {n} classes "
                f"{', '.join(names)}") if names is not None else "binary (0/1, 0/255) nor a few class indices or equidistant grey levels"
        raise DataError(
            f"{source}: mask values {shown} are neither {what}; list the classes with their grey levels "
            "(palette: [{name: ..., grey: ...}, ...], label_coding: grey)"
        )
    names = list(names) if names is not None else [f"class{k}" for k in range(n)]
    schema = inline_schema(names, source=source)
    codes = list(range(n)) if coding == "index" else _equidistant_greys(n)
    total = sum(values.values())
    kind = "indices" if coding == "index" else "grey levels"
    parts = [f"{name} = {code} ({100 * values.get(code, 0) / total:.1f} %)" for name, code in zip(names, codes)]
    binary = " (binary masks)" if n == 2 else ""
    summary = f"masks: {n} classes coded as {kind}{binary}: " + ", ".join(parts)
    return MaskCoding(schema=schema, coding=coding, summary=summary)


# --------------------------------------------------------------------------- loading
def _palette_dir():
    return resources.files(_PALETTE_PACKAGE).joinpath(_PALETTE_FOLDER)


def builtin_schemas() -> list[str]:
    """Names of the schemas shipped with the package."""
    return sorted(p.name[: -len(".yaml")] for p in _palette_dir().iterdir() if p.name.endswith(".yaml"))


def load_schema(name_or_path: str | os.PathLike | ClassSchema) -> ClassSchema:
    """Load a class schema by built-in name or from a YAML file.

    Parameters
    ----------
    name_or_path : str or path-like or ClassSchema
        A built-in name (``"qemscan24"``, ``"qemscan24-5groups"``, ``"sandstone-xrm"``;
        see :func:`builtin_schemas`), a path to a schema YAML, or a schema (returned
        unchanged).

    Returns
    -------
    ClassSchema

    Raises
    ------
    ConfigError
        Unknown name, missing or invalid file (the message lists the built-in names or
        the offending key).

    Examples
    --------
    >>> schema = load_schema("qemscan24")
    >>> schema.group_names
    ['pores_background', 'quartz', 'albite', 'clay_accessories']
    """
    if isinstance(name_or_path, ClassSchema):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix.lower() in (".yaml", ".yml") or path.exists()):
        resource = _palette_dir().joinpath(f"{text}.yaml")
        if not resource.is_file():
            raise ConfigError(
                f"unknown class schema {text!r}; built-in schemas: {', '.join(builtin_schemas())} "
                "(or give the path of a schema YAML)"
            )
        with resources.as_file(resource) as real:
            return ClassSchema.from_dict(load_yaml(real), source=f"built-in schema {text}")
    return ClassSchema.from_dict(load_yaml(path), source=str(path))


def read_label_map(
    path: str | os.PathLike,
    schema: ClassSchema | str,
    *,
    coding: Coding = "color",
    level: Level = "minerals",
    unknown: Unknown = "reject",
    tolerance: float = 0,
) -> np.ndarray:
    """Read a label map file and return its ids.

    Parameters
    ----------
    path : path-like
        PNG/TIFF/... label map.
    schema : ClassSchema or str
        Schema (or a name / path for :func:`load_schema`).
    coding : {"color", "grey", "index"}
        How classes are coded: palette colours (RGB; alpha dropped; palette-mode PNGs
        are expanded to RGB), grey levels (:meth:`ClassSchema.grey_to_ids`), or the ids
        themselves (values ``0..K-1`` or ``ignore_index``).
    level : {"minerals", "groups"}
        Which ids the file codes (and the output holds).
    unknown, tolerance
        Handling of colours / grey levels that are not codes (see
        :meth:`ClassSchema.colors_to_ids`).

    Returns
    -------
    ids : (H, W) uint8 ndarray

    Raises
    ------
    UserError
        Missing or unreadable file, wrong kind of image for ``coding``, unknown codes.
    """
    from mineralseg.io import read_image

    schema = load_schema(schema)
    coding = _choice(coding, ("color", "grey", "index"), "coding")
    source = str(path)
    if coding == "index":
        ids = read_image(path, palette_indices=True)
        if ids.ndim != 2:
            raise DataError(f"{source}: a class-index label map must be 2-D, got shape {ids.shape}")
        try:
            return schema._checked_ids(ids, level)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None
    image = read_image(path)
    if coding == "grey":
        return schema.grey_to_ids(image, level, unknown=unknown, tolerance=tolerance, source=source)
    return schema.colors_to_ids(image, level=level, unknown=unknown, tolerance=tolerance, source=source)
