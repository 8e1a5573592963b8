"""One synthetic SEM/QEMSCAN pair with its known truth.

:func:`generate_sample` builds the section's geometry once (outline, packed grain cells,
particles), renders the SEM backscatter image and a mineral map at the SEM resolution,
point-samples the mineral map on a coarser, slightly turned, scaled and shifted label
grid (the QEMSCAN map) and damages it with mosaic seams and field shifts.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from mineralseg.classes import ClassSchema, load_schema
from mineralseg.errors import UserError
from mineralseg.io.atomic import json_ready
from mineralseg.synth import grids
from mineralseg.synth.damage import apply_mosaic_damage
from mineralseg.synth.fields import draw_drift
from mineralseg.synth.minerals import resolve_recipe
from mineralseg.synth.render import render_section
from mineralseg.synth.section import build_section

SYNTH_VERSION = "1.0"

# QEMSCAN step in SEM pixels drawn per sample (the study: ~19).
RATIO_RANGE = (8, 20)
# Registration perturbations between the QEMSCAN grid and the SEM (as found by hand in
# the study: 0.48 degrees, a few % of shift).
MAX_ROTATION_DEG = 2.0
MAX_SCALE_CHANGE = 0.02
MAX_SHIFT_FRAC = 0.05
# The label grid spans this many SEM frames, so it covers the section with background margin.
LABEL_COVERAGE = 1.1
# Coefficient range of the brightness drift terms, grey levels (a few levels in total).
DRIFT_AMPLITUDE = 1.5
# Uniform offset of 4 of the study's 9 SEM images.
GREY_OFFSET = 16
# Shot-noise gain: sd = sqrt(gain * grey), ~8 grey levels on quartz.
NOISE_GAIN = 0.55
# Smallest frame and label grid that still hold a few grains.
MIN_SIZE = 256
MIN_LABEL_SIDE = 16


@dataclass
class SynthSample:
    """A synthetic SEM/QEMSCAN pair and its truth.

    Attributes
    ----------
    sem : (H, W) uint8
        Backscatter image.
    truth : (H, W) uint8
        Mineral ids at the SEM resolution (what each SEM pixel is).
    labels_clean : (h, w) uint8
        Mineral ids on the label grid, ``truth`` point-sampled at ``label_to_sem``.
    labels : (h', w') uint8
        ``labels_clean`` after mosaic damage (what ``qemscan.png`` shows).
    label_to_sem : (3, 3) float64
        ``[x_sem, y_sem, 1] = M @ [x_lab, y_lab, 1]`` on the clean label grid.
    ratio, scale, rotation_deg : float
        Nominal SEM pixels per label pixel, its scale change, rotation (degrees).
    shift_px : (2,) tuple
        Offset (x, y) of the label grid centre from the SEM centre, SEM pixels.
    grey_offset : int
        0 or 16, added uniformly to the SEM.
    drift : dict
        Drift coefficients (grey levels) of the terms X, Y, XY, X^2-1/3, Y^2-1/3, with
        X, Y in [-1, 1] across the frame.
    seams : dict
        Damage layout from :func:`mineralseg.synth.damage.apply_mosaic_damage`.
    mineral_fractions : dict[str, float]
        Area fraction of each mineral in the section (background excluded).
    seed : int
    palette : str
    shape : str
        "round" or "rect".
    schema : ClassSchema
    """

    sem: np.ndarray
    truth: np.ndarray
    labels_clean: np.ndarray
    labels: np.ndarray
    label_to_sem: np.ndarray
    ratio: float
    scale: float
    rotation_deg: float
    shift_px: tuple[float, float]
    grey_offset: int
    drift: dict[str, float]
    seams: dict[str, Any]
    mineral_fractions: dict[str, float]
    seed: int
    palette: str
    shape: str
    schema: ClassSchema = field(repr=False)

    def truth_dict(self) -> dict[str, Any]:
        """The JSON-ready truth record (``truth/truth.json``)."""
        groups = self.schema.group_names
        lut = self.schema.mineral_to_group
        names = self.schema.mineral_names
        group_fr = {g: 0.0 for g in groups}
        for name, frac in self.mineral_fractions.items():
            group_fr[groups[int(lut[names.index(name)])]] += frac
        return {
            "generator": "mineralseg.synth",
            "version": SYNTH_VERSION,
            "seed": int(self.seed),
            "palette": self.palette,
            "shape": self.shape,
            "label_to_sem": [[float(v) for v in row] for row in self.label_to_sem],
            "ratio": float(self.ratio),
            "scale": float(self.scale),
            "rotation_deg": float(self.rotation_deg),
            "shift_px": [float(v) for v in self.shift_px],
            "sem_shape": [int(v) for v in self.sem.shape],
            "label_shape": [int(v) for v in self.labels_clean.shape],
            "damaged_label_shape": [int(v) for v in self.labels.shape],
            "seams": self.seams,
            "grey_offset": int(self.grey_offset),
            "drift": {"terms": "c_x*X + c_y*Y + c_xy*X*Y + c_x2*(X^2-1/3) + c_y2*(Y^2-1/3), X,Y in [-1,1]",
                      **{f"c_{k}": v for k, v in self.drift.items()}},
            "noise_gain": NOISE_GAIN,
            "mineral_fractions": {k: round(float(v), 6) for k, v in self.mineral_fractions.items()},
            "group_fractions": {k: round(float(v), 6) for k, v in group_fr.items()},
        }


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per component, so an option given by hand (ratio,
    rotation...) leaves every other random draw unchanged."""
    names = ("registration", "geometry", "fields", "textures", "noise", "damage")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def _check_args(size: int, shape: str, ratio, step: float) -> None:
    if int(size) != size or size < MIN_SIZE:
        raise UserError(f"synthetic SEM size must be an integer >= {MIN_SIZE}, got {size}")
    if shape not in ("round", "rect"):
        raise UserError(f"sample shape must be 'round' or 'rect', got {shape!r}")
    if ratio is not None and not (1.0 <= float(ratio)):
        raise UserError(f"ratio (SEM pixels per QEMSCAN pixel) must be >= 1, got {ratio}")
    if LABEL_COVERAGE * size / step < MIN_LABEL_SIDE:
        raise UserError(
            f"label grid would be under {MIN_LABEL_SIDE} px: size {size} / ratio {step:.3g}; "
            f"use a larger size or a smaller ratio"
        )


def _as_pair(value, what: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (2,)).copy()
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{what} must be finite numbers, got {value!r}")
    return arr


def _fractions(truth: np.ndarray, schema: ClassSchema, background_id: int) -> dict[str, float]:
    counts = np.bincount(truth.ravel(), minlength=schema.n_minerals).astype(float)
    inside = counts.sum() - counts[background_id]
    names = schema.mineral_names
    return {names[i]: counts[i] / max(inside, 1.0) for i in range(schema.n_minerals) if i != background_id}


def generate_sample(
    seed: int,
    *,
    size: int = 2048,
    ratio: float | None = None,
    rotation_deg: float | None = None,
    shift_frac: float | tuple[float, float] | None = None,
    scale: float | None = None,
    offset16: bool = False,
    shape: str = "round",
    palette: str | ClassSchema = "qemscan24",
    damage: bool = True,
    progress: bool = False,
) -> SynthSample:
    """Generate one synthetic SEM image, its QEMSCAN map and the truth.

    Parameters
    ----------
    seed : int
        Everything is determined by the seed (same seed and options, same arrays).
    size : int
        SEM side in pixels (>= 256). Time and memory grow with ``size**2``: an 8192 frame
        takes 12-28 s on two shared CPU cores and peaks at about 1 GB.
    ratio : float, optional
        SEM pixels per QEMSCAN pixel; drawn as an integer in [8, 20] when omitted.
    rotation_deg : float, optional
        Rotation of the label grid; drawn in [-2, 2] degrees when omitted.
    shift_frac : float or (fx, fy), optional
        Shift of the label grid centre as a fraction of ``size``; drawn within +-5 %.
    scale : float, optional
        Scale change of the label grid step; drawn within 1 +- 2 %.
    offset16 : bool
        Add a uniform +16 grey-level offset to the SEM (as in 4 of the study's 9 images).
    shape : {"round", "rect"}
        Outline of the polished section.
    palette : str or ClassSchema
        Class schema whose colours draw the QEMSCAN map (needs pore, background, quartz,
        albite; other minerals of the recipe are used when the schema names them).
    damage : bool
        Apply the mosaic damage (seams, field shifts) to ``labels``; otherwise
        ``labels`` is ``labels_clean``.
    progress : bool
        Show a progress bar over the rendered rows.

    Returns
    -------
    SynthSample

    Raises
    ------
    UserError
        Size below 256, unknown shape, a ratio that leaves a label grid under 16 px, a
        palette without the required minerals.

    Examples
    --------
    >>> s = generate_sample(3, size=512, ratio=8, scale=1.0)
    >>> s.sem.shape, s.sem.dtype, s.labels_clean.shape
    ((512, 512), dtype('uint8'), (71, 71))
    """
    rngs = _streams(seed)
    reg = rngs["registration"]
    # Draw every registration parameter even when given, so the draws never shift.
    d_ratio = float(reg.integers(RATIO_RANGE[0], RATIO_RANGE[1] + 1))
    d_scale = 1.0 + reg.uniform(-MAX_SCALE_CHANGE, MAX_SCALE_CHANGE)
    d_rot = reg.uniform(0.0, MAX_ROTATION_DEG) * reg.choice([-1.0, 1.0])
    d_shift = reg.uniform(-MAX_SHIFT_FRAC, MAX_SHIFT_FRAC, 2)
    drift = draw_drift(reg, DRIFT_AMPLITUDE)
    ratio_v = d_ratio if ratio is None else float(ratio)
    scale_v = d_scale if scale is None else float(scale)
    rot_v = d_rot if rotation_deg is None else float(rotation_deg)
    shift_v = d_shift if shift_frac is None else _as_pair(shift_frac, "shift_frac")
    if not (math.isfinite(scale_v) and scale_v > 0):
        raise UserError(f"scale must be a positive number, got {scale}")
    if not math.isfinite(rot_v):
        raise UserError(f"rotation_deg must be a finite number, got {rotation_deg}")
    step = ratio_v * scale_v
    _check_args(size, shape, ratio, step)
    size = int(size)
    schema = load_schema(palette)
    recipe = resolve_recipe(schema)
    bg_id = recipe.id("background")

    section = build_section(rngs, recipe, schema.n_minerals, size, step, shape)
    offset = GREY_OFFSET if offset16 else 0
    bar = tqdm(total=size, desc=f"synth seed {seed}", unit="row", disable=None if progress else True, leave=False, file=sys.stderr)
    with bar:
        truth, sem = render_section(
            section.table, section.shading, section.ids, section.inside, section.fields, rngs["noise"],
            noise_gain=NOISE_GAIN, drift=drift, offset=offset, progress=bar.update,
        )
    del section

    label_side = int(math.ceil(LABEL_COVERAGE * size / step))
    label_shape = (label_side, label_side)
    shift_px = (float(shift_v[0] * size), float(shift_v[1] * size))
    m = grids.label_to_sem_matrix(label_shape, (size, size), step=step, rotation_deg=rot_v, shift_px=shift_px)
    labels_clean = grids.sample_points(truth, m, label_shape, bg_id)
    if damage:
        labels, seams = apply_mosaic_damage(labels_clean, rngs["damage"], seam_fill_id=bg_id)
    else:
        labels, seams = labels_clean.copy(), {}
    return SynthSample(
        sem=sem,
        truth=truth,
        labels_clean=labels_clean,
        labels=labels,
        label_to_sem=m,
        ratio=ratio_v,
        scale=scale_v,
        rotation_deg=rot_v,
        shift_px=shift_px,
        grey_offset=offset,
        drift=drift,
        seams=json_ready(seams),
        mineral_fractions=_fractions(truth, schema, bg_id),
        seed=int(seed),
        palette=schema.name,
        shape=shape,
        schema=schema,
    )
