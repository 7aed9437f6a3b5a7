"""Charts for the reports: matplotlib figures (no pyplot, so no global state) rendered as inline SVG.

`styled()` sets the look shared by every report chart; `figure_svg(fig)` turns any matplotlib figure into an
SVG fragment to put straight into an HTML page: no XML prolog, text kept as text, no external references, and
byte-for-byte the same output for the same figure."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
from cycler import cycler
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lakenet.reports.render import finite, fmt, macro

__all__ = ["PALETTE", "bar_chart_svg", "figure_svg", "line_chart_svg", "scatter_svg", "styled"]

# Colour-blind friendly (Tableau 10); series past the tenth reuse colours with a dash pattern.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
MUTED = "#656d76"
WIDTH = 6.4  # inches; an SVG is shown at its natural size (1 in = 96 CSS px) or narrower, never stretched

_MAX_BARS = 60
_MAX_SCATTER_POINTS = 2000
_MAX_LINE_POINTS = 2000

STYLE: dict[Any, Any] = {  # keys typed by matplotlib as literals
    "text.parse_math": False,  # "$5 off" is a class name, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 10,
    "text.color": "#1f2328",
    "axes.labelcolor": "#1f2328",
    "axes.edgecolor": MUTED,
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": "#e6e9ed",
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": "#1f2328",
    "ytick.labelcolor": "#1f2328",
    "lines.linewidth": 2,
    "lines.markersize": 5,
    "legend.frameon": False,
    "figure.facecolor": "white",
}
# Text as <text> (small, selectable, scales), and ids from a fixed salt so the same figure gives the same bytes.
_SVG: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "lakenet"}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


@contextmanager
def styled() -> Iterator[None]:
    """The reports' chart style; build the figure inside it (matplotlib reads the style as artists are made)."""
    with matplotlib.rc_context(STYLE):
        yield


def figure_svg(fig: Figure) -> Markup:
    """The figure as an inline <svg> element, ready to embed in a self-contained HTML page."""
    # Data never leaves the axes limits here, so clipping adds nothing but clip-path="url(#…)" references
    # (ticks made while drawing are not clipped).
    for artist in fig.findobj():
        artist.set_clip_on(False)
    buf = io.StringIO()
    with matplotlib.rc_context(_SVG):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue()
    return Markup(svg[svg.index("<svg") :].strip())


def chart(
    title: str, fig: Figure | None, *, note: str = "", legend: Sequence[str] = (), empty: str = "no data"
) -> Markup:
    """A captioned chart for the report page, with an HTML legend if given; fig None says `empty` instead."""
    svg = figure_svg(fig) if fig is not None else None
    return macro("chart")(title, svg, note, list(legend), PALETTE, empty)


def new_figure(width: float = WIDTH, height: float = 3.4) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _nice_range(
    lo: float, hi: float, *, target_ticks: int = 7, integer: bool = False
) -> tuple[float, float, list[float]]:
    """Axis bounds (data range plus a 5% margin) and matplotlib's 1/2/2.5/5 x 10^k ticks inside them."""
    lo, hi = min(lo, hi), max(lo, hi)
    pad = (hi - lo) * 0.05 if hi > lo else (1.0 if lo == 0 else abs(lo) * 0.1)
    lo, hi = lo - pad, hi + pad
    locator = MaxNLocator(nbins=target_ticks - 1, steps=[1, 2, 2.5, 5, 10], integer=integer)
    ticks = [float(t) for t in locator.tick_values(lo, hi) if lo - 1e-9 * (hi - lo) <= t <= hi + 1e-9 * (hi - lo)]
    return lo, hi, ticks if len(ticks) >= 2 else [lo, hi]


def _points(points: Iterable[Any]) -> list[tuple[float, float]]:
    """The finite (x, y) pairs; anything else (NaN, None, a string) is not drawn."""
    pairs = [p for p in points if isinstance(p, list | tuple) and len(p) >= 2]
    return [(float(p[0]), float(p[1])) for p in pairs if finite(p[0]) and finite(p[1])]


def _downsample(items: list[Any], limit: int) -> list[Any]:
    # Even stride keeps the overall shape of a curve or cloud; random sampling would make reports flaky.
    if len(items) <= limit:
        return items
    return [items[int(i * len(items) / limit)] for i in range(limit)]


def bar_figure(labels: Sequence[str], values: Sequence[float | None], *, width: float = WIDTH) -> Figure:
    """Horizontal bars (long class names stay readable), first label on top, each value printed at its bar."""
    fig = new_figure(width, 0.3 + 0.26 * len(labels))
    ax = fig.subplots()
    shown = [lbl if len(lbl) <= 28 else lbl[:27] + "…" for lbl in labels]
    lengths = [float(v) if finite(v) else 0.0 for v in values]
    bars = ax.barh(range(len(labels)), lengths, height=0.7, color=PALETTE[0])
    ax.bar_label(bars, labels=[fmt(v) for v in values], padding=3, fontsize=9)
    ax.set_yticks(range(len(labels)), shown)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.xaxis.set_visible(False)
    ax.grid(False)
    ax.spines["bottom"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.margins(x=0.14)
    if min(lengths) >= 0:
        ax.set_xlim(left=0)
    return fig


def bar_chart_svg(
    labels: list[str], values: list[float], *, title: str, max_bars: int = _MAX_BARS, width: float = WIDTH
) -> Markup:
    """Horizontal bar chart; only the first max_bars bars are drawn."""
    pairs = list(zip(map(str, labels), values, strict=False))
    if not pairs:
        return chart(title, None)
    note = f"First {max_bars} of {len(pairs):,} bars shown." if len(pairs) > max_bars else ""
    pairs = pairs[:max_bars]
    with styled():
        fig = bar_figure([lbl for lbl, _ in pairs], [v for _, v in pairs], width=width)
        return chart(title, fig, note=note)


def line_figure(series: Mapping[str, list[tuple[float, float]]], *, x_label: str, y_label: str) -> Figure:
    """One line per series (dashed past the tenth), with dots while there are few enough points to see them."""
    fig = new_figure()
    ax = fig.subplots()
    xs = [x for pts in series.values() for x, _ in pts]
    for i, pts in enumerate(series.values()):
        drawn = _downsample(pts, _MAX_LINE_POINTS)
        ax.plot(
            [x for x, _ in drawn],
            [y for _, y in drawn],
            color=PALETTE[i % len(PALETTE)],
            linestyle="--" if i >= len(PALETTE) else "-",
            marker="o" if len(drawn) <= 60 else None,
        )
    if all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    return fig


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str, y_label: str
) -> Markup:
    """Several named (x, y) series on shared axes with a legend; non-finite points are skipped."""
    clean = {str(name): sorted(pts) for name, points in series.items() if (pts := _points(points))}
    if not clean:
        return chart(title, None)
    with styled():
        return chart(title, line_figure(clean, x_label=x_label, y_label=y_label), legend=list(clean))


def scatter_figure(points: list[tuple[float, float]], *, x_label: str, y_label: str, diagonal: bool) -> Figure:
    fig = new_figure(6.0, 5.4) if diagonal else new_figure()
    ax = fig.subplots()
    ax.grid(True, axis="both")
    alpha = 0.75 if len(points) < 200 else 0.4
    ax.scatter([x for x, _ in points], [y for _, y in points], s=22, color=PALETTE[0], alpha=alpha, linewidths=0)
    if diagonal:
        # Predicted against actual needs the same scale on both axes, or the y = x line misleads.
        values = [v for p in points for v in p]
        lo, hi, ticks = _nice_range(min(values), max(values))
        ax.plot([lo, hi], [lo, hi], color=PALETTE[2], linewidth=1.5, linestyle=(0, (5, 4)), label="y = x")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xticks=ticks, yticks=ticks)
        ax.set_box_aspect(1)
        ax.legend(loc="upper left")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    return fig


def scatter_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    max_points: int = _MAX_SCATTER_POINTS,
) -> Markup:
    """Scatter plot; diagonal=True draws y = x on equal axes (for predicted-vs-actual)."""
    pts = _points(points)
    if not pts:
        return chart(title, None)
    note = ""
    if len(pts) > max_points:
        note = f"{max_points:,} of {len(pts):,} points shown (evenly spaced sample)."
        pts = _downsample(pts, max_points)
    with styled():
        return chart(title, scatter_figure(pts, x_label=x_label, y_label=y_label, diagonal=diagonal), note=note)


def importance_chart_svg(columns: Sequence[str], means: Sequence[float], lows: Sequence[float],
                         highs: Sequence[float], *, title: str, metric: str) -> Markup:  # fmt: skip
    """Horizontal bars of the metric's drop per column with their 95 % intervals, the largest on top."""
    if not columns:
        return chart(title, None)
    with styled():
        fig = new_figure(WIDTH, 0.6 + 0.3 * len(columns))
        ax = fig.subplots()
        err = [[m - lo for m, lo in zip(means, lows, strict=True)], [h - m for m, h in zip(means, highs, strict=True)]]
        ax.barh(range(len(columns)), means, xerr=err, height=0.6, color=PALETTE[0], ecolor="#444", capsize=3)
        ax.set_yticks(range(len(columns)), [c if len(c) <= 28 else c[:27] + "…" for c in columns])
        ax.set_ylim(len(columns) - 0.5, -0.5)
        ax.axvline(0, color="#888", linewidth=0.8)
        ax.set_xlabel(f"drop in {metric} when the column is shuffled")
        return chart(title, fig)
