"""``mineralseg experiment GRID --out DIR``: train and test a grid of models.

A grid YAML holds a base training config and the lists to combine::

    base:                      # a training config (mapping), or the path of one
      dataset: ../../data/study-dataset
      trainer: {max_epochs: 50, batch_size: 8}
    models:                    # display names default to the study's style
      - {arch: plain-unet, name: Custom model}
      - {arch: unet, encoder: resnet18}
    input_sizes: [128]
    approaches: [imagenet_full, imagenet_frozen, random]
    best_approach_only: true   # the study reported each model's best approach
    select_on: val             # the split that picks it (default; never the test split)

Every combination is trained in turn (``DIR/runs/<model>-<size>-<approach>-<time>``),
evaluated on the validation AND the test split, and recorded with its training time
and parameter count. With ``best_approach_only`` each model keeps the approach with
the highest mean IoU on ``select_on`` (``val``): choosing on the test split would
make the test score optimistic. ``select_on: test`` reproduces the study's
selection and is marked as such in the tables. Tables show the test scores with
the validation mean IoU beside them.
Architectures without an encoder (``resunet``, ``plain-unet``, ``pix2pix``) only run
the ``random`` approach. A pix2pix row (``{arch: pix2pix, options: {...}, gan: {...}}``,
shown as "GAN") is trained adversarially in segment mode and scored like the CNNs:
the study's Table 4 beside Tables 1-3. A combination whose finished run (same resolved config) is
already in ``DIR/runs`` is not trained again, so an interrupted grid continues where
it stopped.

Outputs: ``results.md`` / ``results.csv`` (the study's table: Model | test IoU per
class | test mean IoU | val mean IoU | train time | parameters, under a line saying
which split selected the rows; one table per input size, ``results-<size>.*`` when
there are several), ``results-all.*`` (every combination) and ``results.json``
(rows with ``val_miou``/``val_iou`` and test ``miou``/``iou``, ``selected_on``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mineralseg.config import StrictModel, load_yaml, parse_config
from mineralseg.errors import ConfigError
from mineralseg.io.atomic import atomic_path, write_json
from mineralseg.train.config import Approach, TrainConfig, load_train_config

__all__ = ["ExperimentConfig", "GridModel", "PlannedRun", "display_name", "plan_experiment", "run_experiment"]

# Display names in the study's tables.
_ARCH_NAMES = {"unet": "Unet", "linknet": "Linknet", "fpn": "FPN", "deeplabv3plus": "DeepLabV3+",
               "resunet": "ResUnet", "plain-unet": "Custom model", "pix2pix": "GAN"}
_NO_ENCODER = ("resunet", "plain-unet", "pix2pix")


class GridModel(StrictModel):
    """One model of the grid."""

    arch: str
    encoder: str | None = None
    name: str | None = Field(None, description="row label (default: 'Unet + resnet18' style)")
    options: dict[str, Any] = Field(default_factory=dict)
    gan: dict[str, Any] | None = Field(
        None, description="pix2pix only: its gan: section (default: mode segment with pix2pix's settings)"
    )


class ExperimentConfig(StrictModel):
    """A grid of training runs."""

    base: dict[str, Any] | str = Field(description="training config mapping, or its path")
    models: list[GridModel] = Field(min_length=1)
    input_sizes: list[int] = Field(default_factory=list, description="empty: the base input_size")
    approaches: list[Approach] = Field(default_factory=list, description="empty: the base approach")
    best_approach_only: bool = True
    select_on: Literal["val", "test"] = Field(
        "val", description="split whose mean IoU picks each model's approach (test only to reproduce the study)"
    )
    eval_batch_size: int = Field(8, ge=1)
    panels: int = Field(4, ge=0)


def display_name(arch: str, encoder: str | None) -> str:
    """``Unet + resnet18``, ``ResUnet``, ``Custom model`` (the study's row labels)."""
    label = _ARCH_NAMES.get(arch.lower(), arch)
    return f"{label} + {encoder}" if encoder else label


def _base_config(cfg: ExperimentConfig, grid_path: Path) -> tuple[dict[str, Any], Path]:
    if isinstance(cfg.base, str):
        path = Path(cfg.base)
        path = path if path.is_absolute() else grid_path.parent / path
        return load_yaml(path), path.resolve().parent
    return dict(cfg.base), grid_path.resolve().parent


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "run"}


def _finished_run(runs: Path, name: str, train_cfg: TrainConfig) -> Path | None:
    """The latest finished run of ``name`` trained with the same config (run folder aside)."""
    wanted = _comparable(train_cfg.to_dict())
    for run in sorted(runs.glob(f"{name}-*"), reverse=True):
        try:
            record = json.loads((run / "run.json").read_text())
            done = load_train_config(run / "config.yaml")
        except (OSError, ValueError, ConfigError):
            continue
        if record.get("status") == "finished" and _comparable(done.to_dict()) == wanted:
            return run
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.+]+", "-", text.lower()).strip("-")


def _combinations(cfg: ExperimentConfig, base: dict[str, Any]):
    sizes = cfg.input_sizes or [base.get("input_size")]
    approaches = cfg.approaches or [base.get("approach")]
    for size in sizes:
        for model in cfg.models:
            for approach in approaches:
                if model.arch.lower() in _NO_ENCODER and approach not in (None, "random"):
                    continue
                yield size, model, approach


@dataclass(frozen=True)
class PlannedRun:
    """One combination of a grid, with its validated training config."""

    name: str  # run-folder prefix
    label: str  # row label in the tables
    model: GridModel
    input_size: int | None
    approach: str | None
    config: TrainConfig


def _check_model(model: GridModel, size: int | None, where: str) -> None:
    """ConfigError for unknown names, or an input size the model cannot take."""
    from mineralseg.models import input_divisor, min_input_size

    divisor = input_divisor(model.arch, model.encoder, **model.options)
    smallest = min_input_size(model.arch, model.encoder, **model.options)
    if size is not None and (size % divisor or size < smallest):
        raise ConfigError(
            f"{where}: input size {size} does not suit {display_name(model.arch, model.encoder)} "
            f"(needs a multiple of {divisor}, at least {smallest})"
        )


def plan_experiment(grid: str | os.PathLike, out: str | os.PathLike, *, overrides: Any = None) -> list[PlannedRun]:
    """Read a grid and validate every combination without training anything.

    Returns
    -------
    list of PlannedRun
        In the order they run (input size, then model, then approach).

    Raises
    ------
    ConfigError
        Invalid grid or training config, unknown architecture/encoder, an input
        size a model cannot take, or no combination at all.
    """
    grid_path = Path(grid)
    cfg = parse_config(load_yaml(grid_path), ExperimentConfig, source=str(grid_path))
    base, base_dir = _base_config(cfg, grid_path)
    runs = Path(out) / "runs"
    plans = []
    for size, model, approach in _combinations(cfg, base):
        label = model.name or display_name(model.arch, model.encoder)
        name = f"{_slug(label)}-{size or 'native'}-{approach or 'base'}"
        data = dict(base)
        data["model"] = {**(base.get("model") or {}), "arch": model.arch, "encoder": model.encoder,
                         "options": model.options}
        data["run"] = {"root": str(runs.resolve()), "name": name}
        data.pop("gan", None)  # a gan: section belongs to its pix2pix row, not to every row
        if model.gan is not None or model.arch.lower() == "pix2pix":
            data["gan"] = dict(model.gan or {})
            if data["gan"].get("mode", "segment") != "segment":
                raise ConfigError(
                    f"{grid_path}: model {label!r} has gan.mode {data['gan']['mode']!r}; experiment tables "
                    "score segmentation, so a pix2pix row needs gan.mode segment"
                )
        _check_model(model, size, str(grid_path))
        if size is not None:
            data["input_size"] = size
        if approach is not None:
            data["approach"] = approach
            for key in ("encoder_weights", "freeze_encoder"):
                data["model"].pop(key, None)
        if "dataset" in data:
            p = Path(str(data["dataset"])).expanduser()
            data["dataset"] = str(p if p.is_absolute() else base_dir / p)
        plans.append(PlannedRun(name, label, model, size, approach, load_train_config(data, overrides=overrides)))
    if not plans:
        raise ConfigError(f"{grid_path}: the grid has no combination to run")
    return plans


def run_experiment(
    grid: str | os.PathLike, out: str | os.PathLike, *, overrides: Any = None
) -> list[dict[str, Any]]:
    """Train, evaluate and tabulate every combination of a grid.

    Parameters
    ----------
    grid : path-like
        The grid YAML (see the module docstring).
    out : path-like
        Output folder (runs go to ``out/runs``).
    overrides : dict or list of str, optional
        Applied to every run's training config (e.g. ``{"trainer.max_epochs": 2}``).

    Returns
    -------
    list of dict
        One row per combination: ``model`` (label), ``arch``, ``encoder``,
        ``input_size``, ``approach``, ``iou`` (class -> test IoU), ``miou``,
        ``mean_f1``, ``pixel_accuracy`` (test), ``val_iou``, ``val_miou``
        (validation), ``train_time_s``, ``params``, ``run`` (folder).

    Raises
    ------
    ConfigError
        Invalid grid (every combination is checked, see :func:`plan_experiment`,
        before anything is trained).
    """
    from mineralseg.evaluate.evaluate import evaluate
    from mineralseg.evaluate.tables import write_results
    from mineralseg.train.run import train

    grid_path = Path(grid)
    cfg = parse_config(load_yaml(grid_path), ExperimentConfig, source=str(grid_path))
    plans = plan_experiment(grid_path, out, overrides=overrides)
    out = Path(out)
    rows: list[dict[str, Any]] = []
    class_names: list[str] = []
    for plan in plans:
        run_dir = _finished_run(out / "runs", plan.name, plan.config) or train(plan.config)
        scores = {}
        for split in ("val", "test"):
            metrics_path = run_dir / f"eval-{split}" / "metrics.json"
            if metrics_path.is_file():
                scores[split] = json.loads(metrics_path.read_text())
            else:
                scores[split] = evaluate(run_dir, split=split, batch_size=cfg.eval_batch_size,
                                         panels=cfg.panels if split == "test" else 0, progress=False)
        metrics, val = scores["test"], scores["val"]
        record = json.loads((run_dir / "run.json").read_text())
        class_names = metrics["class_names"]
        rows.append({
            "model": plan.label,
            "arch": plan.model.arch,
            "encoder": plan.model.encoder,
            "input_size": metrics.get("input_size", plan.input_size),
            "approach": plan.approach or plan.config.approach,
            "iou": metrics["iou"],
            "miou": metrics["miou"],
            "mean_f1": metrics.get("mean_f1"),
            "pixel_accuracy": metrics.get("pixel_accuracy"),
            "val_iou": val["iou"],
            "val_miou": val["miou"],
            "train_time_s": record.get("train_time_s"),
            "params": record.get("model", {}).get("parameters"),
            "run": str(run_dir),
        })
    _write_tables(rows, class_names, out, cfg, write_results)
    return rows


def _best_per_model(rows: list[dict[str, Any]], select_on: str) -> list[dict[str, Any]]:
    """Each model's row with the highest mean IoU on ``select_on`` (first one on ties)."""
    key = "val_miou" if select_on == "val" else "miou"
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        score = row[key] if row[key] is not None else -1.0
        kept = best.get(row["model"])
        if kept is None or score > (kept[key] if kept[key] is not None else -1.0):
            best[row["model"]] = row
    return list(best.values())


_COLUMNS = ("model", "iou", "miou", "val_miou", "train_time", "params")


def _selection_note(cfg: ExperimentConfig) -> str:
    if not cfg.best_approach_only:
        return "Every approach; IoU and mean IoU on the test split, val mean IoU on the validation split."
    if cfg.select_on == "val":
        return ("Each model's approach selected on the validation split (val mean IoU); IoU and mean IoU "
                "on the test split, which played no part in the choice.")
    return ("Each model's approach selected on the TEST split (the study's protocol): its test scores are "
            "optimistic.")


def _write_tables(rows, class_names, out: Path, cfg: ExperimentConfig, write_results) -> None:
    sizes = list(dict.fromkeys(r["input_size"] for r in rows))
    selected = []
    note = _selection_note(cfg)
    for size in sizes:
        at_size = [r for r in rows if r["input_size"] == size]
        table = _best_per_model(at_size, cfg.select_on) if cfg.best_approach_only else at_size
        if not cfg.best_approach_only:
            table = [{**r, "model": f"{r['model']} ({r['approach']})"} for r in table]
        selected += table
        stem = "results" if len(sizes) == 1 else f"results-{size}"
        md, _ = write_results(table, class_names, out, stem=stem, columns=_COLUMNS)
        text = md.read_text()
        with atomic_path(md) as tmp:
            tmp.write_text(f"{note}\n\n{text}")
    labelled = [{**r, "model": f"{r['model']} @{r['input_size']} ({r['approach']})"} for r in rows]
    write_results(labelled, class_names, out, stem="results-all", columns=_COLUMNS)
    write_json(out / "results.json", {"class_names": class_names, "rows": rows,
                                      "selected_on": cfg.select_on if cfg.best_approach_only else None,
                                      "note": note, "table": [r["run"] for r in selected]})
