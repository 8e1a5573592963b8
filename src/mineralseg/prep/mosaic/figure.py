"""Plain, JSON-ready data for the QA figure of a mosaic repair (:func:`seam_figure_data`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mineralseg.prep.mosaic.repair import MosaicRepair


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
