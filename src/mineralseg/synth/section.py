"""Build the polished section: geometry, calibrated mineral content and textures.

The steps, each drawing from its own random stream:

1. smooth fields (grain outlines, alteration, mottle, clay, speckle, suture warp);
2. geometry: section outline, packed grain cells with sutured contacts, painted ids;
3. a first calibration finds the intergranular space, where part of the small particles
   (pyrite, micas, accessories) are placed and painted;
4. the grain threshold is calibrated on a subsample so that grains, intergranular space
   and particles take their target area fractions; grain minerals are drawn per cell so
   that their areas follow the recipe; cement cells, clay type and the clay threshold
   follow;
5. per-id grey levels and textures.

The result, :class:`Section`, is everything :func:`mineralseg.synth.render.render_section`
needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mineralseg.synth import geometry
from mineralseg.synth.fields import SmoothField
from mineralseg.synth.minerals import CEMENT_MINERAL, LOOKS, Recipe
from mineralseg.synth.render import Fields, Shading, clay_score, normalised_distance
from mineralseg.synth.textures import IdTable, assign_textures

# Calibration reads every k-th pixel so that about this many pixels per side are used.
CALIBRATION_SIDE = 1024
# Spread of the per-cell shift of the clay field (some pores clay-filled, others open).
CLAY_BIAS_SD = 0.6
# Displacement of grain contacts (label pixels per unit of the smooth field): sutured,
# wavy contacts instead of straight Voronoi edges.
SUTURE_AMPLITUDE = 0.6
# Field lattice spacings in label pixels (features are 2-3 spacings across).
FIELD_SPACING = {"outline": 0.6, "alteration": 0.4, "mottle": 1.5, "clay": 0.8, "speckle": 0.15, "suture": 2.0}
# Finest lattice in SEM pixels (the speckle lattice would otherwise exceed the image).
MIN_FIELD_SPACING = 1.5


@dataclass
class Section:
    """A section ready to render.

    Attributes
    ----------
    ids : (H, W) int32
        Painted ids (grain cells, then particles).
    inside : (H, W) bool
        The section (False on the mount).
    table : IdTable
        Per-id geometry, minerals and textures.
    shading : Shading
        Calibrated thresholds and grey levels.
    fields : Fields
        Smooth random fields read by the renderer.
    """

    ids: np.ndarray
    inside: np.ndarray
    table: IdTable
    shading: Shading
    fields: Fields


def make_fields(rng: np.random.Generator, size: int, unit: float) -> tuple[Fields, tuple[SmoothField, SmoothField]]:
    """The renderer's fields and the two components of the suture warp."""
    shape = (size, size)

    def field(name: str) -> SmoothField:
        return SmoothField(rng, shape, max(FIELD_SPACING[name] * unit, MIN_FIELD_SPACING))

    flds = Fields(
        outline=field("outline"),
        alteration=field("alteration"),
        mottle=field("mottle"),
        clay=field("clay"),
        speckle=field("speckle"),
    )
    return flds, (field("suture"), field("suture"))


def geometry_table(cells: geometry.Cells, particles: geometry.Particles, recipe: Recipe) -> IdTable:
    """Rows 1..N: grain cells (ellipse geometry); then particles (filled, ``ia = ib = 0``)."""
    n_cells, n_part = len(cells.radius), len(particles)
    tab = IdTable.empty(1 + n_cells + n_part)
    tab.mineral[0] = recipe.id("background")
    c = slice(1, 1 + n_cells)
    tab.cx[c], tab.cy[c] = cells.xy[:, 0], cells.xy[:, 1]
    tab.ct[c], tab.st[c] = np.cos(cells.angle), np.sin(cells.angle)
    root = np.sqrt(cells.aspect)
    tab.ia[c] = 1.0 / (cells.radius * root)
    tab.ib[c] = root / cells.radius
    if n_part:
        p = slice(1 + n_cells, None)
        xy = np.asarray(particles.xy, float)
        ang = np.asarray(particles.angle, float)
        tab.cx[p], tab.cy[p] = xy[:, 0], xy[:, 1]
        tab.ct[p], tab.st[p] = np.cos(ang), np.sin(ang)
        tab.mineral[p] = [recipe.id(m) for m in particles.mineral]
    return tab


@dataclass
class _Calibration:
    threshold: float
    grain: np.ndarray  # subsample: grain pixels
    cell: np.ndarray  # subsample: cell (non-particle) pixels inside the section
    grain_area: np.ndarray  # per id, SEM pixels
    gap_area: np.ndarray  # per id, SEM pixels


def _calibrate_grains(tab: IdTable, ids_s, inside_s, wobble_s, step: int, n_cells: int, share: float) -> _Calibration:
    """Grain threshold giving ``share`` of the cell area, and per-id areas (subsample)."""
    g = ids_s.astype(np.intp)
    ys = (np.arange(ids_s.shape[0], dtype=np.float32) * step)[:, None]
    xs = (np.arange(ids_s.shape[1], dtype=np.float32) * step)[None, :]
    rho = normalised_distance(tab, g, xs - tab.cx[g], ys - tab.cy[g], wobble_s)
    cell = inside_s & (g >= 1) & (g <= n_cells)
    threshold = float(np.quantile(rho[cell], share))
    grain = cell & (rho < threshold)
    n, px = len(tab), float(step * step)
    return _Calibration(
        threshold, grain, cell,
        np.bincount(g[grain], minlength=n) * px,
        np.bincount(g[cell & ~grain], minlength=n) * px,
    )


def assign_by_area(rng: np.random.Generator, areas: np.ndarray, targets: dict[str, float]) -> list[str]:
    """Give each item a mineral so that summed areas track the target shares.

    Items are visited in random order; each draws a mineral with probability
    proportional to the area still missing from each target (a self-correcting lottery,
    so totals land close to the targets even with a few dozen grains).

    Parameters
    ----------
    rng : numpy.random.Generator
    areas : (N,) float
    targets : dict[str, float]
        Relative shares (any positive scale).

    Returns
    -------
    list of str
        One name per item.
    """
    names = list(targets)
    share = np.array([targets[k] for k in names], float)
    want = share / share.sum() * areas.sum()
    got = np.zeros(len(names))
    out = [names[0]] * len(areas)
    order = rng.permutation(len(areas))
    draws = rng.random(len(areas))
    for i, u in zip(order, draws):
        deficit = np.maximum(want - got, 0.0) + 1e-9 * want
        k = min(int(np.searchsorted(np.cumsum(deficit), u * deficit.sum(), side="right")), len(names) - 1)
        out[i] = names[k]
        got[k] += areas[i]
    return out


def _fill_gaps(tab: IdTable, rng: np.random.Generator, recipe: Recipe, gap_area: np.ndarray, n_cells: int) -> None:
    """Cement cells (their whole intergranular space), clay type and clay bias per cell."""
    cell_ids = np.arange(1, n_cells + 1)
    if recipe.cement > 0:
        gap_total = sum(recipe.clays.values()) + recipe.pore + recipe.cement
        order = rng.permutation(cell_ids)
        need = recipe.cement / gap_total * gap_area[cell_ids].sum()
        tab.cement[order[np.cumsum(gap_area[order]) <= need]] = 1
    names = list(recipe.clays)
    if names:
        p = np.array([recipe.clays[k] for k in names])
        picks = rng.choice(len(names), size=n_cells, p=p / p.sum())
        tab.clay[cell_ids] = np.array([recipe.id(names[k]) for k in picks], dtype=np.uint8)
    tab.cbias[cell_ids] = rng.normal(0.0, CLAY_BIAS_SD, n_cells)


def _grey_and_textures(
    tab: IdTable, rng: np.random.Generator, recipe: Recipe, radius: np.ndarray, unit: float, size: int
) -> None:
    """Per-id base grey (mineral mean + grain-to-grain spread) and texture parameters."""
    names = {v: k for k, v in recipe.ids.items()}
    minerals = [names[int(m)] for m in tab.mineral]
    families: dict[str, list[int]] = {}
    for i in range(1, len(tab)):
        families.setdefault(LOOKS[minerals[i]].texture, []).append(i)
    tab.base[:] = [LOOKS[m].grey for m in minerals]
    sds = np.array([LOOKS[m].grain_sd for m in minerals], dtype=np.float32)
    tab.base += sds * rng.standard_normal(len(tab)).astype(np.float32)
    fam = {k: np.asarray(v, dtype=np.intp) for k, v in families.items()}
    assign_textures(tab, rng, fam, radius, unit, float(size))


def build_section(
    rngs: dict[str, np.random.Generator],
    recipe: Recipe,
    n_minerals: int,
    size: int,
    unit: float,
    shape: str,
) -> Section:
    """Geometry, mineral content and textures of one section.

    Parameters
    ----------
    rngs : dict
        Generators "fields", "geometry" and "textures".
    recipe : Recipe
        Minerals, ids and target fractions.
    n_minerals : int
        Number of mineral ids in the schema.
    size : int
        SEM frame side.
    unit : float
        SEM pixels per label pixel (sizes of grains and textures scale with it).
    shape : {"round", "rect"}

    Returns
    -------
    Section
    """
    flds, suture = make_fields(rngs["fields"], size, unit)

    def displace(p: np.ndarray) -> np.ndarray:
        return SUTURE_AMPLITUDE * unit * np.stack([f.at(p[:, 0], p[:, 1]) for f in suture], axis=1)

    geo = rngs["geometry"]
    outline = geometry.section_outline(geo, size, shape)
    cells = geometry.make_cells(geo, outline, size, unit, displace=displace)
    n_cells = len(cells.radius)
    ids = geometry.paint_cells((size, size), cells)
    inside = geometry.paint_outline((size, size), outline)

    sub = max(1, math.ceil(size / CALIBRATION_SIDE))
    inside_s = inside[::sub, ::sub]
    wobble_s = flds.outline.subsampled((size, size), sub)
    grains = sum(recipe.grains.values())
    gaps = sum(recipe.clays.values()) + recipe.pore + recipe.cement
    share = grains / (grains + gaps)

    # Part of the particles sit in the intergranular space: find it, then paint them.
    first = _calibrate_grains(
        geometry_table(cells, geometry.Particles(), recipe), ids[::sub, ::sub], inside_s, wobble_s, sub, n_cells, share
    )
    gy, gx = np.nonzero(first.cell & ~first.grain)
    particles = geometry.make_particles(
        geo, outline, unit, recipe.particles, bedding=float(np.median(cells.angle)),
        gaps=np.stack([gx, gy], axis=1).astype(float) * sub, jitter=float(sub),
    )
    geometry.paint_particles(ids, particles, 1 + n_cells)

    tab = geometry_table(cells, particles, recipe)
    ids_s = ids[::sub, ::sub]
    cal = _calibrate_grains(tab, ids_s, inside_s, wobble_s, sub, n_cells, share)
    cell_ids = np.arange(1, n_cells + 1)
    for i, name in zip(cell_ids, assign_by_area(geo, cal.grain_area[cell_ids], recipe.grains)):
        tab.mineral[i] = recipe.id(name)
    _fill_gaps(tab, geo, recipe, cal.gap_area, n_cells)

    # Clay where the clay score is in the top clay / (clay + pore) of the open gaps.
    g_s = ids_s.astype(np.intp)
    open_gap = cal.cell & ~cal.grain & (tab.cement[g_s] == 0)
    score = clay_score(tab, g_s, flds.clay.subsampled((size, size), sub))[open_gap]
    clays = sum(recipe.clays.values())
    if clays > 0 and score.size:
        t_clay = float(np.quantile(score, 1.0 - clays / (clays + recipe.pore)))
    else:
        t_clay = np.inf  # a palette without clays: the open gaps are all pores

    radius = np.concatenate([[1.0], cells.radius, np.asarray(particles.size, float)])
    _grey_and_textures(tab, rngs["textures"], recipe, radius, unit, size)
    pore_id = recipe.id("pore")
    shading = Shading(
        grain_threshold=cal.threshold,
        clay_threshold=t_clay,
        pore_id=pore_id,
        background_id=recipe.id("background"),
        cement_id=recipe.ids.get(CEMENT_MINERAL, pore_id),
        pore_grey=LOOKS["pore"].grey,
        clay_grey=recipe.grey_table(n_minerals),
    )
    return Section(ids, inside, tab, shading, flds)
