"""Self-contained HTML reports (data profile, model evaluation): Jinja templates with inline CSS and SVG charts.

The templates (templates/*.html) lay the reports out; this module holds the building blocks they share and the
little data shaping the charts need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from markupsafe import Markup

from lakenet.evaluation.metrics import metric_mode
from lakenet.reports.charts import WIDTH, bar_chart_svg, importance_chart_svg, line_chart_svg, scatter_svg
from lakenet.reports.charts import _nice_range as _nice_range  # importable from here, where it used to live
from lakenet.reports.render import MAX_TABLE_ROWS, finite, fmt, in_order, macro, render, trusted

if TYPE_CHECKING:
    from lakenet.data.profile import LabelProfile, Profile
    from lakenet.evaluation.report import Evaluation

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
]
_MAX_HEATMAP = 60


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A complete standalone HTML document: escaped title and headings, trusted section HTML, inline CSS."""
    return render("base.html", title=title, sections=[(heading, trusted(body)) for heading, body in sections])


def kv_table(data: Mapping[str, object]) -> Markup:
    """Two-column key/value table; nested values are shown as compact JSON."""
    return macro("kv_table")(dict(data))


def data_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Sequence[bool] | None = None,
    max_rows: int = MAX_TABLE_ROWS,
) -> Markup:
    """Plain HTML table; numeric columns are right-aligned, long tables are cut at max_rows."""
    return macro("data_table")(list(headers), list(rows), list(numeric or ()), max_rows)


def image_grid(items: Sequence[tuple[str, str | None]]) -> Markup:
    """Captioned thumbnails from base64 PNG/JPEG strings or data: URIs; unreadable ones get a placeholder."""
    return macro("image_grid")(list(items))


def heatmap_table(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    normalize: str = "row",
    corner: str = "",
    max_size: int = _MAX_HEATMAP,
) -> Markup:
    """HTML table whose cells are shaded by value; normalize="row" shades by share of the row total, which
    keeps rare classes of a confusion matrix visible, "all" by share of the largest cell."""
    rows = [list(r) for r in matrix or ()]
    if not any(rows):
        return macro("chart")(title, None)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    note = (
        f"First {max_size} of {n_rows:,} rows and {n_cols:,} columns shown." if max(n_rows, n_cols) > max_size else ""
    )
    cols = [str(col_labels[j]) if j < len(col_labels) else str(j) for j in range(min(n_cols, max_size))]
    names = [str(row_labels[i]) if i < len(row_labels) else str(i) for i in range(min(n_rows, max_size))]
    values = [[float(r[j]) if j < len(r) and finite(r[j]) else None for j in range(len(cols))] for r in rows]
    overall = max((abs(v) for r in values for v in r if v is not None), default=0.0)
    shaded = []
    for i, (name, row) in enumerate(zip(names, values, strict=False)):
        denom = sum(abs(v) for v in row if v is not None) if normalize == "row" else overall
        cells = []
        for j, v in enumerate(row):
            share = None if v is None else (abs(v) / denom if denom > 0 else 0.0)
            tip = f"{name} → {cols[j]}: {fmt(v)}"
            if share is not None and normalize == "row" and denom > 0:
                tip += f" ({share:.1%} of row)"
            cells.append({"value": v, "share": share, "tip": tip, "diag": i == j and n_rows == n_cols})
        shaded.append((name, cells))
    return macro("heatmap")(title, shaded, cols, corner, note)


# ---------------------------------------------------------------------------------------------------------
# Chart data for the templates


def _counts(value: Mapping[str, float]) -> list[tuple[str, float]]:
    """A {name: count} mapping as (name, count) pairs, largest first."""
    return sorted(((str(k), float(v)) for k, v in value.items()), key=lambda kv: (-kv[1], kv[0]))


def counts_chart(value: Mapping[str, float], title: str, order: Sequence[str] = (), width: float = WIDTH) -> Markup:
    """Bar chart of a {name: count} mapping, largest first, or in the given order (names not in it last)."""
    pairs = dict(_counts(value))
    names = in_order(pairs, order) if order else list(pairs)
    return bar_chart_svg(names, [pairs[n] for n in names], title=title, width=width)


def class_order(label: LabelProfile) -> list[str]:
    """All classes, the most common overall first, then any only some split has."""
    order = [k for k, _ in _counts(label.counts or {})]
    for counts in (label.by_split or {}).values():
        order += [k for k, _ in _counts(counts) if k not in order]
    return order


def sizes_chart(sizes: Sequence[Sequence[int]]) -> Markup | str:
    """Image sizes [[width, height, count], ...] as bars, the most common first."""
    pairs = sorted(((f"{fmt(w)}x{fmt(h)}", float(n)) for w, h, n in sizes), key=lambda s: -s[1])
    if not pairs:
        return ""
    return bar_chart_svg([s for s, _ in pairs], [n for _, n in pairs], title="Image sizes (WxH)")


def learning_curves(history: Sequence[Mapping[str, float]]) -> list[Markup]:
    """A loss chart (train_loss, val_loss, ...) and a chart of the other validation metrics, per epoch."""
    losses: dict[str, list[tuple[float, float]]] = {}
    others: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(history):
        x = float(row.get("epoch", i + 1))
        for key, y in row.items():
            if key != "epoch" and finite(y) and ("loss" in key or key.startswith("val_")):
                (losses if "loss" in key else others).setdefault(key, []).append((x, float(y)))
    charts = []
    if losses:
        # train_loss first, val_loss second, so colours match across reports.
        ordered = dict(sorted(losses.items(), key=lambda kv: (kv[0] != "train_loss", kv[0] != "val_loss", kv[0])))
        charts.append(line_chart_svg(ordered, title="Loss", x_label="epoch", y_label="loss"))
    if others:
        charts.append(line_chart_svg(others, title="Validation metrics", x_label="epoch", y_label="value"))
    return charts


def importance_chart(r: Evaluation) -> Markup:
    imp = r.importance or []
    cols, means = [c.column for c in imp], [c.mean for c in imp]
    lows, highs = [c.low for c in imp], [c.high for c in imp]
    return importance_chart_svg(cols, means, lows, highs, title="", metric=r.importance_metric or "the metric")


def score_bins(histogram: Sequence[int]) -> list[str]:
    """The labels of a histogram over [0, 1] in equal bins: "0.00–0.02", ..."""
    n = len(histogram)
    return [f"{i / n:.2f}–{(i + 1) / n:.2f}" for i in range(n)]


_HELPERS = {
    "importance_chart": importance_chart,
    "class_order": class_order,
    "counts_chart": counts_chart,
    "heatmap_table": heatmap_table,
    "learning_curves": learning_curves,
    "metric_mode": metric_mode,
    "scatter_svg": scatter_svg,
    "sizes_chart": sizes_chart,
    "bar_chart_svg": bar_chart_svg,
    "score_bins": score_bins,
}


def profile_html(profile: Profile) -> str:
    """The data profile report: a section per part of the profile (images only with an image feature)."""
    return render("profile.html", p=profile, **_HELPERS)


def evaluation_html(report: Evaluation) -> str:
    """The model evaluation report: the sections the evaluation has (the model, the baseline and the learning
    curves when they are set)."""
    return render("evaluation.html", r=report, **_HELPERS)
