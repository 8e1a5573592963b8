"""Step 4 of the mosaic repair: the fields back on a clean grid.

Fields are copied in reverse raster order (a later field owns the pixels it
overwrote); pixels no field provides take a neighbour's value. :func:`_seam_continuity`
measures how well the fields fit together (the repair's ``confidence``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mineralseg.prep.mosaic.grid import _Grid


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
            oy, ox = gy.out_start(i), gx.out_start(j)
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
