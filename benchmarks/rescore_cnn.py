"""Re-score finished CNN runs of a quality benchmark (no retraining).

Evaluates a run's best checkpoint on the validation and test splits in both contexts
(each sample predicted whole with overlapping windows, and each tile alone) and
appends a new dated row for that method to the benchmark's result file (``rescored``:
today; the earlier row stays, as the protocol in ``benchmarks/README.md`` asks),
keeping the training facts (time, steps, overrides) from the row's run. For rows
measured with one run (before whole-sample scoring existed); the checkpoint is the one
the row was measured with. A re-score of the test split is a second look at it: say
why in the notes.

Usage::

    python benchmarks/rescore_cnn.py quality_sandstone benchmarks/work/sandstone/runs/linknet-resnet18-...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stem", choices=("quality_sandstone", "quality_synth"))
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of rows in the result file")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flips", action="store_true", help="test-time flips in the sample context")
    args = parser.parse_args(argv)
    common.limit_threads(args.threads)
    from mineralseg.evaluate.evaluate import evaluate

    path = args.results / f"{args.stem}.json"
    rows = json.loads(path.read_text())
    module = __import__(args.stem)
    updated = []
    for run in args.runs:
        rel = common.repo_relative(run)
        row = next((r for r in rows if r.get("run") == rel), None)
        if row is None:
            raise SystemExit(f"{path}: no row was measured with run {rel}")
        scores = {}
        for split in ("val", "test"):
            for how in ("sample", "tile"):
                folder = run / (f"eval-{split}" if how == "sample" else f"eval-{split}-tile")
                scores[split, how] = evaluate(run, split=split, out=folder, panels=6 if split == "test" else 0,
                                              progress=False, context=how,
                                              flips=args.flips and how == "sample")  # fmt: skip
        test = scores["test", "sample"]
        new = common.result_row(
            row["method"], row["dataset"], test, train_seconds=row["train_seconds"], weights=row["weights"],
            split=row.get("split"), val_miou=round(float(scores["val", "sample"]["miou"]), 4),
            params={**row.get("params", {}), "context": "sample", "flips": args.flips}, run=rel, context="sample",
            tile_context=common.tile_context(scores["test", "tile"]),
            val_miou_tiles=round(float(scores["val", "tile"]["miou"]), 4),
            date=row.get("date"), machine=row.get("machine"), rescored=common.today(),
            # benchmark-specific scores (quality_synth: against the generator's truth)
            **(module.rescore_extra(run, flips=args.flips) if hasattr(module, "rescore_extra") else {}),
        )
        if "albite_iou" in row:
            new["albite_iou"] = module.albite_iou(new)
        updated.append(new)
        print(f"{row['method']}: test mean IoU {new['miou']} (tile by tile {new['tile_context']['miou']}), "
              f"val {new['val_miou']} (tile by tile {new['val_miou_tiles']})", flush=True)  # fmt: skip
    module.write_report(args.results, updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
