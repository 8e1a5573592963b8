"""How well could a perfect model score on the synthetic benchmark? (the label ceiling)

The synthetic QEMSCAN labels are point samples on a grid 8-20x coarser than the SEM,
repaired and registered onto the working grid: every label pixel covers a block of
working pixels, so boundaries are blocky and pores or clay smaller than the label step
appear as whole blocks or not at all. This script scores an *oracle* that knows the
generator's true mineral at every working-pixel centre (mapped to the SEM through the
registered ``label_to_sem``) against the labels the dataset holds, on the same tiles
and with the same confusion matrix as ``quality_synth.py``. Its per-class IoU is what
predicting the true mineral shapes perfectly would score; a model can beat it only by
imitating the label grid's blockiness.

With ``--checkpoint RUN`` it also scores that CNN (each sample predicted whole, as the
benchmark row was) against the labels and against the generator's truth on the same
pixels: the model's error without the labels' noise.

Needs the dataset and samples that ``quality_synth.py`` made (``--out``); regenerates
each sample's truth from its seed (byte-identical). Output: the table on stdout and
``benchmarks/results/synth_label_ceiling.json`` / ``.md`` (rows appended; the Markdown shows the latest per method).

Usage::

    python benchmarks/synth_label_ceiling.py                 # test and validation splits
    python benchmarks/synth_label_ceiling.py --checkpoint benchmarks/work/synth/runs/unet-resnet18-... --flips
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)


def truth_maps(
    work: Path, splits: list[str], size: int | None = None
) -> Iterator[tuple[str, list[Any], list[np.ndarray], np.ndarray]]:
    """Per sample with tiles in ``splits``: ``(name, tiles, truth per tile, labels_aligned)``.

    The truth of a tile is the generator's true mineral group at the centre of each of
    its ``size`` x ``size`` pixels (default: the working grid's ``tile_size``; the
    stored tiles' ``out_size`` for methods that predict those), mapped working grid ->
    label grid -> SEM through the registered ``label_to_sem``; background outside the
    SEM frame.
    """
    from PIL import Image

    from mineralseg.classes import load_schema
    from mineralseg.data.manifest import load_manifest
    from mineralseg.synth.dataset import _defaults_for
    from mineralseg.synth.sample import generate_sample

    manifest = load_manifest(work / "dataset")
    reg = json.loads((work / "dataset" / "registration.json").read_text())
    synth = json.loads((work / "raw" / "synth.json").read_text())
    schema = load_schema(synth["palette"])
    scale, ts = manifest.sem_scale, manifest.tile_size
    size = int(size or ts)
    step = ts / size  # working px per output px
    names = schema.mineral_names
    outside = int(schema.to_groups(np.array([names.index("background") if "background" in names else 0]))[0])
    for k, rec in enumerate(synth["sample_records"]):
        name = rec["name"]
        tiles = [t for t in manifest.tiles if t.sample == name and t.split in splits]
        if not tiles:
            continue
        sample = generate_sample(rec["seed"], size=synth["size"], **_defaults_for(k, synth["options"]))
        m = np.asarray(reg["samples"][name]["registration"]["label_to_sem"], dtype=np.float64)
        labels = np.asarray(Image.open(work / "dataset" / "samples" / name / "labels_aligned.png"))
        h, w = sample.truth.shape
        truths = []
        for t in tiles:
            v, u = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) * step - 0.5
            v, u = v + t.row, u + t.col  # working-grid coordinates of the pixel centres
            lx, ly = (u + 0.5) / scale - 0.5, (v + 0.5) / scale - 0.5  # working -> label grid
            xs = np.rint(m[0, 0] * lx + m[0, 1] * ly + m[0, 2]).astype(np.int64)
            ys = np.rint(m[1, 0] * lx + m[1, 1] * ly + m[1, 2]).astype(np.int64)
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            truth = np.full((size, size), outside, np.uint8)  # outside the SEM frame: background
            truth[inside] = schema.to_groups(sample.truth[ys[inside], xs[inside]])
            truths.append(truth)
        yield name, tiles, truths, labels


def score(
    work: Path, splits: list[str], checkpoint: Path | None, *, flips: bool, batch_size: int, panels: int = 0
) -> dict[str, Any]:
    """Confusion matrices per split: the oracle against the labels and, with a
    ``checkpoint``, its whole-sample prediction against the labels and against the truth.

    The checkpoint predicts each sample's working image whole as ``evaluate --context
    sample`` does (windows 3 tiles wide, overlap half a tile, optional flips). With
    ``panels``, that many test tiles (chosen as ``evaluate`` chooses its panels) are
    kept as ``(id, image, labels, prediction, truth)`` under ``"panels"``.
    """
    from mineralseg.data.manifest import load_manifest
    from mineralseg.evaluate.checkpoint import check_dataset_matches, load_checkpoint_model
    from mineralseg.evaluate.evaluate import choose_panel_tiles, predict_sample, read_sample
    from mineralseg.evaluate.metrics import ConfusionMatrix

    manifest = load_manifest(work / "dataset")
    ts = manifest.tile_size
    refs = ["oracle"] + (["labels", "truth"] if checkpoint else [])
    cms = {(r, s): ConfusionMatrix(manifest.num_classes, manifest.ignore_index) for r in refs for s in splits}
    test = manifest.split("test")
    chosen = {test[i].id for i in choose_panel_tiles(test, panels)} if checkpoint and "test" in splits else set()
    kept: dict[str, tuple] = {}
    model = card = None
    if checkpoint:
        model, card = load_checkpoint_model(checkpoint)
        check_dataset_matches(card, manifest)
    for name, tiles, truths, labels in truth_maps(work, splits):
        pred = None
        if model is not None:
            image, _ = read_sample(manifest, name)
            needed = np.zeros(image.shape, bool)
            for t in tiles:
                needed[t.row : t.row + ts, t.col : t.col + ts] = True
            pred = predict_sample(model, card, image, needed=needed, batch_size=batch_size, flips=flips)
        for t, truth in zip(tiles, truths):
            lab = labels[t.row : t.row + ts, t.col : t.col + ts]
            cms[("oracle", t.split)].update(lab, truth)
            if pred is not None:
                guess = pred[t.row : t.row + ts, t.col : t.col + ts]
                cms[("labels", t.split)].update(lab, guess)
                # Pixels the labels ignore (unknown colours, outside the sample) are left out
                # against the truth too, so both references score the same pixels.
                cms[("truth", t.split)].update(np.where(lab == manifest.ignore_index, lab, truth), guess)
                if t.id in chosen:
                    kept[t.id] = (t.id, image[t.row : t.row + ts, t.col : t.col + ts], lab, guess, truth)
        print(f"{name}: {len(tiles)} tiles", flush=True)
    panels_kept = [kept[t.id] for t in test if t.id in kept]
    return {"cms": cms, "names": manifest.class_names, "manifest": manifest, "card": card, "panels": panels_kept}


def reading(rows: list[dict[str, Any]]) -> list[str]:
    """One line per split on what the rows say: labels vs truth, CNN vs both."""
    by = {r["method"]: r for r in rows}
    out = []
    for split in ("test", "val"):
        oracle = by.get(f"oracle ({split})")
        cnn = {r["reference"]: r for r in rows if r.get("split") == split and r.get("reference") and
               not r["method"].startswith("oracle")}  # fmt: skip
        if oracle and {"labels", "truth"} <= set(cnn):
            lab, tru = cnn["labels"], cnn["truth"]
            out.append(
                f"{split}: the labels match the truth at mean IoU {oracle['miou']:.3f}; the CNN scores "
                f"{lab['miou']:.3f} against the labels and {tru['miou']:.3f} against the truth "
                f"(albite {lab['iou'].get('albite', float('nan')):.3f} / {tru['iou'].get('albite', float('nan')):.3f})."
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=common.WORK / "synth", help="quality_synth.py's work folder")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="also score this run (or .ckpt) against the labels and against the truth")  # fmt: skip
    parser.add_argument("--flips", action="store_true", help="test-time flips for --checkpoint")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="input pixels per forward pass, in training tiles (as evaluate --batch-size)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--panels", type=int, default=4,
                        help="test tiles drawn in synth_label_ceiling.png with --checkpoint (0: no figure)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    if not (args.out / "dataset" / "manifest.json").is_file() or not (args.out / "raw" / "synth.json").is_file():
        raise SystemExit(f"{args.out}: run benchmarks/quality_synth.py first (it makes raw/ and dataset/ there)")
    common.limit_threads(args.threads)
    from mineralseg.evaluate.metrics import metrics_from_confusion

    found = score(args.out, ["val", "test"], args.checkpoint, flips=args.flips, batch_size=args.batch_size,
                  panels=args.panels)  # fmt: skip
    manifest, card = found["manifest"], found["card"]
    trained = None
    if card is not None:  # the CNN rows carry the run's training time and weights
        run_json = Path(card.checkpoint).parent.parent / "run.json"
        record = json.loads(run_json.read_text()) if run_json.is_file() else {}
        weights = card.encoder_weights
        trained = {"train_seconds": float(record.get("train_time_s") or 0.0), "weights": str(weights or "none")}
    rows = []
    for (ref, split), cm in found["cms"].items():
        m = metrics_from_confusion(cm, found["names"])
        extra: dict[str, Any] = {"split": split, "sem_scale": manifest.sem_scale, "tile_size": manifest.tile_size}
        cost = {"train_seconds": 0.0, "weights": None}
        if ref == "oracle":
            method, reference = f"oracle ({split})", "labels"
        else:
            cost = dict(trained)
            method, reference = f"{card.arch}-{card.encoder} vs {ref} ({split})", ref
            extra.update(run=common.repo_relative(args.checkpoint), flips=args.flips, context="sample")
        row = common.result_row(method, "synthetic", m, reference=reference, **cost, **extra)
        rows.append(row)
        print(f"{method}: mean IoU {row['miou']}; IoU {row['iou']}")
    intro = (
        "Rows `oracle`: an oracle that knows the generator's true mineral at each working-pixel centre, scored "
        "against the point-sampled, repaired and registered QEMSCAN labels of the `quality_synth.py` dataset "
        "on its validation and test tiles (one confusion matrix per split). It is the score of predicting the "
        "true shapes perfectly: the labels' blockiness and point sampling keep it below 1 (IoU is symmetric, "
        "so it is also how well the labels match the truth). Rows `... vs labels` / `... vs truth`: the "
        "benchmark's CNN, each sample predicted whole, scored on the same pixels against the labels (as in "
        "`quality_synth.md`) and against the generator's truth. Produced by `benchmarks/synth_label_ceiling.py`."
    )
    figure = None
    if found["panels"]:
        from mineralseg.evaluate.figures import plot_panels

        ids, images, labels, preds, truths = zip(*found["panels"])
        figure = plot_panels(images, labels, preds, found["names"], manifest.class_colors,
                             args.results / "synth_label_ceiling.png", row_labels=ids,
                             extra=[("generator truth", truths)],
                             titles=("SEM (working grid)", "labels (QEMSCAN)", "U-Net", "U-Net over SEM"))  # fmt: skip

    def notes(merged: list[dict[str, Any]]) -> list[str]:
        shown = (args.results / "synth_label_ceiling.png").is_file()
        return reading(merged) + ([
            "`synth_label_ceiling.png`: test tiles as SEM | labels | U-Net | generator truth | U-Net over the SEM "
            "(tiles chosen as `evaluate` chooses its panels)."] if shown else [])  # fmt: skip

    json_path, md_path, merged = common.write_results(
        args.results, "synth_label_ceiling", rows, title="Label ceiling of the synthetic benchmark", intro=intro,
        notes=notes, bold=False,
    )
    print(common.text_table(merged, common.class_names_of(merged)))
    print(f"wrote {json_path} and {md_path}" + (f" and {figure}" if figure else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
