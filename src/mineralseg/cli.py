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
) -> None:
    """Repair, register, normalise and tile SEM/label pairs into a training dataset."""
    from mineralseg.prep.pipeline import prepare as run_prepare

    summary = run_prepare(config, out, overwrite=overwrite)
    typer.echo(_format_summary(summary))


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training config (YAML)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to continue."),
    set_: List[str] = typer.Option([], "--set", help="Override a config key: key.sub=value."),
) -> None:
    """Train a segmentation model; writes a self-describing run folder."""
    from mineralseg.train.run import train as run_train

    run = run_train(config, resume=resume, overrides=set_ or None)
    typer.echo(f"run folder: {run}")


@app.command()
def evaluate(
    run_or_checkpoint: Path = typer.Argument(..., help="Run folder or checkpoint file."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset folder (with manifest.json)."),
    split: str = typer.Option("test", "--split", help="train | val | test"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/eval-SPLIT)."),
) -> None:
    """Confusion-matrix metrics over a whole split, plus figures."""
    from mineralseg.evaluate.evaluate import evaluate as run_evaluate

    result = run_evaluate(run_or_checkpoint, dataset, split=split, out=out)
    typer.echo(_format_summary(result))


@app.command()
def experiment(
    grid: Path = typer.Argument(..., help="Experiment grid (YAML)."),
    out: Path = typer.Option(..., "--out", help="Output folder for runs and results."),
) -> None:
    """Train and evaluate a grid of models x tile sizes x training approaches."""
    from mineralseg.train.experiment import run_experiment

    run_experiment(grid, out)
    typer.echo(f"results: {Path(out) / 'results.md'}")


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
