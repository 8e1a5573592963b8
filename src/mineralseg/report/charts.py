"""Pictures for reports: the modal-mineralogy bar chart and a class-map overlay.

The chart is drawn with matplotlib's Agg canvas (no screen, no pyplot state) in the
style of :mod:`mineralseg.evaluate.figures` and returned as PNG bytes, ready for a
:class:`~mineralseg.report.html.Figure`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mineralseg.errors import DataError, UserError
from mineralseg.evaluate.figures import DPI, _colors01

__all__ = ["mineralogy_bar_chart", "overlay"]

# Hatching of the 2nd, 3rd ... series (the 1st is solid), so series differ in grey print
# and for classes of any colour.
_SERIES_HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "++++")
#: Up to this many classes the bars stand side by side; beyond, they lie one row per class.
VERTICAL_MAX_CLASSES = 8
_OVERLAY_ROWS = 1024  # rows blended at a time: float32 work stays ~12 bytes/px of one strip


def mineralogy_bar_chart(
    class_names: Sequence[str],
    class_colors: Any,
    percents: Sequence[Sequence[float]],
    series: Sequence[str] = ("predicted",),
    *,
    title: str = "Modal mineralogy",
) -> bytes:
    """Bar chart of area percent per class, one group per class, one bar per series.

    Parameters
    ----------
    class_names : sequence of C str
    class_colors : (C, 3) array_like
        RGB in 0..255 (uint8, as ``ClassSchema.group_colors``); bars take their class's
        colour.
    percents : S sequences of C float
        ``percents[s][c]``: area % of class ``c`` in series ``s`` (NaN = not measured,
        no bar).
    series : sequence of S str
        Series names, e.g. ``("predicted", "QEMSCAN")``; the first is drawn solid, the
        others hatched, and a legend names them when there are several.
    title : str
        Drawn above the chart; "" for none.

    Returns
    -------
    bytes
        A PNG image (120 dpi). Up to 8 classes the bars stand in a row (wider with
        more classes); with more, each class is a row of horizontal bars (taller with
        more classes) so that long mineral names stay readable.

    Raises
    ------
    UserError
        ``percents`` does not hold one list of C values per series, or colours that
        are not (C, 3).

    Examples
    --------
    >>> png = mineralogy_bar_chart(["pore", "quartz"], [[0, 0, 0], [255, 192, 192]],
    ...                            [[12.0, 88.0], [10.5, 89.5]], ["predicted", "QEMSCAN"])
    >>> png[:4]
    b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [str(n) for n in class_names]
    colors = _colors01(names, class_colors)
    values = np.asarray(percents, dtype=np.float64) if len(percents) else np.zeros((0, len(names)))
    if values.shape != (len(series), len(names)):
        raise UserError(
            f"mineralogy_bar_chart: percents must hold {len(series)} series {list(series)} of {len(names)} "
            f"values (one per class), got shape {values.shape}"
        )
    n_series, n_classes = values.shape
    across = n_classes > VERTICAL_MAX_CLASSES  # many classes: one row each, names readable unrotated
    group = n_classes * (n_series + 1)
    size = (6.5, 0.13 * group + 1.3) if across else (max(5.0, 0.32 * group + 1.6), 3.8)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(n_series, 1)
    at = np.arange(n_classes, dtype=np.float64)
    label_size = "x-small" if group > 24 else "small"
    for s in range(n_series):
        pos = at + (s - (n_series - 1) / 2) * width
        style = dict(color=colors, edgecolor="0.25", linewidth=0.6, hatch=_SERIES_HATCHES[s % len(_SERIES_HATCHES)])
        heights = np.nan_to_num(values[s], nan=0.0)
        ax.barh(pos, heights, width * 0.92, **style) if across else ax.bar(pos, heights, width * 0.92, **style)
        for p, v in zip(pos, values[s]):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (v, p) if across else (p, v), xytext=(2, 0) if across else (0, 2),
                            textcoords="offset points", ha="left" if across else "center",
                            va="center" if across else "bottom", fontsize=label_size,
                            rotation=90 if not across and group > 24 else 0)
    top = max(float(np.nanmax(values)) if np.isfinite(values).any() else 1.0, 1.0) * 1.18
    if across:
        ax.set_yticks(at, labels=names)
        ax.invert_yaxis()  # first class on top
        ax.set_xlabel("area %")
        ax.set_xlim(0, top)
    else:
        ax.set_xticks(at, labels=names, rotation=30 if n_classes > 6 else 0, ha="right" if n_classes > 6 else "center")
        ax.set_ylabel("area %")
        ax.set_ylim(0, top)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize="medium")
    if n_series > 1:
        handles = [Patch(facecolor="white", edgecolor="0.25", hatch=_SERIES_HATCHES[s % len(_SERIES_HATCHES)],
                         label=str(name)) for s, name in enumerate(series)]
        ax.legend(handles=handles, frameon=False, fontsize="small", loc="lower right" if across else "upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def overlay(
    grey: np.ndarray,
    rgb: np.ndarray,
    alpha: float = 0.45,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Colours of a class map laid over a grey image.

    Parameters
    ----------
    grey : (H, W) uint8
        The SEM image (or its preview).
    rgb : (H, W, 3) uint8
        The coloured class map on the same grid.
    alpha : float in [0, 1]
        Opacity of the colours: 0 shows the grey image, 1 the map.
    mask : (H, W) bool, optional
        Where to lay colours (e.g. inside the section); grey elsewhere. Default: everywhere.

    Returns
    -------
    (H, W, 3) uint8
        ``round((1 - alpha) * grey + alpha * rgb)`` where ``mask``, else ``grey``.

    Raises
    ------
    DataError
        Shapes or dtypes other than the above, or shapes that differ.
    UserError
        ``alpha`` outside [0, 1].

    Notes
    -----
    Blends 1024 rows at a time: besides the output, memory is ~12 bytes per pixel of
    one strip.
    """
    grey, rgb = np.asarray(grey), np.asarray(rgb)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise DataError(f"overlay: grey must be an (H, W) uint8 image, got {grey.shape} {grey.dtype}")
    if rgb.shape != grey.shape + (3,) or rgb.dtype != np.uint8:
        raise DataError(
            f"overlay: rgb must be (H, W, 3) uint8 on the grey image's grid {grey.shape + (3,)}, "
            f"got {rgb.shape} {rgb.dtype}"
        )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != grey.shape or mask.dtype != np.bool_:
            raise DataError(
                f"overlay: mask must be an (H, W) bool array of shape {grey.shape}, got {mask.shape} {mask.dtype}"
            )
    if not 0.0 <= float(alpha) <= 1.0:
        raise UserError(f"overlay: alpha must be in [0, 1], got {alpha}")
    out = np.empty(rgb.shape, dtype=np.uint8)
    a = np.float32(alpha)
    for r0 in range(0, grey.shape[0], _OVERLAY_ROWS):
        g = grey[r0 : r0 + _OVERLAY_ROWS, :, None].astype(np.float32)
        blend = np.rint((1 - a) * g + a * rgb[r0 : r0 + _OVERLAY_ROWS]).astype(np.uint8)
        if mask is not None:
            blend = np.where(mask[r0 : r0 + _OVERLAY_ROWS, :, None], blend, g.astype(np.uint8))
        out[r0 : r0 + _OVERLAY_ROWS] = blend
    return out
