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
    214-px tiles), for at most ``--minutes``
    (default 10); best checkpoint by validation mean IoU; scored once on the test split
    with ``mineralseg.evaluate.evaluate``.
``otsu`` (row ``multi-otsu``)
    4-class multi-Otsu thresholds found once on the pooled training tiles (a tile may
    show one or two phases only), brightness classes mapped to the majority label of
    the training tiles.
``rf`` (row ``random-forest``)
    Pixel random forest (multi-scale features, sigma 1..``--rf-sigma-max``), trained on
    a stratified sample of the training tiles' pixels, applied tile by tile.

Albite, the class the study found hardest among the minerals, is also reported on its
own (``albite_iou``). Every row is also scored against the generator's true minerals
on the same pixels (``truth_iou``, ``truth_miou``): the labels are point samples on a
coarse grid, so the label score mixes model error with label noise (see
``synth_label_ceiling.py``). Output: ``benchmarks/results/quality_synth.json`` (rows as in
``quality_sandstone.json``, dataset "synthetic") and ``quality_synth.md``; re-running
some methods replaces their rows only.

Usage::

    python benchmarks/quality_synth.py                         # all, CNN for 10 min
    python benchmarks/quality_synth.py --methods otsu,rf       # baselines only
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
DEFAULT_MINUTES = 10
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


def albite_note(rows: list[dict[str, Any]]) -> list[str]:
    """The albite IoU of every row, on its own line of the Markdown notes, and the label
    ceiling (``synth_label_ceiling.py``) when it was measured."""
    found = [f"{r['method']} {r['albite_iou']:.3f}" for r in rows if r.get("albite_iou") is not None]
    notes = [f"Albite IoU (the study's hardest mineral): {', '.join(found)}."] if found else []
    ceiling = common.RESULTS / "synth_label_ceiling.json"
    if ceiling.exists():
        for r in json.loads(ceiling.read_text()):
            if r.get("split") != "test":
                continue
            ious = ", ".join(f"{k} {v:.3f}" for k, v in r["iou"].items())
            if r["method"].startswith("oracle"):
                notes.append(f"Label ceiling: an oracle that predicts the true mineral of every pixel scores mean "
                             f"IoU {r['miou']:.3f} on these test tiles ({ious}; `synth_label_ceiling.py`): the "
                             "point-sampled labels cap every method.")  # fmt: skip
    scored = [r for r in rows if r.get("truth_miou") is not None]
    if scored:
        notes.append("Against the generator's true minerals instead of the labels (same pixels; `truth_iou` in "
                     "the JSON): " + ", ".join(f"{r['method']} {r['truth_miou']:.3f} (albite "
                                               f"{r['truth_iou'].get('albite', float('nan')):.3f})" for r in scored)
                     + ".")  # fmt: skip
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
    from mineralseg.evaluate.baselines import MultiOtsuClassifier, RandomForestPixelClassifier

    names = manifest.class_names
    if method == "otsu":
        clf = MultiOtsuClassifier(len(names), shared_thresholds=True)
        params = {"n_classes": len(names), "thresholds": "pooled training tiles",
                  "mapping": "majority label on the training tiles"}  # fmt: skip
    else:
        clf = RandomForestPixelClassifier(
            sigma_min=1, sigma_max=args.rf_sigma_max, n_estimators=args.rf_trees,
            max_samples_per_class=args.rf_samples, sampling="stratified", seed=args.seed, n_jobs=args.threads,
        )
        params = {"sigma_min": 1, "sigma_max": args.rf_sigma_max, "n_estimators": args.rf_trees,
                  "sampling": "stratified", "max_samples_per_class": args.rf_samples, "n_jobs": args.threads,
                  "seed": args.seed}  # fmt: skip
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
    res = common.train_and_evaluate_cnn(
        CNN, dataset, args.out, minutes=args.minutes, input_size=args.input_size, seed=args.seed,
        overrides=args.set, num_workers=args.num_workers, batch_size=args.batch_size, context=args.context,
        flips=args.flips,
    )
    row = common.result_row(
        CNN, DATASET, res["test"], train_seconds=res["train_seconds"], weights="none",
        split=f"test: {res['test'].get('num_tiles')} tiles", val_miou=_round(res["val"]["miou"]),
        params={**res["params"], **gen}, run=common.repo_relative(res["run"]),
        context=res["params"]["context"], tile_context=common.tile_context(res["test_tiles"]),
        val_miou_tiles=_round(res["val_tiles"]["miou"]),
        **rescore_extra(res["run"], args.out, flips=args.flips),
    )
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


def write_report(results: Path, rows: list[dict[str, Any]], gen: dict[str, Any] | None = None):
    """Merge ``rows`` into ``quality_synth.json`` and rewrite the Markdown beside it
    (``gen``: the generator settings; default: those recorded in the file's rows)."""
    if gen is None:
        merged = common.merge_rows(results / "quality_synth.json", rows)
        params = next((r["params"] for r in merged if (r.get("params") or {}).get("synth_size")), None)
        if params is None:
            raise SystemExit("no row records the synthetic data settings (synth_samples, synth_size, synth_seed)")
        gen = {k: params[k] for k in ("synth_samples", "synth_size", "synth_seed")}
    return common.write_results(results, "quality_synth", rows, title="Segmentation quality: synthetic twin",
                                intro=intro(gen), notes=albite_note)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = common.benchmark_parser(
        __doc__.split("\n\n")[0], METHODS, stem="quality_synth", minutes=DEFAULT_MINUTES,
        out=common.WORK / "synth", input_size=256, rf_samples=RF_SAMPLES_PER_CLASS,
    )
    parser.add_argument("--samples", type=int, default=6, help=f"synthetic samples (>= {MIN_SAMPLES}; default 6)")
    parser.add_argument("--size", type=int, default=4096, help="SEM side of each synthetic sample in px (default 4096)")
    parser.add_argument("--sem-scale", type=int, default=4, help="SEM pixels per label pixel on the working grid (default 4)")
    parser.add_argument("--tile-size", type=int, default=128, help="tile side on the working grid (default 128: 32 label px)")
    parser.add_argument("--rf-sigma-max", type=float, default=RF_SIGMA_MAX)
    parser.add_argument("--regenerate", action="store_true", help="remake the synthetic samples and the dataset")
    args = parser.parse_args(argv)

    methods = common.parse_methods(args.methods, METHODS)
    if CNN in methods:
        args.minutes = common.check_minutes(args.minutes)
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
        print(f"{row['method']}: mean IoU {row['miou']}, albite IoU {row['albite_iou']} "
              f"(val mean IoU {row.get('val_miou')}), trained in {row['train_seconds']:.0f} s; "
              f"IoU {row['iou']}", flush=True)  # fmt: skip
        json_path, md_path, merged = write_report(args.results, rows, gen)
    if rows:
        print()
        print(common.text_table(merged, common.class_names_of(merged)))
        for r in merged:
            print(f"albite IoU, {r['method']}: {r.get('albite_iou')}")
        print(f"\nwrote {json_path} and {md_path}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (see the tracebacks above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
