"""The class table of a class-id TIFF (``labels.tif`` of ``mineralseg predict``).

A mineral map is stored as a uint8 palette TIFF: pixel values are class ids, the TIFF
colour map gives each id its class colour (so QGIS, napari and image viewers show the map
in colour), and the ImageDescription holds this JSON table::

    {"mineralseg": {"class_names": [...], "class_colors": [[r, g, b], ...],
                    "values": {"0": name, ..., "255": "outside the section"},
                    "outside": 255, "image_px_per_pixel": 4.0, "pixel_size_um": 2.0}}
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from mineralseg.errors import DataError

__all__ = ["OUTSIDE", "labels_colormap", "labels_description", "read_labels_table"]

#: Pixel value of "outside the section" (not rock) in a class map.
OUTSIDE = 255
_KEY = "mineralseg"


def labels_description(
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]],
    *,
    image_px_per_pixel: float | None = None,
    pixel_size_um: float | None = None,
) -> str:
    """The ImageDescription JSON of a class-id TIFF (see the module docstring)."""
    return json.dumps({_KEY: {
        "class_names": [str(n) for n in class_names],
        "class_colors": [[int(v) for v in c] for c in class_colors],
        "values": {str(i): str(n) for i, n in enumerate(class_names)} | {str(OUTSIDE): "outside the section"},
        "outside": OUTSIDE,
        "image_px_per_pixel": image_px_per_pixel,
        "pixel_size_um": pixel_size_um,
    }})


def labels_colormap(lut: np.ndarray) -> np.ndarray:
    """(3, 256) uint16 TIFF colour map of a (256, 3) uint8 colour look-up table."""
    lut = np.asarray(lut, np.uint8)
    if lut.shape != (256, 3):
        raise ValueError(f"expected a (256, 3) colour table, got shape {lut.shape}")
    return lut.T.astype(np.uint16) * 257


def read_labels_table(path: str | os.PathLike) -> dict[str, Any]:
    """The class table stored in a class-id TIFF written by ``predict``.

    Returns
    -------
    dict
        ``class_names``, ``class_colors``, ``values`` ({"id": name}), ``outside``,
        ``image_px_per_pixel``, ``pixel_size_um``.

    Raises
    ------
    DataError
        Not a TIFF with a mineralseg class table.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
        table = dict(json.loads(text)[_KEY])
        table["class_names"], table["class_colors"]  # noqa: B018 (both must be there)
        return table
    except (OSError, ValueError, KeyError, TypeError, tifffile.TiffFileError) as exc:
        raise DataError(f"{path}: not a labels.tif written by `mineralseg predict` ({exc})") from None
