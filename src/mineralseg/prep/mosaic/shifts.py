"""Step 3 of the mosaic repair: every field's shift.

Seam hypotheses are scored with log-likelihood ratios (:func:`_likelihoods`,
:func:`_seam_scores`, :func:`_end_scores`); given one axis's shifts, the other axis's
shifts of all fields are solved together by max-sum belief propagation
(:func:`_solve_shifts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mineralseg.prep.mosaic.evidence import STATS_MAX_LINES
from mineralseg.prep.mosaic.grid import _Grid

# Prior of a field shift's magnitude 0, 1, 2, 3 (each further pixel: a third as likely):
# shifts are "mostly 0 or +-1". Decides where the data cannot (a field border hidden
# under a later field, fields outside the sample).
SHIFT_PRIOR = (0.5, 0.19, 0.06, 0.02)
# Pixel evidence counts in full (an earlier version divided it by the label run length,
# up to 8: the shift prior then outweighed the few content rows of a field at the
# section's edge, and such fields came out 1-2 px off on 1-px seams).
# Limits on the estimated junk rates in stripes (q) and in field content (r): keeps the
# log-likelihood ratios finite.
Q_RANGE = (0.5, 0.98)
R_RANGE = (0.002, 0.3)
# Smallest probability of a label change used in the pair likelihoods.
P_MIN = 1e-3
# Rounds of alternating row / column shift searches (stops early when nothing changes).
SHIFT_ROUNDS = 4
# Belief propagation over the grid of fields: iterations and message damping.
BP_ITERATIONS = 30
BP_DAMPING = 0.5


@dataclass
class _Llr:
    """Log-likelihood ratios used to score seam hypotheses."""

    junk: float  # a junk pixel claimed as stripe (vs claimed as content)
    clean: float  # a non-junk pixel claimed as stripe
    same: np.ndarray  # (d,) a pair at clean distance d that agrees (vs unrelated pixels)
    diff: np.ndarray  # (d,) a pair at clean distance d that differs


@dataclass(frozen=True)
class _Maps:
    """The damaged map and its pixel masks, as the shift search reads them.

    Positions along axis 1 are searched; :attr:`T` gives the same maps for axis 0.
    """

    d: np.ndarray  # (H, W) ids
    junk: np.ndarray  # (H, W) bool: junk pixels (fill flanked by content, noise, ignored ids)
    info: np.ndarray | None  # (H, W) bool: informative pixels; None: all
    border_junk: np.ndarray  # (H, W) bool: pixels not compared across a seam (junk that is not a fill id)

    @property
    def T(self) -> _Maps:
        """The transposed maps (views)."""
        return _Maps(d=self.d.T, junk=self.junk.T, info=None if self.info is None else self.info.T,
                     border_junk=self.border_junk.T)


@dataclass(frozen=True)
class _SeamHypotheses:
    """Every (left field state u, right field state v) of one seam, in window columns.

    Each array is (n_hyp,) with ``n_hyp = (2s+1)**2``, hypotheses in [u, v] raster order.
    """

    la: np.ndarray  # end of the left field
    xs: np.ndarray  # start of the right field
    m: np.ndarray  # min(la, xs): the left field shows columns before it
    ca: np.ndarray  # last visible column of the left field
    dist: np.ndarray  # clean distance between column ca and column xs

    @classmethod
    def of_seam(cls, s: int, sw: int) -> _SeamHypotheses:
        """Hypotheses for shifts -s..s of both fields and a nominal stripe ``sw`` wide.

        The window starts ``s + 2`` columns before the left field's nominal end.
        """
        nh = 2 * s + 1
        uu, vv = np.meshgrid(np.arange(nh), np.arange(nh), indexing="ij")
        la = (uu + 2).ravel()
        xs = (sw + 2 + vv).ravel()
        m = np.minimum(la, xs)
        ca = m - 1
        return cls(la=la, xs=xs, m=m, ca=ca, dist=la - ca)


def _likelihoods(d: np.ndarray, junk: np.ndarray, rates: list[dict[str, float]], s: int) -> dict[str, Any]:
    """Junk rates in stripes / fields and pair statistics of the map, as LLR tables."""
    q = sum(st["junk_in"] for st in rates) / max(sum(st["info_in"] for st in rates), 1)
    r = sum(st["junk_out"] for st in rates) / max(sum(st["info_out"] for st in rates), 1)
    q = float(np.clip(q, *Q_RANGE))
    r = float(np.clip(r, *R_RANGE))
    lj1, lj0 = np.log(q / r), np.log((1 - q) / (1 - r))
    step = max(1, min(d.shape) // STATS_MAX_LINES)
    sub, jsub = d[::step, ::step], junk[::step, ::step]
    good = ~jsub
    vals = sub[good]
    freq = np.bincount(vals.ravel(), minlength=256) / max(vals.size, 1)
    p_inf = float(np.clip(1.0 - np.sum(freq ** 2), 0.05, 0.999))
    out: dict[str, Any] = {"q": q, "r": r}
    dmax = 2 * s + 3
    for name, arr, jarr in (("cols", d, junk), ("rows", d.T, junk.T)):
        rows = arr[:: max(1, arr.shape[0] // STATS_MAX_LINES)]
        jrows = jarr[:: max(1, arr.shape[0] // STATS_MAX_LINES)]
        p = np.empty(dmax + 1)
        p[0] = P_MIN
        for dist in range(1, dmax + 1):
            ok = ~jrows[:, :-dist] & ~jrows[:, dist:]
            n = np.count_nonzero(ok)
            p[dist] = np.count_nonzero((rows[:, :-dist] != rows[:, dist:]) & ok) / n if n else p_inf
        p = np.maximum.accumulate(np.clip(p, P_MIN, p_inf - P_MIN))
        out[name] = _Llr(junk=float(lj1), clean=float(lj0),
                         same=np.log((1 - p) / (1 - p_inf)), diff=np.log(p / p_inf))
    out["p1"] = float(p[1])
    out["p_inf"] = p_inf
    return out


def _solve_shifts(maps: _Maps, gy: _Grid, gx: _Grid, s: int, llr: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Shifts (dy, dx), each (nfy, nfx) in [-s, s], alternating between the two axes.

    First each column of fields gets its row shifts on its own (Viterbi). Then, given
    one axis's shifts, the other axis's shifts of all fields are chosen together on the
    grid of fields (max-sum belief propagation): seams along the axis score pairs of
    positions, and the borders that meet across the other seams score relative
    offsets. Rounds alternate until nothing changes.
    """
    maps_t = maps.T
    unary, pair = _axis_potentials(maps_t, gy, gx, s, None, llr["rows"])
    dy = _max_sum(unary, pair, None).T - s
    dx = None
    for _ in range(SHIFT_ROUNDS):
        # column shifts: seams between columns of fields + borders across row seams
        unary, pair = _axis_potentials(maps, gx, gy, s, dy, llr["cols"])
        across = _cross_pairs(_alignment(maps_t, gy, gx, s, dy.T, llr["rows"]), s)  # (nfx, nfy-1, k, k)
        dx_new = _max_sum(unary, pair, across.transpose(1, 0, 2, 3)) - s
        # row shifts likewise
        unary, pair = _axis_potentials(maps_t, gy, gx, s, dx_new.T, llr["rows"])
        across = _cross_pairs(_alignment(maps, gx, gy, s, dx_new, llr["cols"]), s)  # (nfy, nfx-1, k, k)
        dy_new = _max_sum(unary, pair, across.transpose(1, 0, 2, 3)).T - s
        done = dx is not None and np.array_equal(dx_new, dx) and np.array_equal(dy_new, dy)
        dx, dy = dx_new, dy_new
        if done:
            break
    return dy, dx


def _shift_log_prior(s: int) -> np.ndarray:
    """(2s+1,) log-prior of shifts -s..s."""
    mag = np.abs(np.arange(-s, s + 1))
    table = list(SHIFT_PRIOR) + [SHIFT_PRIOR[-1] / 3.0 ** k for k in range(1, s + 1)]
    return np.log(np.asarray(table)[mag])


def _line_rows(go: _Grid, i: int, s: int, h: int) -> np.ndarray:
    """Rows of field line ``i`` that every field of the line covers whatever its shift."""
    r0 = max(0, int(go.nominal[i]) + s)
    r1 = min(h, int(go.nominal[i] + go.widths[i]) - s)
    return np.arange(r0, max(r0, r1))


def _alignment(maps: _Maps, ga: _Grid, go: _Grid, s: int, along: np.ndarray, llr: _Llr) -> np.ndarray:
    """(go.n, ga.n - 1, 4s+1) LLR of the two borders meeting at each seam along axis 1.

    For fields at positions ``nominal + along`` (axis 1), compares the last visible
    column of the left field with the first column of the right one, the right one
    offset along axis 0 by -2s..2s (pixels of ``maps.border_junk`` are not compared).
    """
    d, junk = maps.d, maps.border_junk
    h, w = d.shape
    offs = np.arange(-2 * s, 2 * s + 1)
    out = np.zeros((go.n, max(ga.n - 1, 0), offs.size))
    if ga.n < 2:
        return out
    xpos = ga.nominal[None, :] + along
    la = xpos[:, :-1] + ga.size
    xr = xpos[:, 1:]
    ca = np.minimum(la, xr) - 1
    dist = np.clip(la - ca, 1, llr.same.size - 1)
    for i in range(go.n):
        rows = _line_rows(go, i, s, h)
        if rows.size == 0:
            continue
        cvalid = (ca[i] >= 0) & (xr[i] < w)
        cac, xrc = np.clip(ca[i], 0, w - 1), np.clip(xr[i], 0, w - 1)
        a = d[rows[:, None, None], cac[None, None, :]]
        ga_ = ~junk[rows[:, None, None], cac[None, None, :]]
        rr = rows[:, None] + offs[None, :]
        rvalid = (rr >= 0) & (rr < h)
        rr = np.clip(rr, 0, h - 1)
        b = d[rr[:, :, None], xrc[None, None, :]]
        gb = ~junk[rr[:, :, None], xrc[None, None, :]]
        ok = ga_ & gb & rvalid[:, :, None] & cvalid[None, None, :]
        val = np.where(a == b, llr.same[dist[i]][None, None, :], llr.diff[dist[i]][None, None, :])
        out[i] = np.where(ok, val, 0.0).sum(axis=0).T
    return out


def _axis_potentials(maps: _Maps, ga: _Grid, go: _Grid, s: int, other_shifts: np.ndarray | None,
                     llr: _Llr) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the candidate positions along axis 1 of ``maps.d`` for every field.

    Returns ``unary`` (go.n, ga.n, 2s+1): shift prior plus, for the first and last field
    of each line, the map's ends; ``pair`` (go.n, ga.n - 1, 2s+1, 2s+1): the seam between
    fields f and f+1 of a line for [state of f, state of f+1]; states are shifts -s..s
    from the nominal position. Seams are scored with log-likelihood ratios
    (:mod:`mineralseg.prep.mosaic`, step 3). ``other_shifts`` (go.n, ga.n) are the known shifts along axis 0, used to
    align the two borders that meet across a seam; when None the best alignment within
    +-2s is taken.
    """
    h = maps.d.shape[0]
    nh = 2 * s + 1
    nominal, widths = ga.nominal, ga.widths
    unary = np.broadcast_to(_shift_log_prior(s), (go.n, ga.n, nh)).copy()
    pair = np.zeros((go.n, max(ga.n - 1, 0), nh, nh))
    # hypothesis grid for one seam: left field state u, right field state v
    sw = ga.pitch - ga.size if ga.detected else 0
    wn = sw + 2 * s + 4
    hyp = _SeamHypotheses.of_seam(s, sw)
    for i in range(go.n):
        rows = _line_rows(go, i, s, h)
        if rows.size == 0:
            continue
        if ga.n > 1:
            w0 = nominal[:-1] + ga.size - s - 2
            cols = w0[:, None] + np.arange(wn)[None, :]
            pair[i] = _seam_scores(maps, rows, cols, hyp, llr, s,
                                   None if other_shifts is None else np.diff(other_shifts[i])).reshape(ga.n - 1, nh, nh)
        # the map's ends: columns before field 0 and after the last field are stripe
        unary[i, 0] += _end_scores(maps, rows, int(nominal[0]), s, llr, left=True)
        unary[i, -1] += _end_scores(maps, rows, int(nominal[-1] + widths[-1]), s, llr, left=False)
    return unary, pair


def _cross_pairs(align: np.ndarray, s: int) -> np.ndarray:
    """Pair scores [state of f, state of f+1] from alignment scores over relative offsets.

    ``align`` (..., 4s+1): score of the right (lower) field offset by ``k - 2s`` from the
    left (upper) one; returns (..., 2s+1, 2s+1).
    """
    cand = np.arange(2 * s + 1)
    return align[..., cand[None, :] - cand[:, None] + 2 * s]


def _max_sum(unary: np.ndarray, along: np.ndarray, across: np.ndarray | None) -> np.ndarray:
    """Best states on a grid of fields by max-sum (loopy) belief propagation.

    ``unary`` (L, F, K); ``along`` (L, F-1, K, K) between (l, f) and (l, f+1);
    ``across`` (L-1, F, K, K) between (l, f) and (l+1, f), or None (independent lines,
    solved exactly by Viterbi). Returns (L, F) state indices.
    """
    nl, nf, k = unary.shape
    if across is None or nl < 2:
        return np.stack([_viterbi(unary[i], along[i]) for i in range(nl)])
    right = np.zeros((nl, max(nf - 1, 0), k))  # message (l, f) -> (l, f+1)
    left = np.zeros_like(right)  # message (l, f+1) -> (l, f)
    down = np.zeros((nl - 1, nf, k))  # message (l, f) -> (l+1, f)
    up = np.zeros_like(down)  # message (l+1, f) -> (l, f)
    states = None
    for _ in range(BP_ITERATIONS):
        belief = unary.copy()
        belief[:, 1:] += right
        belief[:, :-1] += left
        belief[1:] += down
        belief[:-1] += up
        new_states = np.argmax(belief, axis=-1)
        if states is not None and np.array_equal(new_states, states):
            break
        states = new_states
        # message a -> b = max over a of (belief(a) - message b -> a + pair(a, b))
        r = np.max((belief[:, :-1] - left)[..., :, None] + along, axis=-2)
        lf = np.max((belief[:, 1:] - right)[..., None, :] + along, axis=-1)
        dn = np.max((belief[:-1] - up)[..., :, None] + across, axis=-2)
        u = np.max((belief[1:] - down)[..., None, :] + across, axis=-1)
        right = BP_DAMPING * right + (1 - BP_DAMPING) * (r - r.max(axis=-1, keepdims=True))
        left = BP_DAMPING * left + (1 - BP_DAMPING) * (lf - lf.max(axis=-1, keepdims=True))
        down = BP_DAMPING * down + (1 - BP_DAMPING) * (dn - dn.max(axis=-1, keepdims=True))
        up = BP_DAMPING * up + (1 - BP_DAMPING) * (u - u.max(axis=-1, keepdims=True))
    return states


def _gather(arr: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """arr[rows][:, cols] for (nr,) or (nr, ns) rows and (ns, wn) cols, clipped -> (nr, ns, wn)."""
    h, w = arr.shape
    rr = np.clip(rows, 0, h - 1)
    cc = np.clip(cols, 0, w - 1)
    if rr.ndim == 1:
        return arr[rr[:, None, None], cc[None, :, :]]
    return arr[rr[:, :, None], cc[None, :, :]]


def _seam_scores(maps: _Maps, rows: np.ndarray, cols: np.ndarray, hyp: _SeamHypotheses, llr: _Llr, s: int,
                 ddy: np.ndarray | None) -> np.ndarray:
    """(n_seams, n_hyp) log-likelihood ratio of each (left end, right start) hypothesis.

    ``rows`` (nr,): rows of the line of fields; ``cols`` (n_seams, wn): the window of
    columns around each seam; ``ddy`` (n_seams,): the known relative shift across each
    seam along axis 0, or None to take the best within +-2s.
    """
    d, junk, info, border_junk = maps.d, maps.junk, maps.info, maps.border_junk
    la, xs, m, ca, dist = hyp.la, hyp.xs, hyp.m, hyp.ca, hyp.dist
    h, w = d.shape
    valid = (cols >= 0) & (cols < w)  # (ns, wn)
    dw = _gather(d, rows, cols)
    jw = _gather(junk, rows, cols) | ~valid[None]
    iw = valid[None] if info is None else _gather(info, rows, cols) & valid[None]
    # stripe claims
    jk = np.where(iw, np.where(jw, llr.junk, llr.clean), 0.0).sum(axis=0)  # (ns, wn)
    cjk = np.concatenate([np.zeros((jk.shape[0], 1)), np.cumsum(jk, axis=1)], axis=1)
    # neighbouring pairs inside a field
    good = ~jw
    pair_ok = good[..., :-1] & good[..., 1:]
    same = dw[..., :-1] == dw[..., 1:]
    ip = np.where(pair_ok, np.where(same, llr.same[1], llr.diff[1]), 0.0).sum(axis=0)  # (ns, wn-1)
    cip = np.concatenate([np.zeros((ip.shape[0], 1)), np.cumsum(ip, axis=1)], axis=1)
    wn = cols.shape[1]
    stripe = np.where(xs > la, cjk[:, xs] - cjk[:, la], 0.0)
    inner = cip[:, np.maximum(m - 1, 0)] + (cip[:, wn - 1:wn] - cip[:, xs])
    # the two borders that meet across the seam, rows aligned by the relative shift
    a = dw[:, :, ca]
    bad_b = _gather(border_junk, rows, cols) | ~valid[None]
    ga_ = ~bad_b[:, :, ca]
    offsets = [None] if ddy is not None else list(range(-2 * s, 2 * s + 1))
    seam = None
    for off in offsets:
        shift = ddy[None, :] if off is None else np.full((1, cols.shape[0]), off)
        rr = rows[:, None] + shift  # (nr, ns)
        rvalid = (rr >= 0) & (rr < h)
        b = _gather(d, rr, cols)[:, :, xs]
        gb = ~(_gather(border_junk, rr, cols) | ~valid[None])[:, :, xs]
        ok = ga_ & gb & rvalid[:, :, None]
        val = np.where(ok, np.where(a == b, llr.same[dist], llr.diff[dist]), 0.0).sum(axis=0)
        seam = val if seam is None else np.maximum(seam, val)
    return stripe + inner + seam


def _end_scores(maps: _Maps, rows: np.ndarray, edge: int, s: int, llr: _Llr, *, left: bool) -> np.ndarray:
    """(2s+1,) score of each position of the first (last) field against the map's end.

    Beyond the field's edge up to the map's end, pixels are stripe fill.
    """
    d, junk, info = maps.d, maps.junk, maps.info
    width = d.shape[1]
    nh = 2 * s + 1
    if left:
        stop = edge + s + 2
        if stop <= 1:
            return np.zeros(nh)
        cols = np.arange(0, min(stop, width))[None, :]
        pos = np.clip(edge + np.arange(nh) - s, 0, cols.shape[1])  # first content column
    else:
        start = edge - s - 2
        if start >= width - 1:
            return np.zeros(nh)
        cols = np.arange(max(start, 0), width)[None, :]
        pos = np.clip(edge + np.arange(nh) - s - cols[0, 0], 0, cols.shape[1])  # first stripe column
    wn = cols.shape[1]
    dw = _gather(d, rows, cols)[:, 0]
    jw = _gather(junk, rows, cols)[:, 0]
    iw = np.ones_like(jw) if info is None else _gather(info, rows, cols)[:, 0]
    jk = np.where(iw, np.where(jw, llr.junk, llr.clean), 0.0).sum(axis=0)
    cjk = np.concatenate([[0.0], np.cumsum(jk)])
    good = ~jw
    ip = np.where(good[:, :-1] & good[:, 1:], np.where(dw[:, :-1] == dw[:, 1:], llr.same[1], llr.diff[1]),
                  0.0).sum(axis=0)
    cip = np.concatenate([[0.0], np.cumsum(ip)])
    if left:  # stripe [0, pos), content pairs from pos on
        return cjk[pos] + (cip[wn - 1] - cip[np.minimum(pos, wn - 1)])
    # content pairs before pos - 1, stripe [pos, wn)
    return cip[np.maximum(pos - 1, 0)] + (cjk[wn] - cjk[pos])


def _viterbi(unary: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Best state path: unary (n, k), trans (n-1, k, k) [left state, right state]."""
    n, k = unary.shape
    acc = unary[0].copy()
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        cand = acc[:, None] + trans[t - 1]
        back[t] = np.argmax(cand, axis=0)
        acc = cand[back[t], np.arange(k)] + unary[t]
    path = np.zeros(n, dtype=np.int64)
    path[-1] = int(np.argmax(acc))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path
