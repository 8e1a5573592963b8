"""Readers and writers for big images.

Reading: :func:`open_image` (lazy, slice-wise) and :func:`read_image` (whole image).
Resampling: :func:`downscale_area`, :func:`downscale_mode` (row strips, bounded memory).
Writing: :func:`write_tiff`, :class:`TiffBlockWriter`, :func:`write_zarr`,
:func:`write_png`; every writer goes through :mod:`mineralseg.io.atomic`.
"""

from mineralseg.io.atomic import atomic_dir, atomic_path, json_ready, write_json
from mineralseg.io.downscale import downscale_area, downscale_mode, output_shape
from mineralseg.io.readers import LazyImage, open_image, read_image
from mineralseg.io.writers import TiffBlockWriter, write_png, write_tiff, write_zarr

__all__ = [
    "json_ready",
    "LazyImage",
    "TiffBlockWriter",
    "atomic_dir",
    "atomic_path",
    "downscale_area",
    "downscale_mode",
    "open_image",
    "output_shape",
    "read_image",
    "write_json",
    "write_png",
    "write_tiff",
    "write_zarr",
]
