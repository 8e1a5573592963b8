"""Self-contained HTML reports (:mod:`~mineralseg.report.html`) and their charts
(:mod:`~mineralseg.report.charts`), shared by ``predict`` and ``compare``."""

from mineralseg.report.charts import mineralogy_bar_chart, overlay
from mineralseg.report.html import Figure, Legend, Section, Table, write_html_report

__all__ = ["Figure", "Legend", "Section", "Table", "mineralogy_bar_chart", "overlay", "write_html_report"]
