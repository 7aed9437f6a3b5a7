"""Standalone HTML reports: data profiles and model evaluations, viewable offline in any browser."""

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
    "heatmap_table",
    "image_grid",
    "kv_table",
    "line_chart_svg",
    "page",
    "profile_html",
    "scatter_svg",
    "tune_html",
]
