"""Step 6 of the mosaic repair: each field's position checked against the SEM.

The seams alone cannot always place a field: with 1-px stripes a seam line is mostly
hidden under the shifts, and a field at the section's edge shows little of itself at
its borders, so a field can come back a pixel or two off with every seam likelihood
in favour. The SEM has no seams. Once the repaired map is registered, the SEM on the
label grid (each label pixel the mean grey of its footprint) says where each field's
content really lies: a field a pixel off puts every mineral boundary inside it a
pixel away from the grey-level edge, which the SEM, 8-20 times finer, sees clearly.

For every field, at positions within ``max_shift`` of its nominal corner (a descent
from its current position through 3 x 3 neighbourhoods), the field's interior (without
its bottom and right ``2 * max_shift`` pixels, where a later field may have overwritten
it) is scored by a robust Gaussian log-likelihood of the SEM
grey given the label ids: each id predicts its median grey (from the repaired map's
pixels away from any boundary, or from all its pixels for small grains), blurred as
much as best explains the SEM (a label pixel's footprint is soft at mineral
boundaries), with the id's robust spread; squared z-scores are capped at ``Z2_CAP``, so
that grains QEMSCAN and the SEM disagree on, and ids without statistics, count little.
A field moves to its best position when that beats its current one by at least
``MIN_GAIN`` nats with at least ``MIN_SUPPORT`` pixels each in favour (a few pixels,
such as grains at the section's edge that QEMSCAN and the SEM disagree on, never move a
field); everything else stays as the seams placed it. The caller
re-registers after a move (the registration of a map with fields off is itself a
little off) and checks again (:mod:`mineralseg.prep.seam_alignment`).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import ndimage

from mineralseg.prep.mosaic.grid import _field_origins, _Grid
from mineralseg.prep.mosaic.reassemble import _reassemble
from mineralseg.prep.mosaic.repair import MosaicRepair

# A field moves when its best position beats its current one by at least MIN_GAIN nats
# and at least MIN_SUPPORT pixels each favour it by more than 1 nat. Measured in the
# first round on every third sample of both draws of benchmarks/prep_robustness.py (the
# trusted maps of the right grid): of 116 fields the seams placed wrong and the SEM
# places right, 78 pass (gains 36-6,700 nats, 20-1,200 pixels) and 38 are left where
# they are (fields of little content: fewer than 20 pixels in favour); of 38 fields
# placed right whose best position lies elsewhere, 4 pass (gains 48-118, 21-72
# pixels), 8 would with the gain alone.
MIN_GAIN = 30.0
MIN_SUPPORT = 20
# Cap on a pixel's squared z-score: a grain the SEM and QEMSCAN disagree on costs at most
# this much, and so does a pixel whose predicted grey is unknown (an id without
# statistics within the blur's reach).
Z2_CAP = 25.0
# Blur widths (Gaussian sigma, label pixels) tried for the predicted grey, the kernel
# radius, and the side of the central crop the blur is measured on.
BLUR_WIDTHS = (0.0, 0.35, 0.5, 0.7, 1.0)
BLUR_RADIUS = 2.0
BLUR_FIT_SIDE = 1024
# The registration trend (registration_trend): fractions of a pixel the prediction is
# moved by to find a field's offset; the offset along an axis counts when the cost
# curves up by at least TREND_MIN_CURVATURE nats per px^2 there; consensus band (px),
# fields needed for a plane (else a translation) and planes tried at most.
TREND_STEPS = (-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75)
TREND_MIN_CURVATURE = 100.0
TREND_INLIER = 0.25
TREND_MIN_FIELDS = 4
TREND_TRIPLES = 2000
# Pixels per id needed for its grey statistics (away from boundaries; any), smallest
# spread (grey levels).
MIN_STAT_PIXELS = 20
MIN_FALLBACK_PIXELS = 5
MIN_SPREAD = 1.0


def grey_statistics(
    labels: np.ndarray, grey: np.ndarray, *, ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust spread of ``grey`` per id.

    From the pixels away from any id boundary (3 x 3 of one id) when an id has at least
    ``MIN_STAT_PIXELS`` of them; else (small grains) from all its pixels, when it has at
    least ``MIN_FALLBACK_PIXELS``, with their wider spread. Returns two float64 arrays of
    length ``labels.max() + 1`` (NaN for the other ids and for ``ignore_index``).
    """
    n = int(labels.max()) + 1 if labels.size else 1
    mu = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    finite = np.isfinite(grey)
    flat = (ndimage.maximum_filter(labels, 3) == ndimage.minimum_filter(labels, 3)) & finite
    for mask, least in ((flat, MIN_STAT_PIXELS), (finite, MIN_FALLBACK_PIXELS)):
        lab, val = labels[mask], grey[mask].astype(np.float64)
        order = np.argsort(lab, kind="stable")
        lab, val = lab[order], val[order]
        ids, starts, counts = np.unique(lab, return_index=True, return_counts=True)
        for c, a, k in zip(ids, starts, counts):
            if k < least or np.isfinite(mu[c]) or (ignore_index is not None and c == ignore_index):
                continue
            v = val[a:a + k]
            m = float(np.median(v))
            mu[c] = m
            sd[c] = max(1.4826 * float(np.median(np.abs(v - m))), MIN_SPREAD)
    return mu, sd


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the predicted grey (edges repeated; NaN spreads over the kernel)."""
    if sigma <= 0:
        return img
    return ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=BLUR_RADIUS / sigma)


def _blur_width(labels: np.ndarray, grey: np.ndarray, mu: np.ndarray) -> float:
    """The blur (of ``BLUR_WIDTHS``) under which the ids' mean greys best predict ``grey``.

    The SEM on the label grid is an average over each label pixel's footprint and the
    registration's interpolation, so boundaries between minerals are soft. Measured on
    the central ``BLUR_FIT_SIDE`` x ``BLUR_FIT_SIDE`` pixels at most.
    """
    (y0, y1), (x0, x1) = ((max(0, (n - BLUR_FIT_SIDE) // 2), max(0, (n - BLUR_FIT_SIDE) // 2) + BLUR_FIT_SIDE)
                          for n in labels.shape)
    labels, grey = labels[y0:y1, x0:x1], grey[y0:y1, x0:x1]
    pred = mu[labels]
    best, best_err = 0.0, np.inf
    for sigma in BLUR_WIDTHS:
        r = grey - _blur(pred, sigma)
        ok = np.isfinite(r)
        if not ok.any():
            return 0.0
        err = float(np.median(np.abs(r[ok])))
        if err < best_err:
            best, best_err = sigma, err
    return best


def _grids(rep: MosaicRepair, shape: tuple[int, int]) -> tuple[_Grid, _Grid]:
    fs, pitch, origin = rep.field_size, rep.pitch, rep.origin
    grids = []
    for axis, seams in ((0, rep.seam_rows), (1, rep.seam_cols)):
        if seams:
            grids.append(_Grid(length=shape[axis], pitch=int(pitch[axis]), size=int(fs[axis]),
                               origin=int(origin[axis]), detected=True))
        else:
            grids.append(_Grid.whole(shape[axis]))
    return grids[0], grids[1]


class _Scorer:
    """Per-pixel costs of the fields' interiors at any position (see the module doc)."""

    def __init__(self, damaged: np.ndarray, rep: MosaicRepair, grey: np.ndarray, max_shift: int,
                 ignore_index: int | None):
        self.d, self.grey, self.max_shift = damaged, grey, max_shift
        self.gy, self.gx = _grids(rep, damaged.shape)
        mu, sd = grey_statistics(rep.repaired, grey, ignore_index=ignore_index)
        size = max(int(damaged.max()) + 1, mu.size)
        # per id (NaN past the ids the repaired map has): a NaN predicted grey costs the cap
        self.mu = np.full(size, np.nan)
        self.mu[:mu.size] = mu
        spread = np.full(size, np.nan)
        spread[:sd.size] = sd
        known = np.isfinite(self.mu)
        log_sd = np.log(spread[known])
        self.inv_sd = np.where(known, 1.0 / spread, 0.0)
        self.base = np.where(known, np.log(spread), float(np.median(log_sd)) if log_sd.size else 0.0)
        self.sigma = _blur_width(rep.repaired, grey, self.mu)

    def window(self, i: int, j: int) -> tuple[int, int, int, int] | None:
        """Local rows t0..t1, columns u0..u1 of field (i, j) scored (None: no interior)."""
        gy, gx, m = self.gy, self.gx, 2 * self.max_shift
        oy, ox = gy.out_start(i), gx.out_start(j)
        # a later field may have overwritten the bottom and right borders
        t0, t1 = max(0, -oy), int(gy.widths[i]) - (m if i < gy.n - 1 else 0)
        u0, u1 = max(0, -ox), int(gx.widths[j]) - (m if j < gx.n - 1 else 0)
        return (t0, t1, u0, u1) if t1 > t0 and u1 > u0 else None

    def _view(self, i: int, j: int, shift: tuple[int, int], win: tuple[int, int, int, int]):
        """SEM grey, ids and blurred predicted grey of the window (None: off the map)."""
        t0, t1, u0, u1 = win
        gy, gx = self.gy, self.gx
        y, x = int(gy.nominal[i]) + shift[0], int(gx.nominal[j]) + shift[1]
        if y + t0 < 0 or x + u0 < 0 or y + t1 > self.d.shape[0] or x + u1 > self.d.shape[1]:
            return None
        oy, ox = gy.out_start(i), gx.out_start(j)
        g = self.grey[oy + t0:oy + t1, ox + u0:ox + u1]
        lab = self.d[y + t0:y + t1, x + u0:x + u1]
        return g, lab, _blur(self.mu[lab], self.sigma)

    def _cost(self, g: np.ndarray, lab: np.ndarray, pred: np.ndarray) -> np.ndarray:
        valid = np.isfinite(g)
        lab = lab[valid]
        z = (g[valid] - pred[valid]) * self.inv_sd[lab]
        z2 = np.where(np.isfinite(z), np.minimum(z * z, Z2_CAP), Z2_CAP)
        return z2 / 2 + self.base[lab]

    def pixel_costs(self, i: int, j: int, shift: tuple[int, int], win: tuple[int, int, int, int]) -> np.ndarray | None:
        """Cost of each SEM pixel of the window with field (i, j) at ``shift`` (None: off the map)."""
        view = self._view(i, j, shift, win)
        return None if view is None else self._cost(*view)

    def offset_costs(self, i: int, j: int, shift: tuple[int, int], win: tuple[int, int, int, int],
                     offsets: list[tuple[float, float]]) -> list[float] | None:
        """Total cost with the predicted grey moved by each of ``offsets`` (fractions of a
        pixel): the SEM pixel ``q`` compared with the prediction at ``q + offset``."""
        view = self._view(i, j, shift, win)
        if view is None or not view[0].size:
            return None
        g, lab, pred = view
        out = []
        for off in offsets:
            moved = pred if off == (0.0, 0.0) else ndimage.shift(pred, (-off[0], -off[1]), order=1, mode="nearest")
            out.append(float(self._cost(g, lab, moved).sum()))
        return out

    def costs(self, i: int, j: int, current: tuple[int, int]) -> dict[tuple[int, int], float]:
        """``{shift: cost}`` of field (i, j) at the positions a descent from ``current`` visits.

        From the current position, the 3 x 3 neighbourhood (within ``max_shift`` of the
        nominal corner) is scored and the search moves to its best position until that
        is the centre: about 9-15 positions per field instead of all
        ``(2 * max_shift + 1) ** 2``. Empty when the field has no interior to score.
        """
        win = self.window(i, j)
        if win is None:
            return {}
        out: dict[tuple[int, int], float] = {}
        c = self.pixel_costs(i, j, current, win)
        if c is None or not c.size:
            return {}
        out[current] = float(c.sum())
        centre = current
        while True:
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    shift = (centre[0] + a, centre[1] + b)
                    if shift in out or max(abs(shift[0]), abs(shift[1])) > self.max_shift:
                        continue
                    c = self.pixel_costs(i, j, shift, win)
                    if c is not None:
                        out[shift] = float(c.sum())
            best = min(out, key=out.get)
            if best == centre:
                return out
            centre = best

    def support(self, i: int, j: int, current: tuple[int, int], best: tuple[int, int]) -> int:
        """Pixels that favour ``best`` over ``current`` by more than 1 nat each."""
        win = self.window(i, j)
        return int(np.count_nonzero(self.pixel_costs(i, j, current, win) - self.pixel_costs(i, j, best, win) > 1.0))


def _subpixel(c_minus: float, c_0: float, c_plus: float) -> tuple[float, float]:
    """Minimum of the parabola through costs at -1, 0, +1 and its curvature (nan, 0 if none)."""
    curv = c_minus - 2 * c_0 + c_plus
    if not curv > 0:
        return float("nan"), 0.0
    return 0.5 * (c_minus - c_plus) / curv, curv


def _robust_plane(pos: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """``[t, a_y, a_x]`` of ``values ~ t + a_y * y + a_x * x`` that most fields agree with.

    A consensus fit (as RANSAC): every plane through three fields (at most
    ``TREND_TRIPLES`` of them, drawn with a fixed seed) and every translation through one
    is scored by the fields within ``TREND_INLIER`` px of it; the one most fields agree
    with is refitted by least squares to them. A block of neighbouring fields that are
    off cannot tilt it their way as a least-squares or iteratively reweighted fit from a
    poor start can. A translation only when fewer than ``TREND_MIN_FIELDS`` fields; None
    without any.
    """
    n = values.size
    if n == 0:
        return None
    design = np.column_stack([np.ones(n), pos])
    # translations through each field
    betas = [np.column_stack([values, np.zeros(n), np.zeros(n)])]
    if n >= TREND_MIN_FIELDS:
        triples = np.array(list(itertools.combinations(range(n), 3)))
        if len(triples) > TREND_TRIPLES:
            rng = np.random.default_rng(0)
            triples = np.sort(np.array([rng.choice(n, 3, replace=False) for _ in range(TREND_TRIPLES)]), axis=1)
        a = design[triples]  # (T, 3, 3)
        ok = np.abs(np.linalg.det(a)) > 1e-3
        if ok.any():
            betas.append(np.linalg.solve(a[ok], values[triples[ok]][..., None])[..., 0])
    cand = np.concatenate(betas)
    resid = np.abs(values[None, :] - cand @ design.T)  # (C, n)
    inside = resid < TREND_INLIER
    count = inside.sum(axis=1)
    spread = np.where(inside, resid, 0).sum(axis=1)
    best = np.lexsort((spread, -count))[0]
    keep = inside[best]
    if n < TREND_MIN_FIELDS or keep.sum() < TREND_MIN_FIELDS:
        return np.array([float(np.median(values[keep])), 0.0, 0.0])
    beta, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
    return beta


def registration_trend(
    damaged: np.ndarray, rep: MosaicRepair, grey: np.ndarray, *, max_shift: int = 2,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, dict]:
    """The registration's error as most fields see it: a correction for ``label_to_sem``.

    An affine registration of a map with a few fields off is pulled towards them (a
    block of content-rich fields a pixel off can pull it by a pixel at the corners);
    under it the SEM then favours the wrong fields. Each field with enough structure
    says where the SEM shows its content (per axis, the minimum of its cost with the
    predicted grey moved by fractions of a pixel, ``TREND_STEPS``); the affine trend
    most of those offsets agree with (:func:`_robust_plane`) follows the majority of
    fields and leaves the few that are off out. Returns the 3 x 3 matrix ``P`` (label pixel -> label pixel,
    x = column first) such that ``label_to_sem @ P`` registers the map as those fields
    see it (the identity without enough fields), and a record (fields used, trend at
    the map's centre and largest at a corner, in label pixels).
    """
    sc = _Scorer(damaged, rep, np.asarray(grey, dtype=np.float32), max_shift, ignore_index)
    h, w = rep.repaired.shape
    scale = max(h, w) / 2
    offsets = [(d, 0.0) for d in TREND_STEPS] + [(0.0, d) for d in TREND_STEPS]
    pos: list[list[tuple[float, float]]] = [[], []]
    off: list[list[float]] = [[], []]
    for i in range(sc.gy.n):
        for j in range(sc.gx.n):
            win = sc.window(i, j)
            if win is None:
                continue
            cur = (int(rep.shifts[i, j, 0]), int(rep.shifts[i, j, 1]))
            t0, t1, u0, u1 = win
            cy = sc.gy.out_start(i) + (t0 + t1) / 2
            cx = sc.gx.out_start(j) + (u0 + u1) / 2
            centre = ((cy - h / 2) / scale, (cx - w / 2) / scale)
            both = sc.offset_costs(i, j, cur, win, offsets)
            if both is None:
                continue
            for axis in (0, 1):
                cost = both[axis * len(TREND_STEPS):(axis + 1) * len(TREND_STEPS)]
                k = int(np.argmin(cost))
                if k in (0, len(cost) - 1):  # the minimum is beyond the steps: an outlier anyway
                    continue
                o, curv = _subpixel(cost[k - 1], cost[k], cost[k + 1])
                step = TREND_STEPS[1] - TREND_STEPS[0]
                if curv / step**2 >= TREND_MIN_CURVATURE:
                    pos[axis].append(centre)
                    off[axis].append(TREND_STEPS[k] + o * step)
    betas = [_robust_plane(np.asarray(p, dtype=float).reshape(-1, 2), np.asarray(o, dtype=float))
             for p, o in zip(pos, off)]
    record = {"fields": [len(off[0]), len(off[1])]}
    if betas[0] is None or betas[1] is None:
        return np.eye(3), {**record, "applied": False}
    (ty, ayy, ayx), (tx, axy, axx) = (b / np.array([1.0, scale, scale]) for b in betas)
    # offsets at label pixel q = (y, x) from the map's centre c: o(q) = t + A (q - c);
    # the SEM there shows the content of q + o(q): label_to_sem @ P maps q - o(q)
    cy, cx = h / 2, w / 2
    p = np.array([
        [1 - axx, -axy, -(tx - axx * cx - axy * cy)],
        [-ayx, 1 - ayy, -(ty - ayx * cx - ayy * cy)],
        [0.0, 0.0, 1.0],
    ])
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=float).T
    moved = np.hypot(*(corners[:2] - (p @ corners)[:2]))
    record.update(applied=True, centre_px=[round(float(ty), 3), round(float(tx), 3)],
                  corner_px=round(float(moved.max()), 3))
    return p, record


def realign_fields(
    damaged: np.ndarray, rep: MosaicRepair, grey: np.ndarray, *, max_shift: int = 2,
    ignore_index: int | None = None, min_gain: float = MIN_GAIN, min_support: int = MIN_SUPPORT,
) -> tuple[MosaicRepair, list[dict]]:
    """Move the fields whose content the SEM places clearly elsewhere; re-assemble.

    Parameters
    ----------
    damaged : (H', W') ndarray
        The map ``rep`` was made from.
    rep : MosaicRepair
        A repair with a seam pattern (``rep.detected``); returned as it is otherwise.
    grey : (H, W) float ndarray
        The SEM on the grid of ``rep.repaired`` (registered; NaN where there is none).
    max_shift : int
        Positions searched per axis around each field's nominal corner.
    ignore_index : int, optional
        Unknown label id (no grey statistics).
    min_gain : float
        Log-likelihood gain (nats) needed to move a field.
    min_support : int
        Pixels that must each favour the new position by more than 1 nat.

    Returns
    -------
    (MosaicRepair, list of dict)
        The repair with the moved fields' shifts and the map re-assembled (the same
        object when nothing moved), and one record per moved field: ``field`` (row,
        column), ``from`` and ``to`` (shifts), ``gain`` (nats) and ``pixels`` (the support).
    """
    if not rep.detected or rep.field_size is None:
        return rep, []
    grey = np.asarray(grey, dtype=np.float32)
    if grey.shape != rep.repaired.shape:
        raise ValueError(f"grey has shape {grey.shape}, the repaired map {rep.repaired.shape}")
    sc = _Scorer(damaged, rep, grey, max_shift, ignore_index)
    shifts = np.array(rep.shifts, dtype=np.int64, copy=True)
    moves = []
    for i in range(sc.gy.n):
        for j in range(sc.gx.n):
            cur = (int(shifts[i, j, 0]), int(shifts[i, j, 1]))
            costs = sc.costs(i, j, cur)
            if not costs:
                continue
            best = min(costs, key=lambda k: (costs[k], abs(k[0] - cur[0]) + abs(k[1] - cur[1])))
            gain = costs[cur] - costs[best]
            if best == cur or gain < min_gain:
                continue
            support = sc.support(i, j, cur, best)
            if support < min_support:
                continue
            shifts[i, j] = best
            moves.append({"field": [i, j], "from": list(cur), "to": list(best), "gain": round(float(gain), 1),
                          "pixels": support})
    if not moves:
        return rep, []
    gy, gx = sc.gy, sc.gx
    repaired, _, _ = _reassemble(damaged, gy, gx, shifts[..., 0], shifts[..., 1])
    new_scores = dict(rep.scores)
    new_scores["fields_moved_by_sem"] = int(new_scores.get("fields_moved_by_sem", 0)) + len(moves)
    new = dataclasses.replace(
        rep, repaired=repaired, shifts=shifts,
        field_origins=_field_origins(gy, gx, shifts[..., 0], shifts[..., 1]),
        scores=new_scores,
    )
    return new, moves
