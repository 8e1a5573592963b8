"""Segmentation quality on real data: sandstone X-ray microscope slices, all methods.

Data: the eight public 1024 x 996 slices of ``../shared/data/sandstone-xrm`` (beside
the repository; see ``configs/sandstone-xrm.yaml``, which names the files, their label
coding and the split). Four phases: air (pores and outside), quartz, clay, pyrite.

Split (by slice): train on Versa0000, 0050, 0100, 0150, 0180, 0200; validate on
Versa0250; test on Versa0300. Each method is fitted on the training slices, checked on
the validation slice, and looks at the test slice once, at the end.

Methods (all scored on the same pixels, one confusion matrix, no smoothing):

``otsu`` (row ``multi-otsu``)
    4-class multi-Otsu thresholds of each slice; each brightness class takes the label
    it overlaps most on the training slices
    (:class:`mineralseg.models.classical.MultiOtsuClassifier`).
``rf`` (row ``random-forest``)
    Pixel random forest on multi-scale intensity / edge / texture features, sigma 1..16,
    100 trees, trained on a stratified random sample of the training pixels
    (:class:`mineralseg.models.classical.RandomForestPixelClassifier`).
``unet-resnet18``, ``linknet-resnet18``, ``resunet``
    CNNs trained with the project's API (``mineralseg.train.run.train``, best
    checkpoint by validation mean IoU, then ``mineralseg.evaluate.evaluate``) on the
    dataset made by ``mineralseg prepare configs/sandstone-xrm.yaml`` (tiles of 128 px),
    from random init (ImageNet weights cannot be downloaded here), each for the same
    ``--steps`` optimiser steps (default 3000; ``--minutes`` caps the time) with each of
    ``--seeds`` (default 0 1 2): a row reports the mean, the sd and each seed.

Scored pixels: the test tiles of the prepared dataset, i.e. the grid of whole 128-px
tiles centred on the slice (8 x 7 tiles = 1024 x 896 px of Versa0300, all kept since
``min_sample_fraction: 0``). Every method predicts the whole slice and is scored on
those same pixels: the baselines compute their features on the slice, the CNNs predict
it with overlapping windows (``--context sample``, the default; ``--context tile``
scores each tile predicted alone, without the context around it, and both scores are
recorded).

Output: the table on stdout, ``benchmarks/results/quality_sandstone.json`` (a list of
rows: method, dataset, iou per class, miou, train_seconds, weights, ...) and
``quality_sandstone.md``. Rows are appended, never replaced: a re-run is a new dated
row, and the Markdown shows each method's latest row with the earlier ones listed
(the protocol: ``benchmarks/README.md``).

Usage::

    python benchmarks/quality_sandstone.py --methods otsu,rf          # baselines only
    python benchmarks/quality_sandstone.py                             # everything, 3 seeds x 3000 steps
    python benchmarks/quality_sandstone.py --smoke --methods otsu,resunet --steps 3 --seeds 0 1 \
        --input-size 64 --out /tmp/qss --results /tmp/qss/results    # plumbing check
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)

DATASET = "sandstone-xrm"
CONFIG = common.REPO / "configs" / "sandstone-xrm.yaml"
METHODS = ("otsu", "rf", *common.CNN_METHODS)
# Training pixels of the random forest: 20,000 x 4 classes, stratified. On one core:
# ~1 min of training and a validation mean IoU of 0.924; 50,000 per class gave 0.928
# for 3 min, 'balanced' sampling (20,000 of each class) 0.81.
RF_SAMPLES_PER_CLASS = 20_000
# Step budget of every CNN (the same for all: equal budgets). On the 2-core Xeon the
# U-Net did about 4 steps/s, LinkNet 5, ResUNet 3 (batch 8, 128 px).
DEFAULT_STEPS = 3000


# --------------------------------------------------------------------------- data
def load_config(path: Path):
    """The prepare config, after checking that the slices it names exist."""
    from mineralseg.errors import UserError
    from mineralseg.prep.config import load_prepare_config

    try:
        cfg = load_prepare_config(path)
    except UserError as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from None
    missing = [p for s in cfg.samples for p in (s.sem, s.labels) if not Path(p).is_file()]
    if missing:
        folder = Path(missing[0]).parent.parent
        raise SystemExit(
            f"sandstone data not found: {missing[0]} (and {len(missing) - 1} more). The benchmark reads the "
            f"public slices from {folder} (../shared/data/sandstone-xrm beside the repository, "
            f"as {path.name} says); it is not shipped with the project."
        )
    if cfg.sem_scale != 1 or not all(s.aligned for s in cfg.samples):
        raise SystemExit(f"{path}: the benchmark expects aligned samples at sem_scale 1 (slices and labels on a grid)")
    return cfg


def load_slices(cfg) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    """``{sample: (image uint8 (H, W), class ids uint8 (H, W))}`` and the class schema.

    Labels are read exactly as ``mineralseg prepare`` reads them (colour or grey
    coding per sample, mineral ids mapped to the config's class level).
    """
    from mineralseg.classes import load_schema, read_label_map
    from mineralseg.io import read_image

    schema = load_schema(cfg.palette)
    out = {}
    for s in cfg.samples:
        image = read_image(s.sem)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise SystemExit(f"{s.sem}: expected a uint8 greyscale slice, got shape {image.shape} dtype {image.dtype}")
        ids = read_label_map(s.labels, schema, coding=cfg.sample_coding(s), level="minerals",
                             unknown=cfg.unknown_colors, tolerance=cfg.color_tolerance)  # fmt: skip
        labels = ids if cfg.classes == "minerals" else schema.to_groups(ids)
        if labels.shape != image.shape:
            raise SystemExit(f"{s.labels}: label map {labels.shape} and slice {image.shape} differ in shape")
        out[s.name] = (image, labels.astype(np.uint8))
    return out, schema


def tile_windows(cfg, sample: str, shape: tuple[int, int], manifest=None) -> list[tuple[int, int, int]]:
    """``(row, col, size)`` of the tiles of ``sample`` that the CNNs are scored on.

    From the prepared dataset's manifest when there is one; otherwise the same grid
    computed from the config (whole tiles centred on the slice; exact because the
    config keeps every tile, ``min_sample_fraction: 0``).
    """
    size = cfg.tile_size
    if manifest is not None:
        wins = [(t.row, t.col, size) for t in manifest.tiles if t.sample == sample]
        if wins:
            return sorted(wins)
    if cfg.min_sample_fraction > 0:
        raise SystemExit("without a prepared dataset the scored tiles are only known for min_sample_fraction: 0")
    from mineralseg.prep.tiling import tile_positions

    return sorted((r, c, size) for r, c, _ in tile_positions(np.ones(shape, bool), size, 0.0, sample_name=sample))


def crop(a: np.ndarray, windows: list[tuple[int, int, int]]) -> list[np.ndarray]:
    return [a[r : r + s, c : c + s] for r, c, s in windows]


def prepare_dataset(config: Path, out: Path, *, overwrite: bool) -> Path:
    """The prepared sandstone dataset (made once, reused while ``manifest.json`` exists)."""
    from mineralseg.errors import UserError
    from mineralseg.prep.pipeline import prepare

    if (out / "manifest.json").exists() and not overwrite:
        print(f"using the prepared dataset {out}", flush=True)
        return out
    print(f"preparing {out} from {config} ...", flush=True)
    try:
        summary = prepare(config, out, overwrite=True)
    except UserError as exc:
        raise SystemExit(f"cannot prepare the sandstone dataset: {exc}") from None
    print(summary.get("text", ""), flush=True)
    return out


# --------------------------------------------------------------------------- methods
def run_baseline(method: str, args, data, split: dict[str, list[str]], windows, schema, level: str) -> dict:
    """Fit a baseline on the training slices; score validation, then test, on the tiles."""
    from mineralseg.models.classical import MultiOtsuClassifier
    from mineralseg.io import write_png

    names = schema.level_names(level)
    if method == "otsu":
        clf = MultiOtsuClassifier(len(names))
        params = {"n_classes": len(names), "thresholds": "per slice",
                  "mapping": "majority label on the training slices"}  # fmt: skip
    else:
        clf, params = common.random_forest(args)
    train = split["train"]
    with common.Stopwatch() as fit_time:
        if method == "rf":
            clf.fit([data[n][0] for n in train], [data[n][1] for n in train], progress=True)
        else:
            clf.fit([data[n][0] for n in train], [data[n][1] for n in train])
    if method == "rf":
        params["train_pixels"] = {names[c]: n for c, n in clf.n_train_pixels_.items()}
    val_truth, val_pred = [], []
    for n in split["val"]:
        val_truth += crop(data[n][1], windows[n])
        val_pred += crop(clf.predict(data[n][0]), windows[n])
    val = common.score(val_truth, val_pred, names)
    test_truth, test_pred = [], []
    with common.Stopwatch() as pred_time:
        for n in split["test"]:  # the test slices, once
            pred = clf.predict(data[n][0])
            test_truth += crop(data[n][1], windows[n])
            test_pred += crop(pred, windows[n])
            write_png(args.out / "predictions" / f"{common.BASELINE_METHODS[method]}-{n}.png",
                      schema.ids_to_colors(pred, level=level))  # fmt: skip
    test = common.score(test_truth, test_pred, names)
    return common.result_row(
        common.BASELINE_METHODS[method], DATASET, test, train_seconds=fit_time.seconds, weights=None,
        split=f"test: {', '.join(split['test'])}", val_miou=_round(val["miou"]),
        predict_seconds=round(pred_time.seconds, 1), params=params,
    )


def run_cnn(method: str, args, dataset: Path) -> dict:
    """One row: ``method`` trained for ``args.steps`` steps with each of ``args.seeds``."""
    runs = []
    for seed in args.seeds:
        print(f"-- {method} seed {seed}: {args.steps} steps", flush=True)
        runs.append(common.train_and_evaluate_cnn(
            method, dataset, args.out, minutes=args.minutes, input_size=args.input_size, seed=seed,
            overrides=args.set, num_workers=args.num_workers, batch_size=args.batch_size, context=args.context,
            flips=args.flips, max_steps=args.steps, name=f"{method}-seed{seed}",
        ))
    return common.seed_row(method, DATASET, runs, weights="none", steps=args.steps, split="test: Versa0300",
                           params=runs[0]["params"], context=runs[0]["params"]["context"])  # fmt: skip


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


# --------------------------------------------------------------------------- report
TITLE = "Segmentation quality: sandstone X-ray slices"
INTRO = (
    "Public sandstone X-ray microscope slices (bnsreenu/python_for_microscopists, MIT): train on "
    "Versa0000/0050/0100/0150/0180/0200, validate on Versa0250, test on Versa0300. IoU from one "
    "confusion matrix over the test pixels (no smoothing), all methods scored on the same pixels: the "
    "8 x 7 test tiles of 128 px (1024 x 896 px) of the prepared dataset. Baselines: 4-class multi-Otsu "
    "per slice with the brightness -> phase mapping learnt on the training slices; pixel random forest "
    "(multi-scale intensity/edge/texture features, sigma 1..16, 100 trees, stratified sample of the "
    "training pixels). CNNs: trained from random init (weights 'none': no ImageNet download) with "
    "`mineralseg train` for the steps shown (the same budget for every CNN of a measurement; rows "
    "measured before the protocol of `benchmarks/README.md` had one seed and a time limit instead), best validation checkpoint, scored with `mineralseg "
    "evaluate --context sample`: each slice is predicted whole with overlapping windows (3 tiles wide, "
    "overlap half a tile; averaged over flips where the notes say so), as the baselines and a user mapping "
    "a slice see it, and scored on the test-tile "
    "pixels; the tile-by-tile score is kept in the JSON (`tile_context`). "
    "Produced by `benchmarks/quality_sandstone.py`."
)


def write_report(results: Path, rows: list[dict[str, Any]]):
    """Append ``rows`` to ``quality_sandstone.json`` and rewrite the Markdown beside it."""
    return common.write_results(results, "quality_sandstone", rows, title=TITLE, intro=INTRO)


def main(argv: list[str] | None = None) -> int:
    parser = common.benchmark_parser(
        __doc__.split("\n\n")[0], METHODS, stem="quality_sandstone", minutes=common.DEFAULT_CNN_MINUTES,
        out=common.WORK / "sandstone", input_size=None, rf_samples=RF_SAMPLES_PER_CLASS, steps=DEFAULT_STEPS,
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="prepare config naming the slices and the split")
    parser.add_argument("--reprepare", action="store_true", help="rebuild the prepared dataset even if it exists")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite quality_sandstone.md from the JSON (no measurement)")
    args = parser.parse_args(argv)
    if args.report_only:
        _, md_path, _ = write_report(args.results, [])
        print(f"wrote {md_path}")
        return 0

    methods = common.parse_methods(args.methods, METHODS)
    cnns = [m for m in methods if m in common.CNN_METHODS]
    if cnns:
        args.minutes = common.check_minutes(args.minutes)
        args.steps = common.check_steps(args.steps)
        args.seeds = common.check_seeds(args.seeds, smoke=args.smoke)
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    args.out = args.out.resolve()
    common.limit_threads(args.threads)

    cfg = load_config(args.config)
    split = {"train": list(cfg.split.train), "val": list(cfg.split.val), "test": list(cfg.split.test)}
    if not all(split.values()):
        raise SystemExit(f"{args.config}: the benchmark needs explicit train, val and test slices in split")

    from mineralseg.data.manifest import load_manifest

    dataset = args.out / "dataset"
    manifest = None
    if cnns:
        dataset = prepare_dataset(args.config, dataset, overwrite=args.reprepare)
    if (dataset / "manifest.json").exists():
        manifest = load_manifest(dataset)

    data, schema = load_slices(cfg)
    windows = {n: tile_windows(cfg, n, data[n][0].shape, manifest) for n in split["val"] + split["test"]}
    if manifest is not None:
        ref = {n: tile_windows(cfg, n, data[n][0].shape, None) for n in windows}
        if ref != windows and cfg.min_sample_fraction == 0:
            print("warning: the dataset's tiles differ from the config's grid; scoring on the dataset's", flush=True)

    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for method in methods:
        print(f"\n== {method}", flush=True)
        try:
            if method in common.CNN_METHODS:
                row = run_cnn(method, args, dataset)
            else:
                row = run_baseline(method, args, data, split, windows, schema, cfg.classes)
        except Exception:  # noqa: BLE001 - report, keep the other methods' rows
            traceback.print_exc()
            failed.append(method)
            continue
        rows.append(row)
        print(f"{row['method']}: mean IoU {row['miou']}  (val {row.get('val_miou')}), "
              f"trained in {row['train_seconds']:.0f} s; IoU {row['iou']}", flush=True)  # fmt: skip
        json_path, md_path, merged = write_report(args.results, [row])  # appended, never replaced
    return common.finish(merged if rows else None, (json_path, md_path) if rows else None, failed)


if __name__ == "__main__":
    raise SystemExit(main())
