"""Synthetic QEMSCAN mosaic damage: seam stripes between fields and shifted fields.

A QEMSCAN map is stitched from fields acquired one after the other. The study's maps
(about 4,700 x 4,700 label pixels) came with a "pattern error": thin stripes between the
fields (5 columns / 3 rows there) and every field displaced by a pixel or so. This module
puts the same damage on a clean mineral-id map so that :mod:`mineralseg.prep.mosaic` can
be tested against a known truth.

Damage model
------------
1. The clean ``(H, W)`` map is cut into fields of ``fh x fw`` pixels, row by row; the
   last field row / column may be partial. There are ``nfy = ceil(H / fh)`` field rows
   and ``nfx = ceil(W / fw)`` field columns.
2. The damaged canvas has seam stripes of ``sh`` rows and ``sw`` columns between
   fields: ``H' = H + (nfy - 1) * sh`` and ``W' = W + (nfx - 1) * sw``. Field ``(i, j)``
   has its nominal top-left corner at ``(i * (fh + sh), j * (fw + sw))``.
3. Each field is drawn at its nominal corner plus a shift ``(dy, dx)``, each component
   in ``[-max_shift, max_shift]``: 0 with probability 1/2, otherwise a magnitude ``m``
   with probability proportional to ``(1/3) ** m`` and a random sign (so mostly 0 or
   +-1). Fields are drawn in raster order; where shifted fields overlap, the later field
   overwrites the earlier one and a little information is really lost. Parts of a field
   pushed off the canvas are lost too.
4. Canvas pixels that no field covers keep the seam fill: a constant id
   (``fill="constant"``, e.g. the white background class) or random ids
   (``fill="noise"``, a harder variant where the stripes have no colour of their own).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mineralseg.errors import UserError

# Smallest field side drawn when ``field_size`` is not given (the repair searches pitches
# from 16 px up; 24 keeps a margin and is far below the study's ~355 px).
MIN_DRAWN_FIELD = 24
# A map must hold at least this many fields per axis: fewer fields give too few seams to
# speak of a periodic pattern ...
MIN_FIELDS_PER_AXIS = 3
# ... and drawn field sizes give at least this many (with 3 fields and 1-px stripes a
# whole seam line is often hidden by the shifts, which no repair can see).
DRAWN_MIN_FIELDS = 4
# Drawn fields are at least this fraction of the shorter side divided by 12 (about a
# dozen fields per axis at most, like the study's 13 x 13 mosaic).
FIELDS_PER_AXIS_MAX = 12
# Seam stripe widths drawn when ``seam_width`` is not given (the study had 3 and 5).
SEAM_WIDTH_RANGE = (1, 6)
# Fields may differ in height and width by up to this many pixels (355 x 357 in the study).
FIELD_ASPECT_JITTER = 2
# Probability that a shift component is exactly 0; magnitudes m >= 1 share the rest with
# weights (1/3) ** m, so shifts are mostly 0 or +-1 as observed.
P_NO_SHIFT = 0.5
SHIFT_DECAY = 1.0 / 3.0

FILL_MODES = ("constant", "noise")


def apply_mosaic_damage(
    clean: np.ndarray,
    rng: np.random.Generator,
    *,
    seam_fill_id: int,
    field_size: int | tuple[int, int] | None = None,
    seam_width: int | tuple[int, int] | None = None,
    max_shift: int = 2,
    fill: str = "constant",
    noise_ids: np.ndarray | list[int] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stitch a clean id map into a damaged mosaic with seam stripes and shifted fields.

    Parameters
    ----------
    clean : (H, W) ndarray of uint8
        Clean mineral-id map.
    rng : numpy.random.Generator
        Source of every random choice (field size, seam widths, shifts, noise).
    seam_fill_id : int
        Id (0..255) of the stripe pixels for ``fill="constant"``, typically the white
        background class. Recorded in the layout for ``fill="noise"`` too.
    field_size : int or (fh, fw), optional
        Field size in clean pixels. Drawn when omitted: a side between
        ``max(24, min(H, W) / 12)`` and ``min(H, W) / 4`` (at least 4 x 4 fields), the
        other side within +-2 pixels of it.
    seam_width : int or (sh, sw), optional
        Stripe height (rows) and width (columns), >= 0. Each drawn in 1..6 when omitted.
    max_shift : int, default 2
        Largest field shift per axis, in pixels (>= 0).
    fill : {"constant", "noise"}, default "constant"
        Stripe pixels: ``seam_fill_id`` or random ids.
    noise_ids : sequence of int, optional
        Ids the noise fill draws from (uniformly); default: the ids present in ``clean``.

    Returns
    -------
    damaged : (H + (nfy - 1) * sh, W + (nfx - 1) * sw) ndarray of uint8
        The damaged mosaic.
    layout : dict
        JSON-serialisable description of the damage: ``clean_shape``, ``damaged_shape``,
        ``field_size`` [fh, fw], ``seam_width`` [sh, sw], ``pitch`` [fh + sh, fw + sw],
        ``n_fields`` [nfy, nfx], ``max_shift``, ``fill``, ``seam_fill_id``,
        ``shifts`` (nfy x nfx x [dy, dx] nested lists), ``fields`` (one dict per field
        with ``row``, ``col``, ``origin`` (nominal top-left in the damaged map),
        ``shift``, ``clean_origin`` and ``size``), ``seam_rows`` / ``seam_cols``
        ([start, stop) of each nominal stripe in the damaged map) and ``lost_pixels``
        (clean pixels overwritten by a later field or pushed off the canvas).

    Raises
    ------
    UserError
        If ``clean`` is not a 2-D integer map, the map is too small for 3 x 3 fields of
        at least 1 pixel, or an option is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.integers(0, 5, (120, 130)).astype(np.uint8)
    >>> damaged, layout = apply_mosaic_damage(clean, rng, seam_fill_id=4,
    ...                                       field_size=40, seam_width=(3, 5))
    >>> damaged.shape, layout["n_fields"]
    ((126, 145), [3, 4])
    """
    clean = _check_clean(clean)
    if fill not in FILL_MODES:
        raise UserError(f"mosaic damage: fill must be one of {FILL_MODES}, got {fill!r}")
    if not 0 <= int(seam_fill_id) <= 255:
        raise UserError(f"mosaic damage: seam_fill_id must be in 0..255, got {seam_fill_id}")
    if int(max_shift) < 0:
        raise UserError(f"mosaic damage: max_shift must be >= 0, got {max_shift}")
    h, w = clean.shape
    fh, fw = _field_size(field_size, h, w, rng)
    sh, sw = _seam_width(seam_width, rng)
    nfy, nfx = -(-h // fh), -(-w // fw)
    out_shape = (h + (nfy - 1) * sh, w + (nfx - 1) * sw)

    if fill == "constant":
        damaged = np.full(out_shape, int(seam_fill_id), dtype=np.uint8)
    else:
        ids = np.unique(clean) if noise_ids is None else np.asarray(noise_ids, dtype=np.uint8).ravel()
        if ids.size == 0:
            raise UserError("mosaic damage: noise_ids is empty")
        damaged = rng.choice(ids, size=out_shape).astype(np.uint8)

    shifts = draw_shifts(rng, (nfy, nfx), int(max_shift))
    owner = np.full(out_shape, -1, dtype=np.int32)
    fields = []
    for i in range(nfy):
        for j in range(nfx):
            cy, cx = i * fh, j * fw
            fh_ij, fw_ij = min(fh, h - cy), min(fw, w - cx)
            oy, ox = i * (fh + sh), j * (fw + sw)
            dy, dx = (int(v) for v in shifts[i, j])
            ty, tx = oy + dy, ox + dx
            r0, c0 = max(0, -ty), max(0, -tx)  # part of the field that lands on the canvas
            r1, c1 = min(fh_ij, out_shape[0] - ty), min(fw_ij, out_shape[1] - tx)
            if r1 > r0 and c1 > c0:
                damaged[ty + r0:ty + r1, tx + c0:tx + c1] = clean[cy + r0:cy + r1, cx + c0:cx + c1]
                owner[ty + r0:ty + r1, tx + c0:tx + c1] = i * nfx + j
            fields.append({
                "row": i, "col": j, "origin": [oy, ox], "shift": [dy, dx],
                "clean_origin": [cy, cx], "size": [fh_ij, fw_ij],
            })
    visible = int(np.count_nonzero(owner >= 0))
    layout = {
        "model": "mosaic-fields-v1",
        "clean_shape": [h, w],
        "damaged_shape": list(out_shape),
        "field_size": [fh, fw],
        "seam_width": [sh, sw],
        "pitch": [fh + sh, fw + sw],
        "n_fields": [nfy, nfx],
        "max_shift": int(max_shift),
        "fill": fill,
        "seam_fill_id": int(seam_fill_id),
        "shifts": shifts.tolist(),
        "fields": fields,
        "seam_rows": [[i * (fh + sh) + fh, (i + 1) * (fh + sh)] for i in range(nfy - 1)],
        "seam_cols": [[j * (fw + sw) + fw, (j + 1) * (fw + sw)] for j in range(nfx - 1)],
        "lost_pixels": h * w - visible,
    }
    return damaged, layout


def draw_shifts(rng: np.random.Generator, grid: tuple[int, int], max_shift: int) -> np.ndarray:
    """Per-field shifts ``(dy, dx)``: mostly 0 or +-1, never beyond ``max_shift``.

    Parameters
    ----------
    rng : numpy.random.Generator
    grid : (nfy, nfx)
        Number of field rows and columns.
    max_shift : int
        Largest magnitude (>= 0).

    Returns
    -------
    (nfy, nfx, 2) ndarray of int64
        Shift of every field, ``[..., 0]`` rows and ``[..., 1]`` columns.
    """
    shape = (*grid, 2)
    if max_shift <= 0:
        return np.zeros(shape, dtype=np.int64)
    mags = np.arange(1, max_shift + 1)
    weights = SHIFT_DECAY ** mags
    probs = np.concatenate([[P_NO_SHIFT], (1.0 - P_NO_SHIFT) * weights / weights.sum()])
    magnitude = rng.choice(np.arange(max_shift + 1), size=shape, p=probs)
    sign = np.where(rng.random(shape) < 0.5, -1, 1)
    return (magnitude * sign).astype(np.int64)


def _check_clean(clean: np.ndarray) -> np.ndarray:
    clean = np.asarray(clean)
    if clean.ndim != 2 or not np.issubdtype(clean.dtype, np.integer):
        raise UserError(
            f"mosaic damage: expected a 2-D integer id map, got shape {clean.shape} dtype {clean.dtype}")
    if clean.size and (clean.min() < 0 or clean.max() > 255):
        raise UserError(f"mosaic damage: ids must be in 0..255, got {clean.min()}..{clean.max()}")
    if min(clean.shape) < MIN_FIELDS_PER_AXIS:
        raise UserError(f"mosaic damage: map of shape {clean.shape} is too small for 3 x 3 fields")
    return clean.astype(np.uint8, copy=False)


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value))
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"mosaic damage: {what} must be an int or a pair of ints, got {value!r}")
    return int(arr[0]), int(arr[1])


def _field_size(field_size, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
    if field_size is not None:
        fh, fw = _pair(field_size, "field_size")
        if fh < 1 or fw < 1:
            raise UserError(f"mosaic damage: field_size must be >= 1, got {field_size!r}")
        return fh, fw
    side = min(h, w)
    hi = max(1, side // DRAWN_MIN_FIELDS)
    lo = min(hi, max(MIN_DRAWN_FIELD, side // FIELDS_PER_AXIS_MAX))
    base = int(rng.integers(lo, hi + 1))
    other = base + int(rng.integers(-FIELD_ASPECT_JITTER, FIELD_ASPECT_JITTER + 1))
    other = int(np.clip(other, max(1, lo - FIELD_ASPECT_JITTER), hi))
    return (base, other) if rng.random() < 0.5 else (other, base)


def _seam_width(seam_width, rng: np.random.Generator) -> tuple[int, int]:
    if seam_width is not None:
        sh, sw = _pair(seam_width, "seam_width")
        if sh < 0 or sw < 0:
            raise UserError(f"mosaic damage: seam_width must be >= 0, got {seam_width!r}")
        return sh, sw
    lo, hi = SEAM_WIDTH_RANGE
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
