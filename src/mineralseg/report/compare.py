"""The report of ``mineralseg compare``: a predicted map against the QEMSCAN map, one page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mineralseg.report.charts import mineralogy_bar_chart
from mineralseg.report.html import Figure, Legend, Section, Table, write_html_report

__all__ = ["write_compare_report"]


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_compare_report(
    path: str | os.PathLike,
    *,
    metrics: dict[str, Any],
    predicted: Any,
    qemscan: Any,
    class_colors: np.ndarray,
    folder: Path,
    command: str | None = None,
) -> None:
    """Write ``report.html`` of a comparison.

    Parameters
    ----------
    path : path-like
    metrics : dict
        ``metrics.json`` of :func:`mineralseg.evaluate.compare.compare`.
    predicted, qemscan : ModalMineralogy
        The two modal mineralogies on the common area.
    class_colors : (C, 3) uint8 ndarray
        Colours of ``metrics["class_names"]``.
    folder : Path
        Where ``disagreement.png`` and ``registration_qa.png`` were written.
    command : str, optional
    """
    names = list(metrics["class_names"])
    colors = np.asarray(class_colors, np.uint8)
    pred = dict(zip(predicted.class_names, predicted.area_percent))
    qem = dict(zip(qemscan.class_names, qemscan.area_percent))
    shown = [n for n in names if n in pred or n in qem]
    chart = mineralogy_bar_chart(shown, colors[[names.index(n) for n in shown]],
                                 [[pred.get(n, 0.0) for n in shown], [qem.get(n, 0.0) for n in shown]],
                                 ["predicted", "QEMSCAN"], title="Modal mineralogy: predicted vs QEMSCAN")  # fmt: skip
    rows = [[n, _num(metrics["iou"][n]), _num(metrics["f1"][n]), _num(pred.get(n), 2), _num(qem.get(n), 2),
             _num(None if n not in pred or n not in qem else pred[n] - qem[n], 2)] for n in names]  # fmt: skip
    reg = metrics.get("registration") or {}
    facts = [
        ["mean IoU", _num(metrics.get("miou"))],
        ["pixel accuracy", _num(metrics.get("pixel_accuracy"))],
        ["pixels scored", f"{metrics.get('num_pixels', 0):,}"],
        ["porosity, predicted / QEMSCAN %", f"{_num(predicted.porosity_percent, 2)} / {_num(qemscan.porosity_percent, 2)}"],
    ]
    if "score_after" in reg:
        facts.append(["registration", f"scale {reg['scale']:.4g}, rotation {reg['rotation_deg']:.3f} deg, score "
                                      f"{reg['score_before']:.3f} -> {reg['score_after']:.3f}"])
    for key, label in (("predicted", "predicted map"), ("qemscan", "QEMSCAN map")):
        if key in (metrics.get("inputs") or {}):
            facts.append([label, metrics["inputs"][key]])
    sections = [
        Section("Agreement", [
            Table("Scores", ["", ""], facts),
            Table("Per class", ["class", "IoU", "F1", "predicted %", "QEMSCAN %", "difference (points)"], rows,
                  caption="Area % of each map inside its own section, on the area both maps cover."),
        ]),
        Section("Modal mineralogy", [Figure("Predicted vs QEMSCAN", chart)]),
        Section("Where they differ", [
            Figure("Disagreement", folder / "disagreement.png", resample="nearest",
                   caption="Grey: both maps agree; colour: the QEMSCAN class where the prediction differs."),
            Figure("Registration", folder / "registration_qa.png",
                   caption="QEMSCAN class edges over the prediction after registration."),
            Legend(names, colors, title="Classes"),
        ]),
    ]
    write_html_report(path, title="Predicted map vs QEMSCAN", sections=sections, command=command)
