"""Step 1 of the mosaic repair: fill and junk pixels, informative pixels, stripe evidence.

Junk pixels are fill pixels flanked by field content and noise pixels; the share of junk
and of label changes per column (row) gap is the stripe evidence that
:mod:`~mineralseg.prep.mosaic.comb` searches for a period. Without given fill ids, the
fill is the candidate id whose evidence is most periodic (:func:`_detect_fill`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mineralseg.prep.mosaic.comb import COMB_CANDIDATES, _Comb, _comb

# Pseudo-count of the stripe-evidence profile: columns crossing only a few sample pixels
# do not swing it ...
PROFILE_PRIOR_PIXELS = 20
# ... and columns with fewer informative pixels than this share of the typical column
# are set to the typical value.
PROFILE_MIN_SHARE = 0.25
# Stripe-like pixels: a label change within this many pixels on both sides across the
# seam (stripes plus shifts are at most ~12 wide) ...
FILL_THIN = 8
# ... and none within this many along it (grains are rarely that long and that thin).
FILL_LONG = 10
# Ids tried as the fill (those with most stripe-like pixels), besides "no fill id".
FILL_CANDIDATES = 4
# A fill pixel flanked by field content on both sides within this many pixels may be a
# stripe pixel (stripes plus shifts up to ~28 px wide); farther from content it is mount.
EXTERIOR_SIDE = 15
# Rows subsampled for global statistics (fill detection, pair statistics): plenty.
STATS_MAX_LINES = 1500


def _junk_map(d: np.ndarray, hdiff: np.ndarray, vdiff: np.ndarray, junk_ids: set[int]) -> np.ndarray:
    """Pixels that are seam fill: a fill id, or unlike at least 3 of their 4 neighbours."""
    count = np.zeros(d.shape, dtype=np.uint8)
    count[:, 1:] += hdiff
    count[:, :-1] += hdiff
    count[1:, :] += vdiff
    count[:-1, :] += vdiff
    junk = count >= 3
    del count
    if junk_ids:
        junk |= np.isin(d, sorted(junk_ids))
    return junk


def _stripe_profile(diff: np.ndarray, junk: np.ndarray, info: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per column gap: share of informative pixels that are junk or change label.

    ``diff`` is (H, W-1) label changes between columns c and c+1. Returns the (W-1,)
    profile and where it is valid. A rate, not a count, so that the sample's outline
    does not make steps; columns with few informative pixels are shrunk towards 0
    (``PROFILE_PRIOR_PIXELS``) or, when very few, set to the typical value (invalid).
    """
    good = ~junk
    changes = np.count_nonzero(diff & good[:, :-1] & good[:, 1:], axis=0)
    stripe = np.count_nonzero(junk if info is None else junk & info, axis=0)
    n_info = np.full(junk.shape[1], junk.shape[0]) if info is None else np.count_nonzero(info, axis=0)
    n_info = n_info[:-1]
    prof = (changes + stripe[:-1]) / (n_info + PROFILE_PRIOR_PIXELS)
    # columns that cross little sample (along its outline) are noise: neutral
    sparse = n_info < PROFILE_MIN_SHARE * np.median(n_info[n_info > 0]) if np.any(n_info > 0) else n_info >= 0
    if np.all(sparse):
        return np.zeros_like(prof), ~sparse
    prof[sparse] = np.median(prof[~sparse])
    return prof, ~sparse


def _near_changes(hdiff: np.ndarray, vdiff: np.ndarray, reach: int) -> np.ndarray:
    """(H, W) bool: a label change within ``reach`` pixels (a square around the pixel)."""
    h, w = vdiff.shape[0] + 1, hdiff.shape[1] + 1
    near = np.zeros((h, w), dtype=np.uint8)
    near[:, 1:] |= hdiff
    near[:, :-1] |= hdiff
    near[1:, :] |= vdiff
    near[:-1, :] |= vdiff
    for axis in (0, 1):
        near = ndimage.maximum_filter1d(near, 2 * int(reach) + 1, axis=axis)
    return near.astype(bool)


def _informative(d: np.ndarray, fill: tuple[int, ...], reach: int) -> np.ndarray | None:
    """False on fill-coloured pixels of the mount, where stripes cannot be seen.

    A fill pixel is informative (a possible stripe pixel) when non-fill pixels flank it
    on both sides, along rows or columns, within ``reach`` pixels; beyond the map's
    edge counts as mount.
    """
    if not fill:
        return None
    content = (~np.isin(d, list(fill))).view(np.uint8)
    m = int(reach) + 1
    info = content.astype(bool)
    for axis in (0, 1):
        after = ndimage.maximum_filter1d(content, m, axis=axis, origin=-(m // 2), mode="constant", cval=0)
        before = ndimage.maximum_filter1d(content, m, axis=axis, origin=(m - 1) // 2, mode="constant", cval=0)
        info |= (after > 0) & (before > 0)
    return info


@dataclass
class _Evidence:
    """Stripe evidence for one choice of fill ids: junk, informative pixels, combs."""

    fill: tuple[int, ...]
    junk: np.ndarray  # (H, W) bool
    info: np.ndarray | None  # (H, W) bool, None: all informative
    combs: dict[str, list[_Comb]]  # candidate combs per axis, best first
    profiles: dict[str, tuple[np.ndarray, np.ndarray]]  # stripe-evidence profile and where valid, per axis

    @property
    def z(self) -> float:
        """Sum over both axes of the best comb's z-score (how periodic the evidence is)."""
        return float(sum(max(cs[0].z, 0.0) for cs in self.combs.values() if cs))


def _evidence(d: np.ndarray, hdiff: np.ndarray, vdiff: np.ndarray, fill: tuple[int, ...],
              extra_junk: set[int], min_pitch: int) -> _Evidence:
    """Junk map, informative pixels and the candidate combs of the stripe evidence.

    The comb runs on the share of junk, and of label changes between non-junk pixels,
    per column (row) gap: the mount's outline and chance texture drop out.
    """
    junk = _junk_map(d, hdiff, vdiff, set(fill) | extra_junk)
    info = _informative(d, fill, EXTERIOR_SIDE)
    # the profile is a rate over the section, not over the whole line: the mount is
    # told by its lack of label changes (whatever the fill)
    cover = _near_changes(hdiff, vdiff, EXTERIOR_SIDE)
    if info is not None:
        cover &= info
    profiles = {"rows": _stripe_profile(vdiff.T, junk.T, cover.T), "cols": _stripe_profile(hdiff, junk, cover)}
    combs = {k: _comb(*v, min_pitch=min_pitch, top=COMB_CANDIDATES) for k, v in profiles.items()}
    return _Evidence(fill=fill, junk=junk, info=info, combs=combs, profiles=profiles)


def _detect_fill(d: np.ndarray, hdiff: np.ndarray, vdiff: np.ndarray, extra_junk: set[int],
                 min_pitch: int) -> list[_Evidence]:
    """The ids the seam stripes may be filled with (none for noise stripes), likeliest first.

    Candidates are the ids with most stripe-like pixels (thin across a line, long along
    it: :func:`_stripe_like`) on either axis. Each candidate, and "no fill id", is
    tried as the fill: the one whose stripe evidence is most periodic (largest comb
    z-score, :attr:`_Evidence.z`) wins. A wrong id adds its grains inside the section
    as junk everywhere and flattens the comb; leaving out the true fill id leaves its
    stripes as content. Needs no pitch: the comb of each choice finds its own. The
    other choices follow, by z-score: when the likeliest shows no visible stripes (a
    small section with 1-px stripes can look as periodic without its fill id), the
    next is looked at.
    """
    counts: dict[int, float] = {}
    for arr, across, along in ((d, hdiff, vdiff), (d.T, vdiff.T, hdiff.T)):
        lines = np.arange(0, arr.shape[0], max(1, arr.shape[0] // STATS_MAX_LINES))
        like = _stripe_like(across, along, lines)
        ids, n = np.unique(arr[lines][like], return_counts=True)
        for v, k in zip(ids.tolist(), n.tolist()):
            counts[int(v)] = counts.get(int(v), 0.0) + k / lines.size
    ranked = sorted(counts, key=lambda v: counts[v], reverse=True)[:FILL_CANDIDATES]
    options = [(), *((v,) for v in ranked if v not in extra_junk)]
    found = [_evidence(d, hdiff, vdiff, fill, extra_junk, min_pitch) for fill in options]
    return sorted(found, key=lambda ev: ev.z, reverse=True)


def _stripe_like(across: np.ndarray, along: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """(len(lines), W) pixels of the given rows that are thin across axis 1 and long along axis 0.

    ``across`` (H, W-1): label changes between columns; ``along`` (H-1, W): between rows.
    Thin: a change within ``FILL_THIN`` gaps on both sides (the map's edge is none, so
    mount along it is not thin). Long: rows ``r - FILL_LONG .. r + FILL_LONG`` all equal.
    """
    h, w = across.shape[0], across.shape[1] + 1
    a = np.zeros((lines.size, w + 1), dtype=np.uint8)  # a[:, c] = change between c-1 and c
    a[:, 1:-1] = across[lines]
    left = ndimage.maximum_filter1d(a, FILL_THIN, axis=1, origin=(FILL_THIN - 1) // 2)[:, :w]
    right = ndimage.maximum_filter1d(a, FILL_THIN, axis=1, origin=-(FILL_THIN // 2))[:, 1:]
    # rows r - FILL_LONG .. r + FILL_LONG - 1 of ``along`` without a change (lines too near
    # the map's ends are not long)
    changed = ndimage.maximum_filter1d(along.view(np.uint8), 2 * FILL_LONG, axis=0,
                                       mode="constant")
    ok = (lines >= FILL_LONG) & (lines < h - FILL_LONG)
    long_ = np.zeros((lines.size, w), dtype=bool)
    long_[ok] = changed[lines[ok]] == 0
    return (left > 0) & (right > 0) & long_
