"""Detect and repair the QEMSCAN mosaic "pattern error" on a mineral-id grid.

A QEMSCAN map is stitched from fields (about 355 x 357 label pixels in the study) with
thin seam stripes between them (5 columns / 3 rows there) and each field displaced by a
pixel or so. The study deleted the stripes at hand-counted positions and re-shifted the
fields by hand. :func:`repair_mosaic` finds all of it by itself: whether there is a seam
pattern at all, the field pitch and size, the stripe widths and every field's shift;
then it cuts the fields out and puts them back on a clean grid.

Method
------
1. *Fill and stripe evidence.* Junk pixels are fill pixels flanked by field content (a
   fill pixel far from content is mount) and pixels unlike at least 3 of their 4
   neighbours (noise). Per column (row) gap, the share of junk and of label changes
   between non-junk pixels, over the pixels that cross the section, is searched with a
   comb over every pitch and phase (:func:`_comb`; its noise level comes from lines that
   cross the section, so a small section in a wide mount is no harder than a big one).
   The stripe fill is the id (among those forming most thin, long runs; or none, for
   noise stripes) whose evidence is most periodic. No comb above ``COMB_MIN_Z`` on
   either axis means no seams, and the map comes back unchanged; when one axis's comb
   is sure (``COMB_SURE_Z``), the other needs only ``COMB_MIN_Z_OTHER`` (1-px stripes
   are mostly hidden under the shifts).
2. *Field grid.* In each row of fields, the columns near each tooth where most
   informative pixels are junk form the visible stripe (no visible stripes: no seams).
   Field size, pitch and origin are the most likely given the field starts and ends the
   stripes imply (shifts mostly 0 or +-1, field 0 at the map's corner, widths between
   two visible stripes, or pitch minus stripe width). Candidate grids: the best few
   pitches of the comb, each +-1, those with field 0 at the map's corner first, and the
   best grid with a field one pixel smaller or larger.
3. *Shifts.* Every field's position is chosen among ``nominal +- max_shift`` per axis.
   A seam between two fields scores each pair of positions by log-likelihood ratios:
   pixels claimed as stripe should be junk, neighbouring pixels inside a field agree
   like neighbours in the map, and the two borders that meet across the seam agree like
   pixels at the implied distance (1, or more where the later field overwrote the
   earlier one; the mount's fill id counts there too, so that a field at the section's
   edge lines its outline up with its neighbours'). Across the other seams, the borders
   score the relative offset. Given one axis's shifts, the other axis's shifts of all
   fields are solved together by max-sum belief propagation over the grid of fields;
   the axes alternate.
4. *Reassembly.* Fields are copied onto the clean grid in reverse raster order (a later
   field owns the pixels it overwrote); the few clean pixels no field provides (hidden
   under a later field, or pushed off the map) take the value of a neighbour.
5. *Choice and trust.* A layout is judged by how it sorts the pixels: stripe pixels
   left in the repaired map (a missed seam line) plus field content dropped as stripe
   (a pitch too short, a field too small; with noise stripes net of the share of
   stripe pixels that match a neighbour by chance). The best grid pair is tried first,
   then the other row grids, then the other column grids, until one sorts the pixels
   well. The result is *trusted* when few stripe pixels are left, little content was
   dropped and the fields fit together (``confidence``); a map left alone although it
   shows seam stripes is not trusted either. :mod:`mineralseg.prep.pipeline` stops on
   an untrusted repair unless told to accept it.

Limits: fields of one size on a regular grid drawn in raster order, shifts of at most
``max_shift``, at least 3 fields along an axis with seams. With 1-pixel stripes a whole
seam line can be hidden when the fields along it all overlap or abut, the visible
stripes are wider than the nominal ones (a stripe shows where fields moved apart), so
a pitch one pixel too long with shifts drifting field by field can fit the pixels as
well as the true one, and a field at the section's edge may show too little to place
it. On 308 whole generated samples (``benchmarks/prep_robustness.py``, 2026-11-30):
92.9 % restored, 3.9 % flagged (not trusted; all real failures), 3.2 % wrong without
being flagged (a field at the section's edge placed 1-2 px off: 0.980-0.995 of the
pixels right, every map the right shape), no crash.

Everything runs in memory on the label grid with vectorised numpy: 0.1-1.8 s (median
0.2 s) for the 220-1,130 px maps of the benchmark on a shared 2-core machine, and a few
hundred MB of temporaries for a 4,700 x 4,700 map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from mineralseg.errors import UserError

# --- pitch search (comb)
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
# Pseudo-count of the stripe-evidence profile: columns crossing only a few sample pixels
# do not swing it ...
PROFILE_PRIOR_PIXELS = 20
# ... and columns with fewer informative pixels than this share of the typical column
# are set to the typical value.
PROFILE_MIN_SHARE = 0.25

# --- seam fill and junk
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

# --- visible stripes and the field grid
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

# --- field shifts
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
# Candidate grids kept per axis (best visible stripes first, and the best one with a
# field one pixel smaller and larger). The best pair is repaired first; while the repair
# sorts pixels into stripe and field content with an error (stripe pixels left +
# content pixels dropped, per stripe pixel of the damaged map) above GOOD_LAYOUT_ERROR,
# the other row grids, then the other column grids are tried; the least error wins.
GRID_CANDIDATES = 2
GOOD_LAYOUT_ERROR = 0.01
# Largest share of a noise stripe's pixels taken to match two neighbours by chance (not
# junk) when counting the field content a layout drops (noise stripes of the tests:
# ~5 %); more than that inside the dropped area is field content.
NOISE_MATCH_MAX = 0.15

# --- trust
# A repair is trusted when the seam stripes are gone: at most this share of the damaged
# map's stripe pixels (:func:`_stripe_pixels`) is left in the repaired map (a missed
# seam line leaves 1 / (number of seam lines) or more; good repairs leave none) ...
MAX_RESIDUAL_STRIPES = 0.01
# ... and the fields fit together: confidence (field-border vs field-interior label
# changes, :func:`_seam_continuity`) at least this (good repairs 0.75-1, a wrong grid
# 0.1-0.3).
MIN_TRUSTED_CONFIDENCE = 0.5
# ... and no more field content is dropped as stripe than this share of the stripe pixels
# (a field one pixel too small drops a line per field: 10-50 %).
MAX_CONTENT_LOST = 0.05
# A map left alone is doubtful when more than this share of its section looks like seam
# stripes of the mount id (clean generated maps: 0; damaged maps: 0.5-10 %).
MAX_UNDETECTED_STRIPES = 0.002
# Largest id accepted (ids index histograms).
MAX_ID = 65535
# Rows subsampled for global statistics (fill detection, pair statistics): plenty.
STATS_MAX_LINES = 1500


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


@dataclass
class _Comb:
    """Best periodic comb along one axis (positions index the gap after column c)."""

    period: int
    z: float
    lo: int  # first and last phase of the bump around the best tooth (may be < 0 or >= period)
    hi: int
    seed_z: float = 0.0  # z of the best comb this one was grown from (itself, or a pitch +-1 away)


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

    @property
    def out_length(self) -> int:
        return (self.n - 1) * self.size + self.out_offset + int(self.widths[-1])

    def seams(self) -> list[tuple[int, int]]:
        if not self.detected:
            return []
        ends = self.nominal[:-1] + self.size
        return [(int(a), int(b)) for a, b in zip(ends, self.nominal[1:])]

    @classmethod
    def whole(cls, length: int) -> "_Grid":
        return cls(length=length, pitch=length + 1, size=length, origin=0, detected=False)


@dataclass
class _Llr:
    """Log-likelihood ratios used to score seam hypotheses."""

    junk: float  # a junk pixel claimed as stripe (vs claimed as content)
    clean: float  # a non-junk pixel claimed as stripe
    same: np.ndarray  # (d,) a pair at clean distance d that agrees (vs unrelated pixels)
    diff: np.ndarray  # (d,) a pair at clean distance d that differs


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
    at least 3 fields along an axis with seams (module docstring: method and limits).
    Time and memory grow linearly with the map size (about ten bytes per pixel of
    temporaries; 2-3 s for 4,700 x 4,700).

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
    if isinstance(pattern, str):
        share = _stripe_share(d, _mount_ids(d, ignore_index), ignore_index)
        scores.update(reason=pattern, stripe_share=round(share, 4), seconds=round(time.perf_counter() - t_start, 3))
        doubt = ""
        if share > MAX_UNDETECTED_STRIPES:
            doubt = (f"{100 * share:.1f} % of the section looks like seam stripes but no field grid fits them "
                     f"({pattern})")
        return MosaicRepair(repaired=d.copy(), detected=False, scores=scores, trusted=not doubt, doubt=doubt)
    # the likeliest layout first; while it misclassifies pixels (a missed seam line
    # leaves stripes in the repaired map; a pitch too short or a field too small throws
    # field content away as stripe), the other row grids, then the other column grids
    before = _stripe_pixels(d, pattern.fill, pattern.junk_ids)
    tried: dict[tuple[int, int], _Attempt] = {}

    def attempt(i: int, j: int) -> _Attempt:
        if (i, j) not in tried:
            tried[i, j] = _attempt(d, pattern, i, j, s, before)
        return tried[i, j]

    best = attempt(0, 0)
    for axis, n in ((0, len(pattern.rows)), (1, len(pattern.cols))):
        for k in range(1, n):
            if best.error <= GOOD_LAYOUT_ERROR:
                break
            other = attempt(k, best.j) if axis == 0 else attempt(best.i, k)
            if other.error < best.error:
                best = other
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
        field_origins=np.stack([gy.nominal[:, None] + dy, gx.nominal[None, :] + dx], axis=-1),
        seam_fill_ids=pattern.fill,
        scores=scores,
        residual_stripes=float(residual),
        trusted=not doubt,
        doubt=doubt,
    )


@dataclass
class _Attempt:
    """One field layout repaired: shifts, repaired map and how well it sorts the pixels."""

    i: int  # index of the row grid and the column grid in the pattern
    j: int
    gy: _Grid
    gx: _Grid
    dy: np.ndarray
    dx: np.ndarray
    repaired: np.ndarray
    filled: int  # repaired pixels filled from neighbours
    llr: dict[str, Any]
    lost: int  # field content (non-junk, informative) no field covers: dropped as stripe
    left: int  # stripe pixels (:func:`_stripe_pixels`) left in the repaired map
    error: float  # (lost + left) per stripe pixel of the damaged map


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


def _attempt(d: np.ndarray, pattern: "_Pattern", i: int, j: int, s: int, before: int) -> _Attempt:
    """Solve the shifts of row grid ``i`` x column grid ``j`` and reassemble the map."""
    (gy, st_y), (gx, st_x) = pattern.rows[i], pattern.cols[j]
    llr = _likelihoods(d, pattern.junk, [st for st in (st_y, st_x) if st], s)
    dy, dx = _solve_shifts(d, pattern.junk, pattern.info, gy, gx, s, llr, pattern.border_junk)
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
    return _Attempt(i=i, j=j, gy=gy, gx=gx, dy=dy, dx=dx, repaired=repaired, filled=filled, llr=llr,
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


def _find_pattern(d: np.ndarray, seam_fill_ids, ignore_index: int | None, s: int, min_pitch: int,
                  scores: dict[str, Any]) -> _Pattern | str:
    """Steps 1-3: fill, junk, pitch and the field grid per axis (or why there is none)."""
    h, w = d.shape
    if max(h, w) // MIN_SEAMS < min_pitch:
        return "map too small for 3 fields"
    hdiff = d[:, 1:] != d[:, :-1]
    vdiff = d[1:, :] != d[:-1, :]
    extra = {int(ignore_index)} if ignore_index is not None else set()
    if seam_fill_ids is None:
        ev = _detect_fill(d, hdiff, vdiff, extra, min_pitch)
    else:
        ev = _evidence(d, hdiff, vdiff, tuple(sorted({int(v) for v in seam_fill_ids})), extra, min_pitch)
    del hdiff, vdiff
    scores["seam_fill_detected"] = seam_fill_ids is None
    scores["fill_ids"] = list(ev.fill)
    fill, junk, info, candidates = ev.fill, ev.junk, ev.info, ev.combs
    junk_ids = set(fill) | extra
    info_t = None if info is None else info.T
    live = {k: [c for c in cs if c.seed_z >= COMB_MIN_Z] for k, cs in candidates.items()}
    for name, cs in candidates.items():
        scores[f"comb_z_{name}"] = round(float(cs[0].z), 2) if cs else 0.0
    if not any(live.values()):
        return "no periodic pattern in the stripe evidence"
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
        # a grid whose field 0 starts at the map's corner first (ORIGIN_AT_CORNER_P: a
        # pitch twice the true one, fitted to every other seam, starts a field off it)
        ranked = sorted(((t[0] is not None and t[0].origin == 0, t[1]["visible"] * t[1]["visible_share"], c.z, -i, t)
                         for i, (c, t) in enumerate(zip(live[name], tried)) if t[0] is not None), reverse=True)
        grids[name] = []
        for *_, (g, st) in ranked:
            if all((g.pitch, g.size, g.origin) != (o.pitch, o.size, o.origin) for o, _ in grids[name]):
                grids[name].append((g, st))
        grids[name] = grids[name][:GRID_CANDIDATES]
        if grids[name]:  # the field size is the least sure: a pixel more or less
            g, st = grids[name][0]
            for size in (g.size - 1, g.size + 1):
                alt = _make_grid(g.length, g.pitch, size, g.origin)
                if alt is not None and all((alt.pitch, alt.size, alt.origin) != (o.pitch, o.size, o.origin)
                                           for o, _ in grids[name]):
                    grids[name].append((alt, st))
        if grids[name]:
            scores[f"visible_seams_{name}"] = round(grids[name][0][1]["visible_share"], 3)
    if not grids["rows"] and not grids["cols"]:
        return "no visible seam stripes"
    return _Pattern(rows=grids["rows"] or [(_Grid.whole(h), None)], cols=grids["cols"] or [(_Grid.whole(w), None)],
                    junk=junk, info=info, fill=fill, junk_ids=junk_ids,
                    border_junk=junk & ~np.isin(d, list(fill)) if fill else junk)


def _axis_grid(comb: _Comb, junk: np.ndarray, info: np.ndarray | None, length: int,
               lines: list[tuple[int, int]], s: int) -> tuple[_Grid | None, dict[str, float]]:
    """Visible stripes near the comb's teeth (axis 1 of ``junk``) and the grid they fit."""
    found, stats = _stripe_runs(junk, info, _bands(comb, length, s + 2), lines)
    if stats["visible_share"] < MIN_VISIBLE_SEAMS or stats["visible"] < MIN_SEAMS:
        return None, stats
    return _fit_grid(found, comb, length, s), stats


def seam_figure_data(rep: MosaicRepair) -> dict[str, Any]:
    """Plain, JSON-ready positions for a QA figure of the detected seams.

    Parameters
    ----------
    rep : MosaicRepair

    Returns
    -------
    dict
        ``detected``, ``confidence``, ``seam_rows`` / ``seam_cols`` (``[start, stop)``
        nominal stripes in the damaged map), ``fields`` (one ``[y, x, h, w]`` rectangle
        per field in the damaged map, raster order), ``shifts`` (nfy x nfx x [dy, dx]),
        ``repaired_boundaries_rows`` / ``_cols`` (field borders in the repaired map) and
        ``scores``.
    """
    out: dict[str, Any] = {
        "detected": bool(rep.detected),
        "confidence": float(rep.confidence),
        "seam_rows": [[int(a), int(b)] for a, b in rep.seam_rows],
        "seam_cols": [[int(a), int(b)] for a, b in rep.seam_cols],
        "shifts": np.asarray(rep.shifts).tolist(),
        "fields": [],
        "repaired_boundaries_rows": [],
        "repaired_boundaries_cols": [],
        "scores": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rep.scores.items()},
    }
    if not rep.detected or rep.field_size is None or rep.origin is None:
        return out
    fh, fw = rep.field_size
    hh, ww = rep.repaired.shape
    nfy, nfx = rep.shifts.shape[:2]
    oy, ox = min(rep.origin[0], 0), min(rep.origin[1], 0)
    out["repaired_boundaries_rows"] = [int(i * fh + oy) for i in range(1, nfy)]
    out["repaired_boundaries_cols"] = [int(j * fw + ox) for j in range(1, nfx)]
    for i in range(nfy):
        for j in range(nfx):
            y, x = (int(v) for v in rep.field_origins[i, j])
            fh_ij = min(fh, hh - (i * fh + oy)) if i == nfy - 1 else fh
            fw_ij = min(fw, ww - (j * fw + ox)) if j == nfx - 1 else fw
            out["fields"].append([y, x, int(fh_ij), int(fw_ij)])
    return out


# --------------------------------------------------------------------------- checks
def _check_map(damaged: np.ndarray) -> np.ndarray:
    d = np.asarray(damaged)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.integer):
        raise UserError(f"repair_mosaic: expected a 2-D integer id map, got shape {d.shape} dtype {d.dtype}")
    if min(d.shape) < 2:
        raise UserError(f"repair_mosaic: map of shape {d.shape} is too small")
    if d.min() < 0 or d.max() > MAX_ID:
        raise UserError(f"repair_mosaic: ids must be in 0..{MAX_ID}, got {d.min()}..{d.max()}")
    return d


# --------------------------------------------------------------------------- step 1: junk
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
    combs = {
        "rows": _comb(*_stripe_profile(vdiff.T, junk.T, cover.T), min_pitch=min_pitch, top=COMB_CANDIDATES),
        "cols": _comb(*_stripe_profile(hdiff, junk, cover), min_pitch=min_pitch, top=COMB_CANDIDATES),
    }
    return _Evidence(fill=fill, junk=junk, info=info, combs=combs)


def _detect_fill(d: np.ndarray, hdiff: np.ndarray, vdiff: np.ndarray, extra_junk: set[int],
                 min_pitch: int) -> _Evidence:
    """The id the seam stripes are filled with (none for noise stripes), with its evidence.

    Candidates are the ids with most stripe-like pixels (thin across a line, long along
    it: :func:`_stripe_like`) on either axis. Each candidate, and "no fill id", is
    tried as the fill: the one whose stripe evidence is most periodic (largest comb
    z-score, :attr:`_Evidence.z`) wins. A wrong id adds its grains inside the section
    as junk everywhere and flattens the comb; leaving out the true fill id leaves its
    stripes as content. Needs no pitch: the comb of each choice finds its own.
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
    best = None
    for fill in options:
        ev = _evidence(d, hdiff, vdiff, fill, extra_junk, min_pitch)
        if best is None or ev.z > best.z:
            best = ev
    return best


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


# --------------------------------------------------------------------------- step 2: comb
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
    squashed = np.clip(rel / sigma, -COMB_CAP, COMB_CAP)
    padded = np.zeros((2, n + max_pitch))
    padded[0, :n] = squashed
    padded[1, :n] = rel / sigma

    def teeth(p: int, which: int) -> tuple[np.ndarray, np.ndarray]:
        k = -(-n // p)
        sums = padded[which, : k * p].reshape(k, p).sum(axis=0)
        counts = np.full(p, k)
        counts[n - (k - 1) * p:] -= 1
        return sums, counts

    def best_phase(p: int, which: int, per: str) -> tuple[float, int]:
        sums, counts = teeth(p, which)
        norm = np.maximum(counts, 1) if per == "mean" else np.sqrt(np.maximum(counts, 1))
        val = np.where(counts >= MIN_SEAMS, sums / norm, -np.inf)
        i = int(np.argmax(val))
        return float(val[i]), i

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
            phase = best_phase(p, 0, "mean")[1]
            sums, counts = teeth(p, 1)
            z = float(sums[phase] / np.sqrt(counts[phase]))
            seed_z = z if seed_z is None else seed_z
            lo, hi = _bump(sums / np.maximum(counts, 1), phase)
            found.append(_Comb(period=p, z=z, lo=lo - COMB_SMOOTH // 2, hi=hi + COMB_SMOOTH // 2, seed_z=seed_z))
    return found if top > 1 else found[0]


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


# --------------------------------------------------------------------------- step 3: stripes
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


def _fit_grid(found: list[list[tuple[int, int] | None]], c: _Comb, length: int, s: int) -> _Grid | None:
    """Field grid of one axis from its visible stripes (None if they do not fit one).

    A visible stripe ``[e, t)`` after field m says that field m ends at e and field m+1
    starts at t: ``e = origin + m * pitch + size + shift_m`` and ``t = origin + (m + 1) *
    pitch + shift_m+1``. Size, pitch and origin maximise the likelihood of the implied
    shifts (``FIT_SHIFT_LOGP``) plus the prior of an origin at the map's corner. The
    size is searched around the mode of the widths between two visible stripes and
    around the comb's pitch minus the commonest stripe width.
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
        pitches = range(max(size, c.period - dp), c.period + dp + 1)
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


# --------------------------------------------------------------------------- step 4: shifts
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


def _solve_shifts(d: np.ndarray, junk: np.ndarray, info: np.ndarray | None, gy: _Grid, gx: _Grid,
                  s: int, llr: dict[str, Any], border_junk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shifts (dy, dx), each (nfy, nfx) in [-s, s], alternating between the two axes.

    First each column of fields gets its row shifts on its own (Viterbi). Then, given
    one axis's shifts, the other axis's shifts of all fields are chosen together on the
    grid of fields (max-sum belief propagation): seams along the axis score pairs of
    positions, and the borders that meet across the other seams score relative
    offsets. Rounds alternate until nothing changes.
    """
    dT, jT, iT, bT = d.T, junk.T, None if info is None else info.T, border_junk.T
    unary, pair = _axis_potentials(dT, jT, iT, gy, gx, s, None, llr["rows"], bT)
    dy = _max_sum(unary, pair, None).T - s
    dx = None
    for _ in range(SHIFT_ROUNDS):
        # column shifts: seams between columns of fields + borders across row seams
        unary, pair = _axis_potentials(d, junk, info, gx, gy, s, dy, llr["cols"], border_junk)
        across = _cross_pairs(_alignment(dT, bT, iT, gy, gx, s, dy.T, llr["rows"]), s)  # (nfx, nfy-1, k, k)
        dx_new = _max_sum(unary, pair, across.transpose(1, 0, 2, 3)) - s
        # row shifts likewise
        unary, pair = _axis_potentials(dT, jT, iT, gy, gx, s, dx_new.T, llr["rows"], bT)
        across = _cross_pairs(_alignment(d, border_junk, info, gx, gy, s, dx_new, llr["cols"]), s)  # (nfy, nfx-1, k, k)
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


def _alignment(d: np.ndarray, junk: np.ndarray, info: np.ndarray | None, ga: _Grid, go: _Grid, s: int,
               along: np.ndarray, llr: _Llr) -> np.ndarray:
    """(go.n, ga.n - 1, 4s+1) LLR of the two borders meeting at each seam along axis 1.

    For fields at positions ``nominal + along`` (axis 1), compares the last visible
    column of the left field with the first column of the right one, the right one
    offset along axis 0 by -2s..2s.
    """
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


def _axis_potentials(d: np.ndarray, junk: np.ndarray, info: np.ndarray | None, ga: _Grid, go: _Grid,
                     s: int, other_shifts: np.ndarray | None, llr: _Llr,
                     border_junk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the candidate positions along axis 1 of ``d`` for every field.

    Returns ``unary`` (go.n, ga.n, 2s+1): shift prior plus, for the first and last field
    of each line, the map's ends; ``pair`` (go.n, ga.n - 1, 2s+1, 2s+1): the seam between
    fields f and f+1 of a line for [state of f, state of f+1]; states are shifts -s..s
    from the nominal position. Seams are scored with log-likelihood ratios (module
    docstring). ``other_shifts`` (go.n, ga.n) are the known shifts along axis 0, used to
    align the two borders that meet across a seam; when None the best alignment within
    +-2s is taken.
    """
    h, w = d.shape
    nh = 2 * s + 1
    nominal, widths = ga.nominal, ga.widths
    unary = np.broadcast_to(_shift_log_prior(s), (go.n, ga.n, nh)).copy()
    pair = np.zeros((go.n, max(ga.n - 1, 0), nh, nh))
    # hypothesis grid for one seam: left field state u, right field state v
    sw = ga.pitch - ga.size if ga.detected else 0
    wn = sw + 2 * s + 4
    uu, vv = np.meshgrid(np.arange(nh), np.arange(nh), indexing="ij")
    la = (uu + 2).ravel()  # end of the left field, window coordinates
    xs = (sw + 2 + vv).ravel()  # start of the right field
    m = np.minimum(la, xs)
    ca = m - 1  # last visible column of the left field
    dist = la - ca
    for i in range(go.n):
        rows = _line_rows(go, i, s, h)
        if rows.size == 0:
            continue
        if ga.n > 1:
            w0 = nominal[:-1] + ga.size - s - 2
            cols = w0[:, None] + np.arange(wn)[None, :]
            pair[i] = _seam_scores(d, junk, info, rows, cols, la, xs, m, ca, dist, llr, s,
                                   None if other_shifts is None else np.diff(other_shifts[i]),
                                   junk if border_junk is None else border_junk).reshape(ga.n - 1, nh, nh)
        # the map's ends: columns before field 0 and after the last field are stripe
        unary[i, 0] += _end_scores(d, junk, info, rows, int(nominal[0]), s, llr, left=True, width=w)
        unary[i, -1] += _end_scores(d, junk, info, rows, int(nominal[-1] + widths[-1]), s, llr,
                                    left=False, width=w)
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


def _seam_scores(d, junk, info, rows, cols, la, xs, m, ca, dist, llr: _Llr, s: int,
                 ddy: np.ndarray | None, border_junk: np.ndarray) -> np.ndarray:
    """(n_seams, n_hyp) log-likelihood ratio of each (left end, right start) hypothesis."""
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


def _end_scores(d, junk, info, rows, edge: int, s: int, llr: _Llr, *, left: bool, width: int) -> np.ndarray:
    """(2s+1,) score of each position of the first (last) field against the map's end.

    Beyond the field's edge up to the map's end, pixels are stripe fill.
    """
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


# --------------------------------------------------------------------------- trust
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


# --------------------------------------------------------------------------- step 5: reassembly
def _reassemble(d: np.ndarray, gy: _Grid, gx: _Grid, dy: np.ndarray,
                dx: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Copy the fields onto the clean grid; fill pixels no field provides.

    Returns the repaired map, the number of its pixels filled from neighbours and the
    (H, W) mask of damaged pixels some field covers (the rest was taken as stripe).
    """
    h, w = d.shape
    oh, ow = gy.out_length, gx.out_length
    out = np.zeros((oh, ow), dtype=d.dtype)
    known = np.zeros((oh, ow), dtype=bool)
    taken = np.zeros((h, w), dtype=bool)  # damaged pixels owned by a later field
    ny, nx = gy.nominal, gx.nominal
    hy, wx = gy.widths, gx.widths
    for i in range(gy.n - 1, -1, -1):
        for j in range(gx.n - 1, -1, -1):
            y, x = int(ny[i] + dy[i, j]), int(nx[j] + dx[i, j])
            oy, ox = i * gy.size + gy.out_offset, j * gx.size + gx.out_offset
            t0 = max(0, -oy, -y)
            t1 = min(int(hy[i]), oh - oy, h - y)
            u0 = max(0, -ox, -x)
            u1 = min(int(wx[j]), ow - ox, w - x)
            if t1 <= t0 or u1 <= u0:
                continue
            free = ~taken[y + t0:y + t1, x + u0:x + u1]
            dst = out[oy + t0:oy + t1, ox + u0:ox + u1]
            dst[free] = d[y + t0:y + t1, x + u0:x + u1][free]
            known[oy + t0:oy + t1, ox + u0:ox + u1] |= free
            taken[y + t0:y + t1, x + u0:x + u1] = True
    n_unknown = int(oh * ow - np.count_nonzero(known))
    if n_unknown:
        _fill_nearest(out, known)
    return out, n_unknown, taken


def _fill_nearest(out: np.ndarray, known: np.ndarray) -> None:
    """Give unknown pixels the value of a known neighbour, growing inwards (in place)."""
    h, w = out.shape
    uy, ux = np.nonzero(~known)
    for _ in range(64):
        if uy.size == 0:
            return
        done = np.zeros(uy.size, dtype=bool)
        for oy, ox in ((0, -1), (0, 1), (-1, 0), (1, 0)):
            ny, nx = uy + oy, ux + ox
            ok = ~done & (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            ok[ok] = known[ny[ok], nx[ok]]
            out[uy[ok], ux[ok]] = out[ny[ok], nx[ok]]
            done |= ok
        known[uy[done], ux[done]] = True
        uy, ux = uy[~done], ux[~done]
    if uy.size:  # far from any field pixel (cannot happen with sane grids): nearest by EDT
        _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
        out[uy, ux] = out[iy[uy, ux], ix[uy, ux]]


def _seam_continuity(out: np.ndarray, gy: _Grid, gx: _Grid, junk_ids: set[int]) -> dict[str, float]:
    """Label-change rate across field borders vs inside fields in the repaired map."""
    res: dict[str, float] = {}
    worst = 1.0
    for name, arr, g in (("rows", out.T, gy), ("cols", out, gx)):
        if not g.detected or g.n < 2:
            continue
        borders = np.arange(1, g.n) * g.size + g.out_offset
        borders = borders[(borders > 0) & (borders < arr.shape[1])]
        inner = np.clip(borders - g.size // 2, 1, arr.shape[1] - 1)
        rate = []
        for cols in (borders, inner):
            a, b = arr[:, cols - 1], arr[:, cols]
            ok = np.ones(a.shape, dtype=bool)
            if junk_ids:
                ok = ~np.isin(a, list(junk_ids)) & ~np.isin(b, list(junk_ids))
            rate.append(np.count_nonzero((a != b) & ok) / max(np.count_nonzero(ok), 1))
        seam, inside = rate
        res[f"seam_change_rate_{name}"] = round(float(seam), 4)
        res[f"field_change_rate_{name}"] = round(float(inside), 4)
        # 1 when borders change like field interiors, 0 at 5x the interior rate or worse
        excess = max(0.0, seam - inside) / max(4 * inside, 1e-3)
        worst = min(worst, float(np.clip(1 - excess, 0, 1)))
    res["confidence"] = round(worst, 3)
    return res
