"""The registration entry point: coarse placement, ECC refinement, scores.

See :mod:`mineralseg.prep.registration` for the method and the geometry convention.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from mineralseg.classes import IGNORE_INDEX
from mineralseg.errors import DataError, UserError
from mineralseg.prep.outline import OutlineShape, label_sample_mask, outline_shape, sem_sample_mask
from mineralseg.prep.registration.coarse import COARSE_SIZE, check_outline_overlap, coarse_similarity
from mineralseg.prep.registration.ecc import ROTATION_STEP_DEG, fine_alignment
from mineralseg.prep.registration.geometry import affine_decomposition, small_to_full, stretch_matrix
from mineralseg.prep.registration.scoring import (
    UNIT_FACTOR_TOL,
    downscale_float,
    image_shape,
    registration_score,
)

log = logging.getLogger(__name__)

# The one full-resolution pass downscales the SEM by an integer factor to at least this
# many times finer than the label map's pixel (guessed from the image sizes), so that
# the fine image can be derived from it even when the SEM field is up to 1.5 times
# wider than the map's.
INTERMEDIATE_MARGIN = 1.5
# Longest side of the finest pyramid level refined by default: on a 4,700 px map the
# half-size level is 4x cheaper than full size and gave a corner error of 0.008 label
# pixels against 0.006 at full size (synthetic, 1/32-pixel interpolation of OpenCV).
MAX_FINE_SIDE = 2500


@dataclass
class RegistrationResult:
    """The estimated ``label_to_sem`` transform and how good it is.

    Attributes
    ----------
    matrix : (3, 3) float64 ndarray
        ``label_to_sem``: label pixel -> full-resolution SEM pixel (see module doc).
    score_before, score_coarse, score_after : float
        Normalised mutual information (0 = independent, 1 = one determines the other)
        of label ids and SEM grey on the label grid, for the naive alignment (the label
        map stretched over the whole SEM image), the outline (coarse) alignment and the
        final alignment.
    correlation : float
        ECC correlation coefficient of the final refinement (-1..1).
    method : str
        How the transform was found.
    sem_factor : float
        Full-resolution SEM pixels per pixel of the image the fine step used.
    iterations : int
        ECC iterations run in total (rotation search included).
    converged : bool
        The last ECC iterations moved the map corners by less than
        ``CONVERGENCE_TOL_PX`` label pixels.
    coarse_matrix : (3, 3) float64 ndarray
        The outline (coarse) transform, for diagnostics.
    sem_fine : (h, w) float32 ndarray or None
        The SEM area-downscaled by ``sem_factor`` (about the label resolution) the fine
        step used: for checks on the label grid (:func:`sem_to_label_grid`) and for a
        second registration without another pass over the SEM
        (``RegistrationOptions(sem_prescale=sem_factor)``). Not saved by :meth:`to_dict`.
    """

    matrix: np.ndarray
    score_before: float
    score_coarse: float
    score_after: float
    correlation: float
    method: str
    sem_factor: float
    iterations: int
    converged: bool
    coarse_matrix: np.ndarray = field(repr=False)
    sem_fine: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def scale(self) -> float:
        """SEM pixels per label pixel, sqrt(|det|) of the linear part."""
        return affine_decomposition(self.matrix)["scale"]

    @property
    def rotation_deg(self) -> float:
        """Rotation of the label x axis in the SEM image (degrees, towards +y)."""
        return affine_decomposition(self.matrix)["rotation_deg"]

    @property
    def translation(self) -> tuple[float, float]:
        """SEM position ``(x, y)`` of the label pixel (0, 0)."""
        return float(self.matrix[0, 2]), float(self.matrix[1, 2])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``label_to_sem`` is the 3x3 matrix as nested lists."""
        parts = affine_decomposition(self.matrix)
        return {
            "label_to_sem": np.asarray(self.matrix, dtype=float).tolist(),
            "coarse_label_to_sem": np.asarray(self.coarse_matrix, dtype=float).tolist(),
            "method": self.method,
            "score": "normalised mutual information of label ids and SEM grey (0..1)",
            "score_before": self.score_before,
            "score_coarse": self.score_coarse,
            "score_after": self.score_after,
            "correlation": self.correlation,
            "sem_factor": self.sem_factor,
            "iterations": self.iterations,
            "converged": self.converged,
            **parts,
            "translation": list(self.translation),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class RegistrationOptions:
    """How :func:`register_labels_to_sem` searches (every field has a working default).

    Attributes
    ----------
    sem_downscale : float, optional
        Full-resolution SEM pixels per pixel of the image the fine step works on.
        Default: the label-to-SEM scale found from the outlines (the SEM at the label
        resolution).
    sem_prescale : float
        The ``sem`` given is already area-downscaled by this factor from the
        full-resolution SEM (the returned matrix is still in full-resolution pixels).
    max_rotation_deg : float
        Rotation range searched (round sections) or accepted (elongated sections).
    coarse_size : int
        Longest side of the SEM image used to find the outline.
    max_fine_side : int or None
        Stop the pyramid at the first level whose longest side is at most this (time
        and memory of ECC grow with the map; precision on a large map is ample at half
        size). None: refine at full label size.
    """

    sem_downscale: float | None = None
    sem_prescale: float = 1.0
    max_rotation_deg: float = 3.0
    coarse_size: int = COARSE_SIZE
    max_fine_side: int | None = MAX_FINE_SIDE


def register_labels_to_sem(
    sem: Any,
    labels: np.ndarray,
    *,
    background_ids: Iterable[int],
    ignore_index: int | None = IGNORE_INDEX,
    options: RegistrationOptions | None = None,
) -> RegistrationResult:
    """Estimate the affine ``label_to_sem`` transform of a label map onto its SEM image.

    Parameters
    ----------
    sem : (H, W) array-like
        Greyscale SEM image: a numpy array or a lazy image with ``.shape`` and 2-D
        slicing (:func:`mineralseg.io.open_image`). Read once, in strips, by
        :func:`mineralseg.io.downscale_area`. The mount is darker than the section.
    labels : (h, w) uint8 ndarray
        Repaired label ids of the same section, typically 8 to 20 times coarser.
    background_ids : iterable of int
        Ids of the mount outside the section.
    ignore_index : int or None
        Unknown label id (left out of outline, rendering and score).
    options : RegistrationOptions, optional
        Search settings (SEM pre-scale, fine-step resolution, rotation range, ...);
        default ``RegistrationOptions()``.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    DataError
        No section found in either image ("no sample found ..."), outlines of different
        shape ("outlines cannot be matched: ..."), or no correlation at all.
    UserError
        Invalid options (non-positive factors, label map not 2-D).

    Notes
    -----
    Cost: one pass over the SEM (an integer-factor area downscale), then work
    proportional to the label map: a few dozen ECC iterations, each a bilinear warp of
    an image of the (at most ``max_fine_side``) finest level. Measured on 2 CPU cores:
    a 4,700 px map against an SEM reduced to 7,000 px took about 30 s and 1.2 GB peak;
    the first pass over an 88,000 x 87,000 uint8 SEM in memory adds about 20 s.
    """
    opts = options if options is not None else RegistrationOptions()
    sem_h, sem_w = image_shape(sem)
    labels = _checked_labels(labels, opts)
    full_shape = (sem_h * opts.sem_prescale, sem_w * opts.sem_prescale)
    label_mask = label_sample_mask(labels, [int(b) for b in background_ids], ignore_index=ignore_index)
    label_outline = outline_shape(label_mask)

    # the one pass over the full image: a bit finer than the label resolution
    ratio = min(sem_h / labels.shape[0], sem_w / labels.shape[1])
    f_mid = float(max(1, math.floor(ratio / INTERMEDIATE_MARGIN)))  # integer: the fast exact path
    mid = downscale_float(sem, f_mid)
    f_mid = 1.0 if f_mid < 1.0 + UNIT_FACTOR_TOL else f_mid

    coarse_m = _outline_placement(mid, f_mid, (sem_h, sem_w), label_mask, label_outline, opts)
    fine, factor = _fine_image(sem, mid, f_mid, coarse_m, opts)
    del mid

    to_full = small_to_full(factor)
    warp0 = np.linalg.inv(to_full) @ coarse_m
    warp, rho, iterations, converged = fine_alignment(
        labels, fine, warp0, label_outline.centroid, ignore_index=ignore_index,
        turns_deg=_rotation_candidates(coarse_m, opts.max_rotation_deg), max_fine_side=opts.max_fine_side,
    )
    matrix = to_full @ warp

    grey_range = tuple(np.percentile(fine, [0.1, 99.9]))
    scores = [
        registration_score(fine, factor, m, labels, ignore_index=ignore_index, grey_range=grey_range)
        for m in (stretch_matrix(full_shape, labels.shape), coarse_m, matrix)
    ]
    method = "outline moments (similarity) + ECC affine on rendered labels"
    log.info("registration: NMI %.4f -> %.4f -> %.4f, ECC %.4f", *scores, rho)
    return RegistrationResult(
        matrix=matrix,
        score_before=scores[0],
        score_coarse=scores[1],
        score_after=scores[2],
        correlation=rho,
        method=method,
        sem_factor=float(factor),
        iterations=int(iterations),
        converged=bool(converged),
        coarse_matrix=coarse_m,
        sem_fine=fine,
    )


def _checked_labels(labels: np.ndarray, opts: RegistrationOptions) -> np.ndarray:
    """The label map as 2-D uint8 ids; UserError for a bad map or bad options."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise UserError(f"label map must be 2-D ids, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise UserError(f"label ids must lie in 0..255, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    if opts.sem_prescale <= 0:
        raise UserError(f"sem_prescale must be positive, got {opts.sem_prescale}")
    if opts.sem_downscale is not None and opts.sem_downscale < opts.sem_prescale:
        raise UserError(
            f"sem_downscale={opts.sem_downscale} is finer than the SEM given (sem_prescale={opts.sem_prescale})"
        )
    return labels


def _outline_placement(
    mid: np.ndarray,
    f_mid: float,
    sem_shape: tuple[int, int],
    label_mask: np.ndarray,
    label_outline: OutlineShape,
    opts: RegistrationOptions,
) -> np.ndarray:
    """Step 1: the ``label_to_sem`` similarity from the two outlines (checked by overlap).

    ``mid`` is the SEM area-downscaled by ``f_mid`` from the image given; the outline is
    searched on a further reduction to at most ``opts.coarse_size`` pixels.
    """
    g_coarse = float(max(1, math.ceil(max(mid.shape) / opts.coarse_size)))
    coarse = downscale_float(mid, g_coarse)
    g_coarse = 1.0 if g_coarse < 1.0 + UNIT_FACTOR_TOL else g_coarse
    factor_coarse = opts.sem_prescale * f_mid * g_coarse
    try:
        sem_mask = sem_sample_mask(coarse)
    except DataError as exc:
        where = f"SEM of shape {sem_shape}, outline searched at 1/{factor_coarse:.3g} scale"
        raise DataError(f"{exc} ({where})") from None
    sem_outline = outline_shape(sem_mask).rescaled(factor_coarse)
    coarse_m, _ = coarse_similarity(sem_outline, label_outline, max_rotation_deg=opts.max_rotation_deg)
    iou = check_outline_overlap(sem_mask, factor_coarse, label_mask, coarse_m)
    log.info("outline match: scale %.4f, IoU %.4f", affine_decomposition(coarse_m)["scale"], iou)
    return coarse_m


def _fine_image(
    sem: Any, mid: np.ndarray, f_mid: float, coarse_m: np.ndarray, opts: RegistrationOptions
) -> tuple[np.ndarray, float]:
    """The SEM at about the label resolution for step 2, and its full-resolution factor.

    Derived from ``mid`` when it is fine enough, else read again from ``sem`` (an SEM
    field much wider than the label map's).
    """
    if opts.sem_downscale is not None:
        target = float(opts.sem_downscale)
    else:
        target = max(affine_decomposition(coarse_m)["scale"], opts.sem_prescale)
    g = target / (opts.sem_prescale * f_mid)
    if g >= 1.0 - UNIT_FACTOR_TOL:
        fine = downscale_float(mid, g)
        return fine, opts.sem_prescale * f_mid * (1.0 if g < 1.0 + UNIT_FACTOR_TOL else g)
    if g > 0.8:  # the intermediate image is at most 25 % coarser than wanted: keep it
        return mid, opts.sem_prescale * f_mid
    g_src = max(1.0, target / opts.sem_prescale)
    fine = downscale_float(sem, g_src)
    return fine, opts.sem_prescale * (1.0 if g_src < 1.0 + UNIT_FACTOR_TOL else g_src)


def _rotation_candidates(coarse_m: np.ndarray, max_rotation_deg: float) -> list[float]:
    """Turns (degrees) tried by the rotation search: the whole accepted range in
    ``ROTATION_STEP_DEG`` steps, plus the outline's own estimate (0)."""
    n_steps = int(math.floor(max_rotation_deg / ROTATION_STEP_DEG + 1e-9))
    angle0 = affine_decomposition(coarse_m)["rotation_deg"]
    return sorted({0.0} | {k * ROTATION_STEP_DEG - angle0 for k in range(-n_steps, n_steps + 1)})
