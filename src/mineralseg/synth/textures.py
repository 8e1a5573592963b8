"""Per-grain texture parameters: the cues that tell minerals apart beyond grey level.

Every painted id (grain cell or particle) gets one row of parameters; the renderer
gathers them per pixel. Sizes are drawn in label pixels (``unit`` SEM pixels each) over
1-4 label pixels so that the cues survive on a working grid that keeps the SEM at
1-4 x the label resolution, and vanish when the SEM is averaged down to the label grid:

- albite: polysynthetic twinning (parallel bands of alternating grey, period 1-4 label
  px, a few grey levels), cleavage cracks across the twins, patchy darker alteration
  (clay/sericite spots of 1-2 label px), a mottled interior;
- quartz: homogeneous, with occasional fractures (thin dark lines) and a dust rim (a thin
  dark ring) marking the detrital grain inside its overgrowth;
- K-feldspar: perthite lamellae (thin darker bands), cleavage, some alteration;
- carbonates: two rhombohedral cleavage sets, growth zoning in dolomite/ankerite;
- micas: striations along the flake; pyrite: pits; clays (glauconite pellets): speckle.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.special import ndtri

# Sharpness of the twin/lamella square wave (clip(k * sin)): 2.5 gives flat bands with
# soft edges about a tenth of a period wide.
WAVE_SHARPNESS = 2.5
# Thinnest line (half-width) in SEM pixels, so cracks are not lost between pixel centres.
_MIN_HALF_WIDTH = 0.6


@dataclass
class IdTable:
    """Per-id rendering parameters (row ``k`` describes painted id ``k``).

    Geometry: ``cx, cy`` centre; ``ct, st`` cos/sin of the grain ellipse's long axis;
    ``ia, ib`` inverse semi-axes (0 for particles, which are filled entirely).
    Content: ``mineral`` (grain or particle mineral id), ``base`` grey.
    Stripes (twins, lamellae, striations): ``sx, sy`` wave vector (cycles per SEM pixel),
    ``sph`` phase (cycles), ``samp`` amplitude (grey), ``sduty`` offset of the wave.
    Two line sets (cleavage, fractures): ``l?x, l?y`` (1 / spacing per pixel), ``l?ph``
    phase, ``l?w`` half-width (fraction of the spacing), ``l?amp`` grey change.
    Ring (dust rim, zoning): ``rpos`` (fraction of the grain radius), ``rwid``, ``ramp``.
    Alteration spots: ``athr`` (threshold on a unit-variance field), ``aamp``. ``mamp``:
    amplitude of the mottle field. Cell filling: ``clay`` (clay mineral id), ``cbias``
    (shift of the clay field: some pores clay-filled, others open), ``cement`` (1 if the
    cell's intergranular space is calcite cement).
    """

    cx: np.ndarray
    cy: np.ndarray
    ct: np.ndarray
    st: np.ndarray
    ia: np.ndarray
    ib: np.ndarray
    mineral: np.ndarray
    base: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    sph: np.ndarray
    samp: np.ndarray
    sduty: np.ndarray
    l1x: np.ndarray
    l1y: np.ndarray
    l1ph: np.ndarray
    l1w: np.ndarray
    l1amp: np.ndarray
    l2x: np.ndarray
    l2y: np.ndarray
    l2ph: np.ndarray
    l2w: np.ndarray
    l2amp: np.ndarray
    rpos: np.ndarray
    rwid: np.ndarray
    ramp: np.ndarray
    athr: np.ndarray
    aamp: np.ndarray
    mamp: np.ndarray
    clay: np.ndarray
    cbias: np.ndarray
    cement: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "IdTable":
        """A table of ``n`` rows: float32 zeros, ``mineral``/``clay``/``cement`` uint8 zeros."""
        cols = {}
        for f in fields(cls):
            dtype = np.uint8 if f.name in ("mineral", "clay", "cement") else np.float32
            cols[f.name] = np.zeros(n, dtype=dtype)
        # Thresholds high enough that nothing shows unless a texture sets them.
        cols["athr"][:] = 1e6
        cols["rwid"][:] = 1.0
        cols["l1w"][:] = 1e-6
        cols["l2w"][:] = 1e-6
        return cls(**cols)

    def __len__(self) -> int:
        return len(self.cx)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _set_stripes(tab: IdTable, idx, rng, period_px, angle, amp, duty) -> None:
    tab.sx[idx] = np.cos(angle) / period_px
    tab.sy[idx] = np.sin(angle) / period_px
    tab.sph[idx] = rng.uniform(0.0, 1.0, len(idx))
    tab.samp[idx] = amp
    tab.sduty[idx] = duty


def _set_lines(tab: IdTable, which: int, idx, rng, spacing_px, angle, half_px, amp, phase=None) -> None:
    """Parallel lines ``spacing_px`` apart (one line when the spacing exceeds the grain)."""
    pre = f"l{which}"
    getattr(tab, pre + "x")[idx] = np.cos(angle) / spacing_px
    getattr(tab, pre + "y")[idx] = np.sin(angle) / spacing_px
    getattr(tab, pre + "ph")[idx] = rng.uniform(0.0, 1.0, len(idx)) if phase is None else phase
    getattr(tab, pre + "w")[idx] = np.maximum(half_px, _MIN_HALF_WIDTH) / spacing_px
    getattr(tab, pre + "amp")[idx] = amp


def _pick(rng: np.random.Generator, idx: np.ndarray, p: float) -> np.ndarray:
    return idx[rng.random(len(idx)) < p]


def assign_textures(
    tab: IdTable,
    rng: np.random.Generator,
    families: dict[str, np.ndarray],
    radius_px: np.ndarray,
    unit: float,
    frame: float,
) -> None:
    """Draw the texture parameters of every id, in place.

    Parameters
    ----------
    tab : IdTable
        Table with geometry, ``mineral`` and ``base`` already set.
    rng : numpy.random.Generator
    families : dict[str, ndarray of int]
        Ids per texture family ("quartz", "albite", "kfeldspar", "carbonate", "clay",
        "mica", "sulphide", "plain"); see :class:`mineralseg.synth.minerals.Look`.
    radius_px : (len(tab),) float
        Typical grain half-size in SEM pixels (fracture offsets).
    unit : float
        SEM pixels per label pixel.
    frame : float
        SEM frame side: single fractures use a line spacing far larger than any grain.
    """
    u = float(unit)
    single = 4.0 * frame  # spacing of a "set" with only one line in the grain

    def n(idx):
        return len(idx)

    # Quartz: fractures, dust rims, a nearly flat interior.
    q = families.get("quartz", np.zeros(0, int))
    tab.mamp[q] = 1.0
    for which, p in ((1, 0.4), (2, 0.15)):
        f = _pick(rng, q, p)
        offset = rng.uniform(-0.6, 0.6, n(f)) * radius_px[f]
        _set_lines(
            tab, which, f, rng, single, rng.uniform(0, np.pi, n(f)),
            rng.uniform(0.04, 0.1, n(f)) * u, -rng.uniform(30.0, 55.0, n(f)), phase=-offset / single,
        )
    f = _pick(rng, q, 0.5)
    tab.rpos[f] = rng.uniform(0.72, 0.9, n(f))
    tab.rwid[f] = 0.035
    tab.ramp[f] = -rng.uniform(6.0, 12.0, n(f))

    # Albite: twins, cleavage across them, alteration patches, mottle.
    a = families.get("albite", np.zeros(0, int))
    tab.mamp[a] = 2.0
    twin_angle = rng.uniform(0.0, np.pi, n(a))
    t = rng.random(n(a)) < 0.85
    _set_stripes(
        tab, a[t], rng, _log_uniform(rng, 1.0, 4.0, int(t.sum())) * u, twin_angle[t],
        rng.uniform(4.0, 8.0, int(t.sum())), 0.0,
    )
    c = rng.random(n(a)) < 0.6
    _set_lines(
        tab, 1, a[c], rng, rng.uniform(1.5, 4.0, int(c.sum())) * u,
        twin_angle[c] + np.pi / 2 + rng.normal(0, 0.08, int(c.sum())),
        rng.uniform(0.05, 0.1, int(c.sum())) * u, -rng.uniform(12.0, 25.0, int(c.sum())),
    )
    c2 = rng.random(n(a)) < 0.2
    _set_lines(
        tab, 2, a[c2], rng, rng.uniform(2.0, 5.0, int(c2.sum())) * u, twin_angle[c2],
        rng.uniform(0.05, 0.08, int(c2.sum())) * u, -rng.uniform(10.0, 20.0, int(c2.sum())),
    )
    alt = _pick(rng, a, 0.8)
    tab.athr[alt] = ndtri(1.0 - rng.uniform(0.05, 0.3, n(alt)))
    tab.aamp[alt] = -rng.uniform(18.0, 30.0, n(alt))

    # K-feldspar: perthite lamellae (darker host bands), cleavage, some alteration.
    k = families.get("kfeldspar", np.zeros(0, int))
    tab.mamp[k] = 2.0
    p = _pick(rng, k, 0.6)
    amp = -rng.uniform(6.0, 9.0, n(p))
    _set_stripes(tab, p, rng, rng.uniform(1.0, 3.0, n(p)) * u, rng.uniform(0, np.pi, n(p)), amp, 0.6)
    tab.base[p] += amp  # host band (wave at -1) keeps the mineral's grey
    c = _pick(rng, k, 0.5)
    _set_lines(
        tab, 1, c, rng, rng.uniform(1.5, 4.0, n(c)) * u, rng.uniform(0, np.pi, n(c)),
        rng.uniform(0.05, 0.1, n(c)) * u, -rng.uniform(12.0, 25.0, n(c)),
    )
    alt = _pick(rng, k, 0.5)
    tab.athr[alt] = ndtri(1.0 - rng.uniform(0.03, 0.15, n(alt)))
    tab.aamp[alt] = -rng.uniform(20.0, 35.0, n(alt))

    # Carbonates: two rhombohedral cleavage sets ~75 degrees apart, zoning.
    cb = families.get("carbonate", np.zeros(0, int))
    tab.mamp[cb] = 2.0
    cl = _pick(rng, cb, 0.7)
    gamma = rng.uniform(0, np.pi, n(cl))
    spacing = rng.uniform(1.5, 3.5, n(cl)) * u
    for which, turn in ((1, 0.0), (2, np.deg2rad(75.0))):
        _set_lines(tab, which, cl, rng, spacing, gamma + turn, 0.05 * u, -rng.uniform(10.0, 20.0, n(cl)))
    z = _pick(rng, cb, 0.5)
    tab.rpos[z] = rng.uniform(0.4, 0.7, n(z))
    tab.rwid[z] = 0.15
    tab.ramp[z] = rng.choice([-1.0, 1.0], n(z)) * rng.uniform(5.0, 10.0, n(z))

    # Glauconite pellets and other clay grains: speckled, mottled.
    g = families.get("clay", np.zeros(0, int))
    tab.mamp[g] = 6.0
    tab.athr[g] = 1.0
    tab.aamp[g] = -25.0

    # Micas: striations along the flake (wave vector across the long axis).
    m = families.get("mica", np.zeros(0, int))
    tab.mamp[m] = 2.0
    across = np.arctan2(tab.st[m], tab.ct[m]) + np.pi / 2
    period = np.maximum(rng.uniform(0.3, 0.6, n(m)) * u, 2.5)
    _set_stripes(tab, m, rng, period, across, rng.uniform(6.0, 10.0, n(m)), 0.0)

    # Pyrite: bright, pitted.
    s = families.get("sulphide", np.zeros(0, int))
    tab.mamp[s] = 2.0
    tab.athr[s] = 1.3
    tab.aamp[s] = -60.0

    pl = families.get("plain", np.zeros(0, int))
    tab.mamp[pl] = 3.0
