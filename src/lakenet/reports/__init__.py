"""Standalone HTML reports: data profiles, model evaluations and tuning studies, viewable offline in any browser.

Jinja templates (templates/) lay them out; charts are matplotlib figures inlined as SVG (charts.figure_svg)."""

from lakenet.reports.charts import figure_svg
from lakenet.reports.html import (
    bar_chart_svg,
    data_table,
    evaluation_html,
    heatmap_table,
    image_grid,
    kv_table,
    line_chart_svg,
    page,
    profile_html,
    scatter_svg,
)
from lakenet.reports.tune import tune_html

__all__ = [
    "bar_chart_svg",
    "data_table",
    "evaluation_html",
    "figure_svg",
    "heatmap_table",
    "image_grid",
    "kv_table",
    "line_chart_svg",
    "page",
    "profile_html",
    "scatter_svg",
    "tune_html",
]
