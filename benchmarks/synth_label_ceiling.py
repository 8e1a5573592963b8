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

Needs the dataset and samples that ``quality_synth.py`` made (``--out``); regenerates
each sample's truth from its seed (byte-identical). Output: the table on stdout and
``benchmarks/results/synth_label_ceiling.json`` / ``.md``.

Usage::

    python benchmarks/synth_label_ceiling.py                 # test and validation splits
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)


def oracle_confusion(work: Path, splits: list[str]) -> dict[str, object]:
    """One confusion matrix per split of the oracle against the dataset's labels."""
    from PIL import Image

    from mineralseg.classes import load_schema
    from mineralseg.data.manifest import load_manifest
    from mineralseg.evaluate.metrics import ConfusionMatrix
    from mineralseg.synth.dataset import _defaults_for
    from mineralseg.synth.sample import generate_sample

    manifest = load_manifest(work / "dataset")
    reg = json.loads((work / "dataset" / "registration.json").read_text())
    synth = json.loads((work / "raw" / "synth.json").read_text())
    schema = load_schema(synth["palette"])
    scale, ts = manifest.sem_scale, manifest.tile_size
    names = schema.mineral_names
    outside = int(schema.to_groups(np.array([names.index("background") if "background" in names else 0]))[0])
    cms = {s: ConfusionMatrix(manifest.num_classes, manifest.ignore_index) for s in splits}
    for k, rec in enumerate(synth["sample_records"]):
        name = rec["name"]
        tiles = [t for t in manifest.tiles if t.sample == name and t.split in cms]
        if not tiles:
            continue
        sample = generate_sample(rec["seed"], size=synth["size"], **_defaults_for(k, synth["options"]))
        m = np.asarray(reg["samples"][name]["registration"]["label_to_sem"], dtype=np.float64)
        labels = np.asarray(Image.open(work / "dataset" / "samples" / name / "labels_aligned.png"))
        h, w = sample.truth.shape
        for t in tiles:
            v, u = np.mgrid[t.row : t.row + ts, t.col : t.col + ts].astype(np.float64)
            lx, ly = (u + 0.5) / scale - 0.5, (v + 0.5) / scale - 0.5  # working -> label grid
            xs = np.rint(m[0, 0] * lx + m[0, 1] * ly + m[0, 2]).astype(np.int64)
            ys = np.rint(m[1, 0] * lx + m[1, 1] * ly + m[1, 2]).astype(np.int64)
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            pred = np.full((ts, ts), outside, np.uint8)  # outside the SEM frame: background
            pred[inside] = schema.to_groups(sample.truth[ys[inside], xs[inside]])
            cms[t.split].update(labels[t.row : t.row + ts, t.col : t.col + ts], pred)
        print(f"{name}: {len(tiles)} tiles", flush=True)
    return {"cms": cms, "names": manifest.class_names, "manifest": manifest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=common.WORK / "synth", help="quality_synth.py's work folder")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    if not (args.out / "dataset" / "manifest.json").is_file() or not (args.out / "raw" / "synth.json").is_file():
        raise SystemExit(f"{args.out}: run benchmarks/quality_synth.py first (it makes raw/ and dataset/ there)")
    from mineralseg.evaluate.metrics import metrics_from_confusion

    found = oracle_confusion(args.out, ["val", "test"])
    rows = []
    for split, cm in found["cms"].items():
        m = metrics_from_confusion(cm, found["names"])
        row = common.result_row(f"oracle ({split})", "synthetic", m, train_seconds=0.0, weights=None,
                                split=split, sem_scale=found["manifest"].sem_scale,
                                tile_size=found["manifest"].tile_size)  # fmt: skip
        rows.append(row)
        print(f"{split}: oracle mean IoU {row['miou']}; IoU {row['iou']}")
    intro = (
        "An oracle that knows the generator's true mineral at each working-pixel centre, scored against "
        "the point-sampled, repaired and registered QEMSCAN labels of the `quality_synth.py` dataset on "
        "its validation and test tiles (one confusion matrix per split). It is the score of predicting "
        "the true shapes perfectly: the labels' blockiness and point sampling keep it below 1. Produced "
        "by `benchmarks/synth_label_ceiling.py`."
    )
    json_path, md_path, merged = common.write_results(
        args.results, "synth_label_ceiling", rows, title="Label ceiling of the synthetic benchmark", intro=intro
    )
    print(common.text_table(merged, common.class_names_of(merged)))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
