"""Step 2 of the mosaic repair: visible stripes and the field grid along one axis.

Near the comb's teeth, the columns where most informative pixels are junk form the
visible stripes; field size, pitch and origin are the likeliest given the field starts
and ends they imply (:func:`_fit_grid`). :class:`_Grid` is the layout along one axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mineralseg.prep.mosaic.comb import MIN_SEAMS, _Comb

# A column is part of a visible stripe when more than this share of its informative
# pixels is junk (fill: ~100 %, noise: ~85 %, clean map content: ~1 %).
STRIPE_JUNK_SHARE = 0.5
# An axis is confirmed when at least this share of the informative seams shows a visible
# stripe (with 1-pixel stripes and +-2 shifts about 60 % of the seams are visible; on
# generated samples 0.5-1 for seams, at most 0.4 for the edges of a clean rectangular
# section taken for two seams).
MIN_VISIBLE_SEAMS = 0.45
# Log-probabilities of shift magnitudes 0, 1, 2, 3 (and beyond) when fitting the field
# grid to visible stripes: "mostly 0 or +-1", robust to a few wrong stripe positions.
FIT_SHIFT_LOGP = np.log([0.5, 0.19, 0.06, 0.02, 1e-3])
# Field sizes tried around the commonest width between two visible stripes (or pitch -
# stripe width when no field shows both of its sides).
FIT_SIZE_RANGE = 2
# Probability that field 0 starts exactly at the map's corner (an exported mosaic starts
# with a whole field); other origins share the rest. A global offset of all fields and
# the same shift of every field cannot be told apart otherwise, and with only 3-4 fields
# across the section a pitch one pixel too long plus a drifting shift per field explains
# the visible stripes with smaller shifts than the true pitch (0.9 here let such grids
# win on 2 of 308 generated samples; an origin off the corner then needs ~11 nats).
ORIGIN_AT_CORNER_P = 0.999


@dataclass
class _Grid:
    """Field layout along one axis of the damaged map."""

    length: int  # damaged map length along the axis
    pitch: int
    size: int  # field size
    origin: int  # nominal start of field 0 (in (-size, pitch - size])
    detected: bool

    @property
    def n(self) -> int:
        return max(1, -(-(self.length - self.origin) // self.pitch)) if self.detected else 1

    @property
    def nominal(self) -> np.ndarray:
        return self.origin + np.arange(self.n) * self.pitch

    @property
    def widths(self) -> np.ndarray:
        """Content size of each field (the last one may be partial)."""
        w = np.full(self.n, self.size)
        w[-1] = min(self.size, self.length - int(self.nominal[-1]))
        return w

    @property
    def out_offset(self) -> int:
        """Output coordinate of field 0's local pixel 0 (negative for a cropped field)."""
        return min(self.origin, 0)

    def out_start(self, k: int) -> int:
        """Output coordinate of field ``k``'s local pixel 0 on the clean grid."""
        return k * self.size + self.out_offset

    @property
    def out_length(self) -> int:
        return (self.n - 1) * self.size + self.out_offset + int(self.widths[-1])

    def seams(self) -> list[tuple[int, int]]:
        if not self.detected:
            return []
        ends = self.nominal[:-1] + self.size
        return [(int(a), int(b)) for a, b in zip(ends, self.nominal[1:])]

    @classmethod
    def whole(cls, length: int) -> _Grid:
        return cls(length=length, pitch=length + 1, size=length, origin=0, detected=False)


def _field_origins(gy: _Grid, gx: _Grid, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """(nfy, nfx, 2) top-left corner of every field in the damaged map (nominal + shift)."""
    return np.stack([gy.nominal[:, None] + dy, gx.nominal[None, :] + dx], axis=-1)


def _axis_grid(comb: _Comb, junk: np.ndarray, info: np.ndarray | None, length: int,
               lines: list[tuple[int, int]], s: int, *,
               fixed_pitch: bool = False) -> tuple[_Grid | None, dict[str, float]]:
    """Visible stripes near the comb's teeth (axis 1 of ``junk``) and the grid they fit.

    With ``fixed_pitch`` the grid has the comb's pitch and any share of visible seams
    will do (a pitch proposed from elsewhere; the repair's layout error judges it).
    """
    found, stats = _stripe_runs(junk, info, _bands(comb, length, s + 2), lines)
    if stats["visible"] < MIN_SEAMS or (stats["visible_share"] < MIN_VISIBLE_SEAMS and not fixed_pitch):
        return None, stats
    return _fit_grid(found, comb, length, s, fixed_pitch=fixed_pitch), stats


def _bands(c: _Comb, length: int, margin: int) -> np.ndarray:
    """(n_bands, 2) [start, stop) column windows around each comb tooth."""
    lo0 = c.lo % c.period
    width = c.hi - c.lo
    starts = lo0 + np.arange(-1, length // c.period + 2) * c.period
    bands = np.stack([starts - margin, starts + width + 2 + margin], axis=1)
    keep = (bands[:, 1] > 0) & (bands[:, 0] < length)
    bands = bands[keep]
    return np.clip(bands, 0, length)


def _lines_between(bands: np.ndarray | None, length: int) -> list[tuple[int, int]]:
    """Ranges of rows between the comb's bumps (inside field rows)."""
    if bands is None or len(bands) == 0:
        return [(0, length)]
    edges = [0, *np.asarray(bands).ravel().tolist(), length]
    out = []
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a >= 2:
            out.append((int(a), int(b)))
    return out or [(0, length)]


def _stripe_runs(junk: np.ndarray, info: np.ndarray | None, bands: np.ndarray,
                 lines: list[tuple[int, int]]) -> tuple[list[list[tuple[int, int] | None]], dict[str, float]]:
    """Visible stripe ``[start, stop)`` per line and band (None: no visible stripe).

    Columns count as stripe where more than half of their informative pixels in the
    line are junk; the run of such columns holding most junk is the stripe, unless it
    touches the band's edge. Also returns counts for the junk rates in and out of stripes.
    """
    found: list[list[tuple[int, int] | None]] = []
    n_inf = n_vis = 0
    junk_in = junk_tot = inf_in = inf_tot = 0.0
    for r0, r1 in lines:
        jb = junk[r0:r1]
        ib = np.ones_like(jb) if info is None else info[r0:r1]
        n_j = np.count_nonzero(jb & ib, axis=0)
        n_i = np.count_nonzero(ib, axis=0)
        need = max(3, (r1 - r0) // 4)
        row = []
        for a, b in bands:
            ok = n_i[a:b] >= need
            if ok.sum() < (b - a) / 2:
                row.append(None)
                continue
            n_inf += 1
            frac = np.where(ok, n_j[a:b] / np.maximum(n_i[a:b], 1), 0.0)
            stripe = frac > STRIPE_JUNK_SHARE
            run = _longest_run(stripe, n_j[a:b])
            junk_tot += n_j[a:b][ok].sum()
            inf_tot += n_i[a:b][ok].sum()
            if run is None or run[0] == 0 or run[1] == b - a:
                row.append(None)
                continue
            n_vis += 1
            junk_in += n_j[a + run[0]:a + run[1]].sum()
            inf_in += n_i[a + run[0]:a + run[1]].sum()
            row.append((int(a + run[0]), int(a + run[1])))
        found.append(row)
    stats = {
        "visible": n_vis,
        "informative": n_inf,
        "visible_share": n_vis / max(n_inf, 1),
        "junk_in": junk_in, "info_in": inf_in,
        "junk_out": junk_tot - junk_in, "info_out": inf_tot - inf_in,
    }
    return found, stats


def _longest_run(mask: np.ndarray, weight: np.ndarray) -> tuple[int, int] | None:
    """[start, stop) of the run of True with the largest total weight."""
    if not mask.any():
        return None
    m = np.concatenate([[False], mask, [False]])
    starts = np.flatnonzero(~m[:-1] & m[1:])
    stops = np.flatnonzero(m[:-1] & ~m[1:])
    csum = np.concatenate([[0], np.cumsum(weight)])
    best = int(np.argmax(csum[stops] - csum[starts]))
    return int(starts[best]), int(stops[best])


def _fit_grid(found: list[list[tuple[int, int] | None]], c: _Comb, length: int, s: int, *,
              fixed_pitch: bool = False) -> _Grid | None:
    """Field grid of one axis from its visible stripes (None if they do not fit one).

    A visible stripe ``[e, t)`` after field m says that field m ends at e and field m+1
    starts at t: ``e = origin + m * pitch + size + shift_m`` and ``t = origin + (m + 1) *
    pitch + shift_m+1``. Size, pitch and origin maximise the likelihood of the implied
    shifts (``FIT_SHIFT_LOGP``) plus the prior of an origin at the map's corner. The
    size is searched around the mode of the widths between two visible stripes and
    around the comb's pitch minus the commonest stripe width. With ``fixed_pitch`` the
    pitch is the comb's, and the seams are at least a pixel wide.
    """
    widths, gaps, idx, pos, is_end = [], [], [], [], []
    for row in found:
        for m, run in enumerate(row):
            if run is None:
                continue
            gaps.append(run[1] - run[0])
            if m > 0 and row[m - 1] is not None and run[0] > row[m - 1][1]:
                widths.append(run[0] - row[m - 1][1])
            idx += [m + 1, m]
            pos += [run[1], run[0]]
            is_end += [False, True]
    if not gaps:
        return None
    idx, pos, is_end = np.asarray(idx), np.asarray(pos), np.asarray(is_end)
    span = max(1, int(idx.max() - idx.min()))
    dp = max(2, int(np.ceil((c.hi - c.lo + 2 * s + 2) / span)) + 1)
    # a field with both sides visible shows its size, give or take the shifts of the
    # fields around (a visible stripe is widened where a field moved away from it)
    widths_arr = np.asarray(widths, dtype=np.int64)
    # (with few stripes that mode may come from one stray stripe: the sizes around the
    # comb's pitch minus the commonest stripe width are tried too)
    size1 = c.period - _mode(np.asarray(gaps))
    size0 = _mode(widths_arr) if widths else size1
    sizes = sorted({v for c0 in (size0, size1) for v in range(c0 - FIT_SIZE_RANGE, c0 + FIT_SIZE_RANGE + 1)
                    if v >= 2 * s + 2})
    best = None
    for size in sizes:
        starts = pos - np.where(is_end, size, 0)
        pitches = (range(c.period, c.period + 1) if fixed_pitch
                   else range(max(size, c.period - dp), c.period + dp + 1))
        if fixed_pitch and c.period <= size:  # a seam of no width shows no stripe
            continue
        if len(pitches) == 0:
            continue
        loglik, pitch, x0 = _pitch_origin(idx, starts, pitches, c.period, s)
        loglik += float(FIT_SHIFT_LOGP[np.minimum(np.abs(widths_arr - size), FIT_SHIFT_LOGP.size - 1)].sum())
        key = (loglik, -abs(size - size0))
        if best is None or key > best[0]:
            best = (key, size, pitch, x0)
    if best is None:
        return None
    _, size, pitch, x0 = best
    return _make_grid(length, pitch, size, x0)


def _pitch_origin(idx: np.ndarray, pos: np.ndarray, pitches: range, expected: int,
                  s: int) -> tuple[float, int, int]:
    """Most likely (pitch, origin) for field ``idx`` starting at ``pos`` = origin + idx * pitch + shift.

    Returns ``(log-likelihood, pitch, origin)``. Likelihood: ``FIT_SHIFT_LOGP`` of the
    implied shifts plus the prior of an origin at the map's corner
    (``ORIGIN_AT_CORNER_P``); ties go to the pitch nearest ``expected``.
    """
    best = None
    for p in pitches:
        res = pos - idx * p
        centre = _mode(res)
        x0s = np.arange(centre - 2 * s - 2, centre + 2 * s + 3)
        dev = np.minimum(np.abs(res[None, :] - x0s[:, None]), FIT_SHIFT_LOGP.size - 1)
        loglik = FIT_SHIFT_LOGP[dev].sum(axis=1)
        loglik += np.where(x0s % p == 0, np.log(ORIGIN_AT_CORNER_P), np.log((1 - ORIGIN_AT_CORNER_P) / p))
        k = int(np.argmax(loglik))
        key = (float(loglik[k]), -abs(p - expected))
        if best is None or key > best[0]:
            best = (key, p, int(x0s[k]))
    return best[0][0], best[1], best[2]


def _make_grid(length: int, pitch: int, size: int, x0: int) -> _Grid | None:
    """Grid with the origin brought into (-size, pitch - size]; None with < 3 fields."""
    if size < 1 or pitch < size:
        return None
    while x0 > pitch - size:
        x0 -= pitch
    while x0 <= -size:
        x0 += pitch
    grid = _Grid(length=length, pitch=int(pitch), size=int(size), origin=int(x0), detected=True)
    return grid if grid.n >= MIN_SEAMS + 1 else None


def _mode(values: np.ndarray) -> int:
    values = np.asarray(values, dtype=np.int64)
    lo = int(values.min())
    return int(np.argmax(np.bincount(values - lo))) + lo
