"""HTML reports: escaping, embedded images, display downsampling, tables, atomic writes,
the bar chart and overlay, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mineralseg.errors import ConfigError, DataError, UserError
from mineralseg.io import downscale_area, open_image
from mineralseg.report import Figure, Legend, Section, Table, mineralogy_bar_chart, overlay, write_html_report
from mineralseg.report.html import format_value

NASTY = "<script>alert('x')</script> & \"quoted\" <b>bold</b>"
COLORS = np.array([[0, 0, 0], [255, 192, 192], [0, 128, 0]], np.uint8)
NAMES = ["pore", "quartz", "clay"]


class _Page(HTMLParser):
    """Collects the text, the tags, every <img> and the cells of every table."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tables: list[list[list[tuple[str, str]]]] = []  # rows of (text, class)
        self._cell: list[str] | None = None
        self._cell_class = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_class = [], attrs.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell), self._cell_class))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(img: dict[str, str]) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", img["src"])
    assert match, f"not an embedded image: {img['src'][:60]}"
    return match.group(1), base64.b64decode(match.group(2))


def _pixels(img: dict[str, str]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(_decode(img)[1])))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _class_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W, 3) coloured class map with fine detail (blending would create new colours)."""
    labels = np.random.default_rng(seed).integers(0, 3, size=shape)
    return COLORS[labels]


# --------------------------------------------------------------------------- escaping
def test_all_text_is_escaped_and_round_trips(tmp_path):
    @dataclasses.dataclass
    class Card:
        arch: str
        notes: dict

    path = write_html_report(
        tmp_path / "r.html", title=NASTY,
        sections=[Section(NASTY, [Figure(NASTY, np.zeros((8, 8), np.uint8), caption=NASTY),
                                  Table(NASTY, [NASTY, "n"], [[NASTY, 1]], caption=NASTY),
                                  Legend([NASTY], [[1, 2, 3]], title=NASTY), NASTY])],
        card=Card(arch=NASTY, notes={NASTY: NASTY}), command=f"mineralseg predict {NASTY}",
    )
    raw = path.read_text(encoding="utf-8")
    assert "<script" not in raw and "<b>" not in raw  # nothing of the text became markup
    page = _parse(path)
    assert "script" not in page.tags and "b" not in page.tags
    text = "".join(page.text)
    # title, section, figure title + caption, table title + cell + caption, legend title + name,
    # paragraph, card value, card key, card value, command: every one shown as plain text
    assert text.count(NASTY) >= 14
    assert page.images[0]["alt"] == NASTY  # attribute values escaped too (quotes included)


def test_paragraph_keeps_line_breaks(tmp_path):
    path = write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", ["line one\nline two"])])
    assert "<p>line one<br>line two</p>" in path.read_text()


# --------------------------------------------------------------------------- embedding
def test_every_kind_of_image_is_embedded_exactly(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 25, 3), dtype=np.uint8)
    png = _png(rgb[:10])
    jpeg_path = tmp_path / "photo.jpg"
    Image.fromarray(grey).save(jpeg_path, format="JPEG")
    png_path = tmp_path / "map.png"
    png_path.write_bytes(png)
    figures = [Figure("grey", grey), Figure("rgb", rgb), Figure("bytes", png),
               Figure("jpeg file", jpeg_path), Figure("png file as str", str(png_path))]
    path = write_html_report(tmp_path / "r.html", title="t", sections=[Section("maps", figures)])
    page = _parse(path)
    assert [i["alt"] for i in page.images] == [f.title for f in figures]
    np.testing.assert_array_equal(_pixels(page.images[0]), grey)
    np.testing.assert_array_equal(_pixels(page.images[1]), rgb)
    assert _decode(page.images[2]) == ("image/png", png)  # small encoded images: byte for byte
    assert _decode(page.images[3]) == ("image/jpeg", jpeg_path.read_bytes())
    assert _decode(page.images[4]) == ("image/png", png)
    assert [(i["width"], i["height"]) for i in page.images] == [("40", "30"), ("25", "20"), ("25", "10"),
                                                                ("40", "30"), ("25", "10")]
    raw = path.read_text()
    # self-contained: no links, scripts or URLs other than data: images and in-page anchors
    assert not set(page.tags) & {"script", "link", "iframe", "object", "embed"}
    assert not re.search(r"(src|href)=\"(?!data:image/|#)", raw)
    assert "url(" not in raw and "@import" not in raw


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), np.float32), r"\(8, 8\) float32"),
        (np.zeros((8, 8, 4), np.uint8), r"\(8, 8, 4\) uint8"),
        (b"GIF89a....", "not a PNG or JPEG"),
    ],
)
def test_bad_figure_images_are_refused_with_what_and_how(image, message):
    with pytest.raises(DataError, match=message):
        Figure("bad", image)


def test_missing_or_unreadable_image_file(tmp_path):
    with pytest.raises(DataError, match=r"figure 'gone': image file .*missing\.png not found"):
        write_html_report(tmp_path / "r.html", title="t",
                          sections=[Section("s", [Figure("gone", tmp_path / "missing.png")])])
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match="fake.png cannot be read as an image"):
        write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", [Figure("fake", fake)])])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'nearest'"):
        Figure("f", np.zeros((4, 4), np.uint8), resample="nearst")
    with pytest.raises(UserError, match="max_image_side must be an integer >= 16, got 4"):
        write_html_report("never.html", title="t", sections=[], max_image_side=4)
    with pytest.raises(TypeError, match="items must be Figure, Table, Legend or str"):
        Section("s", [42])
    with pytest.raises(DataError, match=r"class_colors must be \(2, 3\)"):
        Legend(["a", "b"], [[0, 0, 0]])
    assert not Path("never.html").exists()


def test_report_path_must_be_a_file(tmp_path):
    with pytest.raises(UserError, match=r"it is a folder; give a file name such as .*report\.html"):
        write_html_report(tmp_path, title="t", sections=[])


# --------------------------------------------------------------------------- downsampling
def test_large_grey_images_are_area_averaged(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (300, 500), dtype=np.uint8)
    path = write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", [Figure("sem", grey)])],
                             max_image_side=100)
    page = _parse(path)
    shown = _pixels(page.images[0])
    block_means = grey.reshape(60, 5, 100, 5).mean(axis=(1, 3))  # factor 500 / 100 = 5
    assert shown.shape == (60, 100)
    np.testing.assert_array_equal(shown, np.rint(block_means).astype(np.uint8))
    assert "shown at 100 \u00d7 60 px (area-averaged from 500 \u00d7 300 px)" in "".join(page.text)


def test_class_maps_are_not_blurred(tmp_path):
    rgb = _class_map((250, 400))
    over = overlay(np.random.default_rng(6).integers(0, 256, (250, 400), dtype=np.uint8), rgb)
    chart = mineralogy_bar_chart(NAMES, COLORS, [[10.0, 50.0, 40.0]])
    sections = [Section("s", [Figure("auto", rgb), Figure("forced area", rgb, resample="area"),
                              Figure("overlay", over), Figure("chart", chart)])]
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=sections, max_image_side=100))
    auto, area = _pixels(page.images[0]), _pixels(page.images[1])
    # images with many colours (an overlay, an anti-aliased chart) are averaged
    np.testing.assert_array_equal(_pixels(page.images[2]), downscale_area(over, 4, dtype=np.uint8))
    assert "class" not in page.images[2] and "class" not in page.images[3]
    assert auto.shape == area.shape == (62, 100, 3)  # factor 4: floor(250 / 4) rows
    np.testing.assert_array_equal(auto, rgb[2:248:4, 2::4])  # the pixel under each output centre
    assert page.images[0]["class"] == "map"  # and no smoothing when the browser scales it
    colors = {tuple(c) for c in COLORS.tolist()}
    assert {tuple(c) for c in auto.reshape(-1, 3).tolist()} <= colors
    assert not {tuple(c) for c in area.reshape(-1, 3).tolist()} <= colors  # what averaging would do


def test_lazy_sources_and_files_are_reduced_in_strips(tmp_path):
    grey = np.random.default_rng(3).integers(0, 256, (240, 360), dtype=np.uint8)
    np.save(tmp_path / "sem.npy", grey)
    rgb = _class_map((120, 90), seed=4)
    palette = Image.fromarray(rgb).quantize(colors=3, method=Image.Quantize.MEDIANCUT)
    palette.save(tmp_path / "map.png")  # a palette PNG on disk, larger than the limit
    with open_image(tmp_path / "sem.npy") as lazy:
        sections = [Section("s", [Figure("lazy", lazy), Figure("palette file", tmp_path / "map.png")])]
        page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=sections, max_image_side=60))
    np.testing.assert_array_equal(_pixels(page.images[0]), downscale_area(grey, 6, dtype=np.uint8))
    reduced = _pixels(page.images[1])
    assert reduced.shape == (60, 45, 3)
    np.testing.assert_array_equal(reduced, np.asarray(palette.convert("RGB"))[1::2, 1::2])


def test_small_images_are_not_resampled(tmp_path):
    rgb = _class_map((16, 16))
    photo = np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    figures = [Figure("map", rgb), Figure("map png", _png(rgb)), Figure("photo", photo),
               Figure("photo png", _png(photo)), Figure("photo as map", photo, resample="nearest")]
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", figures)],
                                    max_image_side=16))
    np.testing.assert_array_equal(_pixels(page.images[0]), rgb)
    assert "shown at" not in "".join(page.text)
    # class maps (few colours, or said so) are drawn without smoothing when the page scales them
    assert [i.get("class") for i in page.images] == ["map", "map", None, None, "map"]


# --------------------------------------------------------------------------- tables and card
def test_tables_format_and_align_numbers(tmp_path):
    table = Table("mineralogy", ["class", "pixels", "area %", "note"],
                  [["pore", 1234567, 12.3456, "3 %"], ["quartz", np.int64(42), float("nan"), "n/a"],
                   ["clay", 0, 0.000123, None]], caption="inside the section")
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", [table])]))
    (rows,) = page.tables
    assert rows[0] == [("class", ""), ("pixels", "num"), ("area %", "num"), ("note", "")]
    assert rows[1] == [("pore", ""), ("1,234,567", "num"), ("12.35", "num"), ("3 %", "")]
    assert rows[2] == [("quartz", ""), ("42", "num"), ("\u2013", "num"), ("n/a", "")]
    assert rows[3] == [("clay", ""), ("0", "num"), ("0.000123", "num"), ("", "")]
    assert "inside the section" in "".join(page.text)


def test_numeric_strings_are_right_aligned_too(tmp_path):
    table = Table("t", ["a", "b"], [["12.5 %", "x"], ["1,024", "7"]])
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", [table])]))
    assert [cls for _, cls in page.tables[0][0]] == ["num", ""]


def test_table_rows_must_match_columns():
    with pytest.raises(DataError, match=r"table 'm': row 1 has 1 cells but there are 2 columns \['a', 'b'\]"):
        Table("m", ["a", "b"], [[1, 2], [3]])


@pytest.mark.parametrize(("value", "text"), [(1234567, "1,234,567"), (61.2468, "61.25"), (0.81234, "0.812"),
                                             (12345.6, "12,346"), (-2.5, "-2.50"), (0.0, "0"), (None, ""),
                                             (np.float32(0.5), "0.5"), (False, "no"), ("x", "x"),
                                             (float("-inf"), "\u2212\u221e")])
def test_format_value(value, text):
    assert format_value(value) == text


def test_model_card_is_flattened_readably(tmp_path):
    @dataclasses.dataclass
    class Card:
        arch: str
        colors: np.ndarray
        normalisation: dict
        samples: list
        sem_scale: float

    card = Card("unet", COLORS[:2], {"method": "percentile", "params": {"low": 0.5, "high": 99.5}},
                [{"name": "s1", "sem_px": 2.0}, {"name": "s2", "sem_px": 2.25}], 0.123456789)
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=[], card=card))
    (rows,) = page.tables
    assert [[text for text, _ in row] for row in rows] == [
        ["field", "value"], ["arch", "unet"], ["colors", "(0, 0, 0), (255, 192, 192)"],
        ["normalisation \u203a method", "percentile"], ["normalisation \u203a params \u203a low", "0.5"],
        ["normalisation \u203a params \u203a high", "99.5"], ["samples [0] \u203a name", "s1"],
        ["samples [0] \u203a sem_px", "2"], ["samples [1] \u203a name", "s2"], ["samples [1] \u203a sem_px", "2.25"],
        ["sem_scale", "0.123457"],
    ]


def test_page_parts_and_footer(tmp_path):
    from mineralseg import __version__

    path = write_html_report(tmp_path / "r.html", title="Sample A",
                             sections=[Section("Maps", []), Section("Numbers", [])],
                             card={"arch": "unet"}, command="mineralseg predict a b")
    raw = path.read_text()
    assert re.findall(r'<a href="#([\w-]+)">', raw) == ["section-1", "section-2", "model-card", "command"]
    assert re.findall(r'<section id="([\w-]+)">', raw) == ["section-1", "section-2", "model-card", "command"]
    assert "<title>Sample A</title>" in raw and "<pre><code>mineralseg predict a b</code></pre>" in raw
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    assert re.search(f"<footer>mineralseg {re.escape(__version__)} &middot; {stamp}</footer>", raw)


# --------------------------------------------------------------------------- atomic write
def test_an_error_leaves_no_report_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "report.html"
    good = Section("ok", [Figure("fine", np.zeros((8, 8), np.uint8)), "text"])
    bad = Section("bad", [Figure("broken", tmp_path / "nowhere.png")])
    with pytest.raises(DataError, match="nowhere.png not found"):
        write_html_report(target, title="t", sections=[good, bad])
    assert list(out.iterdir()) == []  # no report and no temporary file
    target.write_text("old report")
    with pytest.raises(DataError):
        write_html_report(target, title="t", sections=[good, bad])
    assert [p.name for p in out.iterdir()] == ["report.html"] and target.read_text() == "old report"
    write_html_report(target, title="new", sections=[good])
    assert "<title>new</title>" in target.read_text()


# --------------------------------------------------------------------------- charts
def _color_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((image == np.asarray(rgb, np.uint8)).all(axis=-1).sum())


@pytest.mark.parametrize("n_classes", [3, 12])  # bars standing side by side; lying one row per class
def test_bar_chart_bars_have_class_colours_and_proportional_lengths(n_classes):
    colors = np.full((n_classes, 3), 128, np.uint8)
    colors[:3] = [[200, 30, 30], [30, 30, 200], [30, 160, 30]]
    percents = [20.0, 80.0, 0.0] + [0.0] * (n_classes - 3)
    png = mineralogy_bar_chart([f"mineral {i}" for i in range(n_classes)], colors, [percents])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    red, blue, green = (_color_pixels(png, tuple(c)) for c in colors[:3].tolist())
    assert green == 0 and red > 0
    assert blue / red == pytest.approx(4.0, rel=0.08)  # same thickness, 4x the length
    rows, cols = np.nonzero((np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) == (30, 30, 200)).all(axis=-1))
    lying = np.ptp(cols) > np.ptp(rows)  # the long bar's extent
    assert lying == (n_classes > 8)


def test_bar_chart_series_side_by_side():
    colors = np.array([[200, 30, 30], [30, 30, 200]], np.uint8)
    one = mineralogy_bar_chart(["a", "b"], colors, [[50.0, 50.0]])
    two = mineralogy_bar_chart(["a", "b"], colors, [[50.0, 50.0], [50.0, 50.0]], ["predicted", "QEMSCAN"])
    # two bars per class, each half as wide; the second is hatched (fewer solid pixels)
    assert 0.2 < _color_pixels(two, (200, 30, 30)) / _color_pixels(one, (200, 30, 30)) < 0.95
    wide = mineralogy_bar_chart([f"c{i}" for i in range(8)], np.zeros((8, 3), np.uint8), [[1.0] * 8])
    assert Image.open(io.BytesIO(wide)).width > Image.open(io.BytesIO(one)).width


def test_bar_chart_checks_its_inputs():
    with pytest.raises(UserError, match=r"2 series \['predicted', 'QEMSCAN'\] of 3 values .* got shape \(1, 3\)"):
        mineralogy_bar_chart(NAMES, COLORS, [[1.0, 2.0, 3.0]], ["predicted", "QEMSCAN"])
    with pytest.raises(UserError, match="class_colors must be"):
        mineralogy_bar_chart(NAMES, COLORS[:2], [[1.0, 2.0, 3.0]])


def test_overlay_blends_exactly():
    grey = np.full((2100, 3), 100, np.uint8)  # more rows than one blending strip
    rgb = np.zeros((2100, 3, 3), np.uint8)
    rgb[..., 0] = 200
    out = overlay(grey, rgb, 0.45)
    assert out.dtype == np.uint8 and out.shape == (2100, 3, 3)
    assert (out[..., 0] == 145).all() and (out[..., 1:] == 55).all()  # 0.55 * 100 + 0.45 * {200, 0}
    np.testing.assert_array_equal(overlay(grey, rgb, 0.0), np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(overlay(grey, rgb, 1.0), rgb)
    mask = np.zeros(grey.shape, bool)
    mask[1500:] = True
    masked = overlay(grey, rgb, 0.45, mask=mask)
    assert (masked[:1500] == 100).all() and (masked[1500:, :, 0] == 145).all()


def test_overlay_checks_its_inputs():
    grey = np.zeros((4, 5), np.uint8)
    with pytest.raises(DataError, match=r"on the grey image's grid \(4, 5, 3\), got \(4, 4, 3\) uint8"):
        overlay(grey, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="grey must be an"):
        overlay(grey.astype(float), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(UserError, match=r"alpha must be in \[0, 1\], got 1.5"):
        overlay(grey, np.zeros((4, 5, 3), np.uint8), 1.5)


# --------------------------------------------------------------------------- in a browser
def _full_report(tmp_path: Path) -> tuple[Path, int]:
    """A report with every kind of item; returns its path and its number of figures."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:300, :420]
    sem = np.clip(120 + 60 * np.sin(xx / 17) * np.cos(yy / 23) + rng.normal(0, 8, xx.shape), 0, 255).astype(np.uint8)
    labels = ((np.sin(xx / 30) + np.cos(yy / 25)) > 0).astype(int) + (sem > 170)
    rgb = COLORS[labels]
    jpeg = tmp_path / "sem.jpg"
    Image.fromarray(sem).save(jpeg, format="JPEG")
    percents = (np.bincount(labels.ravel(), minlength=3) / labels.size * 100).tolist()
    chart = mineralogy_bar_chart(NAMES, COLORS, [percents, [p * 0.9 + 3.3 for p in percents]], ["predicted", "QEMSCAN"])
    sections = [
        Section("Maps", [Figure("SEM preview", sem, "input"), Figure("Mineral map", rgb),
                         Figure("Overlay", overlay(sem, rgb)), Figure("SEM as JPEG file", jpeg), Legend(NAMES, COLORS)]),
        Section("Modal mineralogy", [Figure("Bar chart", chart), "Fractions inside the section.",
                                     Table("Area per class", ["class", "pixels", "area %"],
                                           [[n, int(c), p] for n, c, p in
                                            zip(NAMES, np.bincount(labels.ravel()), percents)])]),
    ]
    card = {"arch": "unet", "encoder": "resnet18", "val_iou": {"pore": 0.91, "quartz": 0.84}}
    path = write_html_report(tmp_path / "report.html", title=f"Sample {NASTY}", sections=sections, card=card,
                             command="mineralseg predict best.ckpt sem.tif --out out", max_image_side=200)
    return path, 5


def test_report_renders_in_chromium(chromium, tmp_path):
    path, n_figures = _full_report(tmp_path)
    assert "<script" not in path.read_text()  # the page itself needs no JavaScript
    found, dom = chromium.probe(path)
    assert found["violations"] == []  # nothing outside the file was requested
    assert len(found["images"]) == n_figures
    for image in found["images"]:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
    widths = {i["alt"]: i["naturalWidth"] for i in found["images"]}
    assert widths["Mineral map"] == 200 and widths["SEM as JPEG file"] == 200  # downsampled from 420
    assert dom.count("<table") == 2  # mineralogy and model card
    assert re.search(r"<td>quartz</td><td class=\"num\">[\d,]+</td>", dom)
    assert "val_iou \u203a quartz" in dom and "mineralseg predict best.ckpt" in dom


def test_chromium_probe_sees_broken_images(chromium, tmp_path):
    path, _ = _full_report(tmp_path)
    broken = tmp_path / "broken.html"
    # corrupt the first embedded image: the probe must report it as not loaded
    broken.write_text(re.sub(r"(data:image/png;base64,)[A-Za-z0-9+/]{200}", r"\1" + "A" * 200,
                             path.read_text(), count=1))
    found, _ = chromium.probe(broken)
    assert [i["naturalWidth"] > 0 for i in found["images"]] == [False, True, True, True, True]


def test_truncated_image_file_is_refused(tmp_path):
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_png(_class_map((64, 64)))[:300])
    with pytest.raises(DataError, match="cut.png cannot be read as an image"):
        write_html_report(tmp_path / "r.html", title="t", sections=[Section("s", [Figure("cut", truncated)])])


def test_chromium_install_says_why_it_cannot_run(monkeypatch):
    from conftest import _install_chromium

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "not running as root" in _install_chromium()
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert _install_chromium() == "no apt-get on this machine to install it with"


def test_sixteen_bit_and_transparent_files_are_reduced_to_uint8(tmp_path):
    deep = np.full((40, 40), 65535, np.uint16)
    deep[:20] = 257 * 10
    Image.fromarray(deep).save(tmp_path / "deep.png")  # mode I;16
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, 20:] = (0, 128, 0, 255)  # left half fully transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    sections = [Section("s", [Figure("deep", tmp_path / "deep.png"), Figure("alpha", tmp_path / "alpha.png")])]
    page = _parse(write_html_report(tmp_path / "r.html", title="t", sections=sections, max_image_side=20))
    np.testing.assert_array_equal(_pixels(page.images[0]), np.repeat([[10], [255]], 10, axis=0) * np.ones((1, 20)))
    shown = _pixels(page.images[1])
    assert (shown[:, :10] == 255).all() and (shown[:, 10:] == (0, 128, 0)).all()  # over white, as on the page


def test_each_figure_links_to_itself_for_the_full_screen_view(tmp_path):
    blank = np.zeros((8, 8), np.uint8)
    sections = [Section("a", ["text", Figure("one", blank), Figure("two", blank)])]
    raw = write_html_report(tmp_path / "r.html", title="t", sections=sections).read_text()
    for anchor in ("section-1-2", "section-1-3"):
        assert f'<figure id="{anchor}">' in raw and f'<a class="zoom" href="#{anchor}"' in raw
    assert raw.count('<a class="close" href="#section-1">') == 2
    assert "figure:target {" in raw  # the enlarging is CSS only
