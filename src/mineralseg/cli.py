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
    config: Path = typer.Argument(..., help="Prepare config (YAML)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    accept_low_confidence: bool = typer.Option(
        False, "--accept-low-confidence",
        help="Use seam repairs that are not trusted instead of stopping (check qa/<sample>_seams.png).",
    ),
) -> None:
    """Repair, register, normalise and tile SEM/label pairs into a training dataset."""
    from mineralseg.prep.pipeline import prepare as run_prepare

    summary = run_prepare(config, out, overwrite=overwrite, accept_low_confidence=accept_low_confidence)
    typer.echo(_format_summary(summary))


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="Training config (YAML); optional with --resume."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to continue from its last checkpoint."),
    set_: List[str] = typer.Option([], "--set", help="Override a config key: key.sub=value (repeatable)."),
) -> None:
    """Train a segmentation model; writes a self-describing run folder."""
    from mineralseg.train.run import train as run_train

    if config is None and resume is None:
        raise UserError("give a training CONFIG, or --resume RUN to continue a run")
    run = run_train(config, resume=resume, overrides=set_ or None)
    typer.echo(f"run folder: {run}")


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
) -> None:
    """Confusion-matrix metrics over a whole split, plus figures."""
    from mineralseg.evaluate.evaluate import evaluate as run_evaluate

    from mineralseg.evaluate.tables import metrics_markdown

    result = run_evaluate(
        run_or_checkpoint, dataset, split=split, out=out, batch_size=batch_size, panels=panels, device=device,
        context=context, flips=flips,
    )
    typer.echo(metrics_markdown(result))
    typer.echo(f"metrics and figures: {result['out']}")


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
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthetic data -> prepare -> train a small U-Net -> evaluate, on the CPU in minutes."""
    from mineralseg.demo import run_demo

    summary = run_demo(out, samples=samples, size=size, minutes=minutes, seed=seed)
    typer.echo(summary["text"])


@app.command("export-weights")
def export_weights(
    encoder: str = typer.Argument(..., help="Encoder name, e.g. resnet18, inceptionv3, efficientnet-b4."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Weights file (default: where `encoder_weights: imagenet` looks first)."
    ),
) -> None:
    """Download an encoder's ImageNet weights once (needs a network) for offline use."""
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
