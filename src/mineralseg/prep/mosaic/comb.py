"""The periodic comb of the mosaic repair: field pitch and phase along one axis.

:func:`_comb` scores every pitch and phase of a stripe-evidence profile against its
noise level (a z-score) and keeps the best few distinct pitches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Smallest pitch (field + stripe) searched, in pixels: smaller "fields" cannot be told
# from grain texture.
MIN_PITCH = 16
# A pattern needs at least this many seams (3 fields) along an axis.
MIN_SEAMS = 2
# Comb z-score below which an axis has no periodic seam pattern, on the stripe evidence
# (second comb). Clean synthetic maps reach 2-7 on grain texture, seams 7 to several
# hundred; the visible stripes then confirm (clean maps show none).
COMB_MIN_Z = 5.0
# ... on an axis whose other axis reaches COMB_SURE_Z (1-px row stripes under +-2 shifts:
# 3.8-4.8 on generated samples, their columns 18-33; clean generated maps reach up to 13
# on one axis, and a clean map's section edges can then fit a grid on the other).
COMB_MIN_Z_OTHER = 3.0
COMB_SURE_Z = 15.0
# Neighbouring gaps averaged in the comb profile (a stripe changes labels at both edges).
COMB_SMOOTH = 5
# Comb profile values are clipped at this many robust spreads when choosing the pitch:
# a seam is a seam; the comb should count how many teeth hit one.
COMB_CAP = 10.0
# A divided pitch replaces the best comb when most of the teeth it adds peak at this many
# robust spreads (noise between seams: 1-3; a weak seam of overlapping fields: 4-5) or at
# this share of the old teeth's height, whichever is less; "most": this share of them.
HARMONIC_MIN_TOOTH = 4.0
HARMONIC_KEEP = 0.6
HARMONIC_MAJORITY = 0.6
# Candidate pitches per axis from the stripe evidence (checked against visible stripes),
# at least this share of a pitch apart.
COMB_CANDIDATES = 3
COMB_DISTINCT = 0.1
# Low comb values bridged inside one bump (a 6-px constant stripe changes only at its edges).
BUMP_GAP = 6


@dataclass
class _Comb:
    """Best periodic comb along one axis (positions index the gap after column c)."""

    period: int
    z: float
    lo: int  # first and last phase of the bump around the best tooth (may be < 0 or >= period)
    hi: int
    seed_z: float = 0.0  # z of the best comb this one was grown from (itself, or a pitch +-1 away)


def _comb(profile: np.ndarray, valid: np.ndarray | None = None, *, min_pitch: int,
          top: int = 1) -> _Comb | list[_Comb] | None:
    """Best periodic comb (pitch, phase) over a per-gap label-change profile.

    The profile is high-passed and averaged over ``COMB_SMOOTH`` neighbours (a constant
    stripe changes labels at both of its edges only). The pitch is chosen on a copy
    clipped at ``COMB_CAP`` robust spreads (one strong seam must not carry a comb): the
    comb with the largest sum over sqrt(teeth), then divided by 2, 3, ... as long as the
    divided comb keeps most of the mean tooth height (a multiple of the true pitch can
    win on uneven teeth; most of the teeth the division adds, where ``valid``, must then
    peak out of the noise too). The z-score reported is that comb's sum over sqrt(teeth)
    on the uncompressed profile, in units of its robust spread. With ``top`` > 1, returns
    a list: the combs grown from the ``top`` best distinct pitches.
    """
    n = profile.size
    max_pitch = n // MIN_SEAMS
    if max_pitch < min_pitch:
        return [] if top > 1 else None
    padded, valid = _normalised(profile, valid, min_pitch)

    def best_phase(p: int, which: int, per: str) -> tuple[float, int]:
        return _best_phase(padded, n, p, which, per)

    zs = np.array([best_phase(p, 0, "z")[0] for p in range(min_pitch, max_pitch + 1)])
    found: list[_Comb] = []
    starts: list[int] = []
    for i in np.argsort(zs)[::-1]:
        start = int(i) + min_pitch
        if len(starts) >= top:
            break
        if not np.isfinite(zs[i]) or any(abs(start - c) <= COMB_DISTINCT * c for c in starts):
            continue
        starts.append(start)
        pitch = _divide_pitch(start, min_pitch, n, padded[0], valid, best_phase)
        # with only a few teeth across a small section the neighbouring pitches score
        # almost alike: they are candidates too (their visible stripes decide)
        seed_z = None
        for p in (pitch, pitch - 1, pitch + 1) if top > 1 else (pitch,):
            if p < min_pitch or p > max_pitch or any(c.period == p for c in found):
                continue
            comb = _comb_of(padded, n, p)
            seed_z = comb.z if seed_z is None else seed_z
            comb.seed_z = seed_z
            found.append(comb)
    return found if top > 1 else found[0]


def _normalised(profile: np.ndarray, valid: np.ndarray | None, min_pitch: int) -> tuple[np.ndarray, np.ndarray]:
    """The profile high-passed, smoothed and in units of its robust spread, padded.

    Returns ``(padded, valid)``: ``padded[0]`` clipped at ``COMB_CAP`` (for choosing
    the pitch), ``padded[1]`` not clipped (for z-scores), both zero past the profile's
    end (``n // MIN_SEAMS`` values) and where not ``valid``.
    """
    n = profile.size
    profile = profile.astype(np.float64)
    valid = np.ones(n, dtype=bool) if valid is None else valid
    base = ndimage.percentile_filter(profile, 25, size=2 * min_pitch + 1, mode="nearest")
    rel = ndimage.uniform_filter1d(profile - base, COMB_SMOOTH, mode="nearest")
    # noise level from the lines that cross the sample only: the mount around a small
    # section is flat, and counting it would make every wiggle inside look significant
    ref = rel[valid] if np.count_nonzero(valid) > 2 * min_pitch else rel
    rel -= np.median(ref)  # zero-mean noise: otherwise combs with many teeth gain
    sigma = max(1.4826 * float(np.median(np.abs(ref - np.median(ref)))), 1e-9)
    rel[~valid] = 0.0
    padded = np.zeros((2, n + max(n // MIN_SEAMS, 1)))
    padded[0, :n] = np.clip(rel / sigma, -COMB_CAP, COMB_CAP)
    padded[1, :n] = rel / sigma
    return padded, valid


def _teeth(padded: np.ndarray, n: int, p: int, which: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the profile's values at each phase of pitch ``p``."""
    k = -(-n // p)
    sums = padded[which, : k * p].reshape(k, p).sum(axis=0)
    counts = np.full(p, k)
    counts[n - (k - 1) * p:] -= 1
    return sums, counts


def _best_phase(padded: np.ndarray, n: int, p: int, which: int, per: str) -> tuple[float, int]:
    """Best (value, phase) of pitch ``p``: tooth sum per tooth (``per="mean"``) or per sqrt(teeth)."""
    sums, counts = _teeth(padded, n, p, which)
    norm = np.maximum(counts, 1) if per == "mean" else np.sqrt(np.maximum(counts, 1))
    val = np.where(counts >= MIN_SEAMS, sums / norm, -np.inf)
    i = int(np.argmax(val))
    return float(val[i]), i


def _comb_of(padded: np.ndarray, n: int, p: int) -> _Comb:
    """The comb of pitch ``p`` at its best phase (``seed_z``: its own z)."""
    phase = _best_phase(padded, n, p, 0, "mean")[1]
    sums, counts = _teeth(padded, n, p, 1)
    z = float(sums[phase] / np.sqrt(counts[phase]))
    lo, hi = _bump(sums / np.maximum(counts, 1), phase)
    return _Comb(period=p, z=z, lo=lo - COMB_SMOOTH // 2, hi=hi + COMB_SMOOTH // 2, seed_z=z)


def _combs_at(profile: np.ndarray, valid: np.ndarray | None, pitches: list[int], *,
              min_pitch: int) -> list[_Comb]:
    """The combs of given pitches, each at its best phase (pitches without 3 teeth left out).

    For pitches the data alone do not single out (1-pixel stripes mostly hidden under
    the field shifts): the other axis's pitch, half a pitch that may be doubled. The
    profile is normalised once for all of them.
    """
    n = profile.size
    keep = [p for p in pitches if max(min_pitch, 1) <= p <= n // MIN_SEAMS]
    if not keep:
        return []
    padded, _ = _normalised(profile, valid, min_pitch)
    return [_comb_of(padded, n, p) for p in keep]


def _divide_pitch(pitch: int, min_pitch: int, n: int, squashed: np.ndarray, valid: np.ndarray,
                  best_phase) -> int:
    """``pitch`` divided by 2, 3, ... while the teeth the division adds peak too."""
    height, phase0 = best_phase(pitch, 0, "mean")
    old_teeth = np.arange(phase0, n, pitch)
    for q in range(2, pitch // min_pitch + 1):
        passing = []
        for p in range(pitch // q - 2, pitch // q + 3):
            if p < min_pitch:
                continue
            # the teeth the divided comb adds must be seams too, not only the old ones
            sub = np.arange(phase0 % p, n, p)
            new = sub[np.min(np.abs(sub[:, None] - old_teeth[None, :]), axis=1) > COMB_SMOOTH]
            new = new[valid[new]]
            if new.size == 0:
                continue
            peaks = np.array([squashed[max(t - 1, 0):t + 2].max() for t in new])
            if np.mean(peaks >= min(HARMONIC_MIN_TOOTH, HARMONIC_KEEP * height)) >= HARMONIC_MAJORITY:
                passing.append((best_phase(p, 0, "z")[0], p))
        if passing:
            return max(passing)[1]
    return pitch


def _bump(g: np.ndarray, peak: int) -> tuple[int, int]:
    """Circular run of high comb values around ``peak``.

    Gaps of up to ``BUMP_GAP`` low values are bridged: inside a wide stripe of one fill id
    labels do not change, only at its two edges.
    """
    p = g.size
    base = float(np.median(g))
    thr = base + 0.25 * (g[peak] - base)
    high = g > thr
    ext = []
    for step in (-1, 1):
        last, gap, t = 0, 0, 0
        while abs(t) < p // 2 - 1:
            t += step
            if high[(peak + t) % p]:
                last, gap = t, 0
            else:
                gap += 1
                if gap > BUMP_GAP:
                    break
        ext.append(last)
    return peak + ext[0], peak + ext[1]
