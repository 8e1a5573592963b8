"""Segmentation quality on the synthetic twin: U-Net resnet18 at 256 px vs the baselines.

Data: ``--samples`` (>= 4) synthetic SEM/QEMSCAN pairs from
:func:`mineralseg.synth.write_synth_dataset` (damaged QEMSCAN maps: seams, rotation,
shift, +16 grey offsets), turned into a dataset by
:func:`mineralseg.prep.pipeline.prepare` with the ``prepare.yaml`` the generator writes
(study's 4 groups: pores+background, quartz, albite, clay+accessories; tiles split
into train / val / test by spatial blocks). Both are made once in ``--out`` and reused.

Methods (all scored on the pixels of the test tiles, one confusion matrix, no smoothing):

``unet-resnet18``
    Trained with the project's API (``mineralseg.train.run.train``) from random init,
    ``--tile-size`` (128) tiles of a working grid that keeps SEM texture
    (``--sem-scale`` 4) resized to ``--input-size`` (256, as the study resized its
    214-px tiles), for ``--steps`` optimiser steps (default 1800 at batch 4; ``--minutes``
    caps the time) with each of ``--seeds`` (default 0 1 2); best checkpoint by
    validation mean IoU; each seed's model scored once on the test split with
    ``mineralseg.evaluate.evaluate``; the row reports mean, sd and each seed.
``otsu`` (row ``multi-otsu``)
    4-class multi-Otsu thresholds found once on the pooled training tiles (a tile may
    show one or two phases only), brightness classes mapped to the majority label of
    the training tiles.
``rf`` (row ``random-forest``)
    Pixel random forest (multi-scale features, sigma 1..``--rf-sigma-max``), trained on
    a stratified sample of the training tiles' pixels, applied tile by tile.

The headline is the score against the generator's true minerals on the same pixels
(``truth_iou``, ``truth_miou``): that is what a mineral map is for. The score against
the labels (point samples on a coarse grid, so it mixes model error with label
noise) and the label ceiling (``synth_label_ceiling.py``) stay beside it. Albite, the
class the study found hardest among the minerals, is also reported on its own
(``albite_iou``). Output: ``benchmarks/results/quality_synth.json`` (rows as in
``quality_sandstone.json``, dataset "synthetic") and ``quality_synth.md``; rows are
appended, never replaced (``benchmarks/README.md``).

Usage::

    python benchmarks/quality_synth.py                         # all: baselines + 3 seeds x 1800 steps
    python benchmarks/quality_synth.py --methods otsu,rf       # baselines only
    python benchmarks/quality_synth.py --smoke --samples 4 --size 2048 --steps 5 --seeds 0 1 \
        --out /tmp/qs --results /tmp/qs/results               # plumbing check
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)
import yaml  # noqa: E402

DATASET = "synthetic"
CNN = "unet-resnet18"
METHODS = ("otsu", "rf", CNN)
MIN_SAMPLES = 4  # fewer leave too few blocks of tiles for a meaningful test split
DEFAULT_MINUTES = 20  # a cap: the budget is DEFAULT_STEPS
# 1,800 steps at batch 4: 10 minutes on one 2-core machine, about 18 on another.
DEFAULT_STEPS = 1800
# See quality_sandstone.py: 20,000 pixels per class on average, stratified.
RF_SAMPLES_PER_CLASS = 20_000
# Context per tile is limited (256 px at 4 SEM px per label px): sigma 8 is enough.
RF_SIGMA_MAX = 8


# --------------------------------------------------------------------------- data
def make_dataset(args) -> Path:
    """Synthetic pairs + prepared dataset in ``args.out`` (made once, then reused)."""
    from mineralseg.errors import UserError
    from mineralseg.prep.pipeline import prepare
    from mineralseg.synth import write_synth_dataset

    raw, dataset = args.out / "raw", args.out / "dataset"
    if args.regenerate or not (raw / "prepare.yaml").exists():
        print(f"generating {args.samples} synthetic samples of {args.size} px in {raw} ...", flush=True)
        try:
            write_synth_dataset(raw, samples=args.samples, size=args.size, seed=args.seed, overwrite=True)
        except UserError as exc:
            raise SystemExit(f"cannot generate the synthetic samples: {exc}") from None
    else:
        print(f"using the synthetic samples in {raw}", flush=True)
    if args.regenerate or not (dataset / "manifest.json").exists():
        print(f"preparing {dataset} ...", flush=True)
        config = yaml.safe_load((raw / "prepare.yaml").read_text())
        # Keep SEM texture (quartz and albite differ by texture, not grey level); tiles
        # are stored at the CNN's input size.
        config.update({"sem_scale": args.sem_scale, "tile_size": args.tile_size, "out_size": args.input_size})
        (raw / "prepare-benchmark.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        try:
            summary = prepare(raw / "prepare-benchmark.yaml", dataset, overwrite=True)
        except UserError as exc:
            raise SystemExit(f"cannot prepare the synthetic dataset: {exc}") from None
        print(summary.get("text", ""), flush=True)
    else:
        print(f"using the prepared dataset {dataset}", flush=True)
    return dataset


def read_split(manifest, split: str):
    """Images and masks of a split's tiles, (out_size, out_size) uint8 each."""
    from mineralseg.data.dataset import read_tile

    tiles = manifest.split(split)
    pairs = [read_tile(t, size=manifest.out_size) for t in tiles]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def albite_iou(row: dict[str, Any]) -> float | None:
    for name, v in row["iou"].items():
        if "albite" in name.lower():
            return v
    return None


def label_ceiling() -> dict[str, Any] | None:
    """The oracle's test row of ``synth_label_ceiling.json`` (latest), when measured."""
    path = common.RESULTS / "synth_label_ceiling.json"
    if not path.exists():
        return None
    found = [r for r in json.loads(path.read_text()) if r.get("split") == "test" and r["method"].startswith("oracle")]
    return found[-1] if found else None


def albite_note(rows: list[dict[str, Any]]) -> list[str]:
    """Notes under the tables: albite on its own line, and what the label ceiling means."""
    found = [f"{r['method']} {r['truth_iou']['albite']:.3f}" for r in rows
             if (r.get("truth_iou") or {}).get("albite") is not None]  # fmt: skip
    notes = [f"Albite IoU against the truth (the study's hardest mineral): {', '.join(found)}."] if found else []
    oracle = label_ceiling()
    if oracle is not None:
        ious = ", ".join(f"{k} {v:.3f}" for k, v in oracle["iou"].items())
        above = [f"{r['method']} on {c} ({r['iou'][c]:.3f} > {v:.3f})" for r in rows for c, v in oracle["iou"].items()
                 if r["iou"].get(c) is not None and v is not None and r["iou"][c] > v]  # fmt: skip
        notes.append(
            f"Label ceiling: an oracle that predicts the true mineral of every pixel scores mean IoU "
            f"{oracle['miou']:.3f} against the point-sampled labels on these test tiles ({ious}; "
            "`synth_label_ceiling.py`). It shows how much of a label score is label noise; it is not a cap on "
            "every method: a model trained on the labels learns some of their bias and can score above the "
            "oracle on a class against them" + (f" ({'; '.join(above)})" if above else "") + ". The headline "
            "table, against the truth, has no such ceiling."
        )
    return notes


# --------------------------------------------------------------------------- truth
def truth_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """Row fields for a score against the generator's truth."""
    return {"truth_iou": {k: None if v is None else round(float(v), 4) for k, v in metrics["iou"].items()},
            "truth_miou": _round(metrics["miou"])}  # fmt: skip


def truth_scores_of_tiles(work: Path, manifest, split: str, masks: list, preds: list) -> dict[str, Any]:
    """Metrics of tile predictions (as stored, ``out_size`` px, in ``manifest.split``
    order) against the generator's truth; pixels the labels ignore stay ignored."""
    import numpy as np
    from synth_label_ceiling import truth_maps

    truth_of = {}
    for _, tiles, truths, _ in truth_maps(work, [split], size=manifest.out_size):
        truth_of.update({t.id: tr for t, tr in zip(tiles, truths)})
    ignore = manifest.ignore_index
    truths = [np.where(m == ignore, m, truth_of[t.id]) for t, m in zip(manifest.split(split), masks, strict=True)]
    return common.score(truths, preds, manifest.class_names, ignore)


def rescore_extra(run: Path, work: Path | None = None, *, flips: bool) -> dict[str, Any]:
    """Row fields of a CNN run against the generator's truth on the test split (each
    sample predicted whole, as the row's score); ``rescore_cnn.py`` calls it too."""
    from mineralseg.evaluate.metrics import metrics_from_confusion
    from synth_label_ceiling import score

    if work is None:  # the work folder holds the run's dataset (and raw/ beside it)
        work = Path(yaml.safe_load((Path(run) / "config.yaml").read_text())["dataset"]).parent
    found = score(Path(work), ["test"], Path(run), flips=flips, batch_size=8)
    return truth_fields(metrics_from_confusion(found["cms"]["truth", "test"], found["names"]))


# --------------------------------------------------------------------------- methods
def run_baseline(method: str, args, manifest, gen: dict[str, Any]) -> dict:
    from mineralseg.models.classical import MultiOtsuClassifier

    names = manifest.class_names
    if method == "otsu":
        clf = MultiOtsuClassifier(len(names), shared_thresholds=True)
        params = {"n_classes": len(names), "thresholds": "pooled training tiles",
                  "mapping": "majority label on the training tiles"}  # fmt: skip
    else:
        clf, params = common.random_forest(args, sigma_max=args.rf_sigma_max)
    images, masks = read_split(manifest, "train")
    with common.Stopwatch() as fit_time:
        clf.fit(images, masks, ignore_index=manifest.ignore_index)
    if method == "rf":
        params["train_pixels"] = {names[c]: n for c, n in clf.n_train_pixels_.items()}
    del images, masks
    val_images, val_masks = read_split(manifest, "val")
    val = common.score(val_masks, [clf.predict(im) for im in val_images], names, manifest.ignore_index)
    test_images, test_masks = read_split(manifest, "test")
    with common.Stopwatch() as pred_time:
        preds = [clf.predict(im) for im in test_images]  # the test tiles, once
    test = common.score(test_masks, preds, names, manifest.ignore_index)
    truth = truth_scores_of_tiles(args.out, manifest, "test", test_masks, preds)
    params.update(gen)
    row = common.result_row(
        common.BASELINE_METHODS[method], DATASET, test, train_seconds=fit_time.seconds, weights=None,
        split=f"test: {len(test_images)} tiles", val_miou=_round(val["miou"]),
        predict_seconds=round(pred_time.seconds, 1), params=params, **truth_fields(truth),
    )
    row["albite_iou"] = albite_iou(row)
    return row


def run_cnn(args, dataset: Path, gen: dict[str, Any]) -> dict:
    """One row: the CNN trained for ``args.steps`` steps with each of ``args.seeds``."""
    import numpy as np

    runs, truths = [], []
    for seed in args.seeds:
        print(f"-- {CNN} seed {seed}: {args.steps} steps", flush=True)
        res = common.train_and_evaluate_cnn(
            CNN, dataset, args.out, minutes=args.minutes, input_size=args.input_size, seed=seed,
            overrides=args.set, num_workers=args.num_workers, batch_size=args.batch_size, context=args.context,
            flips=args.flips, max_steps=args.steps, name=f"{CNN}-seed{seed}",
        )
        runs.append(res)
        truths.append(rescore_extra(res["run"], args.out, flips=args.flips))
    for seed_scores, truth in zip(runs, truths):
        seed_scores["truth"] = truth
    row = common.seed_row(CNN, DATASET, runs, weights="none", steps=args.steps,
                          split=f"test: {runs[0]['test'].get('num_tiles')} tiles",
                          params={**runs[0]["params"], **gen}, context=runs[0]["params"]["context"])  # fmt: skip
    for entry, truth in zip(row["seeds"], truths):
        entry["truth_miou"] = truth["truth_miou"]
    t_miou = [t["truth_miou"] for t in truths]
    row["truth_miou"] = _round(np.mean(t_miou))
    row["truth_miou_sd"] = _round(np.std(t_miou, ddof=1)) if len(t_miou) > 1 else None
    names = list(truths[0]["truth_iou"])
    vals = {n: [t["truth_iou"][n] for t in truths if t["truth_iou"][n] is not None] for n in names}
    row["truth_iou"] = {n: _round(np.mean(v)) if v else None for n, v in vals.items()}
    row["truth_iou_sd"] = {n: _round(np.std(v, ddof=1)) if len(v) > 1 else None for n, v in vals.items()}
    row["albite_iou"] = albite_iou(row)
    return row


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


# --------------------------------------------------------------------------- report
def intro(gen: dict[str, Any]) -> str:
    return (
        f"Synthetic twin: {gen['synth_samples']} samples of {gen['synth_size']} px (seed {gen['synth_seed']}) from "
        "`mineralseg synth`, prepared with the generated `prepare.yaml` (the study's 4 groups; tiles split by "
        "spatial blocks). IoU from one confusion matrix over all test-tile pixels (no smoothing); every method "
        "is scored on the same test-tile area (the baselines on the tiles as stored, 256 px, so 4 scored pixels "
        "per working pixel; the CNN on the working grid). U-Net resnet18 from random init (weights 'none') at 256 px input, best "
        "validation checkpoint, scored with each sample's working image predicted whole (overlapping windows, "
        "3 tiles wide; averaged over flips where the notes say so) on the test-tile pixels; the tile-by-tile score is kept in the JSON (`tile_context`). "
        "Baselines: multi-Otsu with thresholds from the pooled training tiles and the "
        "brightness -> class mapping learnt on them; pixel random forest applied tile by tile. "
        "Produced by `benchmarks/quality_synth.py`."
    )


def truth_view(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its scores against the generator's truth in place of the label scores."""
    return {**row, "iou": row.get("truth_iou") or {}, "iou_sd": row.get("truth_iou_sd"),
            "miou": row.get("truth_miou"), "miou_sd": row.get("truth_miou_sd")}  # fmt: skip


def tables(rows: list[dict[str, Any]]) -> str:
    """The headline table (against the truth), then the label scores beside the ceiling."""
    names = common.class_names_of(rows)
    headline = common.markdown_table([truth_view(r) for r in rows], names)
    labels = common.markdown_table(rows, names, bold=False)
    oracle = label_ceiling()
    ceiling = ""
    if oracle is not None:
        ceiling = ("\n\nLabel ceiling (oracle of the true minerals scored against the labels): "
                   + ", ".join(f"{k} {v:.3f}" for k, v in oracle["iou"].items()) + f"; mean IoU {oracle['miou']:.3f}.")
    return ("**Against the generator's true minerals** (the headline: what a mineral map is for):\n\n"
            f"{headline}\n\nAgainst the point-sampled QEMSCAN-like labels (same pixels):\n\n{labels}{ceiling}")


def write_report(results: Path, rows: list[dict[str, Any]], gen: dict[str, Any] | None = None):
    """Append ``rows`` to ``quality_synth.json`` and rewrite the Markdown beside it
    (``gen``: the generator settings; default: those recorded in the file's rows)."""
    if gen is None:
        every = common.append_rows(results / "quality_synth.json", rows)
        params = next((r["params"] for r in every if (r.get("params") or {}).get("synth_size")), None)
        if params is None:
            raise SystemExit("no row records the synthetic data settings (synth_samples, synth_size, synth_seed)")
        gen = {k: params[k] for k in ("synth_samples", "synth_size", "synth_seed")}
    return common.write_results(results, "quality_synth", rows, title="Segmentation quality: synthetic twin",
                                intro=intro(gen), notes=albite_note, table=tables)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = common.benchmark_parser(
        __doc__.split("\n\n")[0], METHODS, stem="quality_synth", minutes=DEFAULT_MINUTES,
        out=common.WORK / "synth", input_size=256, rf_samples=RF_SAMPLES_PER_CLASS, steps=DEFAULT_STEPS,
    )
    parser.add_argument("--samples", type=int, default=6, help=f"synthetic samples (>= {MIN_SAMPLES}; default 6)")
    parser.add_argument("--size", type=int, default=4096, help="SEM side of each synthetic sample in px (default 4096)")
    parser.add_argument("--sem-scale", type=int, default=4, help="SEM pixels per label pixel on the working grid (default 4)")
    parser.add_argument("--tile-size", type=int, default=128, help="tile side on the working grid (default 128: 32 label px)")
    parser.add_argument("--rf-sigma-max", type=float, default=RF_SIGMA_MAX)
    parser.add_argument("--regenerate", action="store_true", help="remake the synthetic samples and the dataset")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite quality_synth.md from the JSON (no measurement)")
    args = parser.parse_args(argv)
    if args.report_only:
        _, md_path, _ = write_report(args.results, [])
        print(f"wrote {md_path}")
        return 0

    methods = common.parse_methods(args.methods, METHODS)
    if CNN in methods:
        args.minutes = common.check_minutes(args.minutes)
        args.steps = common.check_steps(args.steps)
        args.seeds = common.check_seeds(args.seeds, smoke=args.smoke)
    if args.samples < MIN_SAMPLES:
        raise SystemExit(f"--samples must be >= {MIN_SAMPLES}, got {args.samples}")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    args.out = args.out.resolve()
    common.limit_threads(args.threads)

    from mineralseg.data.manifest import load_manifest

    dataset = make_dataset(args)
    manifest = load_manifest(dataset)
    gen = {"synth_samples": args.samples, "synth_size": args.size, "synth_seed": args.seed}

    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for method in methods:
        print(f"\n== {method}", flush=True)
        try:
            row = run_cnn(args, dataset, gen) if method == CNN else run_baseline(method, args, manifest, gen)
        except Exception:  # noqa: BLE001 - report, keep the other methods' rows
            traceback.print_exc()
            failed.append(method)
            continue
        rows.append(row)
        print(f"{row['method']}: truth mean IoU {row.get('truth_miou')} (sd {row.get('truth_miou_sd')}), "
              f"label mean IoU {row['miou']} (sd {row.get('miou_sd')}), albite IoU {row['albite_iou']} "
              f"(val mean IoU {row.get('val_miou')}), trained in {row['train_seconds']:.0f} s", flush=True)  # fmt: skip
        json_path, md_path, merged = write_report(args.results, [row], gen)  # appended, never replaced
    if not rows:
        return common.finish(None, None, failed)
    return common.finish(merged, (json_path, md_path), failed,
                         [f"albite IoU, {r['method']}: {r.get('albite_iou')}" for r in merged])


if __name__ == "__main__":
    raise SystemExit(main())
