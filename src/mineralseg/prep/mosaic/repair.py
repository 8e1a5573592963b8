"""The mosaic repair's entry point (:func:`repair_mosaic`) and step 5, choice and trust.

:func:`_find_pattern` runs steps 1-2 (or says why there is no pattern); every candidate
layout tried is an :class:`_Attempt` (step 3-4), judged by how it sorts the pixels into
stripe and field content; the trust decision (:func:`_doubt`) reads the stripes left,
the content dropped and the confidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from mineralseg.errors import UserError
from mineralseg.prep.mosaic.comb import (
    COMB_MIN_Z,
    COMB_MIN_Z_OTHER,
    COMB_SURE_Z,
    MIN_PITCH,
    MIN_SEAMS,
    _combs_at,
)
from mineralseg.prep.mosaic.evidence import (
    EXTERIOR_SIDE,
    FILL_LONG,
    _detect_fill,
    _evidence,
    _informative,
    _junk_map,
    _stripe_like,
)
from mineralseg.prep.mosaic.grid import (
    _axis_grid,
    _bands,
    _field_origins,
    _Grid,
    _lines_between,
    _make_grid,
)
from mineralseg.prep.mosaic.reassemble import _reassemble, _seam_continuity
from mineralseg.prep.mosaic.shifts import (
    _likelihoods,
    _Maps,
    _shift_log_prior,
    _solve_shifts,
)

# Candidate grids kept per axis (best visible stripes first, and the best one with a
# field one pixel smaller and larger). The best pair is repaired first; while the repair
# sorts pixels into stripe and field content with an error (stripe pixels left +
# content pixels dropped, per stripe pixel of the damaged map) above GOOD_LAYOUT_ERROR,
# the other row grids, then the other column grids are tried; the least error wins.
GRID_CANDIDATES = 2
GOOD_LAYOUT_ERROR = 0.01
# When none of them sorts the pixels well, second-chance grids per axis
# (:func:`_rescue_pitches`): pitches within RESCUE_PITCH_SPREAD pixels or
# RESCUE_PITCH_SHARE of the other axis's pitch, half pitches, the comb's candidates; the
# RESCUE_CANDIDATES with most visible stripes are tried, each with a field a pixel
# smaller and larger.
RESCUE_PITCH_SPREAD = 3
RESCUE_PITCH_SHARE = 0.05
RESCUE_CANDIDATES = 4
# A second-chance layout replaces the best one only when its error is below this share
# of the best's (a pitch one pixel off with a seam one pixel wider can sort the pixels a
# few % better than the true grid while the other axis is still wrong).
RESCUE_GAIN = 0.75
# Largest share of a noise stripe's pixels taken to match two neighbours by chance (not
# junk) when counting the field content a layout drops (noise stripes of the tests:
# ~5 %); more than that inside the dropped area is field content.
NOISE_MATCH_MAX = 0.15
# A repair is trusted when the seam stripes are gone: at most this share of the damaged
# map's stripe pixels (:func:`_stripe_pixels`) is left in the repaired map (a missed
# seam line leaves 1 / (number of seam lines) or more; good repairs leave none) ...
MAX_RESIDUAL_STRIPES = 0.01
# ... and the fields fit together: confidence (field-border vs field-interior label
# changes, :func:`_seam_continuity`) at least this (good repairs 0.75-1, a wrong grid
# 0.1-0.3).
MIN_TRUSTED_CONFIDENCE = 0.5
# ... and no more field content is dropped as stripe than this share of the stripe pixels
# (a field one pixel too small drops a line per field: 10-50 %; a second-chance grid
# with the origin 2 px off, 3 %; maps restored on the robustness benchmark, at most
# 0.4 %).
MAX_CONTENT_LOST = 0.02
# A map left alone is doubtful when more than this share of its section looks like seam
# stripes of the mount id (clean generated maps: 0; damaged maps: 0.5-10 %).
MAX_UNDETECTED_STRIPES = 0.002
# Largest id accepted (ids index histograms).
MAX_ID = 65535


@dataclass
class MosaicRepair:
    """Result of :func:`repair_mosaic`.

    Attributes
    ----------
    repaired : (H, W) ndarray
        Repaired id map (same dtype as the input); the input values when nothing was
        detected.
    detected : bool
        Whether a seam pattern was found (and repaired).
    confidence : float
        0..1: how well the fields fit together after the repair (label changes across
        the seams of the repaired map compared with changes inside fields); 0 when
        nothing was detected.
    field_size : (fh, fw) or None
        Field size in label pixels.
    pitch : (py, px) or None
        Distance between the nominal corners of neighbouring fields in the damaged map.
    seam_width : (sh, sw) or None
        Nominal stripe height (rows) and width (columns), ``pitch - field_size``.
    origin : (y0, x0) or None
        Nominal corner of field (0, 0) in the damaged map (<= 0: cropped first field).
    seam_rows, seam_cols : list of (start, stop)
        Nominal stripes in the damaged map (rows ``start..stop-1``; columns likewise).
        Empty when nothing was detected on that axis.
    shifts : (nfy, nfx, 2) ndarray of int
        Shift ``(dy, dx)`` of every field from its nominal corner.
    field_origins : (nfy, nfx, 2) ndarray of int
        Top-left corner of every field in the damaged map (nominal + shift).
    seam_fill_ids : tuple of int
        Ids treated as stripe fill (given or detected); empty for noise fill.
    scores : dict
        Diagnostics: comb z-scores, share of visible stripes, junk rates, label-change
        rates across seams and inside fields, pixels filled from neighbours, layouts
        tried, stripe pixels before and after, run time.
    residual_stripes : float
        Share of the damaged map's stripe pixels (fill thin across and long along a
        line, inside the section) still in the repaired map: 0 when every stripe is gone.
    trusted : bool
        False when the result should not be used without a look: a repair whose fields
        do not fit together (``confidence`` < ``MIN_TRUSTED_CONFIDENCE``) or that leaves
        stripes behind (``residual_stripes`` > ``MAX_RESIDUAL_STRIPES``), or a map left
        alone although stripes are there (``MAX_UNDETECTED_STRIPES`` of the section).
    doubt : str
        Why it is not trusted (one phrase); empty when trusted.
    max_shift : int
        Largest field shift searched per axis.
    """

    repaired: np.ndarray
    detected: bool
    confidence: float = 0.0
    field_size: tuple[int, int] | None = None
    pitch: tuple[int, int] | None = None
    seam_width: tuple[int, int] | None = None
    origin: tuple[int, int] | None = None
    seam_rows: list[tuple[int, int]] = field(default_factory=list)
    seam_cols: list[tuple[int, int]] = field(default_factory=list)
    shifts: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 2), dtype=np.int64))
    field_origins: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 2), dtype=np.int64))
    seam_fill_ids: tuple[int, ...] = ()
    scores: dict[str, Any] = field(default_factory=dict)
    residual_stripes: float = 0.0
    trusted: bool = True
    doubt: str = ""
    max_shift: int = 3


def repair_mosaic(
    damaged: np.ndarray,
    *,
    seam_fill_ids: list[int] | tuple[int, ...] | None = None,
    ignore_index: int | None = None,
    max_shift: int = 3,
    min_pitch: int = MIN_PITCH,
) -> MosaicRepair:
    """Find the seam stripes and field shifts of a stitched QEMSCAN map and undo them.

    Parameters
    ----------
    damaged : (H', W') ndarray of integer ids (uint8 usually)
        Mineral-id map as read from the QEMSCAN export.
    seam_fill_ids : sequence of int, optional
        Ids the seam stripes are filled with (e.g. the white background class). Detected
        when omitted; an empty sequence means the stripes are noise.
    ignore_index : int, optional
        Id of unknown colours; such pixels are never trusted as field content.
    max_shift : int, default 3
        Largest field shift searched per axis, in pixels.
    min_pitch : int, default 16
        Smallest field pitch searched, in pixels.

    Returns
    -------
    MosaicRepair
        ``repaired`` has shape ``(H' - (nfy - 1) * sh, W' - (nfx - 1) * sw)`` when a
        pattern is found, otherwise it equals ``damaged`` and ``detected`` is False.

    Raises
    ------
    UserError
        If ``damaged`` is not a 2-D integer map or an option is out of range.

    Notes
    -----
    Assumes fields of one size on a regular grid, drawn in raster order (a later field
    overwrites an earlier one where they overlap), shifts of at most ``max_shift`` and
    at least 3 fields along an axis with seams (method and limits:
    :mod:`mineralseg.prep.mosaic`).
    Time and memory grow linearly with the map size (about ten bytes per pixel of
    temporaries; about 8 s for 4,700 x 4,700 on a 2-core AMD EPYC, more when the first
    layouts sort the pixels badly and others are tried: up to 35 layouts on the
    robustness benchmark).

    Examples
    --------
    >>> from scipy import ndimage
    >>> from mineralseg.synth.damage import apply_mosaic_damage
    >>> rng = np.random.default_rng(0)
    >>> seeds = np.zeros((300, 300), bool)
    >>> seeds[tuple(rng.integers(0, 300, (2, 600)))] = True  # grains of ~12 px
    >>> _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    >>> clean = (1 + (7 * iy + 3 * ix) % 6).astype(np.uint8)  # Voronoi cells of 6 minerals
    >>> damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=0,
    ...                                       field_size=60, seam_width=3)
    >>> rep = repair_mosaic(damaged)
    >>> rep.detected, rep.field_size, rep.seam_width, rep.seam_fill_ids
    (True, (60, 60), (3, 3), (0,))
    >>> bool((rep.repaired == clean).mean() > 0.995)
    True
    """
    t_start = time.perf_counter()
    d = _check_map(damaged)
    if int(max_shift) < 0 or int(min_pitch) < 4:
        raise UserError(f"repair_mosaic: need max_shift >= 0 and min_pitch >= 4, got {max_shift}, {min_pitch}")
    s = int(max_shift)
    scores: dict[str, Any] = {}
    pattern = _find_pattern(d, seam_fill_ids, ignore_index, s, int(min_pitch), scores)
    if isinstance(pattern, _NoPattern):
        share = _stripe_share(d, _mount_ids(d, ignore_index), ignore_index)
        scores.update(reason=pattern.reason, stripe_share=round(share, 4),
                      seconds=round(time.perf_counter() - t_start, 3))
        doubt = ""
        if share > MAX_UNDETECTED_STRIPES:
            doubt = (f"{100 * share:.1f} % of the section looks like seam stripes but no field grid fits them "
                     f"({pattern.reason})")
        return MosaicRepair(repaired=d.copy(), detected=False, scores=scores, trusted=not doubt, doubt=doubt)
    # every layout tried is repaired once (step 5 picks one)
    before = _stripe_pixels(d, pattern.fill, pattern.junk_ids)
    tried: dict[tuple[int, int], _Attempt] = {}

    def attempt(i: int, j: int) -> _Attempt:
        if (i, j) not in tried:
            tried[i, j] = _attempt(d, pattern, i, j, s, before)
        return tried[i, j]

    best = _search_layouts(pattern, attempt, s)
    gy, gx, dy, dx, repaired, n_filled, llr = best.gy, best.gx, best.dy, best.dx, best.repaired, best.filled, best.llr
    lost, left = best.lost, best.left
    residual = left / max(before, 1)
    continuity = _seam_continuity(repaired, gy, gx, pattern.junk_ids)
    scores.update(continuity)
    scores.update(
        layouts_tried=len(tried),
        layout_rank=[best.i, best.j],
        stripe_pixels=int(before),
        residual_stripes=round(float(residual), 4),
        content_lost=round(lost / max(before, 1), 4),
        filled_pixels=int(n_filled),
        junk_rate_stripes=round(float(llr["q"]), 4),
        junk_rate_fields=round(float(llr["r"]), 4),
        seconds=round(time.perf_counter() - t_start, 3),
    )
    doubt = _doubt(float(continuity["confidence"]), float(residual), lost / max(before, 1))
    h, w = d.shape
    return MosaicRepair(
        repaired=repaired,
        detected=True,
        confidence=float(continuity["confidence"]),
        field_size=(gy.size, gx.size),
        pitch=(gy.pitch if gy.detected else h, gx.pitch if gx.detected else w),
        seam_width=(gy.pitch - gy.size if gy.detected else 0, gx.pitch - gx.size if gx.detected else 0),
        origin=(gy.origin, gx.origin),
        seam_rows=gy.seams(),
        seam_cols=gx.seams(),
        shifts=np.stack([dy, dx], axis=-1),
        field_origins=_field_origins(gy, gx, dy, dx),
        seam_fill_ids=pattern.fill,
        scores=scores,
        residual_stripes=float(residual),
        trusted=not doubt,
        doubt=doubt,
        max_shift=s,
    )


def _search_layouts(pattern: _Pattern, attempt: Callable[[int, int], _Attempt], max_shift: int) -> _Attempt:
    """Step 5: the layout (row grid x column grid) that sorts the pixels best.

    ``attempt(i, j)`` repairs with ``pattern.rows[i]`` x ``pattern.cols[j]`` (cached);
    ``max_shift``: the largest shift searched.
    """

    def on_axis(axis: int, k: int, best: _Attempt) -> _Attempt:
        return attempt(k, best.j) if axis == 0 else attempt(best.i, k)

    def grids_of(axis: int) -> list[tuple[_Grid, Any]]:
        return pattern.rows if axis == 0 else pattern.cols

    def index_of(axis: int, g: _Grid, st: Any) -> int:
        grids = grids_of(axis)
        k = _index(g, grids)
        if k is None:
            grids.append((g, st))
            k = len(grids) - 1
        return k

    # the likeliest layout first; while it misclassifies pixels (a missed seam line
    # leaves stripes in the repaired map; a pitch too short or a field too small throws
    # field content away as stripe), the other row grids, then the other column grids
    best = attempt(0, 0)
    n_first = (len(pattern.rows), len(pattern.cols))
    for axis in (0, 1):
        for k in range(1, n_first[axis]):
            if best.error <= GOOD_LAYOUT_ERROR:
                break
            other = on_axis(axis, k, best)
            if other.error < best.error:
                best = other
    # still badly sorted: the second-chance grids (1-px stripes hidden under the shifts
    # can hide an axis's pitch), all of an axis given the other's best, rows again
    # after; the best of them replaces the layout only when it sorts the pixels clearly
    # better (RESCUE_GAIN)
    if best.error > GOOD_LAYOUT_ERROR:
        extra = pattern.rescue()
        pattern.rows += extra["rows"]
        pattern.cols += extra["cols"]
        for axis in (0, 1, 0):
            ks = range(n_first[axis], len(grids_of(axis)))
            if best.error <= GOOD_LAYOUT_ERROR or not ks:
                continue
            other = min((on_axis(axis, k, best) for k in ks), key=_layout_key)
            if other.error < RESCUE_GAIN * best.error:
                best = other
        # ... and the best grids with a field a pixel smaller or larger
        for axis in (0, 1):
            g, st = grids_of(axis)[best.i if axis == 0 else best.j]
            for size in (g.size - 1, g.size + 1) if g.detected else ():
                alt = _seamed_grid(g, g.pitch, size)
                if alt is None or best.error <= GOOD_LAYOUT_ERROR:
                    continue
                other = on_axis(axis, index_of(axis, alt, st), best)
                if other.error < RESCUE_GAIN * best.error:
                    best = other
    # each axis's pitch a pixel shorter and longer: with few fields a pitch a pixel off
    # sorts the pixels as well, made up for by shifts drifting field by field (possible
    # while the drift across the axis, fields - 1 pixels, fits in the shifts' range); of
    # layouts alike (the same GOOD_LAYOUT_ERROR band), the likeliest shifts win
    for axis in (0, 1):
        g, st = grids_of(axis)[best.i if axis == 0 else best.j]
        for pitch in (g.pitch - 1, g.pitch + 1) if g.detected and g.n - 1 <= 2 * max_shift else ():
            alt = _seamed_grid(g, pitch, g.size)
            if alt is None:
                continue
            other = on_axis(axis, index_of(axis, alt, st), best)
            if _layout_key(other) < _layout_key(best):
                best = other
    return best


@dataclass
class _Attempt:
    """One field layout repaired: shifts, repaired map and how well it sorts the pixels."""

    i: int  # index of the row grid and the column grid in the pattern
    j: int
    gy: _Grid
    gx: _Grid
    dy: np.ndarray
    dx: np.ndarray
    prior: float  # log-prior of the shifts (``shifts.SHIFT_PRIOR``): drifting shifts score low
    repaired: np.ndarray
    filled: int  # repaired pixels filled from neighbours
    llr: dict[str, Any]
    lost: int  # field content (non-junk, informative) no field covers: dropped as stripe
    left: int  # stripe pixels (:func:`_stripe_pixels`) left in the repaired map
    error: float  # (lost + left) per stripe pixel of the damaged map


def _layout_key(a: _Attempt) -> tuple[int, float]:
    """Order of layouts: error in GOOD_LAYOUT_ERROR bands, then the shifts' log-prior."""
    return int(a.error / GOOD_LAYOUT_ERROR), -a.prior


def _noise_stripes(d: np.ndarray, dropped: np.ndarray, fill: tuple[int, ...]) -> bool:
    """Whether the area a layout drops looks like noise stripes rather than fill-id stripes.

    No fill id: noise. Otherwise: fewer than half of the pixels inside the dropped area
    (away from every field's edge) have a fill id; when no pixel is inside (1-px
    stripes), fill.
    """
    if not fill:
        return True
    core = ndimage.binary_erosion(dropped, border_value=1)
    n_core = int(np.count_nonzero(core))
    return n_core > 0 and np.count_nonzero(core & np.isin(d, list(fill))) < 0.5 * n_core


def _attempt(d: np.ndarray, pattern: _Pattern, i: int, j: int, s: int, before: int) -> _Attempt:
    """Solve the shifts of row grid ``i`` x column grid ``j`` and reassemble the map."""
    (gy, st_y), (gx, st_x) = pattern.rows[i], pattern.cols[j]
    llr = _likelihoods(d, pattern.junk, [st for st in (st_y, st_x) if st], s)
    maps = _Maps(d=d, junk=pattern.junk, info=pattern.info, border_junk=pattern.border_junk)
    dy, dx = _solve_shifts(maps, gy, gx, s, llr)
    repaired, filled, covered = _reassemble(d, gy, gx, dy, dx)
    dropped = ~covered if pattern.info is None else ~covered & pattern.info
    n_kept = int(np.count_nonzero(dropped & ~pattern.junk))
    rate = 0.0
    if _noise_stripes(d, dropped, pattern.fill):
        # noise stripes: a few % of their pixels match two neighbours by chance and are
        # not junk; they are expected in what the repair drops, at the rate seen in the
        # dropped area (at most NOISE_MATCH_MAX: more is field content). Fill-id
        # stripes: every non-junk pixel dropped is field content.
        rate = min(n_kept / max(np.count_nonzero(dropped), 1), NOISE_MATCH_MAX)
    lost = int(max(0.0, n_kept - rate * np.count_nonzero(dropped)))
    left = _stripe_pixels(repaired, pattern.fill, pattern.junk_ids)
    log_prior = _shift_log_prior(s)
    prior = float(log_prior[dy + s].sum() + log_prior[dx + s].sum())
    return _Attempt(i=i, j=j, gy=gy, gx=gx, dy=dy, dx=dx, prior=prior, repaired=repaired, filled=filled, llr=llr,
                    lost=lost, left=left, error=(lost + left) / max(before, 1))


@dataclass
class _Pattern:
    """What :func:`_find_pattern` found: candidate field grids and the junk evidence."""

    rows: list[tuple[_Grid, dict[str, float] | None]]  # candidate row grids and their stripe stats,
    cols: list[tuple[_Grid, dict[str, float] | None]]  # likeliest first
    junk: np.ndarray  # (H, W) bool
    info: np.ndarray | None  # (H, W) bool, None: all informative
    fill: tuple[int, ...]
    junk_ids: set[int]
    border_junk: np.ndarray  # (H, W) bool: junk that is not a fill id (noise, ignored ids)
    # second-chance grids per axis ("rows", "cols"; :func:`_rescue_pitches`), made on demand
    rescue: Callable[[], dict[str, list[tuple[_Grid, dict[str, float]]]]]


@dataclass(frozen=True)
class _NoPattern:
    """What :func:`_find_pattern` found when there is no seam pattern: why not."""

    reason: str  # one phrase, e.g. "no visible seam stripes" (``MosaicRepair.scores["reason"]``)


def _find_pattern(d: np.ndarray, seam_fill_ids, ignore_index: int | None, s: int, min_pitch: int,
                  scores: dict[str, Any]) -> _Pattern | _NoPattern:
    """Steps 1-2: fill, junk, pitch and the field grid per axis, or why there is none.

    With the fill detected, the fill choices are looked at likeliest first until one
    shows visible seam stripes.
    """
    h, w = d.shape
    if max(h, w) // MIN_SEAMS < min_pitch:
        return _NoPattern("map too small for 3 fields")
    hdiff = d[:, 1:] != d[:, :-1]
    vdiff = d[1:, :] != d[:-1, :]
    extra = {int(ignore_index)} if ignore_index is not None else set()
    if seam_fill_ids is None:
        options = _detect_fill(d, hdiff, vdiff, extra, min_pitch)
    else:
        options = [_evidence(d, hdiff, vdiff, tuple(sorted({int(v) for v in seam_fill_ids})), extra, min_pitch)]
    del hdiff, vdiff
    scores["seam_fill_detected"] = seam_fill_ids is None
    reason: _NoPattern | None = None
    for k, ev in enumerate(options):
        found_scores: dict[str, Any] = scores if k == 0 else {}
        found = _pattern_of(d, ev, extra, s, min_pitch, found_scores)
        if isinstance(found, _Pattern):
            if k > 0:
                scores["fill_ids_first_choice"] = scores["fill_ids"]
                scores.update(found_scores)
            return found
        reason = reason or found
    return reason


def _pattern_of(d: np.ndarray, ev: Any, extra: set[int], s: int, min_pitch: int,
                scores: dict[str, Any]) -> _Pattern | _NoPattern:
    """The candidate field grids of one choice of fill (:class:`_Evidence`), or why there are none."""
    h, w = d.shape
    scores["fill_ids"] = list(ev.fill)
    fill, junk, info, candidates = ev.fill, ev.junk, ev.info, ev.combs
    junk_ids = set(fill) | extra
    info_t = None if info is None else info.T
    live = {k: [c for c in cs if c.seed_z >= COMB_MIN_Z] for k, cs in candidates.items()}
    for name, cs in candidates.items():
        scores[f"comb_z_{name}"] = round(float(cs[0].z), 2) if cs else 0.0
    if not any(live.values()):
        return _NoPattern("no periodic pattern in the stripe evidence")
    # one axis shows seams clearly: the map is a mosaic, and the other axis's seams (1-px
    # stripes mostly hidden under the shifts) need less to be looked at (visible stripes
    # confirm)
    for k, other in (("rows", "cols"), ("cols", "rows")):
        if not live[k] and any(c.seed_z >= COMB_SURE_Z for c in live[other]):
            live[k] = [c for c in candidates[k] if c.seed_z >= COMB_MIN_Z_OTHER]

    # visible stripes -> field size, pitch and origin per axis; of several candidate
    # pitches the one whose teeth show the most visible stripes (count x share) wins:
    # with few fields the comb alone is unsure
    # stripes are looked for in lines between the other axis's seams (its best comb), so
    # that each line crosses about one row (column) of fields
    finest = {k: cs[0] if cs else None for k, cs in live.items()}
    lines = {
        "rows": _lines_between(_bands(finest["cols"], w, 1) if finest["cols"] else None, w),
        "cols": _lines_between(_bands(finest["rows"], h, 1) if finest["rows"] else None, h),
    }
    arrays = {"rows": (junk.T, info_t, h), "cols": (junk, info, w)}
    grids: dict[str, list[tuple[_Grid, dict[str, float]]]] = {}
    for name in ("rows", "cols"):
        tried = [_axis_grid(c, *arrays[name], lines[name], s) for c in live[name]]
        grids[name] = _ranked_grids([(c, t) for c, t in zip(live[name], tried)], GRID_CANDIDATES)
        if grids[name]:  # the field size is the least sure: a pixel more or less
            g, st = grids[name][0]
            for size in (g.size - 1, g.size + 1):
                _add_grid(grids[name], _make_grid(g.length, g.pitch, size, g.origin), st)
        if grids[name]:
            scores[f"visible_seams_{name}"] = round(grids[name][0][1]["visible_share"], 3)
    if not grids["rows"] and not grids["cols"]:
        return _NoPattern("no visible seam stripes")
    first = {name: list(gs) for name, gs in grids.items()}  # the search appends to ``grids``

    def rescue() -> dict[str, list[tuple[_Grid, dict[str, float]]]]:
        """Second-chance grids per axis (made only when the grids above sort the pixels badly)."""
        out = {}
        for name, other in (("rows", "cols"), ("cols", "rows")):
            pitches = _rescue_pitches(first[name], first[other], candidates[name], min_pitch)
            combs = _combs_at(*ev.profiles[name], pitches, min_pitch=min_pitch)
            tried = [_axis_grid(c, *arrays[name], lines[name], s, fixed_pitch=True) for c in combs]
            out[name] = []
            for g, st in _ranked_grids(list(zip(combs, tried)), RESCUE_CANDIDATES):
                for size in (g.size, g.size - 1, g.size + 1):  # each with a field a pixel smaller, larger
                    alt = _seamed_grid(g, g.pitch, size)
                    if alt is not None and not _known(alt, first[name]):
                        _add_grid(out[name], alt, st)
        return out

    return _Pattern(rows=grids["rows"] or [(_Grid.whole(h), None)], cols=grids["cols"] or [(_Grid.whole(w), None)],
                    rescue=rescue,
                    junk=junk, info=info, fill=fill, junk_ids=junk_ids,
                    border_junk=junk & ~np.isin(d, list(fill)) if fill else junk)


def _index(g: _Grid, grids: list[tuple[_Grid, Any]]) -> int | None:
    """Index of a grid with the same pitch, size and origin in ``grids`` (None: not there)."""
    return next((k for k, (o, _) in enumerate(grids) if (g.pitch, g.size, g.origin) == (o.pitch, o.size, o.origin)),
                None)


def _seamed_grid(g: _Grid, pitch: int, size: int) -> _Grid | None:
    """``g`` with another pitch or field size, seams at least a pixel wide (None: no such grid)."""
    alt = _make_grid(g.length, pitch, size, g.origin)
    return alt if alt is not None and alt.size < alt.pitch else None


def _known(g: _Grid, grids: list[tuple[_Grid, Any]]) -> bool:
    return _index(g, grids) is not None


def _add_grid(grids: list[tuple[_Grid, Any]], g: _Grid | None, st: Any) -> None:
    if g is not None and not _known(g, grids):
        grids.append((g, st))


def _ranked_grids(tried: list[tuple[Any, tuple[_Grid | None, dict[str, float]]]],
                  keep: int) -> list[tuple[_Grid, dict[str, float]]]:
    """Distinct grids fitted to combs, best first: field 0 at the map's corner, then most visible stripes.

    (``ORIGIN_AT_CORNER_P``: a pitch twice the true one, fitted to every other seam,
    starts a field off the corner.) ``tried``: (comb, (grid or None, stripe stats)).
    """
    ranked = sorted(((t[0].origin == 0, t[1]["visible"] * t[1]["visible_share"], c.z, -i, t)
                     for i, (c, t) in enumerate(tried) if t[0] is not None), reverse=True)
    out: list[tuple[_Grid, dict[str, float]]] = []
    for *_, (g, st) in ranked:
        _add_grid(out, g, st)
    return out[:keep]


def _rescue_pitches(own: list[tuple[_Grid, Any]], other: list[tuple[_Grid, Any]], combs: list[Any],
                    min_pitch: int) -> list[int]:
    """Pitches to look at again on an axis whose grids may be wrong.

    With 1-px stripes mostly hidden under the field shifts an axis can show too few
    visible stripes, or fit every other seam (twice the pitch). Tried: pitches near the
    other axis's (QEMSCAN fields are frames of about one size on both axes), half of
    each pitch found, and the comb's candidates; the layout error judges them.
    """
    pitches: set[int] = set()
    if other:
        p = other[0][0].pitch
        spread = max(RESCUE_PITCH_SPREAD, int(round(RESCUE_PITCH_SHARE * p)))
        pitches.update(range(p - spread, p + spread + 1))
    for g, _ in own:
        pitches.update(range(g.pitch // 2 - 1, g.pitch // 2 + 2))
    pitches.update(c.period for c in combs)
    return sorted(p for p in pitches if p >= min_pitch)


def _check_map(damaged: np.ndarray) -> np.ndarray:
    d = np.asarray(damaged)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.integer):
        raise UserError(f"repair_mosaic: expected a 2-D integer id map, got shape {d.shape} dtype {d.dtype}")
    if min(d.shape) < 2:
        raise UserError(f"repair_mosaic: map of shape {d.shape} is too small")
    if d.min() < 0 or d.max() > MAX_ID:
        raise UserError(f"repair_mosaic: ids must be in 0..{MAX_ID}, got {d.min()}..{d.max()}")
    return d


def _stripe_pixels(d: np.ndarray, fill: tuple[int, ...], junk_ids: set[int]) -> int:
    """Pixels that look like seam stripe: thin across a line of the map and long along it.

    With fill ids: fill pixels inside the section (:func:`_informative`) with a label
    change within ``FILL_THIN`` pixels on both sides across the line and none within
    ``FILL_LONG`` along it. Without (noise stripes): junk pixels (:func:`_junk_map`)
    in a run of ``FILL_LONG`` junk pixels along a line. Both axes are counted. An
    undetected map is checked with the mount id as fill (:func:`_mount_ids`): clean
    maps have no thin, long runs of mount inside the section.
    """
    hdiff = d[:, 1:] != d[:, :-1]
    vdiff = d[1:, :] != d[:-1, :]
    total = 0
    if fill:
        cand = np.isin(d, list(fill)) & _informative(d, fill, EXTERIOR_SIDE)
        for c, across, along in ((cand, hdiff, vdiff), (cand.T, vdiff.T, hdiff.T)):
            lines = np.flatnonzero(c.any(axis=1))
            if lines.size:
                total += int(np.count_nonzero(_stripe_like(across, along, lines) & c[lines]))
        return total
    junk = _junk_map(d, hdiff, vdiff, junk_ids).view(np.uint8)
    for axis in (0, 1):
        runs = ndimage.uniform_filter1d(junk, FILL_LONG, axis=axis, mode="constant") >= 1
        total += int(np.count_nonzero(ndimage.maximum_filter1d(runs.view(np.uint8), FILL_LONG, axis=axis)
                                      & junk))
    return total


def _stripe_share(d: np.ndarray, fill: tuple[int, ...], ignore_index: int | None) -> float:
    """Stripe pixels (:func:`_stripe_pixels`) per pixel of the section (non-fill pixels)."""
    junk_ids = set(fill) | ({int(ignore_index)} if ignore_index is not None else set())
    content = np.count_nonzero(~np.isin(d, list(fill))) if fill else d.size
    return _stripe_pixels(d, tuple(fill), junk_ids) / max(content, 1)


def _mount_ids(d: np.ndarray, ignore_index: int | None) -> tuple[int, ...]:
    """The commonest id on the map's border (the mount, the usual stripe fill), if any."""
    border = np.concatenate([d[0], d[-1], d[:, 0], d[:, -1]])
    if ignore_index is not None:
        border = border[border != ignore_index]
    return (int(np.bincount(border).argmax()),) if border.size else ()


def _doubt(confidence: float, residual: float, lost: float) -> str:
    """Why a repair is not trusted (empty when it is)."""
    if residual > MAX_RESIDUAL_STRIPES:
        return f"{100 * residual:.0f} % of the seam stripe pixels are left after the repair"
    if lost > MAX_CONTENT_LOST:
        return (f"the repair drops field content as stripe ({100 * lost:.0f} % as many pixels as the "
                "stripes have): the field size or pitch is likely wrong")
    if confidence < MIN_TRUSTED_CONFIDENCE:
        return f"the repaired fields do not fit together (confidence {confidence:.2f})"
    return ""
