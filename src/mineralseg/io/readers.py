"""Lazy readers for big images: raw, TIFF/BigTIFF, zarr, npy, PNG/JPEG.

:func:`open_image` returns a :class:`LazyImage`: it knows its shape and dtype and
reads only the pixels of a slice, so a 88,000 x 87,000 SEM mosaic can be processed
strip by strip. Raw files, ``.npy`` files and uncompressed contiguous TIFFs are read
with positioned reads (``os.preadv``) instead of a memory map: pages of a memory map
stay in the process's resident set until the map is closed, so a memory-mapped pass
over a 1.6 GB file shows a 1.6 GB peak RSS even though nothing is held. Compressed or
tiled TIFFs are read through tifffile's zarr store (only the tiles/strips touched are
decoded). PNG, JPEG and other small formats are decoded whole with Pillow.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mineralseg.errors import DataError, UserError

__all__ = ["LazyImage", "open_image", "read_image", "RAW_SUFFIXES", "TIFF_SUFFIXES"]

# File name endings read as headerless raw pixel data (shape and dtype given by the user).
RAW_SUFFIXES = (".raw", ".bin", ".dat")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".ome.tif")
ZARR_SUFFIXES = (".zarr",)
# ITU-R BT.601 luma weights scaled to sum to 2**14 (as OpenCV does): a pixel with
# equal R, G, B converts to exactly that value.
_LUMA_WEIGHTS = (4899, 9617, 1868)
_LUMA_SHIFT = 14


# --------------------------------------------------------------------------- backends
class _RawFile:
    """Headerless C-ordered pixels at ``offset`` of a file, read with ``os.preadv``.

    Opens the file per read: thread-safe, picklable, no file handle left open.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int = 0):
        self.path, self.shape, self.dtype, self.offset = path, tuple(shape), np.dtype(dtype), int(offset)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols, rest = _split_key(key, self.shape)
        r0, r1, rsel = _span(rows, self.shape[0])
        c0, c1, csel = _span(cols, self.shape[1])
        tail = self.shape[2:]
        block = np.empty((r1 - r0, c1 - c0) + tail, dtype=self.dtype)
        if r1 > r0 and c1 > c0:
            item = int(np.prod(tail, dtype=np.int64)) * self.dtype.itemsize
            row_bytes = self.shape[1] * item
            with open(self.path, "rb", buffering=0) as fh:
                fd = fh.fileno()
                if c0 == 0 and c1 == self.shape[1]:
                    _read_exact(fd, memoryview(block).cast("B"), self.offset + r0 * row_bytes, self.path)
                else:
                    for i in range(r1 - r0):
                        where = self.offset + (r0 + i) * row_bytes + c0 * item
                        _read_exact(fd, memoryview(block[i]).cast("B"), where, self.path)
        return block[(rsel, csel) + rest]


def _read_exact(fd: int, buf: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buf):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [buf[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            data = os.pread(fd, len(buf) - done, offset + done)
            n = len(data)
            buf[done : done + n] = data
        if n == 0:
            raise DataError(f"{path}: file ended early (truncated while reading at byte {offset + done})")
        done += n


def _split_key(key: Any, shape: tuple[int, ...]) -> tuple[Any, Any, tuple]:
    """Split an index into (rows, cols, rest); only basic indexing is supported."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an image of shape {shape}")
    for k in key:
        if not isinstance(k, (slice, int, np.integer)):
            raise IndexError(f"lazy images support ints and slices only, got {type(k).__name__}")
    key = key + (slice(None),) * (len(shape) - len(key))
    return key[0], key[1], tuple(key[2:])


def _span(k: Any, n: int) -> tuple[int, int, Any]:
    """Contiguous [start, stop) range covering index ``k`` and the index relative to it."""
    if isinstance(k, slice):
        start, stop, step = k.indices(n)
        idx = range(start, stop, step)
        if len(idx) == 0:
            return 0, 0, slice(0, 0)
        lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1]) + 1
        first = idx[0] - lo
        stop_rel = idx[-1] - lo + (1 if step > 0 else -1)
        return lo, hi, slice(first, stop_rel if stop_rel >= 0 else None, step)
    k = int(k)
    if not -n <= k < n:
        raise IndexError(f"index {k} is out of bounds for axis with size {n}")
    k %= n
    return k, k + 1, 0


class _Planar:
    """(C, H, W) storage presented as (H, W, C)."""

    def __init__(self, arr: Any):
        self.arr = arr
        c, h, w = arr.shape
        self.shape, self.dtype = (h, w, c), np.dtype(arr.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols, rest = _split_key(key, self.shape)
        data = np.moveaxis(np.asarray(self.arr[:, rows, cols]), 0, -1)
        return data[(Ellipsis,) + rest] if rest else data


class _Squeezed:
    """Storage with leading singleton axes presented without them."""

    def __init__(self, arr: Any, n_lead: int):
        self.arr, self.n_lead = arr, n_lead
        self.shape, self.dtype = tuple(arr.shape[n_lead:]), np.dtype(arr.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.arr[(0,) * self.n_lead + key])


class _Grey:
    """(H, W, C) storage presented as (H, W) luma (exact for equal channels)."""

    def __init__(self, base: Any):
        self.base = base
        self.shape, self.dtype = tuple(base.shape[:2]), np.dtype(base.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols, rest = _split_key(key, self.shape)
        return _to_grey(np.asarray(self.base[rows, cols]))


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    if rgb.shape[-1] < 3:
        return rgb[..., 0]
    if not np.issubdtype(rgb.dtype, np.integer):
        w = np.array(_LUMA_WEIGHTS, dtype=np.float64) / (1 << _LUMA_SHIFT)
        return (rgb[..., :3] @ w).astype(rgb.dtype)
    acc = np.zeros(rgb.shape[:-1], dtype=np.int64)
    for c, w in enumerate(_LUMA_WEIGHTS):
        acc += rgb[..., c].astype(np.int64) * w
    return ((acc + (1 << (_LUMA_SHIFT - 1))) >> _LUMA_SHIFT).astype(rgb.dtype)


# --------------------------------------------------------------------------- LazyImage
class LazyImage:
    """A 2-D (H, W) or colour (H, W, C) image read on demand.

    Index it like a numpy array with ints and slices (``lazy[r0:r1, c0:c1]``); the
    result is a new ndarray holding just those pixels. ``np.asarray(lazy)`` reads
    everything.

    Attributes
    ----------
    path : Path
    shape : tuple of int
    dtype : numpy.dtype
    ndim : int
    kind : str
        Storage read: ``"raw"``, ``"tiff-raw"`` (uncompressed contiguous TIFF),
        ``"tiff-zarr"``, ``"zarr"``, ``"npy"`` or ``"decoded"`` (held in memory).
    """

    def __init__(self, backend: Any, *, path: Path, kind: str, closer: Any = None):
        self._backend = backend
        self._closer = closer
        self.path = Path(path)
        self.kind = kind
        self.shape: tuple[int, ...] = tuple(int(s) for s in backend.shape)
        self.dtype = np.dtype(backend.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(self._backend, np.ndarray):
            return self._backend[key]
        rows, cols, rest = _split_key(key, self.shape)
        r0, r1, rsel = _span(rows, self.shape[0])
        c0, c1, csel = _span(cols, self.shape[1])
        try:  # read a contiguous window (zarr has no negative steps), then index it
            return np.asarray(self._backend[r0:r1, c0:c1])[(rsel, csel) + rest]
        except (IndexError, DataError):
            raise
        except Exception as exc:  # decoding errors of a damaged file
            raise DataError(f"{self.path}: cannot read pixels {key!r}: {exc}") from None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[:, :]
        return data if dtype is None else data.astype(dtype)

    def iter_strips(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(row0, self[row0:row0 + rows])`` from top to bottom."""
        for r0 in range(0, self.shape[0], rows):
            yield r0, self[r0 : r0 + rows]

    def close(self) -> None:
        """Release open file handles (TIFF stores); reading afterwards is an error."""
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> "LazyImage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LazyImage({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, kind={self.kind!r})"


# --------------------------------------------------------------------------- open
def open_image(
    path: str | os.PathLike,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    offset: int = 0,
    as_grey: bool = False,
    palette_indices: bool = False,
) -> LazyImage:
    """Open an image for lazy, slice-wise reading.

    Parameters
    ----------
    path : path-like
        Raw (``.raw``, ``.bin``, ``.dat``: needs ``shape`` and ``dtype``), TIFF/BigTIFF
        (tiled or striped, any compression imagecodecs reads), zarr array folder,
        ``.npy``, or PNG/JPEG/BMP (decoded whole: meant for small images).
        Any file is read as raw when ``shape`` and ``dtype`` are given.
    shape : tuple of int, optional
        (H, W) or (H, W, C) of a raw file (C-order, row-major).
    dtype : dtype-like, optional
        Pixel type of a raw file, e.g. ``"uint8"`` or ``">u2"`` (big-endian uint16).
    offset : int
        Bytes to skip at the start of a raw file (a header).
    as_grey : bool
        Convert colour images to one channel with integer BT.601 luma weights that sum
        to 1 exactly, so an RGB image with three equal channels (an SEM image saved
        as a colour JPEG) gives exactly its grey values.
    palette_indices : bool
        For palette-mode PNG/GIF: return the palette indices instead of the expanded
        RGB colours (class-index masks saved with a palette).

    Returns
    -------
    LazyImage

    Raises
    ------
    UserError
        Missing file, raw file without shape/dtype or whose size is not
        ``prod(shape) * itemsize + offset``, unsupported or damaged file (the message
        names the path).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"image not found: {path}")
    name = path.name.lower()
    if shape is not None or dtype is not None or name.endswith(RAW_SUFFIXES):
        image = _open_raw(path, shape, dtype, offset)
    elif path.is_dir() or name.endswith(ZARR_SUFFIXES):
        image = _open_zarr(path)
    elif name.endswith(TIFF_SUFFIXES):
        image = _open_tiff(path)
    elif name.endswith(".npy"):
        image = _open_npy(path)
    else:
        image = _open_decoded(path, palette_indices)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] > 4):
        image.close()
        raise DataError(f"{path}: unsupported image layout of shape {image.shape} (expected (H, W) or (H, W, C))")
    if as_grey and image.ndim == 3:
        image = LazyImage(_Grey(image._backend), path=path, kind=image.kind, closer=image._closer)
    return image


def read_image(path: str | os.PathLike, **kwargs: Any) -> np.ndarray:
    """Read a whole image into memory (keywords as in :func:`open_image`).

    Returns
    -------
    ndarray
        (H, W) or (H, W, C) array of the file's dtype.
    """
    with open_image(path, **kwargs) as image:
        return np.asarray(image[:, :])


def _open_raw(path: Path, shape: Any, dtype: Any, offset: int) -> LazyImage:
    if shape is None or dtype is None:
        raise UserError(f"{path}: a raw image needs both shape=(H, W) and dtype (e.g. 'uint8')")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise UserError(f"{path}: invalid raw image shape {shape}; expected (H, W) or (H, W, C)")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise UserError(f"{path}: invalid raw dtype {dtype!r}") from None
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a raw image file")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize + int(offset)
    actual = path.stat().st_size
    if actual != expected:
        raise UserError(
            f"{path}: file size {actual} bytes does not match shape {shape} x {dt} "
            f"({expected} bytes{f' including a {offset}-byte header' if offset else ''})"
        )
    return LazyImage(_RawFile(path, shape, dt, offset), path=path, kind="raw")


def _open_npy(path: Path) -> LazyImage:
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as .npy: {exc}") from None
    if not isinstance(mapped, np.memmap) or not mapped.flags.c_contiguous:
        return LazyImage(np.ascontiguousarray(mapped), path=path, kind="decoded")
    shape, dt, offset = mapped.shape, mapped.dtype, int(mapped.offset)
    del mapped  # unmap: reads go through positioned reads (see the module docstring)
    return LazyImage(_RawFile(path, shape, dt, offset), path=path, kind="npy")


def _open_zarr(path: Path) -> LazyImage:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise DataError(f"cannot open {path} as a zarr array: {exc}") from None
    if not hasattr(node, "shape"):  # a group, e.g. a multiscale pyramid: take level 0
        arrays = sorted(node.array_keys())
        if not arrays:
            raise DataError(f"{path}: zarr group holds no array")
        node = node[arrays[0]]
    return LazyImage(node, path=path, kind="zarr")


def _open_tiff(path: Path) -> LazyImage:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise DataError(f"cannot read TIFF {path}: {exc}") from None
    try:
        series = tif.series[0]
        shape, axes, dt = tuple(series.shape), series.axes, np.dtype(series.dtype)
        offset = series.dataoffset
        if offset is not None and not getattr(series, "is_multifile", False):
            backend: Any = _RawFile(path, shape, dt.newbyteorder(tif.byteorder), offset)
            kind, closer = "tiff-raw", None
            tif.close()
        else:
            import zarr

            store = series.aszarr(level=0)
            backend = zarr.open(store, mode="r")
            kind, closer = "tiff-zarr", _closer(store, tif)
    except Exception as exc:
        tif.close()
        raise DataError(f"cannot read TIFF {path}: {exc}") from None
    backend = _canonical_layout(backend, axes, path)
    return LazyImage(backend, path=path, kind=kind, closer=closer)


def _closer(*handles: Any):
    def close() -> None:
        for h in handles:
            with contextlib.suppress(Exception):
                h.close()

    return close


def _canonical_layout(backend: Any, axes: str, path: Path) -> Any:
    """Present TIFF storage as (H, W) or (H, W, C)."""
    shape = tuple(backend.shape)
    lead = 0
    while len(shape) - lead > 2 and shape[lead] == 1 and axes[lead] not in "YX":
        lead += 1
    if lead:
        backend = _Squeezed(backend, lead)
        axes = axes[lead:]
    if len(axes) == 3 and axes[1:] == "YX" and axes[0] in "SC" and backend.shape[0] <= 4:
        backend = _Planar(backend)
    elif len(axes) == 3 and axes[:2] == "YX":
        pass
    elif len(axes) != 2:
        raise DataError(f"{path}: unsupported TIFF layout: axes {axes!r}, shape {shape}")
    return backend


def _open_decoded(path: Path, palette_indices: bool) -> LazyImage:
    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # a user's own big PNG is not a decompression bomb
    try:
        with Image.open(path) as img:
            if img.mode == "P" and not palette_indices:
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode == "1":
                img = img.convert("L")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            data = np.array(img)
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: unsupported image format (use TIFF, PNG, JPEG, zarr, .npy, or raw with shape and dtype)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if data.dtype == np.int32 and data.size and data.min() >= 0 and data.max() <= 65535:
        data = data.astype(np.uint16)  # 16-bit PNGs open in Pillow's 32-bit mode
    return LazyImage(data, path=path, kind="decoded")
