"""Report images: checking what a figure holds, downsampling it for display, encoding it.

A figure image is an (H, W) uint8 grey or (H, W, 3) uint8 RGB array (a numpy array or
any lazy array with ``shape``, ``dtype`` and row slicing, such as
:class:`~mineralseg.io.LazyImage` or a zarr array), PNG/JPEG bytes, or the path of a
PNG/JPEG file. Images no larger than the display limit are embedded as they are (files
and bytes byte for byte); larger ones are reduced strip by strip, so memory stays
bounded whatever the source size.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mineralseg.errors import DataError
from mineralseg.lookup import unknown_name_error
from mineralseg.io.downscale import STRIP_WORK_BYTES, downscale_area

#: How a too-large image is reduced: "area" averages (photographs, SEM images),
#: "nearest" picks pixels (class maps: no blended colours that are in no legend),
#: "auto" takes "nearest" for RGB images with few colours, else "area".
RESAMPLING = ("auto", "area", "nearest")
#: An RGB image with at most this many distinct colours counts as a class map (the
#: largest palette, qemscan24, has 24 colours; an anti-aliased chart has hundreds, an
#: SEM overlay thousands).
PALETTE_MAX_COLORS = 64
#: Rows read (evenly spaced) to count the colours of an image for "auto".
_COLOR_SAMPLE_ROWS = 64
#: Encoded images up to this many pixels are decoded once to prove they are whole.
_DECODE_CHECK_PIXELS = 16 * 2**20
_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


@dataclass(frozen=True)
class EncodedImage:
    """An image ready to embed: MIME type, file bytes and what was done to it.

    Attributes
    ----------
    mime : {"image/png", "image/jpeg"}
    data : bytes
    shape : (int, int)
        Height and width embedded.
    source_shape : (int, int)
        Height and width of the given image.
    method : {"area", "nearest"} or None
        How it was downsampled; ``None`` when embedded at full size.
    is_map : bool
        Treated as a class map (``resample="nearest"``, or few colours with "auto"):
        to be shown without smoothing.
    """

    mime: str
    data: bytes
    shape: tuple[int, int]
    source_shape: tuple[int, int]
    method: str | None
    is_map: bool


def check_resample(name: object) -> str:
    """Canonical spelling of a :data:`RESAMPLING` name.

    Raises
    ------
    ConfigError
        Unknown name (with the valid names and the closest one).
    """
    if isinstance(name, str) and name.lower() in RESAMPLING:
        return name.lower()
    raise unknown_name_error("resampling", name, RESAMPLING)


def is_array(image: Any) -> bool:
    """True for numpy arrays and lazy arrays (objects with ``shape`` and ``dtype``)."""
    return not isinstance(image, (bytes, bytearray, memoryview, str, os.PathLike)) and hasattr(
        image, "shape") and hasattr(image, "dtype")


def check_image(image: Any, what: str) -> None:
    """Raise when ``image`` is none of the accepted kinds (files are checked when read).

    Raises
    ------
    DataError
        An array that is not (H, W) or (H, W, 3) uint8, or bytes that are not PNG/JPEG.
    TypeError
        Any other kind of object.
    """
    if is_array(image):
        shape, dtype = tuple(int(s) for s in image.shape), np.dtype(image.dtype)
        if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)) or dtype != np.uint8 or 0 in shape:
            raise DataError(
                f"{what}: an image array must be (H, W) uint8 grey or (H, W, 3) uint8 RGB, got {shape} {dtype}; "
                "convert it first (e.g. a percentile stretch to 0..255)"
            )
    elif isinstance(image, (bytes, bytearray, memoryview)):
        _sniff(bytes(image[:8]), f"{what}: image bytes")
    elif not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            f"{what}: image must be a uint8 array, PNG/JPEG bytes or a file path, not {type(image).__name__}"
        )


def _sniff(head: bytes, what: str) -> str:
    for magic, mime in _MAGIC.items():
        if head.startswith(magic):
            return mime
    raise DataError(f"{what}: not a PNG or JPEG image (it starts with {head[:8]!r}); save the figure as PNG")


def encode_image(image: Any, max_side: int, resample: str = "auto", *, what: str = "figure") -> EncodedImage:
    """Encode a figure image for embedding, downsampled when a side exceeds ``max_side``.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) uint8 array-like, PNG/JPEG bytes, or path-like
        See the module docstring.
    max_side : int
        Largest height or width embedded; a larger image is reduced by one factor on
        both axes (aspect kept) so that its longer side is ``max_side``.
    resample : {"auto", "area", "nearest"}
        See :data:`RESAMPLING`.
    what : str
        Name used in error messages (the figure's title).

    Returns
    -------
    EncodedImage
        PNG for arrays and reduced images; the given bytes otherwise.

    Raises
    ------
    DataError
        Missing or unreadable file, wrong array shape or dtype.
    ConfigError
        Unknown ``resample``.
    """
    method = check_resample(resample)
    check_image(image, what)
    if is_array(image):
        return _encode_array(image, max_side, method)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise DataError(f"{what}: image file {path} not found")
        data = path.read_bytes()
        where = f"{what}: file {path}"
    else:
        data, where = bytes(image), f"{what}: image bytes"
    mime = _sniff(data[:8], where)
    pil = _open_pil(data, where)
    shape = (pil.height, pil.width)
    if max(shape) > max_side:
        array, palette = _pil_to_uint8(pil, where)
        return _encode_array(array, max_side, "nearest" if method == "auto" and palette else method)
    is_map = method == "nearest" or (method == "auto" and _pil_few_colors(pil))
    return EncodedImage(mime, data, shape, shape, None, is_map)


def _pil_few_colors(pil: Any) -> bool:
    """Palette-coded, or RGB(A) with at most PALETTE_MAX_COLORS colours (PIL counts them)."""
    if pil.mode in ("P", "1"):
        return True
    return pil.mode in ("RGB", "RGBA") and pil.getcolors(PALETTE_MAX_COLORS) is not None


def _open_pil(data: bytes, where: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        pil = Image.open(io.BytesIO(data))  # parses the header only
        if pil.width * pil.height <= _DECODE_CHECK_PIXELS:
            pil.load()  # a truncated or corrupt file would show as a broken image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{where} cannot be read as an image ({exc}); give a PNG or JPEG file or a uint8 array"
        ) from None
    return pil


def _pil_to_uint8(pil: Any, where: str) -> tuple[np.ndarray, bool]:
    """Decode to (H, W) or (H, W, 3) uint8; the flag says the image was palette-coded."""
    from PIL import Image

    try:
        if pil.mode in ("L", "RGB"):
            return np.asarray(pil), False
        if pil.mode in ("P", "1"):
            return np.asarray(pil.convert("RGB")), True
        if pil.mode.startswith("I"):  # 16/32-bit grey: 0..65535 onto 0..255
            return np.clip(np.asarray(pil, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8), False
        rgba = pil.convert("RGBA")  # transparency shown over white, as on the page
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")), False
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where} cannot be decoded ({exc}); give a smaller preview image") from None


def _encode_array(src: Any, max_side: int, method: str) -> EncodedImage:
    shape = (int(src.shape[0]), int(src.shape[1]))
    is_map = method == "nearest" or (method == "auto" and len(src.shape) == 3 and _few_colors(src))
    if max(shape) <= max_side:
        array, used = np.asarray(src[0 : shape[0]]), None
    elif is_map:
        array, used = _downscale_nearest(src, max(shape) / max_side), "nearest"
    else:
        array, used = downscale_area(src, max(shape) / max_side, dtype=np.uint8), "area"
    return EncodedImage("image/png", _png_bytes(array), (array.shape[0], array.shape[1]), shape, used, is_map)


def _few_colors(src: Any) -> bool:
    """True when evenly spaced rows of an RGB image hold at most PALETTE_MAX_COLORS colours."""
    rows = np.unique(np.linspace(0, src.shape[0] - 1, _COLOR_SAMPLE_ROWS).round().astype(int))
    sample = np.concatenate([np.asarray(src[r : r + 1]) for r in rows]).reshape(-1, 3).astype(np.uint32)
    packed = (sample[:, 0] << 16) | (sample[:, 1] << 8) | sample[:, 2]
    return len(np.unique(packed)) <= PALETTE_MAX_COLORS


def _downscale_nearest(src: Any, factor: float) -> np.ndarray:
    """Pick the source pixel under each output pixel's centre, reading row strips.

    Output shape is that of :func:`~mineralseg.io.downscale.downscale_area` for the
    same factor; output pixel ``(i, j)`` is source pixel
    ``(floor((i + 0.5) * factor), floor((j + 0.5) * factor))``.
    """
    height, width = int(src.shape[0]), int(src.shape[1])
    out_h = max(1, int(math.floor(height / factor + 1e-9)))
    out_w = max(1, int(math.floor(width / factor + 1e-9)))
    rows = np.minimum(((np.arange(out_h) + 0.5) * factor).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * factor).astype(np.int64), width - 1)
    out = np.empty((out_h, out_w) + tuple(src.shape[2:]), dtype=np.uint8)
    row_bytes = width * int(np.prod(src.shape[2:], dtype=np.int64))
    per_strip = max(1, int(STRIP_WORK_BYTES // (row_bytes * max(factor, 1.0))))  # output rows per read
    for i0 in range(0, out_h, per_strip):
        i1 = min(i0 + per_strip, out_h)
        r0, r1 = int(rows[i0]), int(rows[i1 - 1]) + 1
        strip = np.asarray(src[r0:r1])
        out[i0:i1] = strip[rows[i0:i1] - r0][:, cols]
    return out


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()
