"""A run's ``metrics.csv``: written atomically, set aside on resume, merged at the end.

Lightning's CSV log of the current session is ``metrics.csv``. Resuming a run sets the
log of the earlier session aside (:func:`set_aside_metrics`) and the end of a session
merges all parts back into one ``metrics.csv`` (:func:`merge_metrics`). Reading the
parts is :mod:`mineralseg.runs` (shared with evaluation).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mineralseg.io.atomic import atomic_path
from mineralseg.runs import METRICS_NAME, PARTS_DIR, metrics_parts, read_run_metrics

__all__ = ["AtomicCSVLogger", "merge_metrics", "set_aside_metrics"]


def merge_metrics(run_dir: Path) -> None:
    """Merge the set-aside logs of earlier sessions and ``metrics.csv`` into ``metrics.csv``."""
    parts = metrics_parts(run_dir)
    if not parts:
        return
    rows = read_run_metrics(run_dir)
    keys = sorted({k for r in rows for k in r})
    with atomic_path(run_dir / METRICS_NAME) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    for path, _ in parts:
        path.unlink()


def set_aside_metrics(run_dir: Path, resumed_at: int) -> None:
    """Move ``metrics.csv`` of the earlier session to ``logs/metrics-part<k>-until-step<resumed_at>.csv``."""
    current = run_dir / METRICS_NAME
    if not current.is_file():
        return
    k = len(metrics_parts(run_dir))
    dest = run_dir / PARTS_DIR / f"metrics-part{k:03d}-until-step{resumed_at}.csv"
    dest.parent.mkdir(exist_ok=True)
    os.replace(current, dest)


class _AtomicExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but a header change rewrites metrics.csv atomically.

    New columns (the first validation, the first epoch-end loss) make Lightning
    rewrite the whole file; a run killed at that moment (often right after a
    checkpoint) would otherwise lose the rows logged so far.
    """

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_path(self.metrics_file_path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class AtomicCSVLogger(CSVLogger):
    """CSVLogger writing through :class:`_AtomicExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicExperimentWriter(log_dir=self.log_dir)
        return self._experiment
