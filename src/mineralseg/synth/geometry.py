"""Geometry of the synthetic polished section, defined once in continuous SEM coordinates.

The section is an outline polygon (round or rectangular) on the epoxy mount. Inside it,
grain centres come from random sequential packing with variable radii (a Poisson-disc
process whose grain size alternates along bedding laminae); their Voronoi cells tile the
plane. Each cell holds one grain, an ellipse around its centre clipped by the cell (flat
contacts where grains touch, intergranular space at triple junctions); the rest of the
cell is pore space, clay or cement. Small particles (pyrite, heavy accessories, mica
flakes) are polygons painted over the cells.

All coordinates are SEM pixels, x = column, y = row, pixel centres at integers. The
geometry is vector data; :func:`paint_ids` rasterises it at the SEM resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from matplotlib.path import Path as MplPath
from scipy.spatial import Voronoi, cKDTree

# Sub-pixel bits for cv2.fillPoly: vertices are placed to 1/16 pixel.
_SHIFT = 4
# Grain centres keep at least this fraction of the sum of their radii apart.
_INHIBITION = 0.9
# Random sequential packing stops when a batch places fewer than this fraction of candidates.
_RSA_STOP = 0.01
_RSA_MAX_BATCHES = 60
# Vertices of the section outline.
_OUTLINE_VERTICES = 720
# Share of each mineral's particles placed in the intergranular space (the rest anywhere):
# framboidal pyrite grows in clay and pores, micas are squeezed between grains.
GAP_PREFERENCE = {"pyrite": 0.8, "muscovite": 0.85, "biotite": 0.85, "default": 0.5}


@dataclass
class Cells:
    """Grain cells: centres, ellipse shapes and Voronoi polygons.

    Attributes
    ----------
    xy : (N, 2) float64
        Grain centres (x, y) in SEM pixels.
    radius : (N,) float64
        Packing radius of each grain (SEM pixels).
    angle : (N,) float64
        Orientation of the grain ellipse's long axis (radians).
    aspect : (N,) float64
        Long / short axis ratio of the grain ellipse (>= 1).
    polygons : list of (K, 2) float64
        Voronoi cell of each grain.
    area : (N,) float64
        Cell areas in square SEM pixels.
    """

    xy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    aspect: np.ndarray
    polygons: list[np.ndarray]
    area: np.ndarray


@dataclass
class Particles:
    """Small painted particles: one id per particle (a framboid is one particle).

    Attributes
    ----------
    mineral : list of str
        Lower-case mineral name of each particle.
    xy : (P, 2) float64
        Particle centres.
    angle : (P,) float64
        Orientation (long axis for flakes and prisms), radians.
    size : (P,) float64
        Typical half-size in SEM pixels.
    parts : list of list of (K, 2) float64
        Polygons of each particle.
    """

    mineral: list[str] = field(default_factory=list)
    xy: list[tuple[float, float]] = field(default_factory=list)
    angle: list[float] = field(default_factory=list)
    size: list[float] = field(default_factory=list)
    parts: list[list[np.ndarray]] = field(default_factory=list)

    def add(self, mineral: str, xy: tuple[float, float], angle: float, size: float, parts: list[np.ndarray]) -> None:
        self.mineral.append(mineral)
        self.xy.append(xy)
        self.angle.append(angle)
        self.size.append(size)
        self.parts.append(parts)

    def __len__(self) -> int:
        return len(self.mineral)


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon ``(K, 2)`` (shoelace formula)."""
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def section_outline(rng: np.random.Generator, size: int, shape: str) -> np.ndarray:
    """Outline of the polished section on a ``size`` x ``size`` SEM frame.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        SEM image side in pixels.
    shape : {"round", "rect"}
        A round plug (radius 40-43 % of the frame, slightly irregular edge) or a
        rectangular block with rounded corners, turned by up to 3 degrees.

    Returns
    -------
    (K, 2) float64 ndarray
        Closed polygon (x, y), counter-clockwise, inside the frame with a margin of at
        least 5 % of ``size``.
    """
    centre = np.array([(size - 1) / 2.0, (size - 1) / 2.0]) + rng.uniform(-0.01, 0.01, 2) * size
    t = np.linspace(0.0, 2.0 * np.pi, _OUTLINE_VERTICES, endpoint=False)
    # Edge irregularity: a few low harmonics of about 0.3 % of the radius each.
    wobble = np.zeros_like(t)
    for k in range(2, 7):
        wobble += rng.normal(0.0, 0.003) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    if shape == "round":
        radius = size * rng.uniform(0.40, 0.43) * (1.0 + wobble)
        return np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)], axis=1)
    # Rounded rectangle: superellipse |x/a|^n + |y/b|^n = 1 with n = 8.
    half = np.array([rng.uniform(0.34, 0.38), rng.uniform(0.28, 0.34)]) * size
    n = 8.0
    c, s = np.cos(t), np.sin(t)
    # A sawn block: straighter edges than a plug (a third of the wobble).
    x = half[0] * np.sign(c) * np.abs(c) ** (2.0 / n) * (1.0 + wobble / 3.0)
    y = half[1] * np.sign(s) * np.abs(s) ** (2.0 / n) * (1.0 + wobble / 3.0)
    turn = np.deg2rad(rng.uniform(-3.0, 3.0))
    ct, st = np.cos(turn), np.sin(turn)
    return np.stack([centre[0] + ct * x - st * y, centre[1] + st * x + ct * y], axis=1)


def _inside(outline: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return MplPath(outline).contains_points(xy)


def lamination(xy: np.ndarray, bedding: float, wavelength: float, phase: float, amplitude: float) -> np.ndarray:
    """Grain-size factor of laminae: ``exp(amplitude * sin(2 pi d / wavelength + phase))``.

    ``d`` is the distance across bedding (bedding angle ``bedding`` in radians).
    """
    d = -xy[:, 0] * np.sin(bedding) + xy[:, 1] * np.cos(bedding)
    return np.exp(amplitude * np.sin(2.0 * np.pi * d / wavelength + phase))


def pack_centres(
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    r_median: float,
    *,
    sigma: float = 0.35,
    size_factor=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential packing of discs with log-normal radii (variable Poisson disc).

    Parameters
    ----------
    rng : numpy.random.Generator
    box : (x0, y0, x1, y1)
        Region to fill, SEM pixels.
    r_median : float
        Median disc radius, SEM pixels.
    sigma : float
        Log-normal spread of the radii (clipped to 0.4-2.5 x the median).
    size_factor : callable, optional
        ``f(xy (n, 2)) -> (n,)`` multiplying the radii (grain-size laminae).

    Returns
    -------
    xy : (N, 2) float64
    radius : (N,) float64
        Centres at least ``0.9 * (r_i + r_j)`` apart.
    """
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    batch = int(max(64, area / (np.pi * r_median**2)))
    acc_xy = np.zeros((0, 2))
    acc_r = np.zeros(0)
    for _ in range(_RSA_MAX_BATCHES):
        xy = np.stack([rng.uniform(x0, x1, batch), rng.uniform(y0, y1, batch)], axis=1)
        r = r_median * np.exp(rng.normal(0.0, sigma, batch))
        r = np.clip(r, 0.4 * r_median, 2.5 * r_median)
        if size_factor is not None:
            r = r * size_factor(xy)
        ok = np.ones(batch, dtype=bool)
        if len(acc_r):
            tree_a, tree_c = cKDTree(acc_xy), cKDTree(xy)
            pairs = tree_c.sparse_distance_matrix(
                tree_a, _INHIBITION * (r.max() + acc_r.max()), output_type="ndarray"
            )
            clash = pairs["v"] < _INHIBITION * (r[pairs["i"]] + acc_r[pairs["j"]])
            ok[pairs["i"][clash]] = False
        idx = np.flatnonzero(ok)
        keep = _greedy_independent(xy[idx], r[idx])
        placed = idx[keep]
        acc_xy = np.concatenate([acc_xy, xy[placed]])
        acc_r = np.concatenate([acc_r, r[placed]])
        if len(placed) < _RSA_STOP * batch:
            break
    return acc_xy, acc_r


def _greedy_independent(xy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Indices of candidates kept in order, dropping any that clash with an earlier kept one."""
    n = len(r)
    if n == 0:
        return np.zeros(0, dtype=int)
    pairs = cKDTree(xy).query_pairs(_INHIBITION * 2.0 * r.max(), output_type="ndarray")
    if len(pairs):
        d = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
        pairs = pairs[d < _INHIBITION * (r[pairs[:, 0]] + r[pairs[:, 1]])]
    later: list[list[int]] = [[] for _ in range(n)]
    for a, b in np.sort(pairs, axis=1):
        later[a].append(int(b))
    dropped = np.zeros(n, dtype=bool)
    for i in range(n):
        if not dropped[i]:
            for j in later[i]:
                dropped[j] = True
    return np.flatnonzero(~dropped)


def voronoi_cells(
    xy: np.ndarray,
    frame: float,
    *,
    segment: float | None = None,
    displace=None,
) -> list[np.ndarray]:
    """Bounded Voronoi polygons of ``xy``, closed far outside a frame of side ``frame``.

    Parameters
    ----------
    xy : (N, 2) float64
    frame : float
        Side of the region of interest (the far closing ring lies 4 frames away).
    segment : float, optional
        Split every edge into pieces no longer than this (SEM pixels) ...
    displace : callable, optional
        ... and move every vertex by ``displace(points (M, 2)) -> (M, 2)``. Shared edges are
        split at the same points in both cells and moved by the same function of position,
        so the cells still tile the plane, now with wavy (sutured) contacts.

    Returns
    -------
    list of (K, 2) float64
        One polygon per point, in the order of ``xy``.
    """
    centre = xy.mean(axis=0)
    t = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
    ring = centre + 4.0 * frame * np.stack([np.cos(t), np.sin(t)], axis=1)
    vor = Voronoi(np.concatenate([xy, ring]))
    verts = vor.vertices
    regions = [vor.regions[vor.point_region[i]] for i in range(len(xy))]
    if segment is None:
        return [verts[r] for r in regions]
    # Interior points of each undirected edge, once (keyed by sorted vertex indices).
    interior: dict[tuple[int, int], np.ndarray] = {}
    for region in regions:
        for a, b in zip(region, region[1:] + region[:1]):
            key = (a, b) if a < b else (b, a)
            if key not in interior:
                p, q = verts[key[0]], verts[key[1]]
                n = max(1, int(np.ceil(np.hypot(*(q - p)) / segment)))
                interior[key] = p + (q - p) * (np.arange(1, n)[:, None] / n)
    keys = list(interior)
    counts = [len(interior[k]) for k in keys]
    points = np.concatenate([verts] + [interior[k] for k in keys])
    if displace is not None:
        points = points + displace(points)
    moved_verts = points[: len(verts)]
    start = len(verts) + np.concatenate([[0], np.cumsum(counts)])
    span = {k: (start[i], start[i + 1]) for i, k in enumerate(keys)}
    polys = []
    for region in regions:
        parts = []
        for a, b in zip(region, region[1:] + region[:1]):
            parts.append(moved_verts[a : a + 1])
            if a < b:
                i0, i1 = span[(a, b)]
                parts.append(points[i0:i1])
            else:
                i0, i1 = span[(b, a)]
                parts.append(points[i0:i1][::-1])
        polys.append(np.concatenate(parts))
    return polys


def make_cells(
    rng: np.random.Generator,
    outline: np.ndarray,
    size: int,
    unit: float,
    *,
    r_median_units: float = 7.0,
    displace=None,
) -> Cells:
    """Pack grain centres over the section and build their cells.

    Parameters
    ----------
    rng : numpy.random.Generator
    outline : (K, 2) float64
        Section outline (:func:`section_outline`).
    size : int
        SEM frame side.
    unit : float
        SEM pixels per label pixel; grain sizes are set in label pixels so that the
        difficulty does not depend on the QEMSCAN step.
    r_median_units : float
        Median packing radius in label pixels (grains ~14 label pixels across).
    displace : callable, optional
        Smooth displacement of cell boundaries (see :func:`voronoi_cells`).

    Returns
    -------
    Cells
    """
    r_med = r_median_units * unit
    margin = 3.0 * r_med
    lo, hi = outline.min(axis=0) - margin, outline.max(axis=0) + margin
    bedding = rng.uniform(-0.4, 0.4)
    wavelength = rng.uniform(10.0, 25.0) * r_med
    phase = rng.uniform(0, 2 * np.pi)

    def factor(p: np.ndarray) -> np.ndarray:
        return lamination(p, bedding, wavelength, phase, 0.3)

    xy, radius = pack_centres(rng, (lo[0], lo[1], hi[0], hi[1]), r_med, size_factor=factor)
    n = len(radius)
    # Grains lie roughly along bedding: long axes within ~35 degrees of it.
    angle = bedding + rng.normal(0.0, 0.6, n)
    aspect = np.exp(np.abs(rng.normal(0.0, 0.25, n)))
    polygons = voronoi_cells(xy, float(size), segment=0.5 * unit, displace=displace)
    area = np.array([polygon_area(p) for p in polygons])
    return Cells(xy, radius, angle, aspect, polygons, area)


def _ellipse_polygon(rng, centre, a, b, angle, n, jitter) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    rad = 1.0 + rng.uniform(-jitter, jitter, n)
    x, y = a * np.cos(t) * rad, b * np.sin(t) * rad
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


def _rect_polygon(centre, a, b, angle) -> np.ndarray:
    x = np.array([-a, a, a, -a])
    y = np.array([-b, -b, b, b])
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


def _particle(rng: np.random.Generator, mineral: str, centre: np.ndarray, unit: float, bedding: float):
    """Polygons, angle and half-size of one particle of ``mineral`` (sizes in label px)."""
    angle = rng.uniform(0.0, np.pi)
    if mineral in ("muscovite", "biotite"):
        angle = bedding + rng.normal(0.0, 0.35)
        a, b = rng.uniform(1.0, 2.5) * unit, rng.uniform(0.25, 0.5) * unit
        return [_rect_polygon(centre, a, b, angle)], angle, b
    if mineral == "pyrite" and rng.random() < 0.5:
        # Framboid: a cluster of small spheres.
        spread = rng.uniform(0.6, 1.4) * unit
        parts = []
        for _ in range(rng.integers(4, 10)):
            off = rng.normal(0.0, 0.5, 2) * spread
            r = rng.uniform(0.2, 0.45) * unit
            parts.append(_ellipse_polygon(rng, centre + off, r, r, 0.0, 12, 0.05))
        return parts, angle, spread
    if mineral in ("pyrite", "zircon", "rutile"):
        a = rng.uniform(0.35, 1.1) * unit
        b = a * (rng.uniform(0.4, 0.8) if mineral != "pyrite" else 1.0)
        return [_rect_polygon(centre, a, b, angle)], angle, a
    a = rng.uniform(0.4, 1.4) * unit
    b = a / rng.uniform(1.0, 1.6)
    return [_ellipse_polygon(rng, centre, a, b, angle, 14, 0.12)], angle, a


def make_particles(
    rng: np.random.Generator,
    outline: np.ndarray,
    unit: float,
    fractions: dict[str, float],
    *,
    bedding: float = 0.0,
    gaps: np.ndarray | None = None,
    jitter: float = 0.0,
) -> Particles:
    """Scatter small particles over the section until each mineral covers its fraction.

    Parameters
    ----------
    rng : numpy.random.Generator
    outline : (K, 2) float64
        Section outline; particle centres fall inside it.
    unit : float
        SEM pixels per label pixel (particle sizes are 0.2-2.5 label pixels).
    fractions : dict[str, float]
        Target fraction of the section area per mineral (lower-case names).
    bedding : float
        Bedding angle (radians) that mica flakes follow.
    gaps : (M, 2) float64, optional
        Points of the intergranular space; a share of each mineral's particles
        (:data:`GAP_PREFERENCE`) is centred near one of them (pyrite framboids in clay and
        pores, micas squeezed between grains), the rest anywhere in the section.
    jitter : float
        Random offset (SEM pixels, each axis within +-jitter/2) added to gap points.

    Returns
    -------
    Particles
    """
    sample_area = polygon_area(outline)
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    out = Particles()
    for mineral, frac in fractions.items():
        target, covered = frac * sample_area, 0.0
        p_gap = GAP_PREFERENCE.get(mineral, GAP_PREFERENCE["default"]) if gaps is not None and len(gaps) else 0.0
        while covered < target:
            centres = rng.uniform(lo, hi, (64, 2))
            centres = centres[_inside(outline, centres)]
            in_gap = rng.random(len(centres)) < p_gap
            if in_gap.any():
                pick = gaps[rng.integers(0, len(gaps), int(in_gap.sum()))]
                centres[in_gap] = pick + rng.uniform(-0.5, 0.5, pick.shape) * jitter
            for centre in centres:
                parts, angle, half = _particle(rng, mineral, centre, unit, bedding)
                out.add(mineral, (float(centre[0]), float(centre[1])), float(angle), float(half), parts)
                covered += sum(polygon_area(p) for p in parts)
                if covered >= target:
                    break
    return out


def _fill(image: np.ndarray, polygons: list[np.ndarray], value: int) -> None:
    pts = [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polygons]
    cv2.fillPoly(image, pts, int(value), lineType=cv2.LINE_8, shift=_SHIFT)


def paint_cells(shape: tuple[int, int], cells: Cells) -> np.ndarray:
    """Rasterise the grain cells at the SEM resolution.

    Returns
    -------
    (H, W) int32 ndarray
        ``1 + i`` in cell ``i`` (cells tile the frame; 0 would mean no cell).
    """
    ids = np.zeros(shape, dtype=np.int32)
    for i, poly in enumerate(cells.polygons):
        _fill(ids, [poly], 1 + i)
    return ids


def paint_particles(ids: np.ndarray, particles: Particles, first_id: int) -> None:
    """Paint particle ``j`` as id ``first_id + j`` over ``ids`` (in place)."""
    for j, parts in enumerate(particles.parts):
        _fill(ids, parts, first_id + j)


def paint_outline(shape: tuple[int, int], outline: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of the section (pixel centres inside ``outline``)."""
    mask = np.zeros(shape, dtype=np.uint8)
    _fill(mask, [outline], 1)
    return mask.view(bool)
