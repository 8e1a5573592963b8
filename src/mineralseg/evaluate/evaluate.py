"""``mineralseg evaluate``: score a trained model on a dataset split.

Every tile of the split is predicted whole (resized to the model's input size,
logits resized back to the tile's resolution, arg max) and compared with its
full-resolution mask; ONE confusion matrix is accumulated over the whole split and
the scores follow from it (:func:`mineralseg.evaluate.metrics.metrics_from_confusion`),
unlike the study's per-tile smoothed IoU.

Outputs (``out``, default ``RUN/eval-<split>/``)::

    metrics.json          per-class IoU, F1, precision, recall, support; mean IoU,
                          pixel accuracy; confusion matrix; what was evaluated
    panels.png            input | truth | prediction | overlay for chosen tiles
    confusion.png         row-normalised confusion matrix
    training_curves.png   loss / metric / LR curves of the run (when known)
    lr_schedule.png       learning rate per step (when known)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mineralseg.data.dataset import TileDataset, read_tile
from mineralseg.data.manifest import DatasetManifest, Tile, load_manifest
from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.checkpoint import (
    check_dataset_matches,
    check_grid_matches,
    load_checkpoint_model,
    resolve_checkpoint,
)
from mineralseg.evaluate.metrics import ConfusionMatrix, metrics_from_confusion
from mineralseg.infer.predict import predict_working_image, sample_overlap, sample_window
from mineralseg.io.atomic import atomic_dir, write_json
from mineralseg.model_card import ModelCard

# How evaluate() predicts: each tile alone, or each sample whole (overlapping windows).
CONTEXTS = ("tile", "sample")

__all__ = ["CONTEXTS", "choose_panel_tiles", "evaluate", "predict_batch", "predict_sample", "read_sample",
           "sample_overlap", "sample_window"]

# Columns of metrics.csv drawn as training curves (others, such as per-class F1 or
# the pixel count, would crowd the figure).
_CURVE_PREFIXES = ("train_loss", "val_loss", "val_miou", "val_iou_", "lr")


def choose_panel_tiles(tiles: list[Tile], n: int) -> list[int]:
    """Indices of the ``n`` tiles with the most even class mix (highest class entropy).

    Deterministic (ties keep manifest order); tiles of as many different samples as
    possible come first.
    """
    if n <= 0 or not tiles:
        return []
    scores = []
    for t in tiles:
        c = np.asarray(t.class_counts, dtype=np.float64)
        p = c[c > 0] / c.sum() if c.sum() > 0 else np.array([1.0])
        scores.append(float(-(p * np.log(p)).sum()))
    order = sorted(range(len(tiles)), key=lambda i: -scores[i])
    chosen: list[int] = []
    seen: set[str] = set()
    for i in order:  # first pass: one tile per sample
        if tiles[i].sample not in seen:
            chosen.append(i)
            seen.add(tiles[i].sample)
        if len(chosen) == n:
            break
    for i in order:
        if len(chosen) == n:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen[:n], key=lambda i: order.index(i))


@torch.inference_mode()
def predict_batch(model: torch.nn.Module, images: torch.Tensor, out_size: int) -> torch.Tensor:
    """Class ids (N, out_size, out_size) int64 of normalised images (N, 1, S, S)."""
    logits = model(images)
    if logits.shape[-1] != out_size or logits.shape[-2] != out_size:
        logits = F.interpolate(logits.float(), size=(out_size, out_size), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _default_out(ckpt: Path, run_dir: Path | None, split: str) -> Path:
    if run_dir is not None:
        return run_dir / f"eval-{split}"
    return ckpt.parent / f"eval-{split}-{ckpt.stem}"


def _curve_columns(rows: list[dict[str, str]]) -> dict[str, list[Any]]:
    names = dict.fromkeys(k for r in rows for k in r)
    keys = [k for k in names if k in ("step", "epoch") or k.startswith(_CURVE_PREFIXES)]
    return {k: [r.get(k) for r in rows] for k in keys}


def _run_figures(run_dir: Path, out: Path) -> list[str]:
    from mineralseg.evaluate.figures import plot_lr_schedule, plot_training_curves
    from mineralseg.runs import read_run_metrics

    rows = read_run_metrics(run_dir)
    if not rows:
        return []
    written = []
    plot_training_curves(_curve_columns(rows), out / "training_curves.png")
    written.append("training_curves.png")
    steps, lrs = [], []
    for r in rows:
        if r.get("lr") not in (None, "") and r.get("step") not in (None, ""):
            steps.append(float(r["step"]))
            lrs.append(float(r["lr"]))
    if steps:
        plot_lr_schedule(steps, lrs, out / "lr_schedule.png")
        written.append("lr_schedule.png")
    return written


def evaluate(
    run_or_checkpoint: str | os.PathLike,
    dataset: str | os.PathLike | None = None,
    *,
    split: str = "test",
    out: str | os.PathLike | None = None,
    batch_size: int = 8,
    panels: int = 6,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = True,
    context: str = "tile",
    flips: bool = False,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a dataset and write metrics and figures.

    Parameters
    ----------
    run_or_checkpoint : path-like
        A run folder (its ``checkpoints/best.ckpt``) or a ``.ckpt`` file; the
        checkpoint alone is enough (it describes classes, normalisation and model).
    dataset : path-like, optional
        A prepared dataset folder (default: the one the model was trained on).
    split : {"test", "val", "train"}
    out : path-like, optional
        Output folder (default ``RUN/eval-<split>/``, or ``eval-<split>-<ckpt>/``
        beside a checkpoint outside a run). Replaced when it exists.
    batch_size : int
    panels : int
        Tiles shown in ``panels.png`` (0: no panel figure).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    num_workers : int
        DataLoader workers.
    progress : bool
        Show a progress bar (on a terminal only).
    context : {"tile", "sample"}
        ``tile``: each tile is predicted on its own, as in training (its edge pixels see
        no context). ``sample``: each sample's whole working image
        (``samples/NAME/sem_aligned``) is predicted with overlapping windows
        (:mod:`mineralseg.infer`), as when mapping a whole image, and scored on the
        same pixels (the split's tiles). Both use one confusion matrix.
    flips : bool
        With ``context="sample"``: average the predictions of each window and its three
        flips (test-time augmentation, 4x the time).
    trust_checkpoint : bool
        Open a checkpoint that holds more than the types mineralseg writes (a pickle
        can run code: only for your own files).

    Returns
    -------
    dict
        :func:`~mineralseg.evaluate.metrics.metrics_from_confusion` scores plus
        ``split``, ``checkpoint``, ``dataset``, ``num_tiles``, ``input_size``,
        ``out`` (the folder) and ``figures``.

    Raises
    ------
    UserError / DataError
        Missing checkpoint or dataset, a dataset whose classes, sem_scale, tile size
        or normalisation differ from the model's, an empty split, a checkpoint that
        is not safe to open (unless ``trust_checkpoint``).
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if context not in CONTEXTS:
        raise UserError(f"unknown context {context!r}; choose one of {', '.join(CONTEXTS)}")
    if flips and context != "sample":
        raise UserError("flips (test-time augmentation) needs context 'sample'")
    ckpt, run_dir = resolve_checkpoint(run_or_checkpoint)
    dev = _device(device)
    model, card = load_checkpoint_model(ckpt, map_location=dev, trust=trust_checkpoint)
    if dataset is None:
        if not card.dataset:
            raise UserError(f"{ckpt} does not name its dataset; pass the dataset folder")
        dataset = card.dataset
    manifest = load_manifest(dataset)
    check_dataset_matches(card, manifest, checkpoint=ckpt)
    check_grid_matches(card, manifest, checkpoint=ckpt)
    ds = TileDataset(
        manifest, split, input_size=card.input_size, mean=card.mean, std=card.std,
        resize_mask=False, cache=False,
    )
    chosen = choose_panel_tiles(ds.tiles, panels)
    kept: dict[int, np.ndarray] = {}
    cm = ConfusionMatrix(manifest.num_classes, manifest.ignore_index)
    window = overlap = None
    if context == "sample":
        window, overlap = sample_window(manifest.tile_size), sample_overlap(manifest.tile_size)
        _score_samples(model, card, manifest, ds.tiles, cm, kept, set(chosen), batch_size=batch_size, device=dev,
                       progress=progress, flips=flips)  # fmt: skip
    else:
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for batch in tqdm(loader, desc=f"evaluate {split}", disable=None if progress else True, leave=False):
            pred = predict_batch(model, batch["image"].to(dev), manifest.out_size).cpu()
            cm.update(batch["mask"].numpy(), pred.numpy())
            for j, idx in enumerate(batch["index"].tolist()):
                if idx in chosen:
                    kept[idx] = pred[j].numpy().astype(np.uint8)

    result = metrics_from_confusion(cm, manifest.class_names)
    result.update({
        "split": split,
        "checkpoint": str(ckpt),
        "epoch": card.epoch,
        "global_step": card.global_step,
        "dataset": str(manifest.root),
        "dataset_sha256": manifest.sha256,
        "trained_on_dataset_sha256": card.dataset_sha256,
        "num_tiles": len(ds),
        "input_size": card.input_size,
        "out_size": manifest.out_size,
        "context": context,
        "window": window,
        "overlap": overlap,
        "flips": bool(flips),
    })
    out_dir = Path(out) if out is not None else _default_out(ckpt, run_dir, split)
    figures: list[str] = []
    with atomic_dir(out_dir, overwrite=True) as tmp:
        from mineralseg.evaluate.figures import plot_confusion, plot_panels

        if chosen:
            tiles = [ds.tiles[i] for i in chosen]
            images, truths = zip(*(read_tile(t, size=manifest.out_size) for t in tiles))
            plot_panels(
                list(images), list(truths), [kept[i] for i in chosen], manifest.class_names,
                manifest.class_colors, tmp / "panels.png", row_labels=[t.id for t in tiles],
            )
            figures.append("panels.png")
        plot_confusion(cm, manifest.class_names, tmp / "confusion.png")
        figures.append("confusion.png")
        if run_dir is not None:
            figures += _run_figures(run_dir, tmp)
        result["figures"] = figures
        result["out"] = str(out_dir)
        write_json(tmp / "metrics.json", result)
    return result


def predict_sample(
    model: torch.nn.Module,
    card: ModelCard,
    image: np.ndarray,
    *,
    needed: np.ndarray | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    flips: bool = False,
) -> np.ndarray:
    """(H, W) uint8 class ids of a sample's whole working image, predicted as
    ``mineralseg predict`` predicts an image (:func:`mineralseg.infer.predict.predict_working_image`);
    ``batch_size`` is in training tiles' worth of input pixels per forward pass."""
    return predict_working_image(model, card, image, needed=needed, batch_size=batch_size, device=device, flips=flips)


def read_sample(manifest: DatasetManifest, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A sample's whole working image and class-id map from the dataset folder."""
    from mineralseg.io import read_image

    folder = manifest.root / "samples" / name
    image_path = next((folder / f for f in ("sem_aligned.png", "sem_aligned.tif") if (folder / f).is_file()), None)
    labels_path = folder / "labels_aligned.png"
    if image_path is None or not labels_path.is_file():
        raise DataError(
            f"{folder}: no sem_aligned.png/.tif and labels_aligned.png; context 'sample' needs the whole "
            "sample images that `mineralseg prepare` writes (use context 'tile' for this dataset)"
        )
    image, labels = np.asarray(read_image(image_path)), np.asarray(read_image(labels_path))
    if image.shape != labels.shape or image.ndim != 2:
        raise DataError(f"{folder}: sem_aligned {image.shape} and labels_aligned {labels.shape} differ")
    return image, labels


def _score_samples(
    model: torch.nn.Module,
    card: ModelCard,
    manifest: DatasetManifest,
    tiles: list[Tile],
    cm: ConfusionMatrix,
    kept: dict[int, np.ndarray],
    chosen: set[int],
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
    flips: bool = False,
) -> None:
    """Predict each sample whole (:func:`predict_sample`) and add the pixels of its split
    tiles to ``cm``."""
    ts = manifest.tile_size
    by_sample: dict[str, list[int]] = {}
    for i, t in enumerate(tiles):
        by_sample.setdefault(t.sample, []).append(i)
    for name in tqdm(list(by_sample), desc="evaluate samples", disable=None if progress else True, leave=False):
        image, labels = read_sample(manifest, name)
        needed = np.zeros(image.shape, bool)
        for i in by_sample[name]:
            needed[tiles[i].row : tiles[i].row + ts, tiles[i].col : tiles[i].col + ts] = True
        pred = predict_sample(model, card, image, needed=needed, batch_size=batch_size, device=device,
                              flips=flips)  # fmt: skip
        for i in by_sample[name]:
            t = tiles[i]
            truth, guess = labels[t.row : t.row + ts, t.col : t.col + ts], pred[t.row : t.row + ts, t.col : t.col + ts]
            if truth.shape != (ts, ts):
                raise DataError(f"tile {t.id!r} at ({t.row}, {t.col}) lies outside sample {name!r} {labels.shape}")
            cm.update(truth, guess)
            if i in chosen:
                kept[i] = cv2.resize(guess, (manifest.out_size,) * 2, interpolation=cv2.INTER_NEAREST)


