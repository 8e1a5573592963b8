"""Unit tests of the prepare config (prep/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mineralseg.errors import ConfigError
from mineralseg.prep.config import load_prepare_config


def _write_cfg(tmp_path: Path, **over) -> Path:
    data = {
        "palette": "qemscan24",
        "samples": [
            {"name": "a", "sem": "a/sem.tif", "labels": "a/qemscan.png"},
            {"name": "b", "sem": "b/sem.tif", "labels": "b/qemscan.png"},
        ],
    }
    data.update(over)
    path = tmp_path / "cfg" / "prepare.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_config_defaults_and_relative_paths(tmp_path):
    cfg = load_prepare_config(_write_cfg(tmp_path, sem_scale=2.0, palette="pal/my.yaml"))
    assert cfg.samples[0].sem == (tmp_path / "cfg" / "a" / "sem.tif").resolve()
    assert cfg.samples[1].labels == (tmp_path / "cfg" / "b" / "qemscan.png").resolve()
    assert cfg.palette == str((tmp_path / "cfg" / "pal" / "my.yaml").resolve())
    assert cfg.sem_scale == 2 and isinstance(cfg.sem_scale, int)
    assert cfg.tile_size == 32 and cfg.out_size == 64 and cfg.split.by == "blocks"
    assert cfg.register_ is True and cfg.repair_seams == "auto"
    assert cfg.split.fractions.as_dict() == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_config_builtin_palette_name_is_not_a_path(tmp_path):
    cfg = load_prepare_config(_write_cfg(tmp_path, palette="sandstone-xrm", register=False, sem_scale=1.5))
    assert cfg.palette == "sandstone-xrm"
    assert cfg.register_ is False and cfg.sem_scale == 1.5


@pytest.mark.parametrize(
    "over, match",
    [
        ({"tile_sise": 32}, "did you mean 'tile_size'"),
        ({"tile_size": 0}, "tile_size"),
        ({"out_size": -4}, "out_size"),
        ({"sem_scale": 0.5}, "sem_scale must be >= 1"),
        ({"min_sample_fraction": 1.5}, "min_sample_fraction"),
        ({"split": {"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}}, "sum to 1"),
        ({"split": {"by": "sample", "train": ["a"], "val": ["zz"]}}, "unknown sample 'zz'"),
        ({"split": {"by": "sample", "train": ["a"], "val": ["a"]}}, "is in split.train and split.val"),
        ({"split": {"by": "blocks", "val": ["a"]}}, "only used with split.by: sample"),
        ({"normalise": {"low": 99, "high": 1}}, "must be below high"),
        ({"repair_seams": "sometimes"}, "repair_seams"),
    ],
)
def test_config_rejects_bad_values(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        load_prepare_config(_write_cfg(tmp_path, **over))


def test_config_sample_rules(tmp_path):
    dup = [{"name": "a", "sem": "x.tif", "labels": "y.png"}] * 2
    with pytest.raises(ConfigError, match="unique; repeated: a"):
        load_prepare_config(_write_cfg(tmp_path, samples=dup))
    one = [{"name": "a", "sem": "x.tif", "labels": "y.png"}]
    with pytest.raises(ConfigError, match="at least 2 samples"):
        load_prepare_config(_write_cfg(tmp_path, samples=one, split={"by": "sample"}))
    # explicit lists make a single sample fine
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=one, split={"by": "sample", "train": ["a"]}))
    assert cfg.sample_splits() == {"a": "train"}
    raw = [{"name": "a", "sem": "x.raw", "labels": "y.png"}]
    with pytest.raises(ConfigError, match="raw SEM file .* needs sem_shape"):
        load_prepare_config(_write_cfg(tmp_path, samples=raw, split={"by": "blocks"}))
    raw[0].update(sem_shape=[10, 20], sem_dtype="uint16")
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=raw))
    assert cfg.samples[0].sem_shape == (10, 20)
    with pytest.raises(ConfigError, match="folder name"):
        load_prepare_config(_write_cfg(tmp_path, samples=[{"name": "a/b", "sem": "x.tif", "labels": "y.png"}]))


def test_config_sample_lists_rest_goes_to_train(tmp_path):
    three = [{"name": n, "sem": "x.tif", "labels": "y.png"} for n in ("a", "b", "c")]
    cfg = load_prepare_config(_write_cfg(tmp_path, samples=three, split={"by": "sample", "val": ["b"]}))
    assert cfg.sample_splits() == {"a": "train", "b": "val", "c": "train"}
    with pytest.raises(ConfigError, match="in no split list"):
        load_prepare_config(_write_cfg(tmp_path, samples=three, split={"by": "sample", "train": ["a"], "val": ["b"]}))
