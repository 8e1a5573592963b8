"""The prepare config (``prepare.yaml``): pydantic models and loading.

The YAML form is fixed by ``docs/CONTRACTS.md`` ("Prepare config")::

    palette: qemscan24          # built-in schema name, path to a palette YAML, or the classes
                                # inline: [pore, rock] or [{name: pore, grey: 0}, ...]
    classes: groups             # groups | minerals : what the tiles' class ids are
    label_coding: color         # color | grey | index (default for all samples)
    outline: auto               # auto | none | labels | sem (see prep.outline)
    unknown_colors: reject      # reject | nearest | ignore
    color_tolerance: 0
    sem_scale: 1                # SEM pixels per label pixel on the working grid
    tile_size: 32
    out_size: 64
    min_sample_fraction: 0.5
    normalise: {method: percentile, low: 0.5, high: 99.5, drift: true, scope: sample}
                                # or {method: none, scale: [0, 65535]} for a non-8-bit SEM
    repair_seams: auto          # auto | true | false
    realign_fields: true        # after registration, move mosaic fields the SEM places elsewhere
    register: true
    seed: 0
    split: {by: auto, fractions: {train: 0.7, val: 0.15, test: 0.15}, block_tiles: 4}
    samples:
      - {name: sample00, sem: sample00/sem.tif, labels: sample00/qemscan.png}

Instead of ``samples``, two folders of already aligned image / mask pairs (tiles, for
example)::

    folders: {images: sem/, masks: masks/, pattern: "{stem}_mask"}
    palette: [pore, rock]                 # inline classes (or omit: told from the masks)
    outline: auto                         # auto | none | labels | sem

Every image whose mask is found (mask stem = ``pattern`` with the image's stem) is one
sample, named after the image's stem, marked ``aligned``.

Relative paths (sample files, folders, a palette given as a path) are relative to the
folder of the config file; :func:`load_prepare_config` resolves them to absolute paths
and expands ``folders`` into ``samples``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from mineralseg.config import StrictModel, load_yaml, parse_config
from mineralseg.errors import ConfigError, DataError

__all__ = [
    "FoldersConfig",
    "InlineClass",
    "NormaliseConfig",
    "PrepareConfig",
    "SampleConfig",
    "SplitConfig",
    "SplitFractions",
    "folder_config",
    "folder_samples",
    "prepare_source",
    "load_prepare_config",
    "RAW_SUFFIXES",
]

# File name endings read as headerless raw pixel dumps (they need sem_shape + sem_dtype).
RAW_SUFFIXES = (".raw", ".bin", ".dat")
# Largest tile side the folder shortcut picks by itself (bigger images give several tiles).
_SHORTCUT_MAX_TILE = 512
# Unpaired file names listed in an error message.
_LISTED_UNPAIRED = 10
# Allowed slack on "fractions sum to 1" (YAML users write 0.7 / 0.15 / 0.15).
_FRACTION_SUM_TOL = 1e-6
SPLITS = ("train", "val", "test")
# Files taken as images / masks in a folder (others, and hidden files, are skipped).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy") + RAW_SUFFIXES
# Row / column in a tile's name (``..._r03_c07``, ``row3-col7``, ``R03C07``): tiles of one
# mosaic that share the rest of the name are neighbours on its grid.
DEFAULT_GRID_PATTERN = r"(?:^|[_\-. ])(?:r|row)(?P<row>\d+)[_\-. ]?(?:c|col)(?P<col>\d+)(?=$|[_\-. ])"
# Pixel types accepted for raw SEM files (TIFF and other formats carry their own).
SemDtype = Literal["uint8", "uint16", "float32", "float64"]

Coding = Literal["color", "grey", "index"]


class NormaliseConfig(StrictModel):
    """SEM grey-level normalisation (see :func:`mineralseg.prep.intensity.normalise_sem`).

    ``method: percentile`` removes a slow drift (if ``drift``) and stretches the
    ``low``..``high`` percentiles to 0..255, computed inside each sample
    (``scope: sample``) or over the pixels of all samples together (``scope:
    dataset``: one mapping for tiles cut from one mosaic; no drift then).
    ``method: none`` keeps the grey levels of an 8-bit SEM; any other SEM (16-bit,
    float) needs ``scale: [lo, hi]``, the values mapped to 0 and 255 (a 16-bit
    image's full range is ``[0, 65535]``, a float image in 0..1 ``[0, 1]``).
    """

    method: Literal["percentile", "none"] = "percentile"
    low: float = Field(0.5, ge=0, lt=100)
    high: float = Field(99.5, gt=0, le=100)
    drift: bool = True
    scope: Literal["sample", "dataset"] = "sample"
    scale: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "NormaliseConfig":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.scale is not None:
            lo, hi = self.scale
            if self.method != "none":
                raise ValueError("scale is for method: none (percentile finds its own range)")
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"scale must be two finite values [lo, hi] with lo < hi, got {list(self.scale)}")
        if self.scope == "dataset" and self.method == "none":
            raise ValueError("scope: dataset is for method: percentile")
        return self


class SplitFractions(StrictModel):
    """Target share of train / val / test (non-negative, summing to 1)."""

    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > _FRACTION_SUM_TOL:
            raise ValueError(
                f"train + val + test must sum to 1, got {self.train} + {self.val} + {self.test} = {total:g}"
            )
        if self.train <= 0:
            raise ValueError("the train fraction must be above 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class SplitConfig(StrictModel):
    """How tiles are assigned to train / val / test.

    ``by: blocks``: square groups of ``block_tiles`` x ``block_tiles`` tiles go whole to
    one split (seeded, per sample, aiming at ``fractions``). ``by: sample``: whole
    samples go to one split, from the explicit ``train`` / ``val`` / ``test`` lists
    (samples named nowhere go to train when ``train`` is empty) or, without lists,
    seeded over the samples by ``fractions``. ``by: groups`` (folders of tiles whose
    names carry their row and column, ``folders.grid``): square groups of
    ``group_tiles`` x ``group_tiles`` neighbouring tile images go whole to one split
    (default: the largest side of 4, 3, 2 that still makes at least 8 groups).
    ``by: auto`` (default): ``groups`` for folders whose every name carries row and
    column, ``sample`` for other folders, ``blocks`` for listed samples.
    """

    by: Literal["auto", "blocks", "sample", "groups"] = "auto"
    fractions: SplitFractions = Field(default_factory=SplitFractions)
    block_tiles: int = Field(4, ge=1)
    guard: bool = Field(
        True, description="by: blocks or groups: drop the train and val tiles (images) that touch a test tile "
        "(no training tile shares a grain with a test tile); the manifest lists them"
    )
    group_tiles: int | None = Field(None, ge=1)
    train: list[str] = Field(default_factory=list)
    val: list[str] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return bool(self.train or self.val or self.test)


class SampleConfig(StrictModel):
    """One SEM / label-map pair."""

    name: str = Field(min_length=1)
    sem: Path
    labels: Path
    sem_shape: tuple[int, int] | None = None
    sem_dtype: SemDtype | None = None
    label_coding: Coding | None = None
    aligned: bool = False

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        bad = set('/\\:*?"<>|') | {"\0"}
        if value in (".", "..") or any(ch in bad for ch in value) or value != value.strip():
            raise ValueError(f"sample name {value!r} must be usable as a folder name (no / \\ : * ? \" < > |)")
        return value

    @field_validator("sem_shape")
    @classmethod
    def _positive_shape(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) <= 0:
            raise ValueError(f"sem_shape must be two positive integers [H, W], got {list(value)}")
        return value

    @model_validator(mode="after")
    def _raw_needs_shape(self) -> "SampleConfig":
        is_raw = self.sem.suffix.lower() in RAW_SUFFIXES
        if is_raw and (self.sem_shape is None or self.sem_dtype is None):
            raise ValueError(f"sample {self.name!r}: raw SEM file {self.sem} needs sem_shape [H, W] and sem_dtype")
        if (self.sem_shape is None) != (self.sem_dtype is None):
            raise ValueError(f"sample {self.name!r}: give sem_shape and sem_dtype together (for raw files)")
        return self


class FoldersConfig(StrictModel):
    """Two folders of aligned pairs: every image with a mask is a sample.

    ``pattern`` gives the mask's file stem from the image's (``"{stem}"``: same name,
    ``"{stem}_mask"``: ``a.tif`` pairs with ``a_mask.png``); extensions may differ.
    ``grid`` is a regular expression with groups ``row`` and ``col`` read from the
    image stems for ``split.by: groups``. Raw images need ``sem_shape`` and
    ``sem_dtype`` (one for all).
    """

    images: Path
    masks: Path
    pattern: str = "{stem}"
    grid: str = DEFAULT_GRID_PATTERN
    sem_shape: tuple[int, int] | None = None
    sem_dtype: SemDtype | None = None

    @field_validator("pattern")
    @classmethod
    def _has_stem(cls, value: str) -> str:
        if value.count("{stem}") != 1 or value.replace("{stem}", "").count("{") or "/" in value:
            raise ValueError(f"pattern must hold {{stem}} once (e.g. '{{stem}}_mask'), got {value!r}")
        return value

    @field_validator("grid")
    @classmethod
    def _row_col_groups(cls, value: str) -> str:
        try:
            groups = re.compile(value, re.IGNORECASE).groupindex
        except re.error as exc:
            raise ValueError(f"grid is not a valid regular expression ({exc}): {value!r}") from None
        if not {"row", "col"} <= set(groups):
            raise ValueError(f"grid needs named groups (?P<row>...) and (?P<col>...), got {value!r}")
        return value


class InlineClass(StrictModel):
    """A class listed in the config (``palette: [...]``); see :func:`mineralseg.classes.inline_schema`."""

    name: str = Field(min_length=1)
    color: tuple[int, int, int] | None = None
    grey: int | None = Field(None, ge=0, le=255)


class PrepareConfig(StrictModel):
    """The whole prepare config (see the module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    # A built-in name, a palette YAML, or the classes inline; None: qemscan24 for
    # listed samples, told from the masks for folders.
    palette: Union[str, list[Union[str, InlineClass]], None] = None
    classes: Literal["groups", "minerals"] = "groups"
    # None: color for listed samples, told from the masks for folders.
    label_coding: Coding | None = None
    outline: Literal["auto", "none", "labels", "sem"] = "auto"
    unknown_colors: Literal["reject", "nearest", "ignore"] = "reject"
    color_tolerance: float = Field(0, ge=0)
    sem_scale: Union[int, float] = 1
    tile_size: int = Field(32, gt=0)
    out_size: int = Field(64, gt=0)
    min_sample_fraction: float = Field(0.5, ge=0, le=1)
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    repair_seams: Union[Literal["auto"], bool] = "auto"
    # After registration, check each repaired mosaic field's position on the SEM and move
    # the fields it places 1-3 px elsewhere (mineralseg.prep.mosaic.realign).
    realign_fields: bool = True
    # ``register`` is a method of pydantic's base class: the field is stored as
    # ``register_`` and read / written as ``register`` in YAML.
    register_: bool = Field(True, alias="register")
    seed: int = 0
    split: SplitConfig = Field(default_factory=SplitConfig)
    samples: list[SampleConfig] = Field(default_factory=list)
    folders: FoldersConfig | None = None

    @field_validator("sem_scale")
    @classmethod
    def _scale_at_least_one(cls, value: float) -> float:
        if not math.isfinite(value) or value < 1:
            raise ValueError(f"sem_scale must be >= 1 (SEM pixels per label pixel), got {value}")
        if float(value).is_integer():
            return int(value)
        return float(value)

    @property
    def split_by(self) -> str:
        """``split.by`` with ``auto`` resolved (see :class:`SplitConfig`)."""
        by = self.split.by
        if by != "auto":
            return by
        if self.folders is None:
            return "blocks"
        grid = re.compile(self.folders.grid, re.IGNORECASE)
        if self.samples and all(grid.search(s.name) for s in self.samples):
            return "groups"
        return "sample"

    @property
    def palette_names(self) -> list[str] | None:
        """Class names of an inline palette given as names only (their coding told from the masks)."""
        if isinstance(self.palette, list) and all(isinstance(e, str) for e in self.palette):
            return list(self.palette)
        return None

    @model_validator(mode="after")
    def _consistent(self) -> "PrepareConfig":
        if not self.samples and self.folders is None:
            raise ValueError("give samples (a list of SEM / label pairs) or folders: {images: DIR, masks: DIR}")
        if not self.samples:  # folders not expanded yet: names unknown
            return self
        names = [s.name for s in self.samples]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sample names must be unique; repeated: {', '.join(dupes)}")
        split = self.split
        by = self.split_by
        if by == "groups" and self.folders is None:
            raise ValueError("split.by: groups is for folders of tiles (folders: {images: DIR, masks: DIR})")
        if by == "sample":
            if split.has_lists:
                seen: dict[str, str] = {}
                for which in SPLITS:
                    for name in getattr(split, which):
                        if name not in names:
                            raise ValueError(
                                f"split.{which} names unknown sample {name!r}; samples: {', '.join(names)}"
                            )
                        if name in seen:
                            raise ValueError(f"sample {name!r} is in split.{seen[name]} and split.{which}")
                        seen[name] = which
                missing = [n for n in names if n not in seen]
                if missing and split.train:
                    raise ValueError(
                        f"samples {', '.join(missing)} are in no split list "
                        "(list them, or leave split.train empty to send the rest to train)"
                    )
            elif len(self.samples) < 2:
                raise ValueError(
                    "split.by: sample needs at least 2 samples (or explicit train/val/test lists); "
                    "use split.by: blocks for a single sample"
                )
        elif split.has_lists:
            raise ValueError("split.train/val/test lists are only used with split.by: sample")
        return self

    def sample_coding(self, sample: SampleConfig) -> str:
        """The label coding of ``sample`` (its own, or the config default, or ``color``)."""
        return sample.label_coding or self.label_coding or "color"

    def sample_splits(self) -> dict[str, str]:
        """Explicit ``{sample: split}`` from the split lists (rest to train when train is empty)."""
        out = {}
        for which in SPLITS:
            for name in getattr(self.split, which):
                out[name] = which
        for s in self.samples:
            out.setdefault(s.name, "train")
        return out


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def load_prepare_config(path: str | Path) -> PrepareConfig:
    """Load ``prepare.yaml`` and resolve its relative paths against the file's folder.

    Parameters
    ----------
    path : path-like
        The config file.

    Returns
    -------
    PrepareConfig
        With absolute ``samples[*].sem`` / ``labels`` and, when ``palette`` is a file
        path, an absolute palette path.

    Raises
    ------
    ConfigError
        Missing file, invalid YAML, unknown keys (with the valid ones), invalid values.
    """
    path = Path(path)
    data = load_yaml(path)
    if data.get("samples") and data.get("folders"):
        raise ConfigError(f"{path}: give samples or folders, not both")
    cfg = parse_config(data, PrepareConfig, source=str(path))
    return resolve_paths(cfg, path.resolve().parent)


def folder_config(
    images: str | Path,
    masks: str | Path,
    *,
    config: str | Path | None = None,
    classes: list[str] | None = None,
    tile_size: int | None = None,
    pattern: str | None = None,
    seed: int | None = None,
) -> PrepareConfig:
    """The config of ``mineralseg prepare [CONFIG] --images DIR --masks DIR`` (the folder shortcut).

    Parameters
    ----------
    images, masks : path-like
        The two folders (relative to the current folder).
    config : path-like, optional
        A prepare config whose settings are kept (it must not list ``samples``; its
        ``folders`` settings other than the two folders are kept). Settings it leaves
        out get the shortcut's defaults: classes told from the masks, ``outline:
        auto``, every tile image kept (``min_sample_fraction: 0``), 8-bit images kept
        as they are (``normalise: none``), other images stretched by one percentile
        mapping over all of them (``scope: dataset``, no drift), tiles as big as the
        smallest image (at most 512 px; ``out_size`` the tile side rounded down to a
        multiple of 32), ``split.by: auto``.
    classes : list of str, optional
        Class names in index order (``--classes a,b``); their coding is told from the masks.
    tile_size : int, optional
        Tile side (``--tile-size``).
    pattern : str, optional
        ``folders.pattern`` (mask stem from the image stem).
    seed : int, optional

    Returns
    -------
    PrepareConfig
        Resolved: absolute paths, ``samples`` expanded from the folders.

    Raises
    ------
    ConfigError, DataError
        Invalid values, a config with ``samples``; missing folders, unpaired files.
    """
    from mineralseg.io import open_image

    source = "--images/--masks"
    user: dict = {}
    base = Path.cwd()
    if config is not None:
        config = Path(config)
        user = load_yaml(config)
        source, base = str(config), config.resolve().parent
        if user.get("samples"):
            raise ConfigError(f"{config}: lists samples; with --images/--masks leave them out (the folders are the samples)")
    data = dict(user)
    folders = dict(data.get("folders") or {})
    folders.update(images=Path(images).expanduser().resolve(), masks=Path(masks).expanduser().resolve())
    if pattern is not None:
        folders["pattern"] = pattern
    data["folders"] = folders
    data.setdefault("min_sample_fraction", 0)
    if classes is not None:
        data["palette"] = list(classes)
    if seed is not None:
        data["seed"] = seed
    if tile_size is not None:
        data["tile_size"] = tile_size
    cfg = resolve_paths(parse_config(data, PrepareConfig, source=source), base)
    auto: dict = {}
    if "tile_size" not in data or "out_size" not in data or "normalise" not in data:
        dtypes, sides = set(), []
        for s in cfg.samples:
            with open_image(s.sem, shape=s.sem_shape, dtype=s.sem_dtype, as_grey=True) as img:
                dtypes.add(str(img.dtype))
                sides.append(min(img.shape[:2]))
        side = data.get("tile_size") or min(min(sides), _SHORTCUT_MAX_TILE)
        auto = {"tile_size": side, "out_size": max(32, side // 32 * 32)}
        if dtypes == {"uint8"}:
            auto["normalise"] = {"method": "none"}
        else:
            auto["normalise"] = {"method": "percentile", "scope": "dataset", "drift": False}
        auto = {k: v for k, v in auto.items() if k not in data}
    if not auto:
        return cfg
    return parse_config({**cfg.model_dump(by_alias=True), **auto}, PrepareConfig, source=source)


def prepare_source(
    config: str | Path | None,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    classes: str | None = None,
    pattern: str | None = None,
    tile_size: int | None = None,
    seed: int | None = None,
) -> Path | PrepareConfig:
    """What ``mineralseg prepare`` prepares: a config file, or the folder shortcut's config.

    Parameters
    ----------
    config : path-like or None
        ``CONFIG``.
    images, masks : path-like, optional
        ``--images`` / ``--masks`` (together).
    classes : str, optional
        ``--classes``: comma-separated names in index order.
    pattern, tile_size, seed
        ``--pattern``, ``--tile-size``, ``--seed`` (only with the folders).

    Returns
    -------
    Path or PrepareConfig
        ``config`` when no folders are given, else :func:`folder_config`.

    Raises
    ------
    UserError
        Folders given alone, folder options without folders, nothing to prepare.
    """
    from mineralseg.errors import UserError

    if (images is None) != (masks is None):
        raise UserError("give --images and --masks together (two folders of pairs)")
    if images is None:
        if any(v is not None for v in (classes, pattern, tile_size, seed)):
            raise UserError("--classes, --pattern, --tile-size and --seed go with --images/--masks")
        if config is None:
            raise UserError("give a prepare CONFIG, or --images DIR --masks DIR")
        return Path(config)
    names = [c.strip() for c in classes.split(",")] if classes is not None else None
    if names is not None and not all(names):
        raise UserError(f"--classes {classes!r}: empty class name (write names separated by commas)")
    return folder_config(images, masks, config=config, classes=names, tile_size=tile_size, pattern=pattern, seed=seed)


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _listing(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = _stem(p)
        if stem in files:
            raise DataError(f"{what} folder {folder}: {files[stem].name} and {p.name} have the same name; keep one")
        files[stem] = p
    if not files:
        raise DataError(f"{what} folder {folder} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _few(names: list[str]) -> str:
    return ", ".join(names[:_LISTED_UNPAIRED]) + (f" and {len(names) - _LISTED_UNPAIRED} more" if len(names) > _LISTED_UNPAIRED else "")


def folder_samples(folders: FoldersConfig) -> list[SampleConfig]:
    """Pair the images and masks of two folders by name: one aligned sample per pair.

    Parameters
    ----------
    folders : FoldersConfig
        With absolute ``images`` / ``masks`` folders.

    Returns
    -------
    list of SampleConfig
        Sorted by image name; each named after its image's stem, ``aligned: true``.

    Raises
    ------
    DataError
        A missing or empty folder, two files with one stem, or unpaired files (the
        message lists them, up to 10 of each kind).
    """
    images = _listing(Path(folders.images), "images")
    masks = _listing(Path(folders.masks), "masks")
    wanted = {stem: folders.pattern.format(stem=stem) for stem in images}
    lonely_images = [images[s].name for s, m in wanted.items() if m not in masks]
    lonely_masks = sorted(masks[m].name for m in set(masks) - set(wanted.values()))
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"{len(lonely_images)} image(s) in {folders.images} without a mask ({_few(lonely_images)})")
        if lonely_masks:
            parts.append(f"{len(lonely_masks)} mask(s) in {folders.masks} without an image ({_few(lonely_masks)})")
        raise DataError(
            "unpaired files: " + "; ".join(parts)
            + f"; image STEM.* pairs with mask {folders.pattern.replace('{stem}', 'STEM')}.* (folders.pattern / --pattern)"
        )
    return [
        SampleConfig(name=stem, sem=images[stem], labels=masks[wanted[stem]], aligned=True,
                     sem_shape=folders.sem_shape, sem_dtype=folders.sem_dtype)
        for stem in sorted(images)
    ]


def resolve_paths(cfg: PrepareConfig, base: str | Path) -> PrepareConfig:
    """A copy of ``cfg`` whose relative paths are made absolute against ``base``.

    ``folders`` (when given) are resolved and expanded into ``samples``
    (:func:`folder_samples`), and ``split.by: auto`` is resolved.
    """
    base = Path(base)
    data = cfg.model_dump(by_alias=True)
    if data.get("folders"):
        for key in ("images", "masks"):
            p = Path(data["folders"][key]).expanduser()
            data["folders"][key] = p if p.is_absolute() else (base / p).resolve()
        data["samples"] = [s.model_dump() for s in folder_samples(FoldersConfig.model_validate(data["folders"]))]
    for sample in data["samples"]:
        for key in ("sem", "labels"):
            p = Path(sample[key]).expanduser()
            sample[key] = p if p.is_absolute() else (base / p).resolve()
    palette = data["palette"]
    if palette is None and not data.get("folders"):
        data["palette"] = "qemscan24"
    elif isinstance(palette, str) and _looks_like_path(palette):
        p = Path(palette).expanduser()
        data["palette"] = str(p if p.is_absolute() else (base / p).resolve())
    cfg = parse_config(data, PrepareConfig, source=str(base))
    if cfg.split.by == "auto":  # resolved once the sample names are known
        data["split"]["by"] = cfg.split_by
        cfg = parse_config(data, PrepareConfig, source=str(base))
    return cfg
