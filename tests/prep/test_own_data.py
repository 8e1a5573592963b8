"""Users' own data: folders of tiles, binary / inline-class masks, no mount, 16-bit and float SEM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from scipy import ndimage

from mineralseg.classes import guess_mask_coding, inline_schema
from mineralseg.cli import main
from mineralseg.errors import ConfigError, DataError
from mineralseg.prep.outline import border_share, labels_have_mount, section_mask
from mineralseg.prep.pipeline import prepare
from mineralseg.prep.splits import split_tile_groups, tile_grid_positions

from conftest import tiny_train_config

TILE = 64
GRID = 4  # tiles per side of the generated mosaic


def _rock(seed: int, size: int, porosity_level: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Grey rock from edge to edge (float, 8-bit range) and its pore mask (True = pore)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
    pore = field < porosity_level
    grey = np.where(pore, 55.0, 165.0) + rng.normal(0, 6, pore.shape)
    return np.clip(grey, 0, 255), pore


def _tile_folder(root: Path, *, seed: int = 0, mask_values=(0, 255), dtype=np.uint8, grid: int = GRID) -> Path:
    """``root/images/site_rRR_cCC.tif`` and ``root/masks/site_rRR_cCC.png`` cut from one mosaic."""
    grey, pore = _rock(seed, TILE * grid)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for r in range(grid):
        for c in range(grid):
            sl = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
            name = f"site_r{r:02d}_c{c:02d}"
            tifffile.imwrite(root / "images" / f"{name}.tif", _as_dtype(grey[sl], dtype))
            mask = np.where(pore[sl], mask_values[0], mask_values[1]).astype(np.uint8)
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def _as_dtype(grey8: np.ndarray, dtype) -> np.ndarray:
    """The same grey levels as 8-bit, 16-bit (x 257: full range) or float (/ 255: 0..1)."""
    g = np.rint(grey8)
    if dtype == np.uint8:
        return g.astype(np.uint8)
    if dtype == np.uint16:
        return (g * 257).astype(np.uint16)
    return (g / 255).astype(dtype)


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


def _manifest(ds: Path) -> dict:
    return json.loads((ds / "manifest.json").read_text())


# --------------------------------------------------------------------------- end to end
def test_folder_shortcut_prepare_train_evaluate(tmp_path, capsys):
    """Two folders (binary 0/255 masks) -> prepare --images/--masks -> train -> evaluate."""
    folder = _tile_folder(tmp_path / "tiles")
    ds = tmp_path / "ds"
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks", "--out", ds)
    assert code == 0, text
    assert "masks: 2 classes coded as grey levels (binary masks): class0 = 0" in text
    manifest = _manifest(ds)
    assert manifest["schema"]["names"] == ["class0", "class1"]  # nothing invented
    assert manifest["split"]["by"] == "groups" and manifest["tile_size"] == TILE
    tiles = manifest["tiles"]
    # every tile is kept, or left out by the guard band beside a test tile (and listed)
    assert len(tiles) + len(manifest["split"]["guard_dropped"]) == GRID * GRID
    assert {t["split"] for t in tiles} == {"train", "val", "test"}
    assert all(t["ignored"] == 0 and sum(t["class_counts"]) == TILE * TILE for t in tiles)
    run_cfg = tmp_path / "train.yaml"
    cfg = tiny_train_config(ds, tmp_path / "runs", **{"trainer.max_epochs": 1, "trainer.max_steps": 3})
    run_cfg.write_text(yaml.safe_dump(cfg))
    code, text = _cli(capsys, "train", run_cfg)
    assert code == 0, text
    run = Path(next(ln for ln in text.splitlines() if ln.startswith("run folder: ")).split("run folder: ")[1])
    code, text = _cli(capsys, "evaluate", run, "--split", "test", "--panels", "0")
    assert code == 0, text
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["split"] == "test"
    # the checkpoint carries the dataset's grey-level mapping and classes
    from mineralseg.evaluate.checkpoint import load_checkpoint_model

    _, card = load_checkpoint_model(run)
    assert card.class_names == ("class0", "class1")
    assert card.sem_normalisation["method"] == "none" and "per_sample" in card.sem_normalisation


def test_folder_split_by_groups_keeps_neighbours_together(tmp_path, capsys):
    folder = _tile_folder(tmp_path / "tiles", grid=6)
    ds = tmp_path / "ds"
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks", "--out", ds,
                      "--classes", "pore,rock", "--seed", "3")
    assert code == 0, text
    manifest = _manifest(ds)
    side = manifest["split"]["group_tiles"]
    assert side == 2  # 9 groups of 2 x 2 on a 6 x 6 grid (4 x 4 would give only 4)
    by_group: dict = {}
    where = {}
    for t in manifest["tiles"]:
        _, r, c = tile_grid_positions([t["sample"]], r"_r(?P<row>\d+)_c(?P<col>\d+)")[t["sample"]]
        where[(r, c)] = t["split"]
        assert by_group.setdefault((r // side, c // side), t["split"]) == t["split"]
    assert set(by_group.values()) == {"train", "val", "test"}
    # guard band: no kept training or validation image touches a test image; the dropped ones are listed
    test = {rc for rc, split in where.items() if split == "test"}
    for (r, c), split in where.items():
        if split != "test":
            assert not any((r + dr, c + dc) in test for dr in (-1, 0, 1) for dc in (-1, 0, 1)), (r, c)
    dropped = manifest["split"]["guard_dropped"]
    assert dropped and manifest["split"]["guard"] is True
    assert not set(dropped) & {t["sample"] for t in manifest["tiles"]} and len(where) + len(dropped) == 36


def test_split_tile_groups_never_mixes_mosaics():
    names = [f"{m}_r{r}_c{c}" for m in ("a", "b") for r in range(4) for c in range(4)]
    split = dict(zip(names, split_tile_groups(names, r"_r(?P<row>\d+)_c(?P<col>\d+)", 2, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)))
    for m in ("a", "b"):
        for gr in (0, 1):
            for gc in (0, 1):
                group = {split[f"{m}_r{r}_c{c}"] for r in (2 * gr, 2 * gr + 1) for c in (2 * gc, 2 * gc + 1)}
                assert len(group) == 1
    assert sorted(split.values()).count("train") == 16
    with pytest.raises(ValueError, match="carry no row and column"):
        split_tile_groups(["plain"], r"_r(?P<row>\d+)_c(?P<col>\d+)", 2, {"train": 1.0, "val": 0.0, "test": 0.0})


# --------------------------------------------------------------------------- errors
def test_unpaired_files_are_one_error_line(tmp_path, capsys):
    folder = _tile_folder(tmp_path / "tiles", grid=2)
    (folder / "masks" / "site_r00_c01.png").unlink()
    Image.fromarray(np.zeros((TILE, TILE), np.uint8)).save(folder / "masks" / "stray.png")
    out = tmp_path / "ds"
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks", "--out", out)
    assert code == 2
    line = _one_error_line(text)
    assert "site_r00_c01.tif" in line and "without a mask" in line and "stray.png" in line and "without an image" in line
    assert not out.exists()


def test_mismatched_sizes_are_one_error_line(tmp_path, capsys):
    folder = _tile_folder(tmp_path / "tiles", grid=2)
    Image.fromarray(np.zeros((TILE, TILE - 5), np.uint8)).save(folder / "masks" / "site_r01_c01.png")
    out = tmp_path / "ds"
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks", "--out", out)
    assert code == 2
    line = _one_error_line(text)
    assert "site_r01_c01" in line and f"{TILE} x {TILE - 5}" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "tiles"]


def test_shortcut_argument_errors(tmp_path, capsys):
    code, text = _cli(capsys, "prepare", "--images", tmp_path, "--out", tmp_path / "ds")
    assert code == 2 and "--masks" in _one_error_line(text)
    code, text = _cli(capsys, "prepare", "--out", tmp_path / "ds")
    assert code == 2 and "--images" in _one_error_line(text)
    folder = _tile_folder(tmp_path / "tiles", grid=2, mask_values=(0, 7))
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks",
                      "--out", tmp_path / "ds", "--classes", "pore,rock")
    assert code == 2 and "mask values 0, 7" in _one_error_line(text)


# --------------------------------------------------------------------------- class schemas
def test_guess_mask_coding_binary_and_named():
    g = guess_mask_coding({0: 30, 1: 10})
    assert g.coding == "index" and g.schema.group_names == ["class0", "class1"] and "(binary masks)" in g.summary
    g = guess_mask_coding({0: 30, 255: 10}, ["pore", "rock"])
    assert g.coding == "grey" and "pore = 0 (75.0 %), rock = 255 (25.0 %)" in g.summary
    g = guess_mask_coding({0: 5, 2: 5}, ["a", "b", "c"])
    assert g.coding == "index" and g.schema.n_groups == 3
    g = guess_mask_coding({0: 5, 85: 5, 170: 1, 255: 1})
    assert g.coding == "grey" and g.schema.n_groups == 4
    with pytest.raises(DataError, match=r"mask values 3, 9 are neither"):
        guess_mask_coding({3: 1, 9: 1}, ["a", "b"])
    with pytest.raises(ConfigError, match="at least two classes"):
        inline_schema(["only"])
    with pytest.raises(ConfigError, match="used twice"):
        inline_schema(["a", "a"])


def _pairs_config(root: Path, ids_list: list[np.ndarray], mask_of, **over) -> Path:
    """Aligned 8-bit SEM / mask pairs listed as samples; ``mask_of(ids)`` writes the mask array."""
    samples = []
    for i, ids in enumerate(ids_list):
        (root / f"s{i}").mkdir(parents=True)
        rng = np.random.default_rng(i)
        grey = np.array([40, 120, 200, 15])[ids] + rng.normal(0, 4, ids.shape)
        tifffile.imwrite(root / f"s{i}" / "sem.tif", np.clip(grey, 0, 255).astype(np.uint8))
        Image.fromarray(mask_of(ids)).save(root / f"s{i}" / "mask.png")
        samples.append({"name": f"s{i}", "sem": f"s{i}/sem.tif", "labels": f"s{i}/mask.png", "aligned": True})
    data = {"tile_size": 32, "out_size": 32, "split": {"by": "sample"}, "samples": samples, **over}
    path = root / "prepare.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _three_phase(seed: int, size: int = 96) -> np.ndarray:
    f = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 3)
    return np.digitize(f, [-0.02, 0.03]).astype(np.uint8)  # 0, 1, 2 edge to edge


def test_inline_two_class_grey_schema(tmp_path):
    ids = [(_three_phase(s) > 0).astype(np.uint8) for s in range(3)]
    cfg = _pairs_config(tmp_path / "in", ids, lambda a: (a * 255).astype(np.uint8),
                        palette=[{"name": "pore", "grey": 0}, {"name": "rock", "grey": 255}])
    summary = prepare(cfg, tmp_path / "ds", progress=False)
    manifest = _manifest(tmp_path / "ds")
    assert manifest["schema"]["names"] == ["pore", "rock"]
    lab = np.asarray(Image.open(tmp_path / "ds" / "samples" / "s1" / "labels_aligned.png"))
    np.testing.assert_array_equal(lab, ids[1])
    assert sum(manifest["tiles"][0]["class_counts"]) == 32 * 32 and summary["tiles"]["train"] > 0


def test_inline_three_class_index_schema(tmp_path):
    ids = [_three_phase(s) for s in range(3)]
    cfg = _pairs_config(tmp_path / "in", ids, lambda a: a, palette=["pore", "quartz", "clay"], label_coding="index")
    prepare(cfg, tmp_path / "ds", progress=False)
    manifest = _manifest(tmp_path / "ds")
    assert manifest["schema"]["names"] == ["pore", "quartz", "clay"] and len(manifest["schema"]["colors"]) == 3
    lab = np.asarray(Image.open(tmp_path / "ds" / "samples" / "s2" / "labels_aligned.png"))
    np.testing.assert_array_equal(lab, ids[2])
    # names only, coding told from the mask values (0..2 -> indices)
    cfg2 = _pairs_config(tmp_path / "in2", ids, lambda a: a, palette=["pore", "quartz", "clay"])
    text = prepare(cfg2, tmp_path / "ds2", progress=False)["text"]
    assert "masks: 3 classes coded as indices: pore = 0" in text


# --------------------------------------------------------------------------- outline
def test_whole_image_tiles_keep_every_pixel_and_invent_no_class(tmp_path):
    """Rock from edge to edge: every tile of every image kept, no class added, no pixel ignored."""
    ids = [_three_phase(s) for s in range(3)]
    # a schema with a mount class ("background") that is absent from every map
    cfg = _pairs_config(tmp_path / "in", ids, lambda a: a, palette=["pore", "quartz", "clay", "background"],
                        label_coding="index")
    summary = prepare(cfg, tmp_path / "ds", progress=False)
    manifest = _manifest(tmp_path / "ds")
    assert manifest["schema"]["names"] == ["pore", "quartz", "clay", "background"]
    assert len(manifest["tiles"]) == 3 * 9  # every 32-px tile of the 96-px images
    assert all(t["ignored"] == 0 and t["sample_fraction"] == 1.0 for t in manifest["tiles"])
    assert {r["outline"]["used"] for r in summary["samples"]} == {"none"}
    # without any mount class in the schema (today: the commonest border class was the mount)
    cfg2 = _pairs_config(tmp_path / "in2", ids, lambda a: a, palette=["pore", "quartz", "clay"], label_coding="index",
                         min_sample_fraction=0.9)
    prepare(cfg2, tmp_path / "ds2", progress=False)
    assert len(_manifest(tmp_path / "ds2")["tiles"]) == 3 * 9


def test_section_in_epoxy_still_gets_its_outline(tmp_path):
    yy, xx = np.mgrid[:96, :96]
    outside = (yy - 48) ** 2 + (xx - 48) ** 2 > 40**2
    ids = []
    for s in range(2):
        a = _three_phase(s)
        a[outside] = 3  # background, the mount
        ids.append(a)
    cfg = _pairs_config(tmp_path / "in", ids, lambda a: a, palette=["pore", "quartz", "clay", "background"],
                        label_coding="index")
    summary = prepare(cfg, tmp_path / "ds", progress=False)
    assert {r["outline"]["used"] for r in summary["samples"]} == {"labels"}
    tiles = _manifest(tmp_path / "ds")["tiles"]
    assert len(tiles) < 2 * 9 and all(t["sample_fraction"] >= 0.5 for t in tiles)
    # outline: none keeps the corners too
    cfg2 = _pairs_config(tmp_path / "in2", ids, lambda a: a, palette=["pore", "quartz", "clay", "background"],
                         label_coding="index", outline="none")
    prepare(cfg2, tmp_path / "ds2", progress=False)
    assert len(_manifest(tmp_path / "ds2")["tiles"]) == 2 * 9
    # outline: sem finds the section in the SEM (mount grey 15, rock 40..200; pores at
    # its edge may count as mount, so a subset of the tiles)
    cfg3 = _pairs_config(tmp_path / "in3", ids, lambda a: a, palette=["pore", "quartz", "clay", "background"],
                         label_coding="index", outline="sem")
    summary3 = prepare(cfg3, tmp_path / "ds3", progress=False)
    assert {r["outline"]["used"] for r in summary3["samples"]} == {"sem"}
    sem_tiles = {t["id"] for t in _manifest(tmp_path / "ds3")["tiles"]}
    assert "s0_r00032_c00032" in sem_tiles and sem_tiles <= {t["id"] for t in tiles}


def test_section_mask_modes():
    rock, _ = _rock(0, 128)
    assert section_mask(rock).all() and section_mask(rock, "none").all()
    yy, xx = np.mgrid[:128, :128]
    disk = (yy - 64) ** 2 + (xx - 64) ** 2 < 50**2
    section = np.where(disk, 170.0, 20.0) + np.random.default_rng(1).normal(0, 4, disk.shape)
    for mode in ("auto", "sem"):
        m = section_mask(section, mode)
        assert (m == disk).mean() > 0.98, mode
    assert section_mask(section.astype(np.float32) / 255, "auto").sum() == section_mask(section, "auto").sum()
    with pytest.raises(DataError, match="no sample found"):
        section_mask(np.full((64, 64), 100.0), "sem")
    with pytest.raises(ConfigError, match="'labels' needs a label map"):
        section_mask(rock, "labels")
    assert border_share(~disk) == 1.0 and border_share(np.zeros((5, 5), bool)) == 0.0
    ids = np.zeros((64, 64), np.uint8)
    ids[:, :3] = 3  # a thin strip of "mount" on one side: a quarter of the border at most
    assert not labels_have_mount(ids, [3]) and not labels_have_mount(ids, [])


# --------------------------------------------------------------------------- bit depth
@pytest.mark.parametrize(
    "normalise",
    [
        {},  # percentile stretch inside each sample, with drift removal
        {"method": "percentile", "scope": "dataset", "drift": False},
        "scale",  # method: none with each type's full range
    ],
)
def test_16bit_and_float_sem_give_the_8bit_tiles(tmp_path, normalise):
    tiles = {}
    for dtype in (np.uint8, np.uint16, np.float32):
        folder = _tile_folder(tmp_path / np.dtype(dtype).name, dtype=dtype, grid=2)
        norm = normalise
        if normalise == "scale":
            norm = {"method": "none", "scale": {np.uint8: [0, 255], np.uint16: [0, 65535], np.float32: [0, 1]}[dtype]}
        cfg = {"folders": {"images": "images", "masks": "masks"}, "tile_size": 32, "out_size": 32,
               "palette": ["pore", "rock"], "normalise": norm, "split": {"by": "sample"}}
        (folder / "prepare.yaml").write_text(yaml.safe_dump(cfg))
        ds = tmp_path / f"ds-{np.dtype(dtype).name}"
        prepare(folder / "prepare.yaml", ds, progress=False)
        manifest = _manifest(ds)
        assert manifest["normalisation"]["per_sample"]["site_r00_c00"]["low_value"] is not None
        tiles[dtype] = {t["id"]: np.asarray(Image.open(ds / t["image"]), np.int16) for t in manifest["tiles"]}
    ref = tiles[np.uint8]
    assert len(ref) == 16
    for dtype in (np.uint16, np.float32):
        assert tiles[dtype].keys() == ref.keys()
        for key, img in ref.items():
            assert np.abs(tiles[dtype][key] - img).max() <= 1, (dtype, key)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_normalise_none_without_scale_is_an_error_not_a_clip(tmp_path, capsys, dtype):
    folder = _tile_folder(tmp_path / "tiles", dtype=dtype, grid=2)
    (folder / "prepare.yaml").write_text(yaml.safe_dump({"normalise": {"method": "none"}, "tile_size": 32}))
    out = tmp_path / "ds"
    code, text = _cli(capsys, "prepare", folder / "prepare.yaml", "--images", folder / "images",
                      "--masks", folder / "masks", "--out", out)
    assert code == 2
    line = _one_error_line(text)
    assert np.dtype(dtype).name in line and "scale: [0, " in line and not out.exists()


def test_raw_float32_sem_through_prepare(tmp_path):
    grey, pore = _rock(5, 64)
    (tmp_path / "s").mkdir()
    (np.rint(grey) / 255).astype(np.float32).tofile(tmp_path / "s" / "sem.raw")
    Image.fromarray(np.where(pore, 0, 255).astype(np.uint8)).save(tmp_path / "s" / "mask.png")
    tifffile.imwrite(tmp_path / "s" / "sem8.tif", np.rint(grey).astype(np.uint8))
    out = {}
    for name, extra in (("raw", {"sem": "s/sem.raw", "sem_shape": [64, 64], "sem_dtype": "float32"}), ("tif", {"sem": "s/sem8.tif"})):
        cfg = {"palette": ["pore", "rock"], "tile_size": 32, "split": {"by": "blocks", "block_tiles": 1},
               "samples": [{"name": "a", "labels": "s/mask.png", "aligned": True, **extra}]}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        prepare(tmp_path / f"{name}.yaml", tmp_path / f"ds-{name}", progress=False)
        out[name] = np.asarray(Image.open(tmp_path / f"ds-{name}" / "samples" / "a" / "sem_aligned.png"), np.int16)
    assert np.abs(out["raw"] - out["tif"]).max() <= 1


def test_folder_names_without_grid_split_by_sample_or_lists(tmp_path):
    folder = _tile_folder(tmp_path / "tiles", grid=2)
    for p in list((folder / "images").iterdir()) + list((folder / "masks").iterdir()):
        p.rename(p.with_name(p.name.replace("site_r0", "field").replace("_c0", "-")))  # field0-1.tif ...
    base = {"folders": {"images": "images", "masks": "masks"}, "palette": ["pore", "rock"], "tile_size": 32,
            "normalise": {"method": "none"}}
    (folder / "a.yaml").write_text(yaml.safe_dump(base))
    summary = prepare(folder / "a.yaml", tmp_path / "ds-a", progress=False)
    manifest = _manifest(tmp_path / "ds-a")
    assert manifest["split"]["by"] == "sample" and manifest["samples"] == ["field0-0", "field0-1", "field1-0", "field1-1"]
    by_sample: dict = {}
    for t in manifest["tiles"]:
        assert by_sample.setdefault(t["sample"], t["split"]) == t["split"]
    assert summary["tiles"]["train"] > 0
    lists = {**base, "split": {"by": "sample", "val": ["field1-1"], "test": ["field0-0"]}}
    (folder / "b.yaml").write_text(yaml.safe_dump(lists))
    prepare(folder / "b.yaml", tmp_path / "ds-b", progress=False)
    splits = {t["sample"]: t["split"] for t in _manifest(tmp_path / "ds-b")["tiles"]}
    assert splits == {"field0-0": "test", "field0-1": "train", "field1-0": "train", "field1-1": "val"}
    (folder / "c.yaml").write_text(yaml.safe_dump({**base, "split": {"by": "sample", "val": ["nope"]}}))
    with pytest.raises(ConfigError, match="unknown sample 'nope'"):
        prepare(folder / "c.yaml", tmp_path / "ds-c", progress=False)


def test_colour_masks_need_their_colours(tmp_path, capsys):
    folder = _tile_folder(tmp_path / "tiles", grid=2)
    colours = {0: (0, 0, 255), 255: (255, 192, 192)}
    for p in (folder / "masks").iterdir():
        grey = np.asarray(Image.open(p))
        rgb = np.zeros(grey.shape + (3,), np.uint8)
        for v, c in colours.items():
            rgb[grey == v] = c
        Image.fromarray(rgb).save(p)
    code, text = _cli(capsys, "prepare", "--images", folder / "images", "--masks", folder / "masks", "--out", tmp_path / "ds")
    assert code == 2 and "colour mask" in _one_error_line(text) and "color: [r, g, b]" in text
    cfg = {"palette": [{"name": "pore", "color": [0, 0, 255]}, {"name": "quartz", "color": [255, 192, 192]}]}
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, text = _cli(capsys, "prepare", folder / "c.yaml", "--images", folder / "images", "--masks", folder / "masks",
                      "--out", tmp_path / "ds")
    assert code == 0, text
    assert _manifest(tmp_path / "ds")["schema"]["colors"] == [[0, 0, 255], [255, 192, 192]]
