"""Render the section at the SEM resolution: truth mineral map and backscatter image.

Per pixel, the painted id gives the grain's parameters (:class:`IdTable`); the pixel is
in the grain if its normalised elliptical distance to the grain centre (perturbed by a
smooth field) is below a calibrated threshold, otherwise it is intergranular space:
calcite cement, clay (where a smooth clay field is high) or an open pore. Rendering runs
in row strips of about a million pixels so memory stays bounded for 8k x 8k frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mineralseg.synth.fields import SmoothField, drift_strip
from mineralseg.synth.textures import WAVE_SHARPNESS, IdTable

# Pixels per rendering strip (rows = this // width): ~4 MB per float32 temporary.
STRIP_PIXELS = 1 << 20
_TWO_PI = np.float32(2.0 * np.pi)
# Relative amplitude of the smooth perturbation of grain outlines.
_OUTLINE_WOBBLE = 0.07


@dataclass
class Fields:
    """The smooth random fields the renderer reads (all unit variance)."""

    outline: SmoothField  # grain outline irregularity (~1.5 label px)
    alteration: SmoothField  # alteration / pit spots (~1 label px)
    mottle: SmoothField  # slow internal variation (~4 label px)
    clay: SmoothField  # clay vs open pore between grains (~2 label px)
    speckle: SmoothField  # clay micro-porosity (~0.3 label px)


@dataclass
class Shading:
    """Global rendering constants of one sample.

    Attributes
    ----------
    grain_threshold : float
        Grain where the normalised distance is below this (calibrated to the grain fraction).
    clay_threshold : float
        Clay where ``clay field + cbias`` exceeds this (calibrated to the clay fraction).
    pore_id, background_id, cement_id : int
        Mineral ids of open pores, the mount and cement (cement_id unused without cement).
    pore_grey : float
        Grey of epoxy (pores and mount).
    clay_grey : (n_minerals,) float32
        Mean grey per mineral id (used for clays and cement).
    """

    grain_threshold: float
    clay_threshold: float
    pore_id: int
    background_id: int
    cement_id: int
    pore_grey: float
    clay_grey: np.ndarray


def normalised_distance(tab: IdTable, g: np.ndarray, dx: np.ndarray, dy: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    """Elliptical distance of pixels to their grain centre, 1 on the unperturbed ellipse.

    Parameters
    ----------
    tab : IdTable
    g : int ndarray
        Painted id per pixel.
    dx, dy : float32 ndarrays (broadcast with ``g``)
        Pixel offsets from the grain centre.
    wobble : float32 ndarray
        Outline field at the pixels (unit variance).

    Returns
    -------
    float32 ndarray
        0 for particles (their ``ia = ib = 0``), larger further out.
    """
    ct, st = tab.ct[g], tab.st[g]
    along = dx * ct + dy * st
    across = dy * ct - dx * st
    along *= tab.ia[g]
    across *= tab.ib[g]
    rho = np.sqrt(along * along + across * across)
    rho *= 1.0 + np.float32(_OUTLINE_WOBBLE) * wobble
    return rho


def clay_score(tab: IdTable, g: np.ndarray, clay_field: np.ndarray) -> np.ndarray:
    """Clay field shifted per cell: above the clay threshold the space is clay-filled."""
    return clay_field + tab.cbias[g]


def _line(tab: IdTable, which: int, g, dx, dy) -> np.ndarray:
    pre = f"l{which}"
    p = dx * getattr(tab, pre + "x")[g] + dy * getattr(tab, pre + "y")[g] + getattr(tab, pre + "ph")[g]
    p -= np.rint(p)
    np.abs(p, out=p)
    p /= getattr(tab, pre + "w")[g]
    np.subtract(1.0, p, out=p)
    np.clip(p, 0.0, 1.0, out=p)
    p *= getattr(tab, pre + "amp")[g]
    return p


def grain_signal(tab: IdTable, g, dx, dy, rho_rel, alteration, mottle) -> np.ndarray:
    """Clean backscatter signal of grain pixels (grey levels, float32).

    ``rho_rel`` is the normalised distance divided by the grain threshold (1 at the rim).
    """
    sig = tab.base[g].copy()
    w = dx * tab.sx[g] + dy * tab.sy[g] + tab.sph[g]
    w *= _TWO_PI
    np.sin(w, out=w)
    w -= tab.sduty[g]
    w *= np.float32(WAVE_SHARPNESS)
    np.clip(w, -1.0, 1.0, out=w)
    w *= tab.samp[g]
    sig += w
    sig += _line(tab, 1, g, dx, dy)
    sig += _line(tab, 2, g, dx, dy)
    r = rho_rel - tab.rpos[g]
    np.abs(r, out=r)
    r /= tab.rwid[g]
    np.subtract(1.0, r, out=r)
    np.clip(r, 0.0, 1.0, out=r)
    r *= tab.ramp[g]
    sig += r
    a = alteration - tab.athr[g]
    a *= 3.0
    np.clip(a, 0.0, 1.0, out=a)
    a *= tab.aamp[g]
    sig += a
    sig += mottle * tab.mamp[g]
    return sig


def render_block(
    tab: IdTable,
    shade: Shading,
    ids: np.ndarray,
    inside: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    f: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Minerals and clean signal of a block of pixels.

    Parameters
    ----------
    tab : IdTable
    shade : Shading
    ids : (h, w) int ndarray
        Painted ids.
    inside : (h, w) bool ndarray
        Pixels inside the section.
    x, y : float32 ndarrays broadcastable to (h, w)
        Pixel coordinates (SEM pixels).
    f : dict of (h, w) float32
        Field values: "outline", "alteration", "mottle", "clay", "speckle".

    Returns
    -------
    minerals : (h, w) uint8
        Mineral ids (background outside the section).
    signal : (h, w) float32
        Clean grey levels before drift, noise and offset.
    """
    g = ids.astype(np.intp, copy=False)
    dx = x - tab.cx[g]
    dy = y - tab.cy[g]
    rho = normalised_distance(tab, g, dx, dy, f["outline"])
    rho *= np.float32(1.0 / shade.grain_threshold)
    grain = rho < 1.0
    cement = tab.cement[g].view(bool)
    clay = clay_score(tab, g, f["clay"]) > shade.clay_threshold

    minerals = np.where(clay, tab.clay[g], np.uint8(shade.pore_id))
    minerals[cement] = shade.cement_id
    np.copyto(minerals, tab.mineral[g], where=grain)
    minerals[~inside] = shade.background_id

    gsig = grain_signal(tab, g, dx, dy, rho, f["alteration"], f["mottle"])
    sp = f["speckle"]
    # Clay: its mineral's grey, grainy, with micro-pores where the speckle field is high.
    csig = shade.clay_grey[minerals] + 6.0 * sp
    pits = sp - 0.9
    pits *= 1.5
    np.clip(pits, 0.0, 1.0, out=pits)
    csig -= pits * (csig - shade.pore_grey) * 0.7
    signal = np.where(grain, gsig, csig)
    epoxy = (minerals == shade.pore_id) | ~inside
    signal[epoxy] = shade.pore_grey + 1.5 * f["mottle"][epoxy]
    cem = cement & ~grain & inside
    signal[cem] = shade.clay_grey[shade.cement_id] + 3.0 * f["mottle"][cem]
    return minerals, signal


def render_section(
    tab: IdTable,
    shade: Shading,
    ids: np.ndarray,
    inside: np.ndarray,
    fields: Fields,
    noise_rng: np.random.Generator,
    *,
    noise_gain: float,
    drift: dict[str, float],
    offset: float,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the whole frame strip by strip.

    Parameters
    ----------
    tab, shade : IdTable, Shading
    ids : (H, W) int ndarray
        Painted ids (:func:`mineralseg.synth.geometry.paint_ids`).
    inside : (H, W) bool ndarray
        Section mask.
    fields : Fields
    noise_rng : numpy.random.Generator
        Detector noise (one standard normal per pixel, row strips in order).
    noise_gain : float
        Shot-noise gain: the noise standard deviation is ``sqrt(noise_gain * signal)``.
    drift : dict
        Drift coefficients (:func:`mineralseg.synth.fields.draw_drift`).
    offset : float
        Uniform grey offset added to the whole frame (0 or 16).
    progress : callable, optional
        Called with the number of rows done after each strip.

    Returns
    -------
    truth : (H, W) uint8
        Mineral ids.
    sem : (H, W) uint8
        Backscatter image.
    """
    h, w = ids.shape
    rows = max(1, STRIP_PIXELS // w)
    truth = np.empty((h, w), dtype=np.uint8)
    sem = np.empty((h, w), dtype=np.uint8)
    x = np.arange(w, dtype=np.float32)[None, :]
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        y = np.arange(r0, r1, dtype=np.float32)[:, None]
        f = {
            "outline": fields.outline.strip(r0, r1, w),
            "alteration": fields.alteration.strip(r0, r1, w),
            "mottle": fields.mottle.strip(r0, r1, w),
            "clay": fields.clay.strip(r0, r1, w),
            "speckle": fields.speckle.strip(r0, r1, w),
        }
        minerals, signal = render_block(tab, shade, ids[r0:r1], inside[r0:r1], x, y, f)
        truth[r0:r1] = minerals
        np.maximum(signal, 1.0, out=signal)
        noise = noise_rng.standard_normal(signal.shape, dtype=np.float32)
        noise *= np.sqrt(signal * np.float32(noise_gain))
        signal += noise
        signal += drift_strip(drift, (h, w), r0, r1)
        np.rint(signal, out=signal)
        signal += np.float32(offset)  # whole grey levels: the offset is exactly +16
        np.clip(signal, 0.0, 255.0, out=signal)
        sem[r0:r1] = signal.astype(np.uint8)
        if progress is not None:
            progress(r1 - r0)
    return truth, sem
