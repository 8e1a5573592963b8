"""The report of ``mineralseg predict``: one self-contained HTML page per mapped image."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mineralseg.model_card import ModelCard
from mineralseg.report.charts import mineralogy_bar_chart, overlay
from mineralseg.report.html import Figure, Legend, Section, Table, write_html_report

__all__ = ["write_predict_report"]


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def write_predict_report(
    path: str | os.PathLike,
    result: Any,
    card: ModelCard,
    *,
    grey: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray | None,
    lut: np.ndarray,
    command: str | None = None,
) -> None:
    """Write ``report.html`` for one predicted image.

    Parameters
    ----------
    path : path-like
    result : mineralseg.infer.predict.PredictResult
        What was mapped (image, grids, outline, mineralogy, time).
    card : ModelCard
        The model (shown as a table, with the data it was trained on).
    grey, labels, uncertainty : (h, w) uint8 ndarrays
        Display previews of the normalised image, the class ids (255 outside the
        section) and the uncertainty (0 certain .. 255; None when not computed).
    lut : (256, 3) uint8 ndarray
        Colour of each id.
    command : str, optional
        The command line that made the report.
    """
    m = result.mineralogy
    rgb = lut[labels]
    inside = labels != 255
    name_colour = {n: c for n, c in zip(card.class_names, card.class_colors)}
    chart = mineralogy_bar_chart(list(m.class_names), np.asarray([name_colour[n] for n in m.class_names], np.uint8),
                                 [list(m.area_percent)], ["predicted"])  # fmt: skip
    area = m.area_mm2 is not None
    rows = [[n, px, f"{p:.2f}"] + ([f"{a:.4g}"] if area else []) for n, px, p, a in
            zip(m.class_names, m.pixels, m.area_percent, m.area_mm2 or [None] * len(m.pixels))]
    columns = ["class", "pixels", "area %"] + (["area mm²"] if area else [])
    facts = [
        ["image", str(result.image)],
        ["image size", " x ".join(str(v) for v in result.image_shape[:2]) + " px"],
        ["mineral map", f"{result.working_shape[0]} x {result.working_shape[1]} px "
                        f"({result.sem_px:.3g} image px per map px, from {result.scale_source})"],
        ["section", result.outline],
        ["section pixels", m.section_pixels],
        ["porosity %", _percent(m.porosity_percent) or "no pore class"],
        ["uncertain pixels %", f"{_percent(m.uncertain_percent)} (blended probability of the class below 0.5)"
                               if m.uncertain_percent is not None else "not computed (predicted on a cluster)"],
        ["time", f"{result.seconds:.1f} s ({result.mpx_per_s:.2f} image Mpx/s)"],
    ]
    if m.excluded_classes:
        facts.append(["left out of the area", ", ".join(m.excluded_classes)])
    sections = [
        Section("Mineral map", [
            Figure("SEM (normalised grey levels)", grey),
            Figure("Mineral map", rgb, resample="nearest",
                   caption="Grey: outside the section." if (~inside).any() else ""),
            Figure("Overlay", overlay(grey, rgb, mask=inside)),
            *([Figure("Uncertainty (1 - probability of the chosen class)", uncertainty,
                      caption="Dark: certain; bright: the model hesitates between classes.")]
              if uncertainty is not None else []),
            Legend(list(card.class_names), np.asarray(card.class_colors, np.uint8), title="Classes"),
        ]),
        Section("Modal mineralogy", [
            Figure("Area per class inside the section", chart),
            Table("Modal mineralogy", columns, rows),
            Table("This image", ["", ""], facts),
        ]),
        Section("Model", [
            "The model was trained on the data named below; a mineral map is only as good as the "
            "likeness of this image to that training data (instrument, magnification, rock type).",
        ]),
    ]
    write_html_report(path, title=f"Mineral map of {result.image.name}", sections=sections,
                      card=card.summary(), command=command)  # fmt: skip
