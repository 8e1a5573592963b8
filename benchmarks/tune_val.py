"""Tune CNN training settings on a validation split (the test split is never read).

Trains one CNN per variant (a named set of training-config overrides) on a prepared
dataset, with the same code path as the quality benchmarks
(:func:`common.train_and_evaluate_cnn`, test evaluation off), and scores the best
checkpoint on the validation split. Use it to choose a configuration; then run the
quality benchmark once with the chosen overrides, which looks at the test split once.

A step budget (``--steps``) makes variants comparable across machines: tune on a fast
machine with the number of steps the slow one manages in its time limit.

Output: a table of validation IoU per class, mean IoU and steps on stdout, and the rows
as JSON in ``--results`` (merged with rows already there, by variant name).

Usage::

    python benchmarks/tune_val.py --dataset benchmarks/work/sandstone/dataset --steps 6000 \\
        --variant "base: augment.rotate=0 augment.zoom=0" \\
        --variant "ce: loss.name=ce imbalance.loss_weights=false"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)


# Time limit per tuning variant (the budget of the recorded tuning runs).
TUNE_MINUTES = 30


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name: key=value key=value"`` -> ``(name, ["key=value", ...])``."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " /"):
        raise SystemExit(f"--variant must look like 'name: key=value key=value', got {text!r}")
    overrides = shlex.split(rest)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"--variant {name}: overrides must be key=value, got {', '.join(bad)}")
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="prepared dataset (mineralseg prepare)")
    parser.add_argument("--method", default="unet-resnet18", choices=sorted(common.CNN_METHODS))
    parser.add_argument("--variant", action="append", required=True, metavar="'NAME: KEY=VALUE ...'",
                        help="a named set of training-config overrides (repeatable)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per variant")
    parser.add_argument("--minutes", type=float, default=TUNE_MINUTES,
                        help=f"time limit per variant (default {TUNE_MINUTES})")  # fmt: skip
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context", choices=("sample", "tile"), default="sample",
                        help="how the validation pixels are predicted (see evaluate --context); both are recorded")
    parser.add_argument("--device", default=None, help="device for the validation pass (default: cuda if any)")
    parser.add_argument("--out", type=Path, default=common.WORK / "tune", help="work folder for the runs")
    parser.add_argument("--results", type=Path, default=None, help="JSON file for the rows (merged by variant)")
    args = parser.parse_args(argv)

    from mineralseg.io import write_json

    variants = dict(parse_variant(v) for v in args.variant)
    if not (args.dataset / "manifest.json").is_file():
        raise SystemExit(f"{args.dataset}: no manifest.json (make the dataset with `mineralseg prepare`)")
    if args.threads:
        common.limit_threads(args.threads)
    rows: list[dict[str, Any]] = []
    failed = []
    for name, overrides in variants.items():
        print(f"\n== {name}: {' '.join(overrides) or '(defaults)'}", flush=True)
        try:
            res = common.train_and_evaluate_cnn(
                args.method, args.dataset, args.out.resolve(), minutes=args.minutes, input_size=args.input_size,
                seed=args.seed, overrides=overrides, num_workers=args.num_workers, batch_size=args.batch_size,
                max_steps=args.steps, test=False, device=args.device, name=f"{args.method}-{name}",
                context=args.context,
            )
        except Exception:  # noqa: BLE001 - report, keep the other variants
            traceback.print_exc()
            failed.append(name)
            continue
        val = res["val"]
        row = {
            "variant": name, "method": args.method, "overrides": overrides,
            "dataset": common.repo_relative(args.dataset),
            "val_iou": {k: None if v is None else round(float(v), 4) for k, v in val["iou"].items()},
            "val_miou": round(float(val["miou"]), 4), "context": args.context,
            "val_miou_tiles": round(float(res["val_tiles"]["miou"]), 4),
            "train_seconds": round(res["train_seconds"], 1),
            "steps": res["params"].get("global_step"), "best_step": res["params"].get("best_step"),
            "machine": common.machine_line(common.machine_info()), "date": common.today(),
        }  # fmt: skip
        rows.append(row)
        print(f"{name}: val mean IoU {row['val_miou']} ({args.context}; tile by tile {row['val_miou_tiles']}) "
              f"at step {row['best_step']} of {row['steps']} "
              f"({row['train_seconds']:.0f} s); IoU {row['val_iou']}", flush=True)  # fmt: skip
        if args.results:
            old = json.loads(args.results.read_text()) if args.results.exists() else []
            keep = [r for r in old if r.get("variant") not in {x["variant"] for x in rows}]
            args.results.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.results, keep + rows)  # atomic, like every project output
    if rows:
        names = list(rows[0]["val_iou"])
        print("\nvariant | " + " | ".join(names) + " | val mean IoU | steps")
        for r in rows:
            print(f"{r['variant']} | " + " | ".join(f"{r['val_iou'][n]:.3f}" for n in names)
                  + f" | {r['val_miou']:.4f} | {r['best_step']}/{r['steps']}")  # fmt: skip
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
