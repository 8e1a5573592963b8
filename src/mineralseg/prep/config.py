"""The prepare config (``prepare.yaml``): pydantic models and loading.

The YAML form is fixed by ``docs/CONTRACTS.md`` ("Prepare config")::

    palette: qemscan24          # built-in schema name or path to a palette YAML
    classes: groups             # groups | minerals : what the tiles' class ids are
    label_coding: color         # color | grey | index (default for all samples)
    unknown_colors: reject      # reject | nearest | ignore
    color_tolerance: 0
    sem_scale: 1                # SEM pixels per label pixel on the working grid
    tile_size: 32
    out_size: 64
    min_sample_fraction: 0.5
    normalise: {method: percentile, low: 0.5, high: 99.5, drift: true}
    repair_seams: auto          # auto | true | false
    register: true
    seed: 0
    split: {by: blocks, fractions: {train: 0.7, val: 0.15, test: 0.15}, block_tiles: 4}
    samples:
      - {name: sample00, sem: sample00/sem.tif, labels: sample00/qemscan.png}

Relative paths (sample files, a palette given as a path) are relative to the folder of
the config file; :func:`load_prepare_config` resolves them to absolute paths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from mineralseg.config import StrictModel, load_yaml, parse_config
from mineralseg.errors import ConfigError

__all__ = [
    "NormaliseConfig",
    "PrepareConfig",
    "SampleConfig",
    "SplitConfig",
    "SplitFractions",
    "load_prepare_config",
    "RAW_SUFFIXES",
]

# File name endings read as headerless raw pixel dumps (they need sem_shape + sem_dtype).
RAW_SUFFIXES = (".raw", ".bin", ".dat")
# Allowed slack on "fractions sum to 1" (YAML users write 0.7 / 0.15 / 0.15).
_FRACTION_SUM_TOL = 1e-6
SPLITS = ("train", "val", "test")

Coding = Literal["color", "grey", "index"]


class NormaliseConfig(StrictModel):
    """SEM grey-level normalisation (see :func:`mineralseg.prep.intensity.normalise_sem`).

    ``method: percentile`` removes a slow drift (if ``drift``) and stretches the
    ``low``..``high`` percentiles inside the sample to 0..255; ``method: none`` keeps
    the grey levels (a uint16 SEM is then scaled by 1/257 to uint8).
    """

    method: Literal["percentile", "none"] = "percentile"
    low: float = Field(0.5, ge=0, lt=100)
    high: float = Field(99.5, gt=0, le=100)
    drift: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> "NormaliseConfig":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
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
    seeded over the samples by ``fractions``.
    """

    by: Literal["blocks", "sample"] = "blocks"
    fractions: SplitFractions = Field(default_factory=SplitFractions)
    block_tiles: int = Field(4, ge=1)
    guard: bool = Field(
        True, description="by: blocks: drop the train and val tiles that touch a test tile (no training "
        "tile shares a grain with a test tile); the manifest lists them"
    )
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
    sem_dtype: Literal["uint8", "uint16"] | None = None
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


class PrepareConfig(StrictModel):
    """The whole prepare config (see the module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    palette: str = "qemscan24"
    classes: Literal["groups", "minerals"] = "groups"
    label_coding: Coding = "color"
    unknown_colors: Literal["reject", "nearest", "ignore"] = "reject"
    color_tolerance: float = Field(0, ge=0)
    sem_scale: Union[int, float] = 1
    tile_size: int = Field(32, gt=0)
    out_size: int = Field(64, gt=0)
    min_sample_fraction: float = Field(0.5, ge=0, le=1)
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    repair_seams: Union[Literal["auto"], bool] = "auto"
    # ``register`` is a method of pydantic's base class: the field is stored as
    # ``register_`` and read / written as ``register`` in YAML.
    register_: bool = Field(True, alias="register")
    seed: int = 0
    split: SplitConfig = Field(default_factory=SplitConfig)
    samples: list[SampleConfig] = Field(min_length=1)

    @field_validator("sem_scale")
    @classmethod
    def _scale_at_least_one(cls, value: float) -> float:
        if not math.isfinite(value) or value < 1:
            raise ValueError(f"sem_scale must be >= 1 (SEM pixels per label pixel), got {value}")
        if float(value).is_integer():
            return int(value)
        return float(value)

    @model_validator(mode="after")
    def _consistent(self) -> "PrepareConfig":
        names = [s.name for s in self.samples]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sample names must be unique; repeated: {', '.join(dupes)}")
        split = self.split
        if split.by == "sample":
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
        """The label coding of ``sample`` (its own, or the config default)."""
        return sample.label_coding or self.label_coding

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
    cfg = parse_config(load_yaml(path), PrepareConfig, source=str(path))
    return resolve_paths(cfg, path.resolve().parent)


def resolve_paths(cfg: PrepareConfig, base: str | Path) -> PrepareConfig:
    """A copy of ``cfg`` whose relative paths are made absolute against ``base``."""
    base = Path(base)
    data = cfg.model_dump(by_alias=True)
    for sample in data["samples"]:
        for key in ("sem", "labels"):
            p = Path(sample[key]).expanduser()
            sample[key] = p if p.is_absolute() else (base / p).resolve()
    palette = data["palette"]
    if _looks_like_path(palette):
        p = Path(palette).expanduser()
        data["palette"] = str(p if p.is_absolute() else (base / p).resolve())
    try:
        return PrepareConfig.model_validate(data)
    except Exception as exc:  # pragma: no cover - the data was valid a moment ago
        raise ConfigError(f"{base}: {exc}") from None
