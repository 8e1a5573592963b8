"""Class schemas: palettes, colour/grey coding, group merging, label map files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mineralseg.classes import ClassSchema, builtin_schemas, load_schema, read_label_map
from mineralseg.errors import ConfigError, DataError, UserError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUILTINS = ["qemscan24", "qemscan24-5groups", "sandstone-xrm"]


def _random_ids(schema: ClassSchema, shape=(37, 53), level="minerals", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, schema.n_classes(level), shape).astype(np.uint8)


def _write_schema(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _small_schema(**changes) -> dict:
    data = {
        "name": "tiny",
        "minerals": [
            {"name": "a", "color": [0, 0, 0], "group": "g0"},
            {"name": "b", "color": [10, 20, 30], "group": "g1"},
            {"name": "c", "color": [200, 100, 50], "group": "g1"},
        ],
        "groups": [{"name": "g0", "color": [0, 0, 0]}, {"name": "g1", "color": [255, 255, 255]}],
    }
    data.update(changes)
    return data


# ------------------------------------------------------------------ built-in palettes
def test_builtin_schemas_are_listed_and_match_configs_folder():
    assert set(BUILTINS) <= set(builtin_schemas())
    for name in BUILTINS:
        config_copy = REPO / "configs" / "palettes" / f"{name}.yaml"
        assert config_copy.is_file()
        assert load_schema(config_copy) == load_schema(name)


def test_qemscan24_is_the_study_palette():
    study = {
        (0, 0, 0), (0, 64, 0), (0, 128, 128), (0, 192, 0), (0, 255, 0), (0, 255, 255), (51, 102, 0),
        (104, 60, 192), (128, 0, 0), (128, 0, 128), (128, 64, 64), (128, 128, 0), (128, 128, 128),
        (128, 128, 255), (192, 64, 0), (192, 192, 255), (255, 0, 0), (255, 0, 153), (255, 128, 0),
        (255, 128, 128), (255, 192, 128), (255, 192, 192), (255, 255, 0), (255, 255, 255),
    }  # fmt: skip
    for name, groups in [
        ("qemscan24", ["pores_background", "quartz", "albite", "clay_accessories"]),
        ("qemscan24-5groups", ["pore", "quartz", "albite", "clay_accessories", "background"]),
    ]:
        s = load_schema(name)
        assert {tuple(c) for c in s.mineral_colors.tolist()} == study
        assert s.group_names == groups
        assert s.ignore_index == 255
        assert s.mineral_colors.shape == (24, 3) and s.mineral_colors.dtype == np.uint8
        by_color = {m.color: m for m in s.minerals}
        assert by_color[(255, 192, 192)].name == "quartz"
        assert by_color[(0, 255, 255)].name == "albite"
        assert by_color[(255, 255, 0)].name == "pyrite"
        assert s.group_names[by_color[(255, 192, 192)].group] == "quartz"
        assert s.group_names[by_color[(0, 255, 255)].group] == "albite"
        assert s.group_names[by_color[(255, 255, 0)].group] == "clay_accessories"
    s4, s5 = load_schema("qemscan24"), load_schema("qemscan24-5groups")
    pore, bg = s4.index("pore"), s4.index("background")
    assert s4.mineral_to_group[pore] == s4.mineral_to_group[bg] == 0
    assert s5.group_names[s5.mineral_to_group[pore]] == "pore"
    assert s5.group_names[s5.mineral_to_group[bg]] == "background"


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("level", ["minerals", "groups"])
def test_round_trip_ids_colors_ids_is_exact(name, level):
    s = load_schema(name)
    ids = _random_ids(s, level=level)
    ids[0, : s.n_classes(level)] = np.arange(s.n_classes(level))  # every class present
    rgb = s.ids_to_colors(ids, level)
    assert rgb.shape == ids.shape + (3,) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 1], s.level_colors(level)[1])
    np.testing.assert_array_equal(s.colors_to_ids(rgb, level=level), ids)


@pytest.mark.parametrize("name", BUILTINS)
def test_round_trip_ids_grey_ids_is_exact(name):
    s = load_schema(name)
    for level in ("minerals", "groups"):
        ids = _random_ids(s, level=level, seed=1)
        np.testing.assert_array_equal(s.grey_to_ids(s.ids_to_grey(ids, level), level), ids)


def test_to_dict_round_trip():
    s = load_schema("qemscan24")
    assert ClassSchema.from_dict(s.to_dict()) == s
    d = s.classes_dict("groups")
    assert d["names"] == s.group_names and d["ignore_index"] == 255
    assert d["colors"][1] == [255, 192, 192]


# ------------------------------------------------------------------ unknown colours
def test_unknown_colors_are_reported_with_counts():
    s = load_schema("qemscan24")
    rgb = s.ids_to_colors(_random_ids(s))
    rgb[3, 4:9] = (1, 2, 3)  # 5 pixels
    rgb[10, 0:2] = (250, 250, 250)  # 2 pixels
    assert s.unknown_colors(rgb) == {(1, 2, 3): 5, (250, 250, 250): 2}
    with pytest.raises(DataError, match=r"7 pixels with 2 colours.*\(1, 2, 3\) x5, \(250, 250, 250\) x2"):
        s.colors_to_ids(rgb, source="map.png")
    with pytest.raises(DataError, match="map.png"):
        s.colors_to_ids(rgb, source="map.png")


def test_unknown_colors_message_lists_at_most_ten():
    s = load_schema("sandstone-xrm")
    rgb = np.zeros((4, 30, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(30)[None, :] + 1  # 30 unknown colours
    with pytest.raises(DataError) as info:
        s.colors_to_ids(rgb)
    assert info.value.args[0].count(" x4") == 10 and "and 20 more" in info.value.args[0]


def test_nearest_within_tolerance():
    s = load_schema("qemscan24")
    ids = _random_ids(s, seed=2)
    rgb = s.ids_to_colors(ids)
    noisy = rgb.copy()
    noisy[0, 0] = np.array(s.minerals[s.index("quartz")].color) + np.array([0, -3, 0])  # distance 3
    noisy[1, 1] = (3, 4, 0)  # distance 5 from pore (0, 0, 0)
    out = s.colors_to_ids(noisy, unknown="nearest", tolerance=5)
    expected = ids.copy()
    expected[0, 0], expected[1, 1] = s.index("quartz"), s.index("pore")
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(DataError, match=r"\(3, 4, 0\).*tolerance 4"):
        s.colors_to_ids(noisy, unknown="nearest", tolerance=4)


def test_ignore_maps_unknown_to_ignore_index():
    s = load_schema("sandstone-xrm")
    ids = _random_ids(s, seed=3)
    rgb = s.ids_to_colors(ids)
    rgb[2:4, 5] = (9, 9, 9)
    out = s.colors_to_ids(rgb, unknown="ignore")
    expected = ids.copy()
    expected[2:4, 5] = 255
    np.testing.assert_array_equal(out, expected)
    # ignore_index is preserved by the group mapping and drawn in the ignore colour
    assert (s.to_groups(out)[2:4, 5] == 255).all()
    np.testing.assert_array_equal(s.ids_to_colors(out)[2, 5], [255, 0, 255])


def test_rgba_alpha_is_dropped_and_grey_input_rejected():
    s = load_schema("qemscan24")
    ids = _random_ids(s, seed=4)
    rgba = np.concatenate([s.ids_to_colors(ids), np.full(ids.shape + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(s.colors_to_ids(rgba), ids)
    with pytest.raises(DataError, match=r"greyscale.*coding='grey'"):
        s.colors_to_ids(ids)


def test_invalid_option_and_ids_are_user_errors():
    s = load_schema("qemscan24")
    with pytest.raises(UserError, match="unknown 'drop'"):
        s.colors_to_ids(np.zeros((2, 2, 3), np.uint8), unknown="drop")
    with pytest.raises(DataError, match=r"\[30\]"):
        s.ids_to_colors(np.array([[0, 30]]))
    with pytest.raises(DataError, match=r"\[5\].*groups"):
        s.ids_to_colors(np.array([[0, 5]]), "groups")


# ------------------------------------------------------------------ groups
def test_group_mapping():
    s = load_schema("qemscan24")
    names = ["pore", "background", "quartz", "albite", "pyrite", "kaolinite"]
    ids = np.array([[s.index(n) for n in names] + [255]], dtype=np.uint8)
    groups = s.to_groups(ids)
    assert [s.group_names[g] for g in groups[0, :-1]] == [
        "pores_background", "pores_background", "quartz", "albite", "clay_accessories", "clay_accessories",
    ]  # fmt: skip
    assert groups[0, -1] == 255
    assert s.mineral_to_group.dtype == np.uint8 and s.mineral_to_group.shape == (24,)
    # colour of a mineral map merged to groups equals the group colours of the merged ids
    mineral_ids = _random_ids(s, seed=5)
    np.testing.assert_array_equal(
        s.ids_to_colors(s.to_groups(mineral_ids), "groups"), s.group_colors[s.mineral_to_group[mineral_ids]]
    )


# ------------------------------------------------------------------ grey coding
def test_grey_coding_equidistant():
    s = load_schema("qemscan24")
    assert s.mineral_greys.tolist() == [round(k * 255 / 23) for k in range(24)]
    assert s.group_greys.tolist() == [0, 85, 170, 255]
    grey = np.array([[0, 85], [170, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(s.grey_to_ids(grey, "groups"), [[0, 1], [2, 3]])
    with pytest.raises(DataError, match=r"1 grey levels.*86 x1"):
        s.grey_to_ids(np.array([[0, 86]], np.uint8), "groups")
    np.testing.assert_array_equal(s.grey_to_ids(np.array([[0, 86]], np.uint8), "groups", unknown="nearest", tolerance=1), [[0, 1]])
    np.testing.assert_array_equal(s.grey_to_ids(np.array([[0, 86]], np.uint8), "groups", unknown="ignore"), [[0, 255]])


def test_grey_coding_explicit():
    s = load_schema("sandstone-xrm")
    assert s.mineral_greys.tolist() == [33, 231, 201, 65]
    grey = np.array([[33, 231, 201, 65]], dtype=np.uint8)
    np.testing.assert_array_equal(s.grey_to_ids(grey), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(s.ids_to_grey(np.array([[3, 2]])), [[65, 201]])
    with pytest.raises(DataError, match="ignore_grey"):
        s.ids_to_grey(np.array([[255]]))
    assert s.ids_to_grey(np.array([[255]]), ignore_grey=7)[0, 0] == 7


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"minerals": [{"name": "a", "color": [0, 0, 0], "group": "g0"}, {"name": "A", "color": [1, 0, 0], "group": "g0"}],
          "groups": [{"name": "g0", "color": [0, 0, 0]}]}, "mineral name"),
        ({"minerals": [{"name": "a", "color": [0, 0, 0], "group": "g0"}, {"name": "b", "color": [0, 0, 0], "group": "g0"}],
          "groups": [{"name": "g0", "color": [0, 0, 0]}]}, "mineral colour"),
        ({"minerals": [{"name": "a", "color": [0, 0, 0], "group": "nope"}],
          "groups": [{"name": "g0", "color": [0, 0, 0]}]}, "refers to group 'nope'"),
        ({"minerals": [{"name": "a", "color": [0, 0, 300], "group": "g0"}],
          "groups": [{"name": "g0", "color": [0, 0, 0]}]}, "outside 0..255"),
        ({"ignore_index": 1}, "ignore_index 1 collides"),
        ({"colour": 3}, "unknown key 'colour'"),
        ({"minerals": [{"name": f"m{i}", "color": [i % 256, i // 256, 0], "group": "g0"} for i in range(255)],
          "groups": [{"name": "g0", "color": [0, 0, 0]}]}, "at most 254"),
    ],
)  # fmt: skip
def test_invalid_schemas_raise_config_error(tmp_path, change, message):
    path = _write_schema(tmp_path, _small_schema(**change))
    with pytest.raises(ConfigError, match=message):
        load_schema(path)


def test_partial_grey_values_rejected(tmp_path):
    data = _small_schema()
    data["minerals"][0]["grey"] = 10
    with pytest.raises(ConfigError, match=r"every entry or for none.*'b'"):
        load_schema(_write_schema(tmp_path, data))


def test_unknown_builtin_name_lists_valid_names():
    with pytest.raises(ConfigError, match="qemscan24.*sandstone-xrm"):
        load_schema("qemscan25")


def test_custom_schema_from_path(tmp_path):
    s = load_schema(_write_schema(tmp_path, _small_schema()))
    assert s.mineral_names == ["a", "b", "c"] and s.mineral_to_group.tolist() == [0, 1, 1]
    assert s.mineral_greys.tolist() == [0, 128, 255]


# ------------------------------------------------------------------ files
def test_read_label_map_codings(tmp_path):
    s = load_schema("qemscan24")
    ids = _random_ids(s, seed=6)
    Image.fromarray(s.ids_to_colors(ids)).save(tmp_path / "color.png")
    Image.fromarray(s.ids_to_grey(ids)).save(tmp_path / "grey.png")
    Image.fromarray(ids).save(tmp_path / "index.png")
    Image.fromarray(s.ids_to_colors(ids)).convert("RGBA").save(tmp_path / "rgba.png")
    for name, coding in [("color", "color"), ("grey", "grey"), ("index", "index"), ("rgba", "color")]:
        np.testing.assert_array_equal(read_label_map(tmp_path / f"{name}.png", s, coding=coding), ids)
    np.testing.assert_array_equal(read_label_map(tmp_path / "color.png", "qemscan24"), ids)
    with pytest.raises(DataError, match=r"grey.png.*greyscale"):
        read_label_map(tmp_path / "grey.png", s, coding="color")
    with pytest.raises(UserError, match="missing.png"):
        read_label_map(tmp_path / "missing.png", s)


def test_read_label_map_palette_png(tmp_path):
    s = load_schema("sandstone-xrm")
    ids = _random_ids(s, seed=7)
    img = Image.fromarray(ids, mode="P")
    img.putpalette(s.mineral_colors.ravel().tolist())
    img.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "pal.png", s, coding="color"), ids)
    np.testing.assert_array_equal(read_label_map(tmp_path / "pal.png", s, coding="index"), ids)


@pytest.mark.realdata
def test_sandstone_real_masks_agree():
    masks = SHARED_DATA / "sandstone-xrm" / "masks"
    if not masks.is_dir():
        pytest.skip("../shared/data is not available")
    s = load_schema("sandstone-xrm")
    from_color = read_label_map(masks / "Sandstone_Versa0150.tif", s)
    counts = np.bincount(from_color.ravel(), minlength=4) / from_color.size
    # README: air ~49 %, quartz ~45 %, clay ~4 %, pyrite ~1.5 %
    assert counts[0] == pytest.approx(0.49, abs=0.05) and counts[1] == pytest.approx(0.45, abs=0.05)
    assert counts[2] < 0.1 and counts[3] < 0.05 and counts[3] > 0
    from_grey = read_label_map(masks / "Sandstone_Versa0180.png", s, coding="grey")
    assert from_grey.shape == (1024, 996) and set(np.unique(from_grey)) == {0, 1, 2, 3}
    g = np.bincount(from_grey.ravel(), minlength=4) / from_grey.size
    assert g[0] > 0.4 and g[1] > 0.35 and g[3] < 0.05
