"""pix2pix against the CNNs, generated SEM against real SEM, generated pairs as extra data.

Three parts, each following the protocol of ``benchmarks/README.md`` (choices on
validation, the test split scored once per final configuration, every CNN/GAN row over
``--seeds`` with mean and sd, equal budgets in optimiser steps):

``segment``
    pix2pix in ``segment`` mode (SEM -> softmax over the classes, loss adversarial +
    100 x cross-entropy) against U-Net resnet18, both from random init with the same
    ``--steps`` at the same batch size, scored with ``mineralseg evaluate`` on the
    test split: on the synthetic twin (the dataset of ``quality_synth.py``; also
    against the generator's true minerals) and on the sandstone slices (the dataset of
    ``quality_sandstone.py``). This repeats the study's Table 4 beside Tables 1-3.
``synthesize``
    pix2pix in ``synthesize`` mode (class map -> SEM, loss adversarial + 100 x L1)
    trained on the synthetic twin's training tiles; the test tiles' class maps are
    turned into SEM and compared with the real test tiles, class by class: the
    Wasserstein distance between the grey-level distributions of the class's pixels
    (in 8-bit grey levels). Two references on the same pixels: the real training
    tiles against the real test tiles (how far two real samples are) and a flat
    image painting each class its mean training grey (no texture). Then "train on
    synthetic, test on real": a U-Net trained on generated training tiles only (the
    real ones replaced, masks unchanged), scored on the real test split, beside the
    U-Net of the ``segment`` part trained on the real tiles (same budget).
``augment``
    Few labelled pairs: U-Net resnet18 trained on two sandstone slices, with and
    without pairs that a ``synthesize`` GAN (trained on those two slices only) makes
    from the label maps of the other four training slices (``synthetic_pairs:`` in the
    train config, ``--share`` of every batch), same budget, validated on Versa0250,
    tested on Versa0300.

Output: the tables on stdout, ``benchmarks/results/gan.json`` (rows: ``method``,
``dataset``, ``part``, ``iou``, ``miou``, ``train_seconds``, seeds, ...) and
``gan.md``; sample grids (input | truth | generated) as ``results/gan_*.png``. Rows are
appended, never replaced.

Usage::

    python benchmarks/gan.py                                   # everything (hours on a CPU)
    python benchmarks/gan.py --parts segment --datasets sandstone
    python benchmarks/gan.py --smoke --steps 4 --seeds 0 1 --out /tmp/gan --results /tmp/gan/results
"""

from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/common.py, beside this script)

PARTS = ("segment", "synthesize", "augment")
DATASETS = ("synthetic", "sandstone")
UNET = "unet-resnet18"
GAN_SEGMENT = "pix2pix-segment"
GAN_SYNTH = "pix2pix-synthesize"
# Budget of every network of a run (the same for all), in optimiser steps.
DEFAULT_STEPS = 1500
# The study's generator: 32 base filters. Depth: 7 halvings for 256-px inputs would
# reach 2 px; 6 keeps 4 px at 256 and 2 px at 128.
GAN_OPTIONS = {"base_filters": 32, "depth": 6, "norm": "batch"}
# The two slices of the few-pairs experiment, and the slices whose label maps feed the GAN.
FEW_TRAIN = ("Versa0000", "Versa0100")
FEW_OTHERS = ("Versa0050", "Versa0150", "Versa0180", "Versa0200")
DEFAULT_SHARE = 0.5
# Lightning counts every optimiser step: a pix2pix batch makes two (discriminator and
# generator), so its ``trainer.max_steps`` is twice the budget in batches. The budget
# of every row is in batches (= generator updates = CNN optimiser steps).
GAN_STEPS_PER_BATCH = 2


# --------------------------------------------------------------------------- configs
def gan_config(mode: str, args) -> dict[str, Any]:
    """Training-config fragment of a pix2pix run in ``mode`` (segment | synthesize)."""
    return {"model": {"arch": "pix2pix", "encoder": None, "options": dict(GAN_OPTIONS)},
            "gan": {"mode": mode, "sample_every": max(1, args.steps // 4)}}  # fmt: skip


def synth_args(args) -> argparse.Namespace:
    """Arguments of ``quality_synth.make_dataset`` (its defaults, in this run's work folder)."""
    return argparse.Namespace(out=args.out / "synth", samples=args.synth_samples, size=args.synth_size,
                              seed=args.seed, sem_scale=4, tile_size=128, input_size=256,
                              regenerate=False)  # fmt: skip


def datasets(args, names) -> dict[str, Path]:
    """Prepared datasets (made once in ``--out``, reused)."""
    found: dict[str, Path] = {}
    if "synthetic" in names:
        import quality_synth

        found["synthetic"] = quality_synth.make_dataset(synth_args(args))
    if "sandstone" in names:
        import quality_sandstone

        quality_sandstone.load_config(quality_sandstone.CONFIG)  # a clear stop when the slices are absent
        found["sandstone"] = quality_sandstone.prepare_dataset(
            quality_sandstone.CONFIG, args.out / "sandstone" / "dataset", overwrite=False
        )
    return found


def input_size(dataset: str) -> int:
    return 256 if dataset == "synthetic" else 128


def dataset_label(name: str) -> str:
    return {"synthetic": "synthetic", "sandstone": "sandstone-xrm"}[name]


# --------------------------------------------------------------------------- part: segment
def train_row(method: str, dataset_name: str, dataset: Path, work: Path, args, *, update: dict | None = None,
              arch: tuple[str, str | None] = ("unet", "resnet18"), part: str, extra_params: dict | None = None,
              label: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One row: ``method`` trained ``args.steps`` steps with each seed, evaluated once on test."""
    runs, truths = [], []
    for seed in args.seeds:
        print(f"-- {label or method} on {dataset_name}, seed {seed}: {args.steps} steps", flush=True)
        res = common.train_and_evaluate_cnn(
            method, dataset, work, minutes=args.minutes, input_size=input_size(dataset_name), seed=seed,
            num_workers=args.num_workers, batch_size=args.batch_size,
            max_steps=args.steps * (GAN_STEPS_PER_BATCH if arch[0] == "pix2pix" else 1),
            name=f"{label or method}-seed{seed}", arch=arch, config_update=update,
        )
        runs.append(res)
        if dataset_name == "synthetic":
            import quality_synth

            truths.append(quality_synth.rescore_extra(res["run"], args.out / "synth", flips=False))
    row = common.seed_row(label or method, dataset_label(dataset_name), runs, weights="none", steps=args.steps,
                          part=part, params={**runs[0]["params"], **(extra_params or {})})  # fmt: skip
    if truths:
        t = [x["truth_miou"] for x in truths]
        row["truth_miou"] = round(float(np.mean(t)), 4)
        row["truth_miou_sd"] = round(float(np.std(t, ddof=1)), 4) if len(t) > 1 else None
        names = list(truths[0]["truth_iou"])
        vals = {n: [x["truth_iou"][n] for x in truths if x["truth_iou"][n] is not None] for n in names}
        row["truth_iou"] = {n: round(float(np.mean(v)), 4) if v else None for n, v in vals.items()}
        row["truth_iou_sd"] = {n: round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None for n, v in vals.items()}
        for entry, x in zip(row["seeds"], truths):
            entry["truth_miou"] = x["truth_miou"]
    _copy_sample_grid(runs[0]["run"], args.results, f"gan_{part}_{dataset_name}_{label or method}")
    return row


def part_segment(args, found: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for name, dataset in found.items():
        work = args.out / name
        rows.append(train_row(UNET, name, dataset, work, args, part="segment"))
        rows.append(train_row(GAN_SEGMENT, name, dataset, work, args, part="segment", arch=("pix2pix", None),
                              update=gan_config("segment", args), extra_params={"gan": GAN_OPTIONS}))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- part: synthesize
def train_synthesizer(dataset: Path, work: Path, args, seed: int, name: str) -> tuple[Path, float]:
    """A ``synthesize`` pix2pix run on ``dataset``; (run folder, seconds)."""
    from mineralseg.train.run import train

    config = {
        "dataset": str(dataset.resolve()),
        "run": {"root": str((work / "runs").resolve()), "name": name},
        "seed": seed, "approach": "random", "input_size": input_size_of(dataset),
        "trainer": {"max_epochs": -1, "max_time": common.max_time(args.minutes),
                    "max_steps": args.steps * GAN_STEPS_PER_BATCH,
                    "batch_size": args.batch_size, "num_workers": args.num_workers, "progress_bar": False},
        **gan_config("synthesize", args),
    }  # fmt: skip
    with common.Stopwatch() as sw:
        run = Path(train(config))
    return run, sw.seconds


def input_size_of(dataset: Path) -> int:
    from mineralseg.data.manifest import load_manifest

    return int(load_manifest(dataset).out_size)


def generate_tiles(run: Path, manifest, split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(real images, masks, generated images) of ``split``'s tiles, generator of ``run``."""
    import torch

    from mineralseg.data.dataset import read_tile
    from mineralseg.evaluate.checkpoint import load_checkpoint_model
    from mineralseg.models.pix2pix import one_hot_labels, tanh_to_grey

    generator, card = load_checkpoint_model(run, purpose="synthesize")
    reals, masks, fakes = [], [], []
    with torch.inference_mode():
        for tile in manifest.split(split):
            image, mask = read_tile(tile, size=manifest.out_size)
            t = generator(one_hot_labels(torch.from_numpy(mask)[None], card.num_classes))[0, 0]
            fake = tanh_to_grey(t).numpy()
            fake[mask == manifest.ignore_index] = 0
            reals.append(image)
            masks.append(mask)
            fakes.append(fake)
    return reals, masks, fakes


def class_values(images, masks, c: int) -> np.ndarray:
    return np.concatenate([im[m == c] for im, m in zip(images, masks)]) if images else np.zeros(0, np.uint8)


def wasserstein_per_class(a_images, a_masks, b_images, b_masks, names) -> dict[str, float | None]:
    """1-D Wasserstein distance (grey levels) between the pixels of each class in two sets."""
    from scipy.stats import wasserstein_distance

    out = {}
    for c, n in enumerate(names):
        a, b = class_values(a_images, a_masks, c), class_values(b_images, b_masks, c)
        out[n] = None if a.size == 0 or b.size == 0 else round(float(wasserstein_distance(a, b)), 3)
    return out


def flat_images(train_images, train_masks, masks, n: int) -> list[np.ndarray]:
    """Each class painted its mean grey of the training tiles."""
    values = [class_values(train_images, train_masks, c) for c in range(n)]
    means = [float(v.mean()) if v.size else 0.0 for v in values]
    lut = np.zeros(256, np.uint8)
    lut[:n] = np.rint(means).astype(np.uint8)
    return [lut[m] for m in masks]


def generated_dataset(dataset: Path, run: Path, out: Path) -> Path:
    """A copy of ``dataset`` whose training tiles' images are generated from their masks."""
    from mineralseg.data.manifest import load_manifest
    from mineralseg.io import write_png

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(dataset, out)
    manifest = load_manifest(out)
    _, _, fakes = generate_tiles(run, manifest, "train")
    for tile, fake in zip(manifest.split("train"), fakes, strict=True):
        write_png(tile.image, fake)
    return out


def part_synthesize(args, found: dict[str, Path]) -> list[dict[str, Any]]:
    from mineralseg.data.manifest import load_manifest

    rows = []
    name = "synthetic"
    dataset = found[name]
    manifest = load_manifest(dataset)
    names = manifest.class_names
    work = args.out / name
    from mineralseg.data.dataset import read_tile

    train_pairs = [read_tile(t, size=manifest.out_size) for t in manifest.split("train")]
    train_images, train_masks = [p[0] for p in train_pairs], [p[1] for p in train_pairs]
    per_seed, tstr_runs = [], []
    for seed in args.seeds:
        print(f"-- {GAN_SYNTH} on {name}, seed {seed}: {args.steps} steps", flush=True)
        run, seconds = train_synthesizer(dataset, work, args, seed, f"{GAN_SYNTH}-seed{seed}")
        reals, masks, fakes = generate_tiles(run, manifest, "test")
        wd = wasserstein_per_class(fakes, masks, reals, masks, names)
        per_seed.append({"generator_seed": seed, "wasserstein": wd, "train_seconds": round(seconds, 1),
                         "run": common.repo_relative(run)})  # fmt: skip
        _copy_sample_grid(run, args.results, f"gan_synthesize_{name}_seed{seed}")
        # train on synthetic, test on real
        gen_data = generated_dataset(dataset, run, work / f"generated-seed{seed}")
        print(f"-- {UNET} on generated tiles (seed {seed}): {args.steps} steps", flush=True)
        tstr_runs.append(common.train_and_evaluate_cnn(
            UNET, gen_data, work, minutes=args.minutes, input_size=input_size(name), seed=seed,
            num_workers=args.num_workers, batch_size=args.batch_size, max_steps=args.steps,
            name=f"{UNET}-on-generated-seed{seed}"))  # fmt: skip
    references = {
        "real training tiles": wasserstein_per_class(train_images, train_masks, reals, masks, names),
        "flat class means": wasserstein_per_class(flat_images(train_images, train_masks, masks, len(names)), masks,
                                                  reals, masks, names),
    }  # fmt: skip
    mean_wd = {n: round(float(np.mean([s["wasserstein"][n] for s in per_seed if s["wasserstein"][n] is not None])), 3)
               for n in names}  # fmt: skip
    sd_wd = {n: (round(float(np.std([s["wasserstein"][n] for s in per_seed], ddof=1)), 3) if len(per_seed) > 1
                 else None) for n in names}  # fmt: skip
    rows.append({"method": GAN_SYNTH, "dataset": name, "part": "synthesize-realism", "wasserstein": mean_wd,
                 "wasserstein_sd": sd_wd, "references": references, "generators": per_seed, "steps": args.steps,
                 "train_seconds": round(float(np.mean([s["train_seconds"] for s in per_seed])), 1),
                 "iou": {}, "miou": None, "date": common.today(),
                 "machine": common.machine_line(common.machine_info())})  # fmt: skip
    rows.append(common.seed_row(f"{UNET} trained on generated tiles", name, tstr_runs, weights="none",
                                steps=args.steps, part="train-on-synthetic", params=tstr_runs[0]["params"]))  # fmt: skip
    return rows


# --------------------------------------------------------------------------- part: augment
def few_pairs_dataset(args) -> tuple[Path, Path]:
    """(dataset of the two training slices + val + test, folder of the other slices' label maps)."""
    import yaml

    import quality_sandstone
    from mineralseg.prep.pipeline import prepare

    work = args.out / "few"
    dataset = work / "dataset"
    cfg = yaml.safe_load(quality_sandstone.CONFIG.read_text())
    base = quality_sandstone.CONFIG.parent
    samples = cfg["samples"]
    keep = set(FEW_TRAIN) | set(cfg["split"]["val"]) | set(cfg["split"]["test"])
    for s in samples:  # paths relative to the config's folder
        for key in ("sem", "labels"):
            s[key] = str((base / s[key]).resolve())
    others = [s for s in samples if s["name"] in FEW_OTHERS]
    cfg["samples"] = [s for s in samples if s["name"] in keep]
    cfg["split"]["train"] = list(FEW_TRAIN)
    work.mkdir(parents=True, exist_ok=True)
    (work / "prepare.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not (dataset / "manifest.json").exists():
        prepare(work / "prepare.yaml", dataset, overwrite=True)
    return dataset, others


def label_maps_of(others, out: Path) -> list[Path]:
    """Class-id PNGs of the other slices' label maps (as ``prepare`` reads them)."""
    import quality_sandstone
    from mineralseg.io import write_png

    cfg = quality_sandstone.load_config(quality_sandstone.CONFIG)
    data, _ = quality_sandstone.load_slices(cfg)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in others:
        p = out / f"{s['name']}_classes.png"
        write_png(p, data[s["name"]][1])
        paths.append(p)
    return paths


def part_augment(args) -> list[dict[str, Any]]:
    from mineralseg.infer.synthesize import synthesize

    dataset, others = few_pairs_dataset(args)
    work = args.out / "few"
    maps = label_maps_of(others, work / "label-maps")
    plain, augmented = [], []
    for seed in args.seeds:
        run, _ = train_synthesizer(dataset, work, args, seed, f"{GAN_SYNTH}-few-seed{seed}")
        pairs = work / f"pairs-seed{seed}"
        if pairs.exists():
            shutil.rmtree(pairs)
        synthesize(run, maps, pairs, progress=False)
        for label, bucket, update in (("without", plain, None),
                                       ("with", augmented, {"synthetic_pairs": {"path": str(pairs),
                                                                                "share": args.share}})):  # fmt: skip
            print(f"-- {UNET} on 2 slices {label} generated pairs, seed {seed}", flush=True)
            bucket.append(common.train_and_evaluate_cnn(
                UNET, dataset, work, minutes=args.minutes, input_size=128, seed=seed, num_workers=args.num_workers,
                batch_size=args.batch_size, max_steps=args.steps, name=f"{UNET}-{label}-pairs-seed{seed}",
                config_update=update))  # fmt: skip
    common_fields = {"part": "augment", "steps": args.steps, "train_slices": list(FEW_TRAIN),
                     "generated_from": [s["name"] for s in others]}  # fmt: skip
    return [
        common.seed_row(f"{UNET}, 2 slices", "sandstone-xrm", plain, weights="none", **common_fields),
        common.seed_row(f"{UNET}, 2 slices + generated pairs ({args.share:.0%} of each batch)", "sandstone-xrm",
                        augmented, weights="none", **common_fields),
    ]


# --------------------------------------------------------------------------- report
def _copy_sample_grid(run: str | Path, results: Path, stem: str) -> None:
    """The run's last sample grid (GAN runs write them) as ``results/<stem>.png``."""
    grids = sorted(Path(run).glob("samples/*.png"))
    if grids:
        results.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grids[-1], results / f"{stem}.png")


def realism_table(rows: list[dict[str, Any]]) -> str:
    found = [r for r in rows if r.get("part") == "synthesize-realism"]
    if not found:
        return ""
    r = found[-1]
    names = list(r["wasserstein"])
    lines = ["| compared with the real test tiles | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    cells = [f"{r['wasserstein'][n]} ± {r['wasserstein_sd'][n]}" if r["wasserstein_sd"][n] is not None
             else f"{r['wasserstein'][n]}" for n in names]  # fmt: skip
    lines.append(f"| generated ({GAN_SYNTH}, {len(r['generators'])} seeds, {r['steps']} steps) | " + " | ".join(cells) + " |")
    for ref, wd in r["references"].items():
        lines.append(f"| {ref} | " + " | ".join(str(wd[n]) for n in names) + " |")
    return "\n".join(lines)


def write_report(results: Path, rows: list[dict[str, Any]]):
    def table(latest):
        scored = [r for r in latest if r.get("miou") is not None]
        parts = []
        for ds in sorted({r["dataset"] for r in scored}):
            sub = [r for r in scored if r["dataset"] == ds]
            truth = [{**r, "iou": r["truth_iou"], "iou_sd": r.get("truth_iou_sd"), "miou": r["truth_miou"],
                      "miou_sd": r.get("truth_miou_sd")} for r in sub if r.get("truth_iou")]  # fmt: skip
            if truth:
                parts.append(f"**{ds}, against the generator's true minerals** (the headline)\n\n"
                             + common.markdown_table(truth, common.class_names_of(truth)))  # fmt: skip
            what = "against the point-sampled labels" if truth else "against the labels"
            parts.append(f"**{ds}, {what}**\n\n" + common.markdown_table(sub, common.class_names_of(sub)))
        realism = realism_table(latest)
        if realism:
            parts.append("**Generated SEM against real SEM** (Wasserstein distance between grey-level "
                         "distributions per class, 8-bit grey levels; lower is closer)\n\n" + realism)  # fmt: skip
        return "\n\n".join(parts)

    return common.write_results(
        results, "gan", rows, title="pix2pix: segmentation, synthesis and generated pairs",
        intro=__doc__.split("\n\n")[1].strip() if __doc__ else "", table=table,
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.benchmark_parser(__doc__.split("\n\n")[0], PARTS, stem="gan", minutes=common.DEFAULT_CNN_MINUTES,
                                     out=common.WORK / "gan", input_size=None, rf_samples=0, steps=DEFAULT_STEPS)  # fmt: skip
    parser.add_argument("--parts", default="all", help=f"comma-separated: all or {', '.join(PARTS)}")
    parser.add_argument("--datasets", default="all", help="for the segment part: all or synthetic,sandstone")
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE, help="share of generated tiles per batch")
    parser.add_argument("--synth-samples", type=int, default=6)
    parser.add_argument("--synth-size", type=int, default=4096)
    parser.add_argument("--report-only", action="store_true", help="rewrite gan.md from the JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        _, md, _ = write_report(args.results, [])
        print(f"wrote {md}")
        return 0
    parts = common.parse_methods(args.parts, PARTS)
    names = common.parse_methods(args.datasets, DATASETS)
    args.minutes = common.check_minutes(args.minutes)
    args.steps = common.check_steps(args.steps)
    args.seeds = common.check_seeds(args.seeds, smoke=args.smoke)
    args.out, args.results = args.out.resolve(), args.results.resolve()
    common.limit_threads(args.threads)
    needed = set(names if "segment" in parts else []) | ({"synthetic"} if "synthesize" in parts else set())
    found = datasets(args, needed)
    rows, failed, merged, written = [], [], None, None
    jobs = {"segment": lambda: part_segment(args, {k: v for k, v in found.items() if k in names}),
            "synthesize": lambda: part_synthesize(args, found), "augment": lambda: part_augment(args)}  # fmt: skip
    for part in parts:
        print(f"\n== {part}", flush=True)
        try:
            new = jobs[part]()
        except Exception:  # noqa: BLE001 - report, keep the other parts' rows
            traceback.print_exc()
            failed.append(part)
            continue
        rows += new
        json_path, md_path, merged = write_report(args.results, new)
        written = (json_path, md_path)
    scored = [r for r in (merged or []) if r.get("miou") is not None]
    extra = [realism_table(merged or [])] if merged else []
    return common.finish(scored or None, written, failed, extra)


if __name__ == "__main__":
    raise SystemExit(main())
