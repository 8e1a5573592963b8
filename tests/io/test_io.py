"""Big-image I/O: lazy readers, strip-wise downscaling, atomic writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mineralseg.errors import DataError, UserError
from mineralseg.io import (
    TiffBlockWriter,
    downscale_area,
    downscale_mode,
    open_image,
    output_shape,
    read_image,
    write_png,
    write_tiff,
    write_zarr,
)


def _image(shape=(203, 157), dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


SLICES = [
    (slice(None), slice(None)),
    (slice(10, 90), slice(3, 150)),
    (slice(5, 200, 7), slice(None, None, 3)),
    (slice(None, None, -1), slice(20, 10, -2)),
    (17, slice(None)),
    (slice(0, 0), slice(None)),
    (-1, -2),
]


# ------------------------------------------------------------------ raw
def test_raw_round_trip_and_slicing(tmp_path):
    a = _image((120, 77), np.uint16, seed=1)
    path = tmp_path / "sem.raw"
    a.tofile(path)
    lazy = open_image(path, shape=a.shape, dtype="uint16")
    assert lazy.shape == a.shape and lazy.dtype == np.uint16 and lazy.ndim == 2 and lazy.kind == "raw"
    for key in SLICES:
        np.testing.assert_array_equal(lazy[key], a[key])
    np.testing.assert_array_equal(np.asarray(lazy), a)


def test_raw_with_header_offset(tmp_path):
    a = _image((30, 40), seed=2)
    path = tmp_path / "sem.dat"
    path.write_bytes(b"H" * 512 + a.tobytes())
    np.testing.assert_array_equal(read_image(path, shape=(30, 40), dtype=np.uint8, offset=512), a)


def test_raw_size_mismatch_names_both_sizes(tmp_path):
    path = tmp_path / "sem.raw"
    _image((10, 10)).tofile(path)
    with pytest.raises(UserError, match=r"sem.raw: file size 100 bytes.*\(10, 11\).*110 bytes"):
        open_image(path, shape=(10, 11), dtype="uint8")
    with pytest.raises(UserError, match="needs both shape"):
        open_image(path)


# ------------------------------------------------------------------ TIFF
@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({"tile": (64, 32)}, "tiff-zarr"),
        ({"tile": None}, "tiff-raw"),  # uncompressed strips: contiguous, read directly
        ({"tile": None, "compression": "zlib"}, "tiff-zarr"),
        ({"tile": (32, 32), "compression": "zlib", "bigtiff": True}, "tiff-zarr"),
        ({"tile": None, "bigtiff": True}, "tiff-raw"),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_round_trips(tmp_path, options, kind, dtype):
    a = _image(dtype=dtype, seed=3)
    path = write_tiff(tmp_path / "img.tif", a, **options)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff == bool(options.get("bigtiff"))
        assert tif.pages[0].is_tiled == (options["tile"] is not None)
    with open_image(path) as lazy:
        assert lazy.kind == kind and lazy.shape == a.shape and lazy.dtype == dtype
        for key in SLICES:
            np.testing.assert_array_equal(lazy[key], a[key])
    assert _no_temporaries(tmp_path)


@pytest.mark.parametrize("tile", [(32, 48), None])
def test_rgb_tiff_and_as_grey(tmp_path, tile):
    grey = _image((70, 90), seed=4)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    path = write_tiff(tmp_path / "rgb.tif", rgb, tile=tile, compression="zlib")
    lazy = open_image(path)
    assert lazy.shape == (70, 90, 3)
    np.testing.assert_array_equal(lazy[5:9, 7:60, 1:], rgb[5:9, 7:60, 1:])
    as_grey = open_image(path, as_grey=True)
    assert as_grey.shape == (70, 90)
    np.testing.assert_array_equal(as_grey[10:20, 30:40], grey[10:20, 30:40])  # equal channels: exact


def test_planar_tiff_is_presented_channels_last(tmp_path):
    rgb = _image((40, 50, 3), seed=5)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    lazy = open_image(path)
    assert lazy.shape == (40, 50, 3)
    np.testing.assert_array_equal(lazy[3:30, 10:20], rgb[3:30, 10:20])


def test_tiff_block_writer_round_trip(tmp_path):
    a = _image((300, 250), seed=6)
    path = tmp_path / "blocks.tif"
    with TiffBlockWriter(path, a.shape, a.dtype, tile=(64, 96), compression="zlib", bigtiff=True) as writer:
        for r0 in range(0, 300, 37):  # strips not aligned with tiles
            writer.write(a[r0 : r0 + 37])
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.pages[0].tilelength == 64
    np.testing.assert_array_equal(read_image(path), a)
    rgb = _image((70, 50, 3), seed=7)
    write_tiff(tmp_path / "gen.tif", (rgb[r : r + 9] for r in range(0, 70, 9)), shape=rgb.shape, dtype=rgb.dtype)
    np.testing.assert_array_equal(read_image(tmp_path / "gen.tif"), rgb)


def test_tiff_block_writer_finishes_when_tifffile_is_done_first(tmp_path):
    """tifffile stops pulling tiles after the last one and closes the file; the writer
    thread may then be gone before the with block ends (regression: that raised)."""
    import time

    a = _image((40, 48), seed=9)
    path = tmp_path / "small.tif"
    with TiffBlockWriter(path, a.shape, a.dtype, tile=(16, 16)) as writer:
        writer.write(a)
        deadline = time.monotonic() + 10
        while writer._thread.is_alive() and time.monotonic() < deadline:  # let it finish first
            time.sleep(0.01)
        assert not writer._thread.is_alive()
    np.testing.assert_array_equal(read_image(path), a)


def test_tiff_block_writer_leaves_nothing_on_error(tmp_path):
    a = _image((100, 64), seed=8)
    path = tmp_path / "out.tif"
    with pytest.raises(UserError, match="only 50 of 100 rows"):
        with TiffBlockWriter(path, a.shape, a.dtype) as writer:
            writer.write(a[:50])
    with pytest.raises(UserError, match="110 rows written, image has 100"):
        with TiffBlockWriter(path, a.shape, a.dtype) as writer:
            writer.write(a[:60])
            writer.write(a[:50])
    with pytest.raises(UserError, match=r"strip of shape \(10, 63\)"):
        with TiffBlockWriter(path, a.shape, a.dtype) as writer:
            writer.write(a[:10, :63])
    with pytest.raises(KeyError):
        with TiffBlockWriter(path, a.shape, a.dtype) as writer:
            writer.write(a[:10])
            raise KeyError("user code failed")
    assert not path.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ zarr, npy, png
def test_zarr_from_strips_and_array(tmp_path):
    a = _image((130, 70), np.uint16, seed=9)
    write_zarr(tmp_path / "s.zarr", (a[r : r + 40] for r in range(0, 130, 40)), shape=a.shape, dtype=a.dtype, chunks=(32, 32))
    lazy = open_image(tmp_path / "s.zarr")
    assert lazy.kind == "zarr"
    for key in SLICES:
        np.testing.assert_array_equal(lazy[key], a[key])
    with pytest.raises(FileExistsError):
        write_zarr(tmp_path / "s.zarr", a)
    write_zarr(tmp_path / "s.zarr", a[::-1].copy(), overwrite=True)
    np.testing.assert_array_equal(read_image(tmp_path / "s.zarr"), a[::-1])
    with pytest.raises(UserError, match="strips gave 40 of the 130 rows"):
        write_zarr(tmp_path / "short.zarr", iter([a[:40]]), shape=a.shape, dtype=a.dtype)
    assert not (tmp_path / "short.zarr").exists() and _no_temporaries(tmp_path)


def test_npy_is_read_lazily(tmp_path):
    a = _image((40, 30, 2), seed=10)
    np.save(tmp_path / "a.npy", a)
    lazy = open_image(tmp_path / "a.npy")
    assert lazy.kind == "npy" and lazy.shape == a.shape
    np.testing.assert_array_equal(lazy[5:25:2, 3:9], a[5:25:2, 3:9])


@pytest.mark.parametrize(
    "array",
    [_image((31, 17), seed=11), _image((31, 17), np.uint16, seed=12), _image((31, 17, 3), seed=13), _image((9, 8, 4), seed=14)],
)
def test_png_round_trip(tmp_path, array):
    write_png(tmp_path / "x.png", array)
    back = read_image(tmp_path / "x.png")
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert _no_temporaries(tmp_path)


def test_png_rejects_float(tmp_path):
    with pytest.raises(UserError, match=r"x.png.*float32"):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.float32))
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ errors
def test_missing_garbled_and_unsupported_files(tmp_path):
    with pytest.raises(UserError, match=r"image not found: .*nothing.tif"):
        open_image(tmp_path / "nothing.tif")
    garbage = np.random.default_rng(15).integers(0, 256, 4000).astype(np.uint8).tobytes()
    for name in ["bad.tif", "bad.png", "bad.jpg", "bad.xyz"]:
        (tmp_path / name).write_bytes(garbage)
        with pytest.raises(UserError, match=name):
            read_image(tmp_path / name)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"stack.tif: unsupported TIFF layout.*\(5, 8, 8\)"):
        open_image(tmp_path / "stack.tif")
    # a truncated PNG: valid header, missing data
    write_png(tmp_path / "ok.png", _image((64, 64), seed=16))
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:300])
    with pytest.raises(UserError, match="cut.png"):
        read_image(tmp_path / "cut.png")


# ------------------------------------------------------------------ downscaling
def _brute_area(a: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """Mean over [i*fy, (i+1)*fy) x [j*fx, (j+1)*fx) with explicit overlap weights."""
    ho, wo = output_shape(a.shape, (fy, fx))[:2]
    out = np.zeros((ho, wo) + a.shape[2:])
    for i in range(ho):
        for j in range(wo):
            y0, y1 = i * fy, min((i + 1) * fy, a.shape[0])
            x0, x1 = j * fx, min((j + 1) * fx, a.shape[1])
            for r in range(int(np.floor(y0)), int(np.ceil(y1))):
                wy = min(r + 1, y1) - max(r, y0)
                for c in range(int(np.floor(x0)), int(np.ceil(x1))):
                    out[i, j] += wy * (min(c + 1, x1) - max(c, x0)) * a[r, c]
    return out / (fy * fx)


@pytest.mark.parametrize("factor", [1, 2, 3, 5, 1.5, 2.7, 4.999, 37 / 3, (2.5, 3.25), (3, 2.2)])
@pytest.mark.parametrize("block_rows", [None, 1, 3])
def test_downscale_area_matches_brute_force(factor, block_rows):
    a = _image((41, 37), seed=17)
    fy, fx = (factor, factor) if np.isscalar(factor) else factor
    expected = _brute_area(a, fy, fx)
    out = downscale_area(a, factor, block_rows=block_rows, dtype=np.float64)
    # floor(size / factor), with factors like 37 / 3 counting as giving exactly 3 pixels
    assert out.shape == (int(np.floor(41 / fy + 1e-9)), int(np.floor(37 / fx + 1e-9))) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


def test_downscale_area_channels_dtypes_and_lazy_source(tmp_path):
    rgb = _image((40, 44, 3), np.uint16, seed=18)
    np.testing.assert_allclose(downscale_area(rgb, 2.6, dtype=np.float64), _brute_area(rgb, 2.6, 2.6), atol=1e-9)
    a = _image((95, 76), seed=19)
    write_tiff(tmp_path / "a.tif", a, tile=(32, 32), compression="zlib")
    from_file = downscale_area(open_image(tmp_path / "a.tif"), 19 / 4, block_rows=2)
    np.testing.assert_array_equal(from_file, downscale_area(a, 19 / 4))
    as_uint8 = downscale_area(a, 3, dtype=np.uint8)
    np.testing.assert_array_equal(as_uint8, np.rint(_brute_area(a, 3, 3)).astype(np.uint8))
    out = np.zeros((31, 25), np.float32)
    assert downscale_area(a, 3, out=out) is out and out.any()
    with pytest.raises(UserError, match=r"out has shape \(30, 25\), expected \(31, 25\)"):
        downscale_area(a, 3, out=np.zeros((30, 25)))
    with pytest.raises(UserError, match="factor must be >= 1"):
        downscale_area(a, 0.5)
    with pytest.raises(UserError, match="smaller than one output pixel"):
        downscale_area(a, 100)


class _RecordingSource:
    """Array wrapper that records the rows of every read."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.rows_read: list[int] = []

    def __getitem__(self, key):
        data = self.array[key]
        self.rows_read.append(data.shape[0])
        return data


@pytest.mark.parametrize("factor", [4, 4.4])
def test_downscale_reads_bounded_strips(factor):
    src = _RecordingSource(_image((400, 50), seed=20))
    out = downscale_area(src, factor, block_rows=5)
    assert max(src.rows_read) <= 5 * factor + 2
    assert sum(src.rows_read) <= 400 + 2 * len(src.rows_read)  # each row read about once
    np.testing.assert_allclose(out, downscale_area(src.array, factor), atol=1e-4)


def test_downscale_mode_integer_factor():
    labels = np.array(
        [[1, 1, 2, 2, 0, 0],
         [1, 3, 2, 2, 0, 9],
         [4, 4, 5, 6, 7, 7],
         [4, 9, 6, 5, 9, 9]],
        dtype=np.uint8,
    )  # fmt: skip
    np.testing.assert_array_equal(downscale_mode(labels, 2), [[1, 2, 0], [4, 5, 7]])  # ties -> smallest id
    np.testing.assert_array_equal(downscale_mode(labels, 2, ignore_index=9), [[1, 2, 0], [4, 5, 7]])
    all_ignored = np.full((4, 4), 255, np.uint8)
    all_ignored[0, 0] = 3
    np.testing.assert_array_equal(downscale_mode(all_ignored, 2, ignore_index=255), [[3, 255], [255, 255]])
    with pytest.raises(UserError, match="integer label map"):
        downscale_mode(labels.astype(np.float32), 2)


@pytest.mark.parametrize("factor", [3, 2.5, (3.3, 2)])
def test_downscale_mode_matches_area_vote(factor):
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 4, (33, 31)).astype(np.uint8)
    fy, fx = (factor, factor) if np.isscalar(factor) else factor
    votes = np.stack([_brute_area((labels == k).astype(float), fy, fx) for k in range(4)])
    out = downscale_mode(labels, factor, block_rows=2)
    best = votes.max(axis=0)
    # the winner holds the largest covered area (ties may go to any of the tied ids)
    chosen = np.take_along_axis(votes, out[None].astype(np.int64), axis=0)[0]
    np.testing.assert_allclose(chosen, best, atol=1e-9)
    assert len(np.unique(out)) == 4


def test_write_json_converts_numpy_paths_and_non_finite_floats(tmp_path):
    from mineralseg.io import json_ready, write_json

    obj = {1: np.int64(3), "a": np.array([[1, 2]], np.uint8), "f": np.float32(0.5), "nan": float("nan"),
           "t": (np.bool_(True), Path("/x/y")), "inf": np.float64(np.inf)}
    write_json(tmp_path / "o.json", obj)
    back = json.loads((tmp_path / "o.json").read_text())
    assert back == {"1": 3, "a": [[1, 2]], "f": 0.5, "nan": None, "t": [True, "/x/y"], "inf": None}
    assert json_ready(back) == back
