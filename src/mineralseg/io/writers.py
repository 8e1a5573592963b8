"""Atomic writers for big and small images: TIFF/BigTIFF, zarr, PNG.

Every writer builds its output under a temporary name beside the target
(:mod:`mineralseg.io.atomic`) and renames it at the end, so a crash never leaves a
half-written image under the final name. Big images can be written from an iterator
of row strips (:func:`write_tiff`, :func:`write_zarr`) or pushed strip by strip into
a :class:`TiffBlockWriter`: only one row of tiles is held in memory.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mineralseg.errors import UserError
from mineralseg.io.atomic import atomic_dir, atomic_path

__all__ = ["TiffBlockWriter", "write_png", "write_tiff", "write_zarr"]

# Default TIFF tile: the common choice of viewers and of tifffile/zarr readers.
DEFAULT_TILE = (256, 256)
# Files above this many bytes need BigTIFF (64-bit offsets); a margin below 4 GiB
# leaves room for the TIFF tags and tile tables.
BIGTIFF_THRESHOLD = 2**32 - 2**25
# Rows per strip of striped (untiled) TIFFs written from memory.
STRIP_ROWS = 64
# Zarr chunks: 1024 x 1024 uint8 = 1 MB per chunk, a good size for random tile reads.
DEFAULT_ZARR_CHUNKS = (1024, 1024)
# Strips waiting in a TiffBlockWriter's queue: one being tiled, one being filled.
_QUEUE_DEPTH = 2
_WRITE_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64, np.int8, np.bool_)


def _check_image(shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 2, 3, 4)) or min(shape) < 1:
        raise UserError(f"cannot write {path}: expected an (H, W) or (H, W, C<=4) image, got shape {shape}")
    if dtype not in [np.dtype(d) for d in _WRITE_DTYPES]:
        raise UserError(f"cannot write {path}: unsupported dtype {dtype}")


def _photometric(shape: tuple[int, ...]) -> str:
    return "rgb" if len(shape) == 3 and shape[2] in (3, 4) else "minisblack"


def _needs_bigtiff(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > BIGTIFF_THRESHOLD


def _tiff_options(shape, dtype, tile, compression, bigtiff, description=None, colormap=None) -> tuple[dict[str, Any], bool]:
    extras: dict[str, Any] = {"extrasamples": ["unassalpha"]} if len(shape) == 3 and shape[2] == 4 else {}
    if description is not None:
        extras["description"] = str(description)
    if colormap is not None:  # a palette image: viewers show each id in its colour
        if len(shape) != 2 or np.dtype(dtype) != np.uint8:
            raise UserError(f"a TIFF colour map needs a 2-D uint8 image, got shape {shape} {np.dtype(dtype)}")
        extras["colormap"] = np.asarray(colormap, np.uint16).reshape(3, 256)
    options: dict[str, Any] = {
        "photometric": "palette" if colormap is not None else _photometric(shape),
        "compression": compression,
        "metadata": None,
        **extras,
    }
    if tile is not None:
        options["tile"] = tuple(int(t) for t in tile)
        if any(t % 16 for t in options["tile"]):
            raise UserError(f"TIFF tile sizes must be multiples of 16, got {tile}")
    big = _needs_bigtiff(shape, np.dtype(dtype)) if bigtiff is None else bool(bigtiff)
    return options, big


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray | Iterable[np.ndarray],
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    tile: tuple[int, int] | None = DEFAULT_TILE,
    compression: str | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write a TIFF (BigTIFF when needed), atomically.

    Parameters
    ----------
    path : path-like
    data : (H, W) or (H, W, C) ndarray, or iterable of row strips
        An array, or strips of shape ``(h_i, W[, C])`` from top to bottom (then
        ``shape`` and ``dtype`` are required; only one row of tiles is held).
    shape, dtype
        Size and pixel type when ``data`` is an iterable.
    tile : (int, int) or None
        Tile size (multiples of 16); ``None`` writes strips of 64 rows (arrays only).
    compression : {None, "zlib", "lzw", "zstd", ...}
        Any tifffile compression; ``None`` stores raw pixels (fastest to read).
    bigtiff : bool, optional
        Force BigTIFF on or off; by default used when the pixels exceed ~4 GB.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError
        Unsupported shape/dtype, strips that do not add up to ``shape``.
    """
    path = Path(path)
    if isinstance(data, np.ndarray):
        _check_image(data.shape, data.dtype, path)
        options, big = _tiff_options(data.shape, data.dtype, tile, compression, bigtiff)
        if tile is None:
            options["rowsperstrip"] = STRIP_ROWS
        import tifffile

        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, bigtiff=big, **options)
        return path
    if shape is None or dtype is None:
        raise UserError(f"cannot write {path}: writing strips needs shape= and dtype=")
    if tile is None:
        raise UserError(f"cannot write {path}: strips are written as a tiled TIFF; give tile=(256, 256)")
    with TiffBlockWriter(path, shape, dtype, tile=tile, compression=compression, bigtiff=bigtiff) as writer:
        for strip in data:
            writer.write(strip)
    return path


def _tiles_from_strips(
    strips: Iterable[np.ndarray], shape: tuple[int, ...], dtype: np.dtype, tile: tuple[int, int], path: Path
) -> Iterator[np.ndarray]:
    """Regroup row strips of any height into tiles in row-major order."""
    th, tw = tile
    height, width = shape[0], shape[1]
    band = np.zeros((th,) + tuple(shape[1:]), dtype=dtype)
    filled = 0
    done = 0
    for strip in strips:
        strip = np.asarray(strip)
        if strip.shape[1:] != tuple(shape[1:]):
            raise UserError(f"cannot write {path}: strip of shape {strip.shape} does not fit image shape {shape}")
        if done + filled + strip.shape[0] > height:
            raise UserError(f"cannot write {path}: strips add up to more than the {height} rows of the image")
        pos = 0
        while pos < strip.shape[0]:
            take = min(th - filled, strip.shape[0] - pos)
            band[filled : filled + take] = strip[pos : pos + take]
            filled += take
            pos += take
            if filled == th or done + filled == height:
                rows = filled
                for c0 in range(0, width, tw):
                    yield band[:rows, c0 : c0 + tw]
                done += rows
                filled = 0
    if done != height:
        raise UserError(f"cannot write {path}: strips gave {done + filled} of the {height} rows of the image")


class TiffBlockWriter:
    """Write a tiled (Big)TIFF strip by strip without holding the image.

    Use it as a context manager; :meth:`write` takes the next rows of the image (any
    number of rows, top to bottom). The file appears under its final name only when
    the block ends without error and all rows were written.

    Parameters
    ----------
    path : path-like
    shape : (H, W) or (H, W, C)
    dtype : dtype-like
    tile : (int, int)
        Tile size, multiples of 16.
    compression : str, optional
        tifffile compression name (``"zlib"``, ``"zstd"`` ...).
    bigtiff : bool, optional
        Default: BigTIFF when the pixels exceed ~4 GB.
    description : str, optional
        Text of the ImageDescription tag (e.g. a JSON class table).
    colormap : (3, 256) uint16 array-like, optional
        Palette of a uint8 class map (TIFF palette-colour image, 0..65535 per channel):
        viewers such as QGIS and napari show each class id in its colour.

    Examples
    --------
    >>> with TiffBlockWriter("big.tif", (100_000, 80_000), "uint8") as w:  # doctest: +SKIP
    ...     for strip in strips:
    ...         w.write(strip)

    Notes
    -----
    tifffile consumes tiles from an iterator; the writer runs it in a background thread
    fed through a queue of depth 2, so memory is about one row of tiles plus two strips.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, ...],
        dtype: Any,
        *,
        tile: tuple[int, int] = DEFAULT_TILE,
        compression: str | None = None,
        bigtiff: bool | None = None,
        description: str | None = None,
        colormap: Any = None,
    ):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        _check_image(self.shape, self.dtype, self.path)
        self._options, self._big = _tiff_options(self.shape, self.dtype, tile, compression, bigtiff,
                                                 description, colormap)
        self._tile = self._options["tile"]
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._atomic: Any = None
        self.rows_written = 0

    def __enter__(self) -> "TiffBlockWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._thread = threading.Thread(target=self._run, args=(tmp,), daemon=True, name="TiffBlockWriter")
        self._thread.start()
        return self

    def _strips(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            yield item

    def _run(self, tmp: Path) -> None:
        import tifffile

        try:
            tiles = _tiles_from_strips(self._strips(), self.shape, self.dtype, self._tile, self.path)
            with tifffile.TiffWriter(tmp, bigtiff=self._big) as tif:
                tif.write(tiles, shape=self.shape, dtype=self.dtype, **self._options)
        except BaseException as exc:  # reported to the writing thread
            self._error = exc
            with contextlib.suppress(queue.Empty):
                while True:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()

    def _put(self, item: Any, *, end: bool = False) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if self._thread is None or not self._thread.is_alive():
                if end and self._thread is not None:
                    # tifffile stops pulling tiles once it has the last one and finishes
                    # the file, so the writer may be done before the end marker comes.
                    return
                raise RuntimeError(f"TIFF writer for {self.path} is not running (use it in a with block)")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def write(self, strip: np.ndarray) -> None:
        """Append rows ``(h, W[, C])`` below those already written.

        Raises
        ------
        UserError
            Wrong width/channels or more rows than the image has.
        """
        strip = np.asarray(strip)
        if strip.shape[1:] != self.shape[1:]:
            raise UserError(f"cannot write {self.path}: strip of shape {strip.shape} does not fit image shape {self.shape}")
        if self.rows_written + strip.shape[0] > self.shape[0]:
            raise UserError(
                f"cannot write {self.path}: {self.rows_written + strip.shape[0]} rows written, image has {self.shape[0]}"
            )
        self._put(np.ascontiguousarray(strip, dtype=self.dtype))
        self.rows_written += strip.shape[0]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        error = exc
        try:
            if exc is None:
                if self.rows_written != self.shape[0]:
                    error = UserError(
                        f"cannot write {self.path}: only {self.rows_written} of {self.shape[0]} rows were written"
                    )
                    self._abort()
                else:
                    self._put(None, end=True)
                    self._thread.join()  # type: ignore[union-attr]
                    if self._error is not None:
                        error = self._error
            else:
                self._abort()
        finally:
            if error is None:
                self._atomic.__exit__(None, None, None)
            else:
                self._atomic.__exit__(type(error), error, error.__traceback__)
        if error is not None and error is not exc:
            raise error

    def _abort(self) -> None:
        """Stop the writer thread: feeding an end marker early makes it fail quickly."""
        if self._thread is None:
            return
        with contextlib.suppress(Exception):
            self._put(None, end=True)
        self._thread.join()


def write_zarr(
    path: str | os.PathLike,
    data: np.ndarray | Iterable[np.ndarray],
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    chunks: tuple[int, int] = DEFAULT_ZARR_CHUNKS,
    overwrite: bool = False,
) -> Path:
    """Write a zarr array folder, atomically (from an array or row strips).

    Parameters
    ----------
    path : path-like
        Output folder (``.zarr`` by convention).
    data : ndarray or iterable of row strips
        Strips ``(h_i, W[, C])`` from top to bottom need ``shape`` and ``dtype``.
    shape, dtype
        Size and pixel type when ``data`` is an iterable.
    chunks : (int, int)
        Chunk rows and columns (channels are never split).
    overwrite : bool
        Replace an existing folder (once the new one is complete).

    Returns
    -------
    Path

    Raises
    ------
    UserError
        Strips that do not fit ``shape``; FileExistsError if ``path`` exists and not
        ``overwrite``.
    """
    import zarr

    path = Path(path)
    if isinstance(data, np.ndarray):
        shape, dtype, strips = data.shape, data.dtype, iter([data])
    elif shape is None or dtype is None:
        raise UserError(f"cannot write {path}: writing strips needs shape= and dtype=")
    else:
        strips = iter(data)
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    _check_image(shape, dtype, path)
    chunk_shape = tuple(min(int(c), s) for c, s in zip(chunks, shape[:2])) + tuple(shape[2:])
    with atomic_dir(path, overwrite=overwrite) as tmp:
        array = zarr.create_array(store=str(tmp), shape=shape, dtype=dtype, chunks=chunk_shape, zarr_format=3)
        row = 0
        for strip in strips:
            strip = np.asarray(strip)
            if strip.shape[1:] != shape[1:] or row + strip.shape[0] > shape[0]:
                raise UserError(
                    f"cannot write {path}: strip of shape {strip.shape} at row {row} does not fit image shape {shape}"
                )
            array[row : row + strip.shape[0]] = strip
            row += strip.shape[0]
        if row != shape[0]:
            raise UserError(f"cannot write {path}: strips gave {row} of the {shape[0]} rows of the image")
    return path


def write_png(path: str | os.PathLike, array: np.ndarray, *, compress_level: int = 6) -> Path:
    """Write a PNG atomically.

    Parameters
    ----------
    path : path-like
    array : (H, W) uint8/uint16/bool, or (H, W, 3|4) uint8 ndarray
        Greyscale (or class-index) image, or RGB(A).
    compress_level : int
        zlib level 0-9 (1 is much faster for big label maps, 6 is Pillow's default).

    Returns
    -------
    Path

    Raises
    ------
    UserError
        Shape or dtype PNG cannot hold.
    """
    from PIL import Image

    path = Path(path)
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    colour = array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8
    if not (grey or colour):
        raise UserError(
            f"cannot write {path} as PNG: need (H, W) uint8/uint16 or (H, W, 3|4) uint8, got {array.shape} {array.dtype}"
        )
    image = Image.fromarray(np.ascontiguousarray(array))  # uint16 -> mode "I;16"
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=int(compress_level))
    return path
