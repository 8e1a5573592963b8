"""Helpers shared by the quality benchmark scripts (not part of the package).

Result files are JSON lists of rows, one per method and dataset::

    {"method": "unet-resnet18", "dataset": "sandstone-xrm", "iou": {class: IoU},
     "miou": float, "train_seconds": float, "weights": "none" | null, ...}

Re-running a script with some of its methods replaces those rows only
(:func:`merge_rows`), so a result file can be built up method by method; each row
records the date and the machine it was measured on. Every score comes from ONE
confusion matrix over the whole evaluated split (:mod:`mineralseg.evaluate.metrics`).
"""

from __future__ import annotations

import argparse

import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"  # git-ignored scratch space (datasets, runs)

# Per-CNN training time limit: the benchmark must finish in a working session.
DEFAULT_CNN_MINUTES = 25
MAX_CNN_MINUTES = 30

# CNN methods -> (architecture, encoder) for mineralseg.models.build_model.
CNN_METHODS: dict[str, tuple[str, str | None]] = {
    "unet-resnet18": ("unet", "resnet18"),
    "linknet-resnet18": ("linknet", "resnet18"),
    "resunet": ("resunet", None),
}
# Short method names on the command line -> row names.
BASELINE_METHODS = {"otsu": "multi-otsu", "rf": "random-forest"}


# --------------------------------------------------------------------------- arguments
def parse_methods(text: str, known: Sequence[str]) -> list[str]:
    """Comma-separated method names -> list (``all`` = every known one).

    Raises SystemExit naming the unknown ones and the valid names.
    """
    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        return list(known)
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise SystemExit(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from: all, {', '.join(known)}")
    return list(dict.fromkeys(names))


def check_minutes(minutes: float) -> float:
    """The per-CNN time limit, checked against :data:`MAX_CNN_MINUTES`."""
    if not 0 < minutes <= MAX_CNN_MINUTES:
        raise SystemExit(f"--minutes must be in (0, {MAX_CNN_MINUTES}], got {minutes}")
    return float(minutes)


def max_time(minutes: float) -> str:
    """Lightning's ``"DD:HH:MM:SS"`` for a limit in minutes (rounded up to a second)."""
    s = int(math.ceil(minutes * 60))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads in BLAS/OpenMP and torch (a shared machine)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    import torch

    torch.set_num_threads(n)


# --------------------------------------------------------------------------- options
def benchmark_parser(
    description: str,
    methods: Sequence[str],
    *,
    stem: str,
    minutes: float,
    out: Path,
    input_size: int | None,
    rf_samples: int,
) -> argparse.ArgumentParser:
    """The options both quality benchmarks share; each script adds its own after these."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--methods", default="all", help=f"comma-separated: all or {', '.join(methods)} (default all)")
    parser.add_argument("--minutes", type=float, default=minutes,
                        help=f"training time per CNN in minutes (default {minutes}, at most {MAX_CNN_MINUTES})")  # fmt: skip
    parser.add_argument("--out", type=Path, default=out, help=f"work folder: dataset, runs (default {repo_relative(out)})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where {stem}.json/.md go")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (BLAS, torch, random forest); default 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rf-samples", type=int, default=rf_samples,
                        help=f"random forest training pixels per class, on average (default {rf_samples})")
    parser.add_argument("--rf-trees", type=int, default=100)
    parser.add_argument("--input-size", type=int, default=input_size,
                        help=f"CNN input side (default {input_size or 'the tile size'})")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2, help="data loader workers for the CNNs")
    parser.add_argument("--context", choices=("sample", "tile"), default="sample",
                        help="how the CNNs predict the scored pixels: each sample whole with overlapping windows "
                        "(default, as when mapping an image) or each tile alone; both are recorded")  # fmt: skip
    parser.add_argument("--flips", action="store_true",
                        help="with --context sample: average each window over its flips (test-time augmentation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra training-config override for the CNNs, e.g. --set optim.lr=3e-4 (repeatable)")
    return parser


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM (GiB), GPU (if torch sees one), OS and Python."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        ram = None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA setup only means "no GPU" here
        gpu = None
    return {"cpu_model": cpu, "cores": os.cpu_count(), "ram_gib": ram, "gpu": gpu,
            "platform": platform.platform(), "python": platform.python_version()}  # fmt: skip


def machine_line(info: dict[str, Any]) -> str:
    """One line such as ``Intel Xeon, 2 cores, 23.5 GiB RAM, no GPU``."""
    gpu = info.get("gpu") or "no GPU"
    return f"{info['cpu_model']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, {gpu}"


def today() -> str:
    return _dt.date.today().isoformat()


# --------------------------------------------------------------------------- scoring
def score(truths: Iterable[np.ndarray], preds: Iterable[np.ndarray], class_names: Sequence[str],
          ignore_index: int = 255) -> dict[str, Any]:  # fmt: skip
    """Metrics of many (truth, prediction) maps from one confusion matrix."""
    from mineralseg.evaluate.metrics import ConfusionMatrix, metrics_from_confusion

    cm = ConfusionMatrix(len(class_names), ignore_index)
    for t, p in zip(truths, preds, strict=True):
        cm.update(t, p)
    return metrics_from_confusion(cm, class_names)


def result_row(
    method: str,
    dataset: str,
    metrics: dict[str, Any],
    *,
    train_seconds: float,
    weights: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """One row of a result file (rounded for reading; the JSON keeps 4 decimals)."""
    row = {
        "method": method,
        "dataset": dataset,
        "iou": {k: None if v is None else round(float(v), 4) for k, v in metrics["iou"].items()},
        "miou": None if metrics["miou"] is None else round(float(metrics["miou"]), 4),
        "pixel_accuracy": None if metrics.get("pixel_accuracy") is None else round(float(metrics["pixel_accuracy"]), 4),
        "scored_pixels": int(metrics["num_pixels"]),
        "train_seconds": round(float(train_seconds), 1),
        "weights": weights,
    }
    row.update(extra)
    row.setdefault("date", today())
    row.setdefault("machine", machine_line(machine_info()))
    return row


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


# --------------------------------------------------------------------------- results
def merge_rows(path: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the file at ``path`` with those of the same (method, dataset) replaced.

    New methods are appended; the order of the existing rows is kept. A missing or
    unreadable file counts as empty.
    """
    old: list[dict[str, Any]] = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = []
        if not isinstance(old, list):
            old = []
    new = {(r["method"], r["dataset"]): r for r in rows}
    merged = [new.pop((r.get("method"), r.get("dataset")), r) for r in old]
    return merged + list(new.values())


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (for result files)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def class_names_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Class names in first-seen order over the rows' ``iou`` dicts."""
    return list(dict.fromkeys(k for r in rows for k in r["iou"]))


def markdown_table(rows: Sequence[dict[str, Any]], class_names: Sequence[str], *, bold: bool = True) -> str:
    """Markdown table; the best value of each IoU column (and mean IoU) in bold unless
    ``bold`` is False (rows that are not rivals, e.g. scored against different references)."""
    head = ["method", "weights", *class_names, "mean IoU", "train time", "date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def best(values: list[Any]) -> str | None:
        shown = [_fmt(v) for v in values if v is not None]
        return max(shown, key=float) if shown else None

    best_iou = {c: best([r["iou"].get(c) for r in rows]) for c in class_names}
    best_miou = best([r.get("miou") for r in rows])

    def cell(value: Any, top: str | None) -> str:
        text = _fmt(value)
        return f"**{text}**" if bold and value is not None and text == top else text

    for r in rows:
        cells = [r["method"], r.get("weights") or "–", *(cell(r["iou"].get(c), best_iou[c]) for c in class_names),
                 cell(r.get("miou"), best_miou), _fmt_seconds(r.get("train_seconds")), r.get("date", "–")]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> str:
    """The table for the terminal."""
    width = max([len("method")] + [len(r["method"]) for r in rows])
    cols = [c[:10] for c in class_names]
    head = f"{'method':<{width}} | " + " | ".join(f"{c:>10}" for c in cols) + f" | {'mean IoU':>8} | {'train':>9}"
    out = [head, "-" * len(head)]
    for r in rows:
        ious = " | ".join(f"{_fmt(r['iou'].get(c)):>10}" for c in class_names)
        seconds = _fmt_seconds(r.get("train_seconds"))
        out.append(f"{r['method']:<{width}} | {ious} | {_fmt(r['miou']):>8} | {seconds:>9}")
    return "\n".join(out)


def describe_row(row: dict[str, Any]) -> str | None:
    """A line on how a row's method was run (from its ``params``), for the notes."""
    p = row.get("params") or {}
    if "n_estimators" in p:
        drawn = p.get("train_pixels") or {}
        return (f"{row['method']}: {sum(drawn.values()):,} training pixels ({p.get('sampling')}; "
                + ", ".join(f"{k} {v:,}" for k, v in drawn.items())
                + f"), {p['n_estimators']} trees, sigma {p.get('sigma_min')}..{p.get('sigma_max')}, "
                f"{p.get('n_jobs')} thread(s); prediction {row.get('predict_seconds', '?')} s.")  # fmt: skip
    if "arch" in p:
        return (f"{row['method']}: {p.get('epochs')} epochs ({p.get('global_step')} steps) in "
                f"{_fmt_seconds(row.get('train_seconds'))} (limit {p.get('minutes')} min) on "
                f"{p.get('device')} ({p.get('precision')}), best validation checkpoint at step "
                f"{p.get('best_step')}; input {p.get('input_size')} px, batch {p.get('batch_size')}"
                + (f", overrides {p['overrides']}" if p.get("overrides") else "")
                + ("; scored with each sample predicted whole (overlapping windows"
                   + (", test-time flips" if p.get("flips") else "") + "); tile by tile: mean IoU "
                   f"{row['tile_context']['miou']:.3f}" if p.get("context") == "sample" and row.get("tile_context")
                   else "; scored tile by tile")
                + (f"; checkpoint re-scored on {row['rescored']} (benchmarks/rescore_cnn.py)" if row.get("rescored")
                   else "") + ".")  # fmt: skip
    if "thresholds" in p:
        return f"{row['method']}: {p.get('n_classes')} classes, thresholds {p['thresholds']}, {p.get('mapping')}."
    return None


def write_results(
    results_dir: Path,
    stem: str,
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    intro: str,
    notes: Sequence[str] | Callable[[list[dict[str, Any]]], Sequence[str]] = (),
    bold: bool = True,
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Merge ``rows`` into ``<stem>.json`` and rewrite ``<stem>.md`` from all rows.

    The Markdown file holds ``intro``, the table, ``notes``, a line per row on how its
    method was run (:func:`describe_row`) and the machines with their methods and dates.
    ``notes`` may be a function of the merged rows; ``bold``: see :func:`markdown_table`. Returns the two paths and the
    merged rows.
    """
    from mineralseg.io import atomic_path, write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{stem}.json"
    md_path = results_dir / f"{stem}.md"
    merged = merge_rows(json_path, rows)
    write_json(json_path, merged)
    names = class_names_of(merged)
    machines: dict[str, list[str]] = {}
    for r in merged:
        machines.setdefault(r.get("machine", "unknown machine"), []).append(f"{r['method']} ({r.get('date', '?')})")
    lines = [f"# {title}", "", intro, "", markdown_table(merged, names, bold=bold), ""]
    extra = notes(merged) if callable(notes) else notes
    details = list(extra) + [d for d in map(describe_row, merged) if d]
    lines += [f"- {n}" for n in details]
    if details:
        lines.append("")
    lines.append("Machines:")
    lines += [f"- {m}: {', '.join(ms)}" for m, ms in machines.items()]
    lines.append("")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines))
    return json_path, md_path, merged


# --------------------------------------------------------------------------- CNNs
def train_and_evaluate_cnn(
    method: str,
    dataset: Path,
    work: Path,
    *,
    minutes: float,
    input_size: int | None = None,
    seed: int = 0,
    overrides: Sequence[str] = (),
    num_workers: int = 2,
    batch_size: int = 8,
    max_steps: int | None = None,
    test: bool = True,
    device: str | None = None,
    name: str | None = None,
    context: str = "sample",
    flips: bool = False,
) -> dict[str, Any]:
    """Train one CNN from random init for ``minutes`` and evaluate it (val, then test).

    Uses the project's API: :func:`mineralseg.train.run.train` (best checkpoint by
    validation mean IoU) and :func:`mineralseg.evaluate.evaluate.evaluate`; the test
    split is evaluated once, after training, unless ``test`` is False (tuning runs,
    which look at the validation split only). ``max_steps`` also stops training after
    that many optimiser steps; ``device`` is passed to the evaluation; ``name`` names
    the run folder (default: the method).

    ``context`` is how the scored pixels are predicted (see
    :func:`mineralseg.evaluate.evaluate.evaluate`): ``sample`` (default) predicts each
    sample whole with overlapping windows, as a user maps a whole image; the
    tile-by-tile scores are computed too, from the same checkpoint, and returned as
    ``val_tiles`` / ``test_tiles``. ``flips`` adds test-time flips to the ``sample``
    context.

    Returns
    -------
    dict
        ``test`` (None when not evaluated) and ``val`` metrics in ``context``,
        ``test_tiles`` / ``val_tiles`` (tile context), ``train_seconds``, ``run``
        (folder) and ``params`` (the training settings).
    """
    from mineralseg.evaluate.evaluate import evaluate
    from mineralseg.train.run import train

    arch, encoder = CNN_METHODS[method]
    config: dict[str, Any] = {
        "dataset": str(dataset.resolve()),
        "run": {"root": str((work / "runs").resolve()), "name": name or method},
        "seed": seed,
        "approach": "random",  # ImageNet weights cannot be downloaded here
        "model": {"arch": arch, "encoder": encoder},
        "trainer": {"max_epochs": -1, "max_time": max_time(minutes), "batch_size": batch_size,
                    "num_workers": num_workers, "progress_bar": False},  # fmt: skip
    }
    if input_size:
        config["input_size"] = int(input_size)
    if max_steps:
        config["trainer"]["max_steps"] = int(max_steps)
    with Stopwatch() as sw:
        run_dir = Path(train(config, overrides=list(overrides) or None))
    def score(split: str, how: str, panels: int) -> dict[str, Any]:
        folder = run_dir / (f"eval-{split}" if how == context else f"eval-{split}-{how}")
        return evaluate(run_dir, dataset, split=split, out=folder, panels=panels, progress=False, device=device,
                        context=how, flips=flips and how == "sample")  # fmt: skip

    val = score("val", context, 0)
    val_tiles = val if context == "tile" else score("val", "tile", 0)
    test_metrics = test_tiles = None
    if test:  # the test split, once: both contexts from the same checkpoint
        test_metrics = score("test", context, 6)
        test_tiles = test_metrics if context == "tile" else score("test", "tile", 0)
    record: dict[str, Any] = {}
    if (run_dir / "run.json").exists():
        record = json.loads((run_dir / "run.json").read_text())
    params = {"arch": arch, "encoder": encoder, "input_size": val.get("input_size"), "minutes": minutes,
              "batch_size": batch_size, "seed": seed, "epochs": record.get("epochs"),
              "global_step": record.get("global_step"), "best_epoch": val.get("epoch"),
              "best_step": val.get("global_step"), "device": (record.get("device") or {}).get("accelerator"),
              "precision": (record.get("device") or {}).get("precision"),
              "overrides": list(overrides)}  # fmt: skip
    if max_steps:
        params["max_steps"] = int(max_steps)
    params["context"] = context
    params["flips"] = bool(flips and context == "sample")
    return {"test": test_metrics, "val": val, "test_tiles": test_tiles, "val_tiles": val_tiles,
            "train_seconds": sw.seconds, "run": str(run_dir), "params": params}  # fmt: skip


def tile_context(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tile-by-tile scores of a result, rounded, for a row's ``tile_context``."""
    if not metrics:
        return None
    return {"miou": round(float(metrics["miou"]), 4),
            "iou": {k: None if v is None else round(float(v), 4) for k, v in metrics["iou"].items()}}  # fmt: skip
