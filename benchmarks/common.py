"""Helpers shared by the quality benchmark scripts (not part of the package).

Result files are JSON lists of rows, one per method, dataset and measurement::

    {"method": "unet-resnet18", "dataset": "sandstone-xrm", "iou": {class: IoU},
     "miou": float, "train_seconds": float, "weights": "none" | null,
     "recorded": "2026-11-30T16:02:11", ...}

The protocol (``benchmarks/README.md``): rows are only ever appended
(:func:`append_rows`), never replaced, so a re-run or a re-score is a new dated row
and the history of a table stays in its JSON; the Markdown shows the latest row of
each method and lists the earlier ones. A CNN row aggregates several seeds
(:func:`seed_row`): ``iou`` / ``miou`` are means over the seeds, ``iou_sd`` /
``miou_sd`` their sample standard deviations and ``seeds`` each seed's scores; its
training budget is a number of optimiser steps (``steps``), the minutes they took
are recorded beside it. A value is bold only when it beats the runner-up by more
than their spread (:func:`markdown_table`). Every score comes from ONE confusion
matrix over the whole evaluated split (:mod:`mineralseg.evaluate.metrics`).
"""

from __future__ import annotations

import argparse

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"  # git-ignored scratch space (datasets, runs)

# Per-CNN training time limit: a safety cap on top of the step budget (``--steps``),
# which is what makes CNN rows comparable, across methods and machines.
DEFAULT_CNN_MINUTES = 25
# A step budget took 10 minutes on an idle 2-core machine and over 40 on a loaded one:
# the cap only stops a run that went wrong.
MAX_CNN_MINUTES = 120
# Seeds of every CNN row (the protocol asks for at least 3).
DEFAULT_SEEDS = (0, 1, 2)
MIN_SEEDS = 3

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


def check_seeds(seeds: Sequence[int], *, smoke: bool = False) -> list[int]:
    """Distinct seeds; at least :data:`MIN_SEEDS` unless ``smoke``."""
    out = list(dict.fromkeys(int(s) for s in seeds))
    if len(out) < MIN_SEEDS and not smoke:
        raise SystemExit(f"--seeds: the protocol needs at least {MIN_SEEDS} distinct seeds, got {out}")
    return out


def check_steps(steps: int) -> int:
    if steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {steps}")
    return int(steps)


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
    steps: int,
) -> argparse.ArgumentParser:
    """The options both quality benchmarks share; each script adds its own after these."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--methods", default="all", help=f"comma-separated: all or {', '.join(methods)} (default all)")
    parser.add_argument("--minutes", type=float, default=minutes,
                        help=f"time cap per CNN training in minutes (default {minutes}, at most {MAX_CNN_MINUTES}); "
                        "the budget is --steps")  # fmt: skip
    parser.add_argument("--steps", type=int, default=steps,
                        help=f"training budget of every CNN in optimiser steps, the same for all (default {steps})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help=f"CNN seeds; a row reports their mean, sd and each one (default "
                        f"{' '.join(map(str, DEFAULT_SEEDS))}; fewer than {MIN_SEEDS} only with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check: allows fewer seeds; write --results to a scratch folder")
    parser.add_argument("--out", type=Path, default=out, help=f"work folder: dataset, runs (default {repo_relative(out)})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where {stem}.json/.md go")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (BLAS, torch, random forest); default 1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the baselines (default 0)")
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
def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a result file (a missing or unreadable file counts as empty)."""
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return old if isinstance(old, list) else []


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the file at ``path`` followed by ``rows``: nothing is replaced (a re-run
    or a re-score is a new dated row). Each new row gets ``recorded`` (date and time)."""
    now = _dt.datetime.now().isoformat(timespec="seconds")
    return read_rows(path) + [{**r, "recorded": r.get("recorded") or now} for r in rows]


def latest_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the last row of each (method, dataset), in first-seen order; the earlier rows)."""
    first: dict[tuple[Any, Any], int] = {}
    last: dict[tuple[Any, Any], int] = {}
    for i, r in enumerate(rows):
        key = (r.get("method"), r.get("dataset"))
        first.setdefault(key, i)
        last[key] = i
    keep = set(last.values())
    return [rows[last[k]] for k in sorted(first, key=first.get)], [r for i, r in enumerate(rows) if i not in keep]


def seed_row(method: str, dataset: str, runs: Sequence[dict[str, Any]], *, weights: str | None,
             **extra: Any) -> dict[str, Any]:
    """One CNN row from several seeds' results (:func:`train_and_evaluate_cnn` dicts).

    ``iou`` / ``miou`` / ``val_miou`` are means over the seeds, ``iou_sd`` / ``miou_sd``
    / ``val_miou_sd`` sample standard deviations (ddof 1), ``seeds`` each seed's
    scores, steps and minutes; ``steps`` is the budget, ``train_seconds`` the mean time.
    """
    per_seed = []
    for res in runs:
        p = res["params"]
        per_seed.append({
            "seed": p["seed"], "miou": _r(res["test"]["miou"]),
            "iou": {k: _r(v) for k, v in res["test"]["iou"].items()}, "val_miou": _r(res["val"]["miou"]),
            "steps": p.get("global_step"), "best_step": p.get("best_step"),
            "train_seconds": round(float(res["train_seconds"]), 1), "run": repo_relative(res["run"]),
        })
    names = list(per_seed[0]["iou"])
    mean_sd = lambda xs: (_r(np.mean(xs)), _r(np.std(xs, ddof=1)) if len(xs) > 1 else None)  # noqa: E731
    iou, iou_sd = {}, {}
    for n in names:
        vals = [s["iou"][n] for s in per_seed if s["iou"][n] is not None]
        iou[n], iou_sd[n] = mean_sd(vals) if vals else (None, None)
    miou, miou_sd = mean_sd([s["miou"] for s in per_seed])
    val_miou, val_sd = mean_sd([s["val_miou"] for s in per_seed])
    pixels = int(runs[0]["test"]["num_pixels"])
    row = {"method": method, "dataset": dataset, "iou": iou, "iou_sd": iou_sd, "miou": miou, "miou_sd": miou_sd,
           "val_miou": val_miou, "val_miou_sd": val_sd, "scored_pixels": pixels,
           "train_seconds": round(float(np.mean([s["train_seconds"] for s in per_seed])), 1), "weights": weights,
           "seeds": per_seed}  # fmt: skip
    row.update(extra)
    row.setdefault("date", today())
    row.setdefault("machine", machine_line(machine_info()))
    return row


def _r(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


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


def spread(row: dict[str, Any], column: str | None = None) -> float | None:
    """The seed-to-seed sd of a row's ``miou`` (``column`` None) or of one class's IoU:
    0 for a deterministic method (no trained weights and no seed in its ``params``,
    e.g. multi-Otsu), None when unknown (a seeded method, such as the random forest or
    a CNN, measured with one seed)."""
    if row.get("weights") is None and "seeds" not in row and "seed" not in (row.get("params") or {}):
        return 0.0
    sd = row.get("miou_sd") if column is None else (row.get("iou_sd") or {}).get(column)
    return None if sd is None else float(sd)


def clear_winner(values: Sequence[float | None], spreads: Sequence[float | None]) -> int | None:
    """Index of the best value when it beats the runner-up by more than the larger of
    their spreads; None when there is no such winner (or a spread is unknown)."""
    scored = sorted(((v, i) for i, v in enumerate(values) if v is not None), reverse=True)
    if len(scored) < 2:
        return None
    (top, i), (second, j) = scored[0], scored[1]
    if spreads[i] is None or spreads[j] is None:
        return None
    return i if top - second > max(spreads[i], spreads[j]) else None


def _cell(value: Any, sd: float | None) -> str:
    return _fmt(value) if sd is None or value is None else f"{_fmt(value)} ± {_fmt(sd)}"


def markdown_table(rows: Sequence[dict[str, Any]], class_names: Sequence[str], *, bold: bool = True) -> str:
    """Markdown table of mean IoU ± sd over seeds where a row has seeds.

    A value is bold only when it beats the runner-up of its column by more than the
    larger of their seed spreads (:func:`clear_winner`); never when ``bold`` is False
    (rows that are not rivals, e.g. scored against different references).
    """
    head = ["method", "weights", *class_names, "mean IoU", "seeds", "steps", "train time", "date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    winners = {c: clear_winner([r["iou"].get(c) for r in rows], [spread(r, c) for r in rows]) for c in class_names}
    winners[None] = clear_winner([r.get("miou") for r in rows], [spread(r) for r in rows])

    def cell(k: int, r: dict[str, Any], column: str | None) -> str:
        value = r.get("miou") if column is None else r["iou"].get(column)
        sd = r.get("miou_sd") if column is None else (r.get("iou_sd") or {}).get(column)
        text = _cell(value, sd)
        return f"**{text}**" if bold and winners[column] == k else text

    for k, r in enumerate(rows):
        seeds = r.get("seeds")
        steps = (r.get("steps") or (r.get("params") or {}).get("global_step")) if r.get("weights") else None
        cells = [r["method"], r.get("weights") or "–", *(cell(k, r, c) for c in class_names), cell(k, r, None),
                 len(seeds) if seeds else ("1" if r.get("weights") else "–"), steps or "–",
                 _fmt_seconds(r.get("train_seconds")), r.get("date", "–")]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def seeds_note(row: dict[str, Any]) -> str | None:
    """Each seed's test and validation mean IoU of a seeded row, for the notes."""
    if not row.get("seeds"):
        return None
    if not isinstance(row["seeds"][0], dict):  # rows written before the protocol kept the seeds only
        return f"{row['method']}: mean of seeds {', '.join(str(s) for s in row['seeds'])}."
    truth = all(s.get("truth_miou") is not None for s in row["seeds"])
    each = ", ".join(f"seed {s['seed']}: " + (f"truth {_fmt(s['truth_miou'])}, labels " if truth else "")
                     + f"{_fmt(s['miou'])} (val {_fmt(s['val_miou'])}, {s.get('steps')} steps, "
                     f"{_fmt_seconds(s.get('train_seconds'))})" for s in row["seeds"])  # fmt: skip
    what = "test mean IoU against the truth and the labels" if truth else "test mean IoU"
    return f"{row['method']} per seed ({what}): {each}."


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
    if "arch" in p and row.get("seeds"):
        return (f"{row['method']}: {len(row['seeds'])} seeds, budget {row.get('steps')} optimiser steps each "
                f"(mean {_fmt_seconds(row.get('train_seconds'))}; cap {p.get('minutes')} min) on {p.get('device')} "
                f"({p.get('precision')}); input {p.get('input_size')} px, batch {p.get('batch_size')}"
                + (f", overrides {p['overrides']}" if p.get("overrides") else "")
                + (f"; scored with each sample predicted whole (overlapping windows"
                   + (", test-time flips" if p.get("flips") else "") + ")" if p.get("context") == "sample"
                   else "; scored tile by tile") + ".")  # fmt: skip
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
    table: Callable[[list[dict[str, Any]]], str] | None = None,
) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Append ``rows`` to ``<stem>.json`` and rewrite ``<stem>.md`` from the file.

    The Markdown file holds ``intro``, the table of the latest row of each method
    (``table(latest)`` when given, else :func:`markdown_table`), ``notes`` (a sequence,
    or a function of the latest rows), a line per row on how its method was run
    (:func:`describe_row`, :func:`seeds_note`), the earlier rows (kept, never
    overwritten) and the machines. Returns the two paths and the latest rows.
    """
    from mineralseg.io import atomic_path, write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{stem}.json"
    md_path = results_dir / f"{stem}.md"
    every = append_rows(json_path, rows)
    write_json(json_path, every)
    latest, earlier = latest_rows(every)
    names = class_names_of(latest)
    machines: dict[str, list[str]] = {}
    for r in latest:
        machines.setdefault(r.get("machine", "unknown machine"), []).append(f"{r['method']} ({r.get('date', '?')})")
    body = table(latest) if table is not None else markdown_table(latest, names, bold=bold)
    lines = [f"# {title}", "", intro, "", body, ""]
    extra = list(notes(latest) if callable(notes) else notes)
    legacy = [r["method"] for r in latest if r.get("weights") and not r.get("seeds")]
    if legacy:
        extra.insert(0, f"Rows of {', '.join(legacy)} were measured before the protocol of `benchmarks/README.md`: "
                        "one seed each (their spread is unknown, so no value is in bold and no difference between "
                        "them is a finding) and training budgets that differ (steps column). Their re-runs under "
                        "the protocol (3 seeds, one step budget) are still to be done.")
    details = extra + [d for r in latest for d in (describe_row(r), seeds_note(r)) if d]
    lines += [f"- {n}" for n in details]
    if details:
        lines.append("")
    if earlier:
        lines += ["Earlier rows (kept in the JSON, never overwritten; newest last):", ""]
        lines += [f"- {r['method']}: mean IoU {_cell(r.get('miou'), r.get('miou_sd'))}, measured {r.get('date', '?')}"
                  + (f", re-scored {r['rescored']}" if r.get("rescored") else "")
                  + (f", recorded {r['recorded']}" if r.get("recorded") else "") for r in earlier]  # fmt: skip
        lines.append("")
    lines.append("Machines:")
    lines += [f"- {m}: {', '.join(ms)}" for m, ms in machines.items()]
    lines.append("")
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines))
    return json_path, md_path, latest


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
    arch: tuple[str, str | None] | None = None,
    config_update: dict[str, Any] | None = None,
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
    context. ``arch`` (architecture, encoder) replaces the method's own (for networks
    that are not in :data:`CNN_METHODS`, e.g. pix2pix); ``config_update`` is merged
    into the training config (nested dicts key by key).

    Returns
    -------
    dict
        ``test`` (None when not evaluated) and ``val`` metrics in ``context``,
        ``test_tiles`` / ``val_tiles`` (tile context), ``train_seconds``, ``run``
        (folder) and ``params`` (the training settings).
    """
    from mineralseg.evaluate.evaluate import evaluate
    from mineralseg.train.config import apply_overrides
    from mineralseg.train.run import train

    arch, encoder = arch or CNN_METHODS[method]
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
    if config_update:
        config = apply_overrides(config, config_update)  # nested dicts merged key by key
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


def finish(merged: list[dict[str, Any]] | None, written: tuple[Any, Any] | None, failed: list[str],
           extra: Sequence[str] = ()) -> int:
    """Print the merged results table, ``extra`` lines and the files written, then the
    methods that failed; the script's exit code (1 when a method failed)."""
    if merged:
        print()
        print(text_table(merged, class_names_of(merged)))
        for line in extra:
            print(line)
        print(f"\nwrote {written[0]} and {written[1]}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (see the tracebacks above)", file=sys.stderr)
        return 1
    return 0


def random_forest(args: argparse.Namespace, *, sigma_max: float = 16) -> tuple[Any, dict[str, Any]]:
    """The quality benchmarks' pixel random forest (ilastik-style multiscale features,
    stratified pixel sampling) from the shared options, and its parameters for the row."""
    from mineralseg.models.classical import RandomForestPixelClassifier

    params = {"sigma_min": 1, "sigma_max": sigma_max, "n_estimators": args.rf_trees, "sampling": "stratified",
              "max_samples_per_class": args.rf_samples, "n_jobs": args.threads, "seed": args.seed}  # fmt: skip
    return RandomForestPixelClassifier(**params), params
