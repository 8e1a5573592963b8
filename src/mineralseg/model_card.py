"""The model card: what a trained model needs to be used on a new image, in one typed object.

Training writes it into every checkpoint (``checkpoint["mineralseg"]["meta"]``, as
plain JSON-ready data so that checkpoints load with ``torch.load(weights_only=True)``);
evaluation, prediction, comparison and export read it back with :meth:`ModelCard.from_dict`.
It answers:

* which classes the model predicts (names, colours, the id of unlabelled pixels);
* which network to rebuild (architecture, encoder, options, input channels);
* how to feed it: grey levels ``(uint8 / 255 - mean) / std``; windows of ``tile_size``
  working-grid pixels resized to ``input_size``;
* **which grid it works on**: ``sem_px_per_working_px`` SEM pixels per working-grid
  pixel (the median over the training samples, with their range), and the SEM pixel
  size when the training data gave it. A new SEM image is brought onto the same grid
  before prediction;
* how the SEM grey levels were normalised (method, settings and the statistics);
* what it was trained on (dataset, samples, tiles per split, class frequencies) and how
  well it did on the validation split (IoU per class).

Checkpoints written before the card had the grid fields (card version 1) still load:
the missing fields are filled from the training dataset's ``run.json`` when that folder
is at hand (:func:`training_grid`), else they stay ``None`` and the verbs that need
them ask for the option that gives them (``predict --sem-px``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from mineralseg.errors import DataError

__all__ = ["CARD_VERSION", "META_KEY", "ModelCard", "TrainingGrid", "training_grid"]

#: Checkpoint entry holding the card (``{"version", "meta", "config", "versions"}``).
META_KEY = "mineralseg"
#: 1: classes, model, input and sem_scale; 2: + working grid, training summary, validation IoU.
CARD_VERSION = 2


@dataclass(frozen=True)
class TrainingGrid:
    """How the training samples' SEM pixels map onto the working grid.

    Attributes
    ----------
    sem_px_per_working_px : float or None
        Median over the samples of SEM pixels per working-grid pixel (side length).
    sem_px_range : (float, float) or None
        Smallest and largest per-sample value (a spread above a few % means the
        training SEM images had different magnifications).
    per_sample : dict
        ``{sample: SEM px per working px}``.
    sem_pixel_size_um : float or None
        SEM pixel size in micrometres (median over the samples that give one).
    """

    sem_px_per_working_px: float | None = None
    sem_px_range: tuple[float, float] | None = None
    per_sample: dict[str, float] = field(default_factory=dict)
    sem_pixel_size_um: float | None = None


def training_grid(dataset: str | Path | None) -> TrainingGrid:
    """The working-grid scale of a prepared dataset, from its ``run.json``.

    Parameters
    ----------
    dataset : path-like or None
        A folder written by ``mineralseg prepare``.

    Returns
    -------
    TrainingGrid
        Empty (all ``None``) when the folder, its ``run.json`` or the per-sample
        ``sem_px_per_working_px`` records are missing.
    """
    if dataset is None:
        return TrainingGrid()
    path = Path(dataset) / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return TrainingGrid()
    per_sample: dict[str, float] = {}
    sizes: list[float] = []
    for sample in record.get("samples") or []:
        value = sample.get("sem_px_per_working_px")
        if isinstance(value, (int, float)) and value > 0:
            per_sample[str(sample.get("name"))] = float(value)
        size = sample.get("sem_pixel_size_um")
        if isinstance(size, (int, float)) and size > 0:
            sizes.append(float(size))
    if not per_sample:
        return TrainingGrid(sem_pixel_size_um=statistics.median(sizes) if sizes else None)
    values = list(per_sample.values())
    return TrainingGrid(
        sem_px_per_working_px=float(statistics.median(values)),
        sem_px_range=(min(values), max(values)),
        per_sample=per_sample,
        sem_pixel_size_um=statistics.median(sizes) if sizes else None,
    )


@dataclass(frozen=True)
class ModelCard:
    """Self-description of a trained segmentation model (see the module docstring).

    Attributes
    ----------
    class_names, class_colors, ignore_index, schema_name
        The classes: one name and ``(r, g, b)`` colour per class id; the mask value of
        unlabelled pixels (255); the palette / schema the dataset came from.
    arch, encoder, model_options, in_channels
        The network, rebuilt by :func:`mineralseg.models.build_model`.
    mean, std
        Input normalisation: ``(grey / 255 - mean) / std``.
    input_size, tile_size, out_size
        Model input side; training tile side on the working grid; stored tile side.
    sem_scale
        Working-grid pixels per label (QEMSCAN) pixel of the training dataset.
    sem_normalisation
        How ``prepare`` normalised SEM grey levels: the dataset manifest's block
        (``method``, ``low``, ``high``, ``drift``, ``scope``, ``scale``, the pooled levels
        of ``scope: dataset`` and the per-sample statistics), so that a new image can
        be normalised as the training images were.
    sem_px_per_working_px, sem_px_range, sem_pixel_size_um
        The working grid in SEM pixels (:class:`TrainingGrid`); None when unknown.
    training_data
        ``dataset``, ``dataset_sha256``, ``samples`` ({name: SEM px per working px}),
        ``tiles`` per split, ``class_frequencies`` (train split).
    validation_iou, validation_miou
        Scores on the validation split when the checkpoint was saved (None before).
    approach, encoder_weights, freeze_encoder, class_weights
        Training choices.
    gan_mode
        ``"segment"`` (pix2pix SEM -> map), ``"synthesize"`` (pix2pix map -> SEM), or
        None for every CNN.
    checkpoint, epoch, global_step, weights, config, versions
        Provenance, filled when a checkpoint is read (``weights``: "trained" or
        "moving average").
    """

    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    ignore_index: int
    arch: str
    mean: float
    std: float
    input_size: int
    tile_size: int
    out_size: int
    sem_scale: float
    encoder: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    schema_name: str | None = None
    sem_normalisation: dict[str, Any] = field(default_factory=dict)
    sem_px_per_working_px: float | None = None
    sem_px_range: tuple[float, float] | None = None
    sem_pixel_size_um: float | None = None
    training_data: dict[str, Any] = field(default_factory=dict)
    validation_iou: dict[str, float] | None = None
    validation_miou: float | None = None
    approach: str | None = None
    gan_mode: str | None = None
    encoder_weights: str | None = None
    freeze_encoder: bool = False
    class_weights: list[float] | None = None
    checkpoint: str | None = None
    epoch: int | None = None
    global_step: int | None = None
    weights: str | None = None
    config: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dataset(self) -> str | None:
        """Folder of the training dataset (may not exist on this machine)."""
        return self.training_data.get("dataset")

    @property
    def dataset_sha256(self) -> str | None:
        return self.training_data.get("dataset_sha256")

    @property
    def working_pixel_size_um(self) -> float | None:
        """Side of a working-grid pixel in micrometres, when the SEM pixel size is known."""
        if self.sem_pixel_size_um is None or self.sem_px_per_working_px is None:
            return None
        return self.sem_pixel_size_um * self.sem_px_per_working_px

    @property
    def model_name(self) -> str:
        """``arch/encoder`` (or the architecture alone)."""
        return f"{self.arch}/{self.encoder}" if self.encoder else self.arch

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready plain data (lists, not tuples), as stored in checkpoints.

        Also holds ``num_classes``, ``dataset``, ``dataset_sha256`` and
        ``card_version`` so that readers of card version 1 still find their keys.
        """
        out = json.loads(json.dumps(asdict(self)))
        out.update(num_classes=self.num_classes, dataset=self.dataset, dataset_sha256=self.dataset_sha256,
                   card_version=CARD_VERSION)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "checkpoint") -> "ModelCard":
        """A card from stored data (card version 1 or 2).

        Version-1 data (no grid fields) are completed from the training dataset's
        ``run.json`` when that folder exists (:func:`training_grid`).

        Raises
        ------
        DataError
            A required field is missing (the message names ``where``).
        """
        d = dict(data)
        missing = [k for k in ("class_names", "class_colors", "arch", "mean", "std", "input_size", "tile_size")
                   if d.get(k) is None]
        if missing:
            raise DataError(f"{where}: its model card lacks {', '.join(missing)}; it was not written by "
                            "`mineralseg train`")
        training = dict(d.get("training_data") or {})
        for key in ("dataset", "dataset_sha256"):
            if d.get(key) is not None:
                training.setdefault(key, d[key])
        if d.get("sem_px_per_working_px") is None:  # card version 1: ask the dataset
            grid = training_grid(training.get("dataset"))
            d["sem_px_per_working_px"] = grid.sem_px_per_working_px
            d["sem_px_range"] = d.get("sem_px_range") or grid.sem_px_range
            d["sem_pixel_size_um"] = d.get("sem_pixel_size_um") or grid.sem_pixel_size_um
            if grid.per_sample:
                training.setdefault("samples", grid.per_sample)
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["training_data"] = training
        kwargs["class_names"] = tuple(str(n) for n in d["class_names"])
        kwargs["class_colors"] = tuple(tuple(int(v) for v in c) for c in d["class_colors"])
        if kwargs.get("sem_px_range") is not None:
            kwargs["sem_px_range"] = tuple(float(v) for v in kwargs["sem_px_range"])
        kwargs.setdefault("ignore_index", 255)
        kwargs.setdefault("out_size", d["tile_size"])
        kwargs.setdefault("sem_scale", 1.0)
        kwargs["sem_normalisation"] = dict(d.get("sem_normalisation") or {})
        kwargs["model_options"] = dict(d.get("model_options") or {})
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with some fields changed."""
        from dataclasses import replace

        return replace(self, **changes)

    # ------------------------------------------------------------------ for people
    def summary(self) -> dict[str, Any]:
        """The card as a short, readable mapping (for reports and ``--verbose``)."""
        grid = "unknown"
        if self.sem_px_per_working_px is not None:
            grid = f"{self.sem_px_per_working_px:.3g} SEM px per working px"
            if self.sem_px_range and not math.isclose(*self.sem_px_range, rel_tol=1e-3):
                grid += f" (training samples {self.sem_px_range[0]:.3g} .. {self.sem_px_range[1]:.3g})"
        norm = self.sem_normalisation
        out: dict[str, Any] = {
            "model": self.model_name,
            "classes": ", ".join(self.class_names),
            "input": f"{self.tile_size}-px windows of the working grid, resized to {self.input_size} px",
            "working grid": grid,
            "SEM pixel size": f"{self.sem_pixel_size_um:g} um" if self.sem_pixel_size_um else "unknown",
            "grey-level normalisation": ", ".join(f"{k} {v}" for k, v in norm.items()
                                                  if k in ("method", "low", "high", "drift", "scope", "scale")
                                                  and v is not None) if norm else "unknown",
            "training approach": self.approach or "unknown",
            "trained on": self.dataset or "unknown",
        }
        samples = self.training_data.get("samples")
        if samples:
            out["training samples"] = ", ".join(sorted(samples))
        tiles = self.training_data.get("tiles")
        if tiles:
            out["tiles"] = ", ".join(f"{k} {v}" for k, v in tiles.items())
        if self.validation_iou:
            out["validation IoU"] = ", ".join(f"{k} {v:.3f}" for k, v in self.validation_iou.items())
        if self.validation_miou is not None:
            out["validation mean IoU"] = f"{self.validation_miou:.3f}"
        if self.global_step is not None:
            out["checkpoint"] = f"{self.checkpoint} (epoch {self.epoch}, step {self.global_step}, {self.weights} weights)"
        return out
