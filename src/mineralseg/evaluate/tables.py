"""Result tables in the study's format: Model | IoU per class | mean IoU | time | size.

A row is a mapping; the dict returned by
:func:`mineralseg.evaluate.metrics.metrics_from_confusion` can be used as is,
with the model name and optional cost figures added::

    row = {"model": "Unet + resnet18", **metrics, "train_time_s": 750.0, "params": 14_328_000}

Keys read: ``model`` (str, required); ``iou`` (mapping class name -> IoU, or a
sequence in ``class_names`` order; missing classes show "-", extra ones are
ignored); ``miou`` (else the mean of the row's defined class IoUs);
``mean_f1``, ``pixel_accuracy`` and ``val_miou`` (the validation mean IoU, e.g. the
score a grid selected on; optional columns); ``train_time_s``
(seconds); ``params`` (number of parameters). None or NaN shows as "-".

In the Markdown the best value of each column is bold: the highest for IoU,
mean IoU, mean F1 and pixel accuracy, the lowest for train time and parameters.
Values equal to the best at the displayed precision are bold too (ties), and a
column with fewer than two values has no bold cell. The CSV holds the raw
numbers at full precision (seconds and parameter counts, IoU as floats) so it
parses back exactly.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mineralseg.errors import UserError
from mineralseg.io.atomic import atomic_path

DEFAULT_COLUMNS = ("model", "iou", "miou", "train_time", "params")
MISSING = "-"  # shown for a value that is absent or undefined (NaN)


def format_duration(seconds: float) -> str:
    """Seconds as ``45s``, ``12m 30s`` or ``2h 05m``.

    >>> format_duration(750), format_duration(7512)
    ('12m 30s', '2h 05m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def format_count(n: float) -> str:
    """A parameter count as ``812``, ``512.0K``, ``14.3M`` or ``1.2B``.

    >>> format_count(14_328_000)
    '14.3M'
    """
    if n < 1000:
        return str(int(round(n)))
    for scale, suffix in ((1e3, "K"), (1e6, "M"), (1e9, "B")):
        shown = round(n / scale, 1)
        if shown < 1000 or suffix == "B":
            return f"{shown:.1f}{suffix}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Column:
    header: str  # Markdown header
    csv_name: str  # CSV header
    values: list[float]  # one per row (NaN if missing)
    fmt: Callable[[float], str]
    higher_is_better: bool


def _number(value: Any, model: str, what: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"results row '{model}': {what} must be a number, got {value!r}") from None


def _row_ious(row: Mapping[str, Any], class_names: Sequence[str], model: str) -> list[float]:
    iou = row.get("iou")
    if iou is None:
        return [math.nan] * len(class_names)
    if isinstance(iou, Mapping):
        return [_number(iou.get(n), model, f"IoU of '{n}'") for n in class_names]
    values = list(iou)
    if len(values) != len(class_names):
        raise UserError(
            f"results row '{model}': {len(values)} IoU values for {len(class_names)} classes "
            f"{list(class_names)}"
        )
    return [_number(v, model, f"IoU of '{n}'") for n, v in zip(class_names, values)]


def _columns(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str],
             columns: Sequence[str], decimals: int) -> tuple[list[str], list[_Column]]:
    models = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("model"), str):
            raise UserError(f"results row {i} needs a 'model' name (str), got {row!r:.80}")
        models.append(row["model"])
    fmt_score = lambda v: f"{v:.{decimals}f}"  # noqa: E731
    ious = [_row_ious(r, class_names, m) for r, m in zip(rows, models)]
    out: list[_Column] = []
    for col in columns:
        if col == "model":
            continue
        if col == "iou":
            out += [_Column(n, f"iou_{n}", [v[k] for v in ious], fmt_score, True)
                    for k, n in enumerate(class_names)]
        elif col == "miou":
            values = []
            for r, m, v in zip(rows, models, ious):
                if r.get("miou") is not None:
                    values.append(_number(r["miou"], m, "miou"))
                else:
                    defined = [x for x in v if not math.isnan(x)]
                    values.append(sum(defined) / len(defined) if defined else math.nan)
            out.append(_Column("mean IoU", "miou", values, fmt_score, True))
        elif col in ("mean_f1", "pixel_accuracy", "val_miou"):
            header = {"mean_f1": "mean F1", "pixel_accuracy": "pixel accuracy", "val_miou": "val mean IoU"}[col]
            values = [_number(r.get(col), m, col) for r, m in zip(rows, models)]
            out.append(_Column(header, col, values, fmt_score, True))
        elif col == "train_time":
            values = [_number(r.get("train_time_s"), m, "train_time_s") for r, m in zip(rows, models)]
            out.append(_Column("train time", "train_time_s", values, format_duration, False))
        elif col == "params":
            values = [_number(r.get("params"), m, "params") for r, m in zip(rows, models)]
            out.append(_Column("parameters", "params", values, format_count, False))
        else:
            valid = "model, iou, miou, mean_f1, pixel_accuracy, val_miou, train_time, params"
            raise UserError(f"unknown results column '{col}'; valid columns: {valid}")
    return models, out


def _bold_rows(col: _Column) -> set[int]:
    """Rows whose displayed value equals the displayed best value of the column."""
    present = [(i, v) for i, v in enumerate(col.values) if not math.isnan(v)]
    if len(present) < 2:
        return set()
    best = (max if col.higher_is_better else min)(v for _, v in present)
    shown = col.fmt(best)
    return {i for i, v in present if col.fmt(v) == shown}


def _csv_value(v: float, csv_name: str) -> str:
    if math.isnan(v):
        return ""
    if csv_name == "params" and v == int(v):
        return str(int(v))
    return repr(v)


def results_table(
    rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    decimals: int = 2,
) -> tuple[str, str]:
    """Markdown and CSV text of a results table (format in the module docstring).

    Parameters
    ----------
    rows : sequence of mappings
        One per model, see the module docstring for the keys.
    class_names : sequence of str
        The IoU columns, in order.
    columns : sequence of str
        Any of ``model``, ``iou`` (one column per class), ``miou``, ``mean_f1``,
        ``pixel_accuracy``, ``train_time``, ``params``, in display order.
    decimals : int
        Decimals of IoU-like scores in the Markdown (the study used 2).

    Returns
    -------
    markdown : str
        A pipe table (best per column in bold) followed by a one-line note.
    csv : str
        Header ``model, iou_<class>..., miou, ..., train_time_s, params``, raw numbers.

    Raises
    ------
    UserError
        A row without a model name, a non-numeric value, a wrong number of IoU
        values, or an unknown column.

    Examples
    --------
    >>> md, _ = results_table([{"model": "a", "iou": [0.5]}, {"model": "b", "iou": [0.6]}],
    ...                       ["quartz"], columns=("model", "iou"))
    >>> md.splitlines()[3]
    '| b | **0.60** |'
    """
    models, cols = _columns(rows, class_names, columns, decimals)
    bold = [_bold_rows(c) for c in cols]
    show_model = "model" in columns
    headers = (["Model"] if show_model else []) + [c.header for c in cols]
    align = (["---"] if show_model else []) + ["---:"] * len(cols)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for i, model in enumerate(models):
        cells = [model.replace("|", "\\|")] if show_model else []
        for c, b in zip(cols, bold):
            v = c.values[i]
            text = MISSING if math.isnan(v) else c.fmt(v)
            cells.append(f"**{text}**" if i in b else text)
        lines.append("| " + " | ".join(cells) + " |")
    note = "Bold: best per column (highest IoU and scores, lowest train time and parameters)."
    markdown = "\n".join(lines) + "\n\n" + note + "\n"

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["model"] if show_model else []) + [c.csv_name for c in cols])
    for i, model in enumerate(models):
        writer.writerow(([model] if show_model else [])
                        + [_csv_value(c.values[i], c.csv_name) for c in cols])
    return markdown, buf.getvalue()


def write_results(
    rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    stem: str = "results",
    **table_options: Any,
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` into ``out_dir`` (atomically).

    ``table_options`` are passed to :func:`results_table`. Returns both paths.
    """
    markdown, csv_text = results_table(rows, class_names, **table_options)
    out = Path(out_dir)
    paths = (out / f"{stem}.md", out / f"{stem}.csv")
    for path, text in zip(paths, (markdown, csv_text)):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return paths


def metrics_markdown(result: Mapping[str, Any], *, decimals: int = 3) -> str:
    """Per-class scores of one evaluation as a Markdown table, plus the means.

    Parameters
    ----------
    result : mapping
        The dict of :func:`mineralseg.evaluate.metrics.metrics_from_confusion`
        (``class_names``, per-class ``iou``/``f1``/``precision``/``recall``/``support``,
        ``miou``, ``mean_f1``, ``pixel_accuracy``).

    Returns
    -------
    str
        ``| class | IoU | F1 | precision | recall | pixels |`` rows, then one line with
        mean IoU, mean F1 and pixel accuracy. Undefined scores show as ``n/a``.
    """

    def fmt(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{decimals}f}"

    lines = ["| class | IoU | F1 | precision | recall | pixels |", "|---|---|---|---|---|---|"]
    for name in result["class_names"]:
        cells = [fmt(result[key].get(name)) for key in ("iou", "f1", "precision", "recall")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(result['support'].get(name, 0)):,} |")
    lines.append(
        f"\nmean IoU {fmt(result.get('miou'))} | mean F1 {fmt(result.get('mean_f1'))} | "
        f"pixel accuracy {fmt(result.get('pixel_accuracy'))}"
    )
    return "\n".join(lines)
