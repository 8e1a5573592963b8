"""Command-line interface: parses arguments and calls the library. No logic here.

Every verb maps to one library function; user mistakes (``UserError``) are printed
as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from mineralseg.errors import UserError

app = typer.Typer(
    name="mineralseg",
    help="Mineral maps from greyscale SEM images of rock.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show detail: progress bars also when not on a terminal, Lightning's "
        "messages and the model summary."
    ),
) -> None:
    """Mineral maps from greyscale SEM images of rock."""
    from mineralseg.console import set_verbose

    if verbose:
        set_verbose(True)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (must not exist unless --overwrite)."),
    samples: int = typer.Option(2, "--samples", min=1, help="Number of samples."),
    size: int = typer.Option(2048, "--size", min=256, help="SEM side length in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Generate synthetic SEM/QEMSCAN pairs with known truth, plus a ready prepare.yaml."""
    from mineralseg.synth import write_synth_dataset

    path = write_synth_dataset(out, samples=samples, size=size, seed=seed, overwrite=overwrite)
    typer.echo(f"synthetic data: {path}  (config: {Path(path) / 'prepare.yaml'})")


@app.command()
def prepare(
    config: Optional[Path] = typer.Argument(None, help="Prepare config (YAML); optional with --images/--masks."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of SEM images (with --masks)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Folder of masks paired with the images by name."),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="Class names in index order, comma-separated (default: told from the masks)."
    ),
    pattern: Optional[str] = typer.Option(
        None, "--pattern", help="Mask name from the image name, e.g. '{stem}_mask' (default '{stem}')."
    ),
    tile_size: Optional[int] = typer.Option(None, "--tile-size", min=8, help="Tile side (default: the image side, <= 512)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    accept_low_confidence: bool = typer.Option(
        False, "--accept-low-confidence",
        help="Use seam repairs that are not trusted instead of stopping (check qa/<sample>_seams.png).",
    ),
) -> None:
    """Repair, register, normalise and tile SEM/label pairs into a training dataset.

    With --images DIR --masks DIR, every image and its mask (same name) is a sample
    of an aligned pair; CONFIG is then optional (its settings are kept; it lists no samples).
    """
    from mineralseg.prep.config import prepare_source
    from mineralseg.prep.pipeline import prepare as run_prepare

    source = prepare_source(config, images=images, masks=masks, classes=classes, pattern=pattern,
                            tile_size=tile_size, seed=seed)
    summary = run_prepare(source, out, overwrite=overwrite, accept_low_confidence=accept_low_confidence)
    typer.echo(_format_summary(summary))


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="Training config (YAML); optional with --resume."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to continue from its last checkpoint."),
    set_: List[str] = typer.Option([], "--set", help="Override a config key: key.sub=value (repeatable)."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="With --resume: open a checkpoint holding more than mineralseg writes "
        "(it can run code; only for your own files)."
    ),
    allow_changed_dataset: bool = typer.Option(
        False, "--allow-changed-dataset", help="With --resume: continue although the dataset's manifest changed."
    ),
) -> None:
    """Train a segmentation model; writes a self-describing run folder."""
    from mineralseg.train.run import train as run_train

    if config is None and resume is None:
        raise UserError("give a training CONFIG, or --resume RUN to continue a run")
    from mineralseg.train import run_summary

    run = run_train(config, resume=resume, overrides=set_ or None, trust_checkpoint=trust_checkpoint,
                    allow_changed_dataset=allow_changed_dataset)
    typer.echo(run_summary(run))


@app.command()
def evaluate(
    run_or_checkpoint: Path = typer.Argument(..., help="Run folder or checkpoint file."),
    dataset: Optional[Path] = typer.Option(
        None, "--dataset", help="Dataset folder (default: the one the model was trained on)."
    ),
    split: str = typer.Option("test", "--split", help="train | val | test"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/eval-SPLIT)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    panels: int = typer.Option(6, "--panels", min=0, help="Tiles shown in the prediction figure."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: best available)."),
    context: str = typer.Option(
        "tile", "--context",
        help="tile: predict each tile alone; sample: predict each sample whole with overlapping windows "
        "(pixels near tile edges see their surroundings) and score the same tile pixels.",
    ),
    flips: bool = typer.Option(
        False, "--flips", help="With --context sample: average each window's prediction over its flips (4x time)."
    ),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Open a checkpoint holding more than mineralseg writes "
        "(it can run code; only for your own files)."
    ),
) -> None:
    """Confusion-matrix metrics over a whole split, plus figures."""
    from mineralseg.evaluate.evaluate import evaluate as run_evaluate

    from mineralseg.evaluate.tables import metrics_markdown

    result = run_evaluate(
        run_or_checkpoint, dataset, split=split, out=out, batch_size=batch_size, panels=panels, device=device,
        context=context, flips=flips, trust_checkpoint=trust_checkpoint,
    )
    typer.echo(metrics_markdown(result))
    typer.echo(f"metrics and figures: {result['out']}")


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="Run folder or checkpoint file of a trained model."),
    images: List[Path] = typer.Argument(..., help="SEM image(s): TIFF/BigTIFF, PNG, JPEG, zarr, raw (8/16-bit, float)."),
    out: Path = typer.Option(..., "--out", help="Output folder; each image gets OUT/<image name>/."),
    sem_px: Optional[float] = typer.Option(
        None, "--sem-px", help="Image pixels per model working-grid pixel (default: from --pixel-size, else the "
        "training data's value in the model card)."),
    pixel_size: Optional[float] = typer.Option(
        None, "--pixel-size", help="Image pixel size in micrometres (areas in mm^2; sets the scale when the model "
        "knows its training pixel size)."),
    outline: str = typer.Option("auto", "--outline", help="auto | sem | none: where the section is (auto keeps an "
                                "image that is rock from edge to edge whole)."),
    normalise: str = typer.Option("auto", "--normalise", help="auto: grey levels normalised as in training; none: "
                                  "the image is already a normalised 8-bit working-grid image."),
    flips: bool = typer.Option(False, "--flips", help="Test-time flips: average 4 flipped predictions (4x time)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: best available)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Training tiles' worth of input per pass."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write probabilities.zarr (C, H, W)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Predict on a Dask cluster: local:N (N local workers) or tcp://HOST:PORT "
        "(see docs/distributed.md); no uncertainty map then."),
    engine: str = typer.Option("torch", "--engine", help="torch | onnxruntime (CHECKPOINT may also be an .onnx "
                               "file from `mineralseg export`)."),
    raw_shape: Optional[str] = typer.Option(None, "--raw-shape", help="H,W of raw image files."),
    raw_dtype: Optional[str] = typer.Option(None, "--raw-dtype", help="dtype of raw image files, e.g. uint16, <f4."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output folders."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Open a checkpoint that needs more than weights (your own old files only)."),
) -> None:
    """Map SEM images: mineral map, uncertainty, modal mineralogy and an HTML report per image."""
    from mineralseg.infer.predict import PredictSettings, predict as run_predict

    settings = PredictSettings(
        sem_px=sem_px, pixel_size_um=pixel_size, outline=outline, normalise=normalise, flips=flips, device=device,
        batch_size=batch_size, probabilities=probabilities, engine=engine, scheduler=scheduler, raw_shape=_parse_shape(raw_shape),
        raw_dtype=raw_dtype,
    )
    results = run_predict(checkpoint, images, out, settings, overwrite=overwrite, command=" ".join(sys.argv),
                          trust_checkpoint=trust_checkpoint)
    for r in results:
        m = r.mineralogy
        fractions = ", ".join(f"{n} {p:.1f}%" for n, p in zip(m.class_names, m.area_percent))
        porosity = "" if m.porosity_percent is None else f"; porosity {m.porosity_percent:.1f}%"
        typer.echo(f"{r.image.name}: {fractions}{porosity}")
        typer.echo(f"  {r.working_shape[0]} x {r.working_shape[1]} px map, {r.seconds:.1f} s "
                   f"({r.mpx_per_s:.1f} image Mpx/s); report: {r.out / 'report.html'}")


@app.command()
def synthesize(
    checkpoint: Path = typer.Argument(..., help="Run folder or checkpoint of a pix2pix generator of mode synthesize."),
    labels: List[Path] = typer.Argument(..., help="Class maps: labels.tif of `predict`, class-id PNG/TIFF (255 = "
                                        "outside) or an RGB map in the model's class colours."),
    out: Path = typer.Option(..., "--out", help="Output folder; each map gets OUT/<map name>/, and OUT/pairs.json "
                             "lists the pairs (for synthetic_pairs: in a training config)."),
    sem_scale: Optional[float] = typer.Option(
        None, "--sem-scale", help="Working-grid px per map px (default: the model's sem_scale for a map at label "
        "resolution; for a labels.tif of predict, from its grid and the model's, else 1)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: best available)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per forward pass."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output folders."),
    trust_checkpoint: bool = typer.Option(
        False, "--trust-checkpoint", help="Open a checkpoint that needs more than weights (your own old files only)."),
) -> None:
    """Generate SEM-like images from mineral maps (map -> SEM), band by band, as training pairs."""
    from mineralseg.infer.synthesize import SynthesizeSettings, synthesize as run_synthesize

    settings = SynthesizeSettings(sem_scale=sem_scale, batch_size=batch_size, device=device)
    results = run_synthesize(checkpoint, labels, out, settings, overwrite=overwrite, command=" ".join(sys.argv),
                             trust_checkpoint=trust_checkpoint)
    for r in results:
        typer.echo(f"{r.labels.name}: {r.working_shape[0]} x {r.working_shape[1]} px SEM ({r.scale:g} px per map px), "
                   f"{r.seconds:.1f} s; {r.out / 'sem.tif'}")
    typer.echo(f"pairs: {Path(out) / 'pairs.json'}")


def _parse_shape(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UserError(f"--raw-shape must be H,W (two integers), got {text!r}") from None
    return h, w


@app.command()
def experiment(
    grid: Path = typer.Argument(..., help="Experiment grid (YAML)."),
    out: Path = typer.Option(..., "--out", help="Output folder for runs and results."),
    set_: List[str] = typer.Option([], "--set", help="Override a base config key: key.sub=value."),
) -> None:
    """Train and evaluate a grid of models x tile sizes x training approaches."""
    from mineralseg.train.experiment import run_experiment

    run_experiment(grid, out, overrides=set_ or None)
    typer.echo(f"results: {Path(out) / 'results.md'}")


@app.command()
def demo(
    out: Path = typer.Argument(Path("demo-out"), help="Work folder (replaced)."),
    samples: int = typer.Option(2, "--samples", min=2),
    size: int = typer.Option(2048, "--size", min=512),
    minutes: float = typer.Option(3.0, "--minutes", min=0.1, help="Training time limit."),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, help="Training budget in optimiser steps (same work on any machine; --minutes still caps it)."
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthetic data -> prepare -> train a small U-Net -> evaluate, on the CPU in minutes."""
    from mineralseg.demo import run_demo

    summary = run_demo(out, samples=samples, size=size, minutes=minutes, seed=seed, steps=steps)
    typer.echo(summary["text"])


@app.command()
def compare(
    predicted: Path = typer.Argument(..., help="Predicted class map: labels.tif of `predict`, or a class-id PNG/TIFF."),
    qemscan_map: Path = typer.Argument(..., help="QEMSCAN map of the same section (colours of --palette)."),
    palette: str = typer.Option(..., "--palette", help="Built-in palette name (qemscan24, ...) or palette YAML."),
    out: Path = typer.Option(..., "--out", help="Output folder (must not exist unless --overwrite)."),
    coding: str = typer.Option("color", "--coding", help="How the QEMSCAN map codes minerals: color | grey | index."),
    repair_seams: bool = typer.Option(False, "--repair-seams", help="Repair the QEMSCAN mosaic seams first."),
    register: bool = typer.Option(
        True, "--register/--no-register", help="--no-register: both maps cover the same field (no outline needed)."
    ),
    mount: List[str] = typer.Option(
        [], "--mount",
        help="Class of the mount around the section (repeatable; default: background-like, else pore classes); "
        "'none' for rock from edge to edge.",
    ),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Prediction pixel size in micrometres."),
    unknown_colors: str = typer.Option(
        "reject", "--unknown-colors", help="QEMSCAN colours not in the palette: reject | nearest | ignore."
    ),
    color_tolerance: float = typer.Option(0.0, "--color-tolerance", help="RGB distance accepted by 'nearest'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Score a predicted mineral map against QEMSCAN: IoU, both modal mineralogies, disagreement map."""
    from mineralseg.evaluate.compare import compare as run_compare

    result = run_compare(
        predicted, qemscan_map, palette=palette, out=out, coding=coding, repair_seams=repair_seams,
        register=register, mount_classes=None if not mount else [] if mount == ["none"] else mount,
        pixel_size_um=pixel_size, unknown=unknown_colors, tolerance=color_tolerance,
        overwrite=overwrite, command=" ".join(sys.argv),
    )
    typer.echo(result.text)
    typer.echo(f"report: {result.out / 'report.html'}")


@app.command()
def export(
    run_or_checkpoint: Path = typer.Argument(..., help="Run folder or checkpoint file of a trained model."),
    out: Path = typer.Argument(..., help="ONNX file to write, e.g. model.onnx."),
    input_size: Optional[int] = typer.Option(
        None, "--input-size", min=1, help="Side of the example input used for tracing (default: the training size)."
    ),
) -> None:
    """Write a TRAINED model as one ONNX file (any batch and image size; classes, colours and
    normalisation in its metadata) for ONNX Runtime. Not export-weights."""
    from mineralseg.infer.onnx import export_onnx

    path = export_onnx(run_or_checkpoint, out, input_size=input_size)
    typer.echo(f"ONNX model: {path}")


@app.command("export-weights")
def export_weights(
    encoder: str = typer.Argument(..., help="Encoder name, e.g. resnet18, inceptionv3, efficientnet-b4."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Weights file (default: where `encoder_weights: imagenet` looks first)."
    ),
) -> None:
    """Download an untrained encoder's ImageNet weights once (needs a network), to START training
    offline with `encoder_weights: imagenet`. To ship a trained model, see `export`."""
    from mineralseg.models import save_encoder_weights

    path = save_encoder_weights(encoder, out)
    typer.echo(f"encoder weights: {path}  (config: encoder_weights: {path})")


def _format_summary(summary: object) -> str:
    """Short human-readable text of a result dict (the library returns plain data)."""
    if isinstance(summary, dict) and "text" in summary:
        return str(summary["text"])
    if isinstance(summary, dict):
        return "\n".join(f"{k}: {v}" for k, v in summary.items() if not isinstance(v, (dict, list)))
    return str(summary)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning user mistakes into one line.

    Usage errors (missing argument, bad option) are reported by typer itself with
    exit code 2; :class:`UserError` and an existing output folder likewise.
    """
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except (UserError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
