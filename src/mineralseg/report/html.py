"""Self-contained HTML reports: one file with every image embedded, readable offline.

A report is a title, a list of :class:`Section` (each a run of :class:`Figure`,
:class:`Table`, :class:`Legend` and paragraphs), optionally a model card and the command
that made it. :func:`write_html_report` writes it as a single ``.html`` file: images as
base64 ``data:`` URIs, CSS inline, no script and no external request, so it can be
mailed, archived, or opened on a machine without network. All text is HTML-escaped.
Clicking a figure shows it full screen (a CSS ``:target`` rule, no script).

Examples
--------
>>> import numpy as np
>>> from mineralseg.report.html import Figure, Section, Table, write_html_report
>>> sem = np.zeros((64, 64), np.uint8)
>>> write_html_report("report.html", title="Sample A", sections=[  # doctest: +SKIP
...     Section("Maps", [Figure("SEM", sem, "input image")]),
...     Section("Mineralogy", [Table("Modal mineralogy", ["mineral", "area %"], [["quartz", 61.2]])]),
... ], command="mineralseg predict best.ckpt a.tif --out out")
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mineralseg.errors import DataError, UserError
from mineralseg.io.atomic import atomic_path
from mineralseg.report._images import EncodedImage, check_image, check_resample, encode_image

__all__ = ["Figure", "Legend", "Section", "Table", "format_value", "write_html_report"]

#: Smallest ``max_image_side`` accepted (smaller previews show nothing useful).
MIN_IMAGE_SIDE = 16
#: A card value that is a list shows at most this many items, then "... and N more".
CARD_MAX_ITEMS = 40
_NUMBER = re.compile(r"^[-+\u2212]?(\d[\d,\u202f ]*)?(\.\d+)?(e[-+]?\d+)?\s*%?$", re.IGNORECASE)
_MISSING = "\u2013"  # en dash for NaN / missing numbers


@dataclass(frozen=True, eq=False)
class Figure:
    """An image with a title and a caption.

    Attributes
    ----------
    title : str
    image : (H, W) uint8 array, (H, W, 3) uint8 array, PNG/JPEG bytes, or path-like
        Grey or RGB pixels (a numpy array or a lazy array such as
        :class:`~mineralseg.io.LazyImage`), an encoded PNG/JPEG, or a PNG/JPEG file.
    caption : str
        Shown under the image (plain text).
    resample : {"auto", "area", "nearest"}
        How an image larger than the report's ``max_image_side`` is reduced: "area"
        averages (SEM images, overlays, charts), "nearest" keeps exact colours (class
        maps), "auto" picks "nearest" for RGB images with at most 64 colours (in 64
        evenly spaced rows) and palette PNGs, else "area". Say which when you know.

    Raises
    ------
    DataError
        An array that is not (H, W) or (H, W, 3) uint8, or bytes that are not PNG/JPEG.
    """

    title: str
    image: np.ndarray | bytes | Path
    caption: str = ""
    resample: str = "auto"

    def __post_init__(self) -> None:
        check_image(self.image, f"figure {self.title!r}")
        object.__setattr__(self, "resample", check_resample(self.resample))


@dataclass(frozen=True)
class Table:
    """A table; numbers are formatted with :func:`format_value` and right-aligned.

    Attributes
    ----------
    title : str
    columns : list of str
    rows : list of lists
        One list of ``len(columns)`` cells per row: numbers, strings, None (empty).
    caption : str

    Raises
    ------
    DataError
        A row whose length differs from the number of columns.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise DataError(
                    f"table {self.title!r}: row {i} has {len(row)} cells but there are "
                    f"{len(self.columns)} columns {list(self.columns)}"
                )


@dataclass(frozen=True, eq=False)
class Legend:
    """Colour swatches with class names (the key to a class map).

    Attributes
    ----------
    class_names : sequence of C str
    class_colors : (C, 3) array_like of uint8
        RGB in 0..255.
    title : str
    """

    class_names: Sequence[str]
    class_colors: Any
    title: str = "Legend"

    def __post_init__(self) -> None:
        colors = np.asarray(self.class_colors)
        if colors.shape != (len(self.class_names), 3) or colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise DataError(
                f"legend {self.title!r}: class_colors must be ({len(self.class_names)}, 3) RGB values in 0..255 "
                f"for classes {list(self.class_names)}, got shape {colors.shape}"
            )


@dataclass(frozen=True)
class Section:
    """A titled part of the report: figures (shown in a grid), tables, legends, paragraphs.

    Attributes
    ----------
    title : str
    items : list of Figure, Table, Legend or str
        In display order; a str is a paragraph of plain text (line breaks kept).
        Consecutive figures share one grid.
    """

    title: str
    items: list[Figure | Table | Legend | str]

    def __post_init__(self) -> None:
        for i, item in enumerate(self.items):
            if not isinstance(item, (Figure, Table, Legend, str)):
                raise TypeError(
                    f"section {self.title!r}: item {i} is a {type(item).__name__}; "
                    "items must be Figure, Table, Legend or str"
                )


def write_html_report(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[Section],
    card: Mapping[str, Any] | None = None,
    command: str | None = None,
    max_image_side: int = 2000,
) -> Path:
    """Write a self-contained HTML report, atomically.

    Parameters
    ----------
    path : path-like
        Output ``.html`` file; folders are created. An existing file is replaced only
        once the new one is complete.
    title : str
        Page title and heading.
    sections : sequence of Section
        The body, in order; a table of contents links to each.
    card : mapping, dataclass or pydantic model, optional
        The model card, shown as a two-column table at the end: nested mappings,
        dataclasses and lists of mappings are flattened to keys such as
        ``normalisation › params › low``; lists of values are joined with commas.
    command : str, optional
        The command line that made the report, shown verbatim at the end.
    max_image_side : int
        Images with a longer side are downsampled for display to this side (see
        :class:`Figure` ``resample``); smaller images are embedded unchanged.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError
        ``max_image_side`` below 16, or ``path`` is a folder.
    DataError
        A figure file that is missing or not an image.

    Notes
    -----
    Images are encoded one at a time and written straight to the file, so memory holds
    one image (after downsampling, about ``3 * max_image_side**2`` bytes) at a time,
    plus the strips of a lazy source being reduced. The file is about 4/3 of the
    embedded PNG/JPEG sizes.
    """
    if not isinstance(max_image_side, (int, np.integer)) or max_image_side < MIN_IMAGE_SIDE:
        raise UserError(f"max_image_side must be an integer >= {MIN_IMAGE_SIDE}, got {max_image_side!r}")
    from mineralseg import __version__

    for i, section in enumerate(sections):
        if not isinstance(section, Section):
            raise TypeError(f"sections[{i}] is a {type(section).__name__}, not a Section")
    parts: list[tuple[str, str]] = [(f"section-{i + 1}", s.title) for i, s in enumerate(sections)]
    if card is not None:
        parts.append(("model-card", "Model card"))
    if command is not None:
        parts.append(("command", "Command"))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"cannot write the report to {path}: it is a folder; give a file name such as {path / 'report.html'}"
        )
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        out.write(_HEAD.format(title=_esc(title), version=_esc(__version__), css=_CSS))
        out.write(f"<header><h1>{_esc(title)}</h1></header>\n")
        if len(parts) > 1:
            links = " ".join(f'<a href="#{anchor}">{_esc(name)}</a>' for anchor, name in parts)
            out.write(f"<nav>{links}</nav>\n")
        for (anchor, _), section in zip(parts, sections):
            _write_section(out, anchor, section, int(max_image_side))
        if card is not None:
            rows = [[key, _format_card_value(value)] for key, value in _flatten(card)]
            table = _table_html(["field", "value"], rows, numeric_columns=False)
            out.write(f'<section id="model-card"><h2>Model card</h2>\n{table}</section>\n')
        if command is not None:
            out.write(f'<section id="command"><h2>Command</h2>\n<pre><code>{_esc(command)}</code></pre></section>\n')
        out.write(f"<footer>mineralseg {_esc(__version__)} &middot; {stamp}</footer>\n</main>\n</body>\n</html>\n")
    return path


# --------------------------------------------------------------------------- rendering
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _write_section(out: TextIO, anchor: str, section: Section, max_side: int) -> None:
    out.write(f'<section id="{anchor}"><h2>{_esc(section.title)}</h2>\n')
    in_grid = False
    for k, item in enumerate(section.items):
        if isinstance(item, Figure) != in_grid:
            out.write('<div class="grid">\n' if not in_grid else "</div>\n")
            in_grid = not in_grid
        if isinstance(item, Figure):
            encoded = encode_image(item.image, max_side, item.resample, what=f"figure {item.title!r}")
            out.write(_figure_html(item, encoded, f"{anchor}-{k + 1}", anchor))
        elif isinstance(item, Table):
            out.write(f'<div class="block"><h3>{_esc(item.title)}</h3>\n')
            out.write(_table_html(item.columns, item.rows))
            out.write((f'<p class="caption">{_esc(item.caption)}</p>' if item.caption else "") + "</div>\n")
        elif isinstance(item, Legend):
            out.write(_legend_html(item))
        else:
            out.write(f"<p>{_esc(item).replace(chr(10), '<br>')}</p>\n")
    out.write("</div>\n</section>\n" if in_grid else "</section>\n")


def _figure_html(fig: Figure, enc: EncodedImage, anchor: str, back: str) -> str:
    """A figure; its image links to the figure itself, which CSS then shows full screen."""
    h, w = enc.shape
    note = ""
    if enc.method is not None:
        how = "area-averaged" if enc.method == "area" else "nearest-pixel"
        sh, sw = enc.source_shape
        note = f"shown at {w:,} \u00d7 {h:,} px ({how} from {sw:,} \u00d7 {sh:,} px)"
    css = ' class="map"' if enc.is_map else ""
    src = f"data:{enc.mime};base64,{base64.b64encode(enc.data).decode('ascii')}"
    caption = _esc(fig.caption).replace("\n", "<br>")
    if note:
        caption = f'{caption}{" " if caption else ""}<span class="note">{_esc(note)}</span>'
    return (
        f'<figure id="{anchor}"><h3>{_esc(fig.title)}</h3><a class="close" href="#{back}">close \u2715</a>\n'
        f'<a class="zoom" href="#{anchor}" title="enlarge"><img{css} alt="{_esc(fig.title)}" width="{w}" '
        f'height="{h}" src="{src}"></a>\n' + (f"<figcaption>{caption}</figcaption>" if caption else "") + "</figure>\n"
    )


def _legend_html(legend: Legend) -> str:
    colors = np.asarray(legend.class_colors).round().astype(int)
    items = "".join(
        f'<li><span class="swatch" style="background:#{r:02x}{g:02x}{b:02x}"></span>{_esc(name)}</li>'
        for name, (r, g, b) in zip(legend.class_names, colors)
    )
    return f'<div class="block legend"><h3>{_esc(legend.title)}</h3><ul>{items}</ul></div>\n'


def _table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_columns: bool = True) -> str:
    numeric = [
        numeric_columns and any(_is_number(r[j]) for r in rows)
        and all(_is_number(r[j]) or r[j] is None or r[j] == "" for r in rows)
        for j in range(len(columns))
    ]

    def cell(tag: str, value: Any, j: int) -> str:
        cls = ' class="num"' if numeric[j] else ""
        return f"<{tag}{cls}>{_esc(value if tag == 'th' else format_value(value))}</{tag}>"

    head = "".join(cell("th", c, j) for j, c in enumerate(columns))
    body = "\n".join("<tr>" + "".join(cell("td", v, j) for j, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>\n'


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    return isinstance(value, str) and bool(re.search(r"\d", value)) and bool(_NUMBER.match(value.strip()))


def format_value(value: Any) -> str:
    """Text of a table cell: numbers formatted for reading, the rest as ``str``.

    Integers get thousands separators (``1,234,567``); floats keep about four
    significant digits: ``12,345`` from 1000 up, two decimals from 1 up (``61.25``),
    three significant digits below 1 (``0.812``, ``0.000123``). NaN and None show as
    "–" and "" ; booleans as "yes"/"no".

    Examples
    --------
    >>> [format_value(v) for v in (1234567, 61.2468, 0.81234, 12345.6, float("nan"), True)]
    ['1,234,567', '61.25', '0.812', '12,346', '–', 'yes']
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return _MISSING
        if math.isinf(v):
            return "\u221e" if v > 0 else "\u2212\u221e"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(value)


# --------------------------------------------------------------------------- model card
def _plain(value: Any) -> Any:
    """Mappings, lists and scalars from dataclasses, pydantic models, arrays and paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(key path, value)`` rows of a nested card; lists of mappings are numbered."""
    value = _plain(value)
    if isinstance(value, Mapping):
        if not value and prefix:
            return [(prefix, "")]
        rows = []
        for key, item in value.items():
            rows += _flatten(item, f"{prefix} \u203a {key}" if prefix else str(key))
        return rows
    if isinstance(value, (list, tuple)) and any(isinstance(_plain(v), Mapping) for v in value):
        rows = []
        for i, item in enumerate(value):
            rows += _flatten(item, f"{prefix} [{i}]")
        return rows
    if not prefix:
        raise TypeError(f"card must be a mapping, a dataclass or a pydantic model, not {type(value).__name__}")
    return [(prefix, value)]


def _format_card_value(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        shown = [
            f"({', '.join(_format_card_value(v) for v in item)})" if isinstance(_plain(item), (list, tuple))
            else _format_card_value(item)
            for item in value[:CARD_MAX_ITEMS]
        ]
        more = f", ... and {len(value) - CARD_MAX_ITEMS} more" if len(value) > CARD_MAX_ITEMS else ""
        return ", ".join(shown) + more
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"  # card values are settings: shown as given, not rounded for reading
    return format_value(value)


# --------------------------------------------------------------------------- page
_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mineralseg {version}">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
"""

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #eef0f3; color: #1d232a;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 28px 12px; background: #fff; min-height: 100vh;
  box-sizing: border-box; }
h1 { font-size: 1.6em; margin: 0 0 8px; }
h2 { font-size: 1.25em; margin: 0 0 12px; padding-bottom: 4px; border-bottom: 2px solid #d5dae0; }
h3 { font-size: 1em; margin: 0 0 6px; }
nav { margin: 0 0 8px; font-size: .92em; }
nav a { display: inline-block; margin: 0 14px 4px 0; color: #1f5fa8; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { margin: 26px 0; }
p { max-width: 80ch; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 16px; margin: 0 0 16px; }
figure { margin: 0; padding: 10px; border: 1px solid #e0e4e9; border-radius: 6px; background: #fafbfc;
  break-inside: avoid; }
figure img { display: block; width: auto; max-width: 100%; height: auto; max-height: 85vh; object-fit: contain;
  background: #fff; }
img.map { image-rendering: pixelated; }
a.zoom { display: block; cursor: zoom-in; }
figure .close { display: none; }
figure:target { position: fixed; inset: 0; z-index: 10; border: 0; border-radius: 0; padding: 14px 20px;
  background: rgba(18, 22, 26, .97); display: flex; flex-direction: column; align-items: center; }
figure:target h3, figure:target figcaption, figure:target .note { color: #e4e7ea; }
figure:target .close { display: block; position: absolute; top: 12px; right: 20px; color: #fff; }
figure:target a.zoom { flex: 1; min-height: 0; width: 100%; cursor: default; }
figure:target img { width: 100%; height: 100%; max-width: none; max-height: none; object-fit: contain;
  background: transparent; }
figcaption, .caption { font-size: .88em; color: #4a5561; margin: 6px 0 0; }
.note { display: block; color: #77828e; }
.block { margin: 0 0 18px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .92em; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
thead th { background: #eef1f4; border-bottom: 2px solid #c9d0d8; }
tbody tr:nth-child(even) { background: #f8f9fb; }
.num { text-align: right; }
#model-card td:first-child { color: #4a5561; white-space: nowrap; }
.legend ul { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 18px; }
.legend li { display: flex; align-items: center; font-size: .92em; }
.swatch { display: inline-block; width: 14px; height: 14px; margin-right: 6px; border: 1px solid #7a838c; }
pre { background: #f1f3f5; padding: 10px 12px; border-radius: 6px; white-space: pre-wrap; word-break: break-all;
  font-size: .88em; }
footer { margin: 28px 0 0; padding-top: 8px; border-top: 1px solid #e0e4e9; font-size: .85em; color: #77828e; }
@media print { body { background: #fff; } main { padding: 0; } nav, figure .close { display: none; } }
"""
