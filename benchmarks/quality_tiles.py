"""Segmentation quality on a folder of real tiles: the "own data" path, end to end.

Data: the eight public sandstone X-ray slices of ``../shared/data/sandstone-xrm``
(1024 x 996, four phases: air, quartz, clay, pyrite; files and label codings as in
``configs/sandstone-xrm.yaml``) cut into 256-px tiles named ``Versa0000_r00_c00.tif``
with index-coded masks ``Versa0000_r00_c00.png`` (0..3), 4 x 3 whole tiles per slice,
96 pairs. They are written to a temporary folder at run time (``--tiles DIR`` keeps
them there instead), never into the repository: the two folders a user would bring.

Prepared exactly as a user would, with the folder shortcut
(``mineralseg prepare --images DIR --masks DIR --classes air,quartz,clay,pyrite``):
split by groups of ``--group-tiles`` x ``--group-tiles`` neighbouring tiles of a slice
(row / column from the names), every tile image one tile.

Methods, all scored on the same test tiles (one confusion matrix, no smoothing), each
tile predicted alone (a tile folder has no surroundings):

``otsu`` (row ``multi-otsu``)
    4-class multi-Otsu, brightness class -> phase learnt on the training tiles;
    thresholds per tile or shared over the training tiles, whichever scores better on
    the validation tiles.
``rf`` (row ``random-forest``)
    Pixel random forest on multi-scale features (sigma 1..16, 100 trees, stratified
    sample of the training pixels).
``unet-resnet18``
    U-Net resnet18 from random init, ``--seeds`` (default 0, 1, 2), each for at most
    ``--steps`` optimiser steps and ``--minutes``; best checkpoint by validation mean
    IoU. One row per seed and a mean row (``seeds`` lists them).

Protocol: validation for choices (the checkpoint), the test tiles looked at once per
method and seed, at the end. Output: the table on stdout,
``benchmarks/results/quality_tiles.json`` and ``.md`` (rows of the methods run replace
rows of the same method).

Usage::

    python benchmarks/quality_tiles.py --tiny                     # minutes: checks the path
    python benchmarks/quality_tiles.py --steps 600 --threads 2    # the full version
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)

DATASET = "sandstone-xrm-tiles"
CONFIG = common.REPO / "configs" / "sandstone-xrm.yaml"
CLASSES = ("air", "quartz", "clay", "pyrite")
TILE = 256
METHODS = ("otsu", "rf", "unet-resnet18")
RF_SAMPLES_PER_CLASS = 20_000
# Default optimiser-step budget per U-Net seed (the shared 2-core CPU: about 10 min).
DEFAULT_STEPS = 600


# --------------------------------------------------------------------------- data
def cut_tiles(config: Path, out: Path) -> Path:
    """Write ``out/images/*.tif`` and ``out/masks/*.png`` (class indices) from the slices.

    Labels are read as ``prepare`` reads them for the slice config (colour or grey
    coding per slice), mapped to the four phases, and saved as index-coded PNGs.
    """
    import tifffile
    from PIL import Image

    from mineralseg.classes import load_schema, read_label_map
    from mineralseg.errors import UserError
    from mineralseg.io import read_image
    from mineralseg.prep.config import load_prepare_config

    try:
        cfg = load_prepare_config(config)
    except UserError as exc:
        raise SystemExit(f"cannot read {config}: {exc}") from None
    missing = [p for s in cfg.samples for p in (s.sem, s.labels) if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"sandstone data not found: {missing[0]} (../shared/data/sandstone-xrm beside the repository)")
    schema = load_schema(cfg.palette)
    if tuple(schema.group_names) != CLASSES:
        raise SystemExit(f"{config}: expected the classes {CLASSES}, got {schema.group_names}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    n = 0
    for s in cfg.samples:
        image = read_image(s.sem)
        ids = schema.to_groups(read_label_map(s.labels, schema, coding=cfg.sample_coding(s), level="minerals"))
        for r in range(image.shape[0] // TILE):
            for c in range(image.shape[1] // TILE):
                sl = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
                name = f"{s.name}_r{r:02d}_c{c:02d}"
                tifffile.imwrite(out / "images" / f"{name}.tif", image[sl])
                Image.fromarray(ids[sl]).save(out / "masks" / f"{name}.png")
                n += 1
    print(f"cut {n} tiles of {TILE} px into {out}", flush=True)
    return out


def prepare_folder(tiles: Path, out: Path, *, seed: int, group_tiles: int | None) -> dict[str, Any]:
    """``mineralseg prepare --images tiles/images --masks tiles/masks --classes ...`` (the API of it)."""
    from mineralseg.prep.config import folder_config
    from mineralseg.prep.pipeline import prepare

    cfg = folder_config(tiles / "images", tiles / "masks", classes=list(CLASSES), seed=seed)
    if group_tiles is not None:
        data = cfg.model_dump(by_alias=True)
        data["split"]["group_tiles"] = group_tiles
        cfg = type(cfg).model_validate(data)
    summary = prepare(cfg, out, overwrite=True, progress=False)
    print(summary["text"], flush=True)
    return summary


def load_split(dataset: Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """``{split: (tile images, tile masks)}`` of the prepared dataset."""
    from PIL import Image

    from mineralseg.data.manifest import load_manifest

    manifest = load_manifest(dataset)
    out: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "val", "test")}
    for t in manifest.tiles:
        out[t.split][0].append(np.asarray(Image.open(dataset / t.image)))
        out[t.split][1].append(np.asarray(Image.open(dataset / t.mask)))
    return out


# --------------------------------------------------------------------------- methods
def run_baseline(method: str, args, data) -> dict[str, Any]:
    from mineralseg.models.classical import MultiOtsuClassifier

    names = list(CLASSES)
    if method == "otsu":
        # The one choice, made on the validation tiles: thresholds per tile (phases
        # missing from a tile move them) or shared, fitted on all training tiles.
        images, masks = data["train"]
        best = None
        for shared in (False, True):
            cand = MultiOtsuClassifier(len(names), shared_thresholds=shared).fit(images, masks)
            miou = common.score(data["val"][1], [cand.predict(i) for i in data["val"][0]], names)["miou"]
            print(f"multi-otsu, thresholds {'shared' if shared else 'per tile'}: validation mean IoU {miou:.4f}", flush=True)
            if best is None or miou > best[0]:
                best = (miou, shared, cand)
        clf = best[2]
        params = {"n_classes": len(names),
                  "thresholds": "shared (training tiles)" if best[1] else "per tile",
                  "mapping": "majority label on the training tiles; thresholds chosen on validation"}  # fmt: skip
    else:
        clf, params = common.random_forest(args)
    images, masks = data["train"]
    with common.Stopwatch() as fit_time:
        clf.fit(images, masks)
    if method == "rf":
        params["train_pixels"] = {names[c]: n for c, n in clf.n_train_pixels_.items()}
    val = common.score(data["val"][1], [clf.predict(i) for i in data["val"][0]], names)
    with common.Stopwatch() as pred_time:
        test_pred = [clf.predict(i) for i in data["test"][0]]  # the test tiles, once
    test = common.score(data["test"][1], test_pred, names)
    return common.result_row(
        common.BASELINE_METHODS[method], DATASET, test, train_seconds=fit_time.seconds, weights=None,
        split="test tiles of the group split", val_miou=_round(val["miou"]),
        predict_seconds=round(pred_time.seconds, 1), params=params,
    )


def run_unet(args, dataset: Path, seed: int) -> dict[str, Any]:
    """One seed of the U-Net (:func:`common.train_and_evaluate_cnn`), scored tile by tile."""
    return common.train_and_evaluate_cnn(
        "unet-resnet18", dataset, args.out, minutes=args.minutes, seed=seed, overrides=args.set,
        num_workers=args.num_workers, batch_size=args.batch_size, max_steps=args.steps,
        name=f"unet-resnet18-seed{seed}", context="tile",
    )


def unet_row(args, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's seeded row (mean, sd and each seed) of the U-Net runs so far."""
    return common.seed_row("unet-resnet18", DATASET, runs, weights="none", split="test tiles of the group split",
                           context="tile", steps=args.steps, params=runs[0]["params"])  # fmt: skip


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


# --------------------------------------------------------------------------- report
TITLE = "Segmentation quality: a folder of real tiles (sandstone X-ray slices cut into 256-px tiles)"


def intro(args, summary: dict[str, Any]) -> str:
    t = summary["tiles"]
    return (
        "The eight public sandstone X-ray slices (bnsreenu/python_for_microscopists, MIT) cut into 96 tiles of "
        f"256 px with index-coded masks, in two folders, prepared with the folder shortcut (`mineralseg prepare "
        f"--images DIR --masks DIR --classes air,quartz,clay,pyrite`) and split by groups of neighbouring tiles "
        f"of a slice ({summary['group_tiles']} x {summary['group_tiles']} tiles; seed {args.seed}): "
        f"train {t['train']}, val {t['val']}, test {t['test']} tiles. IoU from one confusion matrix over the test "
        "tiles, each tile predicted alone; all methods see the same prepared tiles; choices (the Otsu "
        "thresholds, the CNN checkpoint) are made on the validation tiles. Produced by `benchmarks/quality_tiles.py`."
    )


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """How the U-Net rows were trained, or that there are none yet."""
    unet = [r for r in rows if r["method"].startswith("unet-resnet18 (seed")]
    guard = ("No guard band between the groups: a test tile at a group's edge touches training tiles of its "
             "slice (neighbouring grains), which flatters every method alike.")
    if not unet:
        return [guard, "U-Net resnet18 not run yet: on the shared 2-core benchmark machine a step of 8 tiles of 256 px took "
                "about 30 s while other work ran (600 steps x 3 seeds: hours). Run "
                "`python benchmarks/quality_tiles.py --methods unet-resnet18 --steps 600` where there is time."]
    budget = sorted({(r.get("params") or {}).get("max_steps") for r in unet}, key=str)
    minutes = sorted({(r.get("params") or {}).get("minutes") for r in unet}, key=str)
    done = [str((r.get("params") or {}).get("global_step")) for r in unet]
    return [guard, f"U-Net resnet18 from random init, {len(unet)} seed(s), each stopped by whichever came first of "
            f"{', '.join(map(str, budget))} steps and {', '.join(map(str, minutes))} min (steps done: "
            f"{', '.join(done)}), best validation checkpoint."]


def main(argv: list[str] | None = None) -> int:
    parser = common.benchmark_parser(
        __doc__.split("\n\n")[0], METHODS, stem="quality_tiles", minutes=12.0,
        out=common.WORK / "tiles", input_size=None, rf_samples=RF_SAMPLES_PER_CLASS, steps=DEFAULT_STEPS,
    )
    parser.add_argument("--group-tiles", type=int, default=2, help="split group side in tiles (default 2)")
    parser.add_argument("--tiles", type=Path, default=None, help="write the tile folders here (default: a temporary folder)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="prepare config naming the slices")
    parser.add_argument("--tiny", action="store_true",
                        help="check the whole path in a few minutes: 5 steps, one seed, 2,000 RF pixels per class; "
                        "results go to a temporary folder, not benchmarks/results")  # fmt: skip
    args = parser.parse_args(argv)
    methods = common.parse_methods(args.methods, METHODS)
    seeds = common.check_seeds(args.seeds, smoke=args.smoke or args.tiny)
    if args.tiny:
        args.steps, seeds, args.rf_samples, args.rf_trees, args.minutes = 5, seeds[:1], 2000, 20, 2.0
        args.results = Path(tempfile.mkdtemp(prefix="quality_tiles-results-"))
    args.minutes = common.check_minutes(args.minutes)
    args.out = args.out.resolve()
    common.limit_threads(args.threads)

    temp = None
    tiles = args.tiles
    if tiles is None:
        temp = tempfile.mkdtemp(prefix="mineralseg-tiles-")
        tiles = Path(temp)
    try:
        cut_tiles(args.config, tiles)
        dataset = args.out / "dataset"
        summary = prepare_folder(tiles, dataset, seed=args.seed, group_tiles=args.group_tiles)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    summary["group_tiles"] = json.loads((dataset / "manifest.json").read_text())["split"]["group_tiles"]
    data = load_split(dataset)

    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for method in methods:
        print(f"\n== {method}", flush=True)
        try:
            if method == "unet-resnet18":
                runs: list[dict[str, Any]] = []
                for s in seeds:  # results written after every seed: a long run keeps what it finished
                    runs.append(run_unet(args, dataset, s))
                    print(f"unet-resnet18 (seed {s}): mean IoU {runs[-1]['test']['miou']:.4f} "
                          f"(val {runs[-1]['val']['miou']:.4f})", flush=True)  # fmt: skip
                    common.write_results(args.results, "quality_tiles", rows + [unet_row(args, runs)],
                                         title=TITLE, intro=intro(args, summary), notes=notes)  # fmt: skip
                rows.append(unet_row(args, runs))
            else:
                rows.append(run_baseline(method, args, data))
        except Exception:  # noqa: BLE001 - report, keep the other methods' rows
            traceback.print_exc()
            failed.append(method)
            continue
        for row in rows[-1:]:
            print(f"{row['method']}: mean IoU {row['miou']} (val {row.get('val_miou')}); IoU {row['iou']}", flush=True)
    merged = written = None
    if rows:
        json_path, md_path, merged = common.write_results(args.results, "quality_tiles", rows, title=TITLE,
                                                          intro=intro(args, summary), notes=notes)  # fmt: skip
        written = (json_path, md_path)
    return common.finish(merged, written, failed)


if __name__ == "__main__":
    raise SystemExit(main())
