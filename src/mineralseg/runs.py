"""Reading a training run folder: the metrics logged across (resumed) sessions.

A run folder (written by :func:`mineralseg.train.train`, layout in
:mod:`mineralseg.train.run_folder`) keeps the Lightning CSV log of the current session in
``metrics.csv``; when a run is resumed, the log of each interrupted session is set aside
as ``logs/metrics-part<k>-until-step<s>.csv`` (``s``: the step the next session resumed
from) and merged back at the end. Training writes these files; evaluation and reports
read them through :func:`read_run_metrics`, so neither imports the other.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["METRICS_NAME", "PARTS_DIR", "metrics_parts", "read_run_metrics"]

#: The current session's metrics log inside a run folder.
METRICS_NAME = "metrics.csv"
#: Sub-folder of the metrics of interrupted sessions, merged at the end of a resume.
PARTS_DIR = "logs"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def metrics_parts(run_dir: Path) -> list[tuple[Path, int]]:
    """Earlier sessions' metrics files with the step their successor resumed from.

    Parameters
    ----------
    run_dir : Path
        A run folder.

    Returns
    -------
    list of (Path, int)
        ``(file, resumed_at)`` in session order (``part000`` first); files whose name
        does not parse are left out.
    """
    out = []
    for p in sorted((run_dir / PARTS_DIR).glob("metrics-part*-until-step*.csv")):
        try:
            k = int(p.stem.split("-part")[1].split("-")[0])
            step = int(p.stem.rsplit("until-step", 1)[1])
        except (IndexError, ValueError):
            continue
        out.append((k, p, step))
    return [(p, step) for _, p, step in sorted(out)]


def read_run_metrics(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a run's metrics, merged across resumed sessions.

    Rows of an interrupted session logged at or after the step the next session
    resumed from are dropped (that work was done again).

    Parameters
    ----------
    run_dir : str or path-like
        A run folder.

    Returns
    -------
    list of dict
        One ``{column: text}`` per CSV row, earlier sessions first; empty when the run
        logged nothing yet.
    """
    run_dir = Path(run_dir)
    rows: list[dict[str, str]] = []
    for path, resumed_at in metrics_parts(run_dir):
        for row in _read_csv(path):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:  # a line cut short by the kill
                continue
            if step < resumed_at:
                rows.append(row)
    current = run_dir / METRICS_NAME
    if current.is_file():
        rows.extend(_read_csv(current))
    return rows
