"""The built-in demo: synthetic data -> prepare -> train a small U-Net -> evaluate -> map a new image.

Runs on a laptop CPU in a few minutes and needs nothing but this package. Each step is
the same library call the CLI verbs make, so the demo is also a worked example.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

#: Training settings of the demo: small enough for a few CPU minutes.
DEMO_TRAIN: dict[str, Any] = {
    "seed": 0,
    "approach": "random",  # ImageNet weights need a network; see `mineralseg export-weights`
    "model": {"arch": "unet", "encoder": "resnet18"},
    "input_size": 64,
    "loss": {"name": "dice_focal", "class_weights": "auto"},
    "trainer": {"max_epochs": -1, "batch_size": 8, "num_workers": 0, "log_every_n_steps": 2},
}


def run_demo(
    out: str | Path, *, samples: int = 2, size: int = 2048, minutes: float = 3.0, seed: int = 0,
    steps: int | None = None,
) -> dict:
    """Run the whole pipeline on synthetic data under ``out``; return a summary.

    Parameters
    ----------
    out : path-like
        Work folder; ``synth/``, ``dataset/`` and ``runs/`` are (re)made inside.
    samples, size, seed : int
        Synthetic data: number of samples, SEM side in pixels, seed.
    minutes : float
        Training time limit.
    steps : int, optional
        Training budget in optimiser steps instead (the same work on any machine);
        ``minutes`` still caps the time.

    Returns
    -------
    dict
        ``dataset``, ``run``, ``eval`` (folders), ``metrics`` (test split), ``map`` (the
        output folder of a new synthetic SEM image mapped by ``predict``, one that no
        training tile came from) and ``text`` (a printable summary with the results
        table and where the figures and the report are).
    """
    from mineralseg.evaluate.evaluate import evaluate
    from mineralseg.evaluate.metrics import majority_class_miou
    from mineralseg.evaluate.tables import metrics_markdown, results_table
    from mineralseg.infer.predict import predict
    from mineralseg.prep.pipeline import prepare
    from mineralseg.synth import write_synth_dataset
    from mineralseg.train.run import train

    out = Path(out).resolve()
    synth_dir = Path(write_synth_dataset(out / "synth", samples=samples, size=size, seed=seed, overwrite=True))
    dataset = out / "dataset"
    # the demo's small maps (~190 px at 2048) are where the seam repair is least sure: an
    # untrusted repair is used and reported in prepare's notes rather than stopping the demo
    prepare(synth_dir / "prepare.yaml", dataset, overwrite=True, accept_low_confidence=True)

    seconds = max(1, int(round(minutes * 60)))
    config = json.loads(json.dumps(DEMO_TRAIN))
    config.update({"dataset": str(dataset), "run": {"root": str(out / "runs"), "name": "demo-unet-resnet18"}})
    config["trainer"]["max_time"] = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if steps is not None:
        config["trainer"]["max_steps"] = int(steps)
    run = Path(train(config))
    # Each sample predicted whole (overlapping windows), as a user maps an image.
    metrics = evaluate(run, dataset, split="test", context="sample")
    baseline = majority_class_miou(metrics["confusion_matrix"])

    # A new SEM image that no training tile came from, mapped as a user maps one.
    unseen = Path(write_synth_dataset(out / "unseen", samples=1, size=size, seed=seed + 1, overwrite=True))
    image = out / "unseen_sem.tif"  # named for its output folder, maps/unseen_sem/
    shutil.copyfile(unseen / "sample00" / "sem.tif", image)
    (mapped,) = predict(run, [image], out / "maps", overwrite=True)

    record = json.loads((run / "run.json").read_text())
    row = {
        "model": "unet-resnet18 (demo)",
        "iou": metrics["iou"],
        "miou": metrics["miou"],
        "train_time_s": record.get("train_time_s"),
        "params": record.get("model", {}).get("parameters"),
    }
    table, _ = results_table([row], metrics["class_names"])
    qa = sorted(p.name for p in (dataset / "qa").glob("*.png"))
    text = "\n".join([
        "",
        "Test split (each sample predicted whole; one confusion matrix over all test-tile pixels):",
        metrics_markdown(metrics),
        f"(predicting the most common class everywhere would score mean IoU {baseline:.3f})",
        "",
        table,
        "",
        f"synthetic data: {synth_dir}",
        f"dataset:        {dataset}   (QA figures in qa/: {', '.join(qa)})",
        f"run:            {run}",
        f"evaluation:     {metrics['out']}   (figures: {', '.join(metrics.get('figures', []))})",
        "",
        f"A new synthetic SEM image ({mapped.image}), mapped by `mineralseg predict`:",
        "  " + ", ".join(f"{n} {p:.1f} %" for n, p in zip(mapped.mineralogy.class_names,
                                                          mapped.mineralogy.area_percent)),
        f"  report: {mapped.out / 'report.html'}",
    ])
    return {"dataset": str(dataset), "run": str(run), "eval": metrics["out"], "metrics": metrics,
            "map": str(mapped.out), "majority_miou": baseline, "text": text}
