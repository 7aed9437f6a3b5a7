"""The tuning report: optimisation history, learning curves, parameter importances, a parallel-coordinate plot
and every trial with its state and reason; standalone HTML with inline SVG, like the other reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lakenet.reports.charts import MUTED, PALETTE, bar_chart_svg, chart, line_chart_svg, new_figure, styled
from lakenet.reports.render import finite, fmt, macro, render

__all__ = ["Trial", "TuneSummary", "tune_html"]

_MAX_CURVES = 40


class Trial(Protocol):
    """What the report reads of a trial: lakenet.tuning.summary.TrialRow (the tuning layer sits above this one)."""

    @property
    def number(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def intermediate(self) -> Mapping[int, float]: ...
    @property
    def epochs(self) -> int | None: ...
    @property
    def seconds(self) -> float | None: ...
    @property
    def reason(self) -> str | None: ...


class TuneSummary(Protocol):
    """What the report reads of a study summary: lakenet.tuning.summary.TuneSummary."""

    @property
    def study(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def best_value(self) -> float | None: ...
    @property
    def best_trial(self) -> int | None: ...
    @property
    def best_params(self) -> Mapping[str, Any]: ...
    @property
    def importances(self) -> Mapping[str, float]: ...
    @property
    def importance_note(self) -> str | None: ...
    @property
    def space(self) -> Mapping[str, Any]: ...
    @property
    def trials(self) -> Sequence[Trial]: ...


def _last_reported(trial: Trial) -> float | None:
    values = [v for _, v in sorted(trial.intermediate.items()) if finite(v)]
    return float(values[-1]) if values else None


def _history_figure(trials: Sequence[Trial], maximize: bool, metric: str) -> Figure | None:
    """Each complete trial's value (filled), each pruned trial's last reported value (hollow, grey) and the
    best value so far (a step line)."""
    done = sorted((float(t.number), float(t.value)) for t in trials
                  if t.state == "complete" and finite(t.value))  # fmt: skip
    pruned = [(float(t.number), v) for t in trials
              if t.state == "pruned" and (v := _last_reported(t)) is not None]  # fmt: skip
    if not done and not pruned:
        return None
    fig = new_figure()
    ax = fig.subplots()
    if done:
        best = list(done[:1])
        for x, y in done[1:]:
            best.append((x, max(y, best[-1][1]) if maximize else min(y, best[-1][1])))
        best.append((max(x for x, _ in done + pruned), best[-1][1]))
        ax.step([x for x, _ in best], [y for _, y in best], where="post", color=PALETTE[1], label="best so far")
    if pruned:
        px, py = [x for x, _ in pruned], [y for _, y in pruned]
        ax.scatter(
            px, py, s=30, facecolors="none", edgecolors=PALETTE[9], label="pruned (last reported value)", zorder=3
        )
    if done:
        ax.scatter([x for x, _ in done], [y for _, y in done], s=30, color=PALETTE[0], label="complete trial", zorder=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    fig.legend(loc="outside lower center", ncols=3)
    return fig


def history_chart(trials: Sequence[Trial], maximize: bool, metric: str) -> Markup:
    with styled():
        fig = _history_figure(trials, maximize, metric)
        return chart("Optimisation history", fig, empty="no trial reported a value yet")


def curves_chart(trials: Sequence[Trial], metric: str) -> Markup:
    """Every trial's per-epoch values: what the pruner saw."""
    series: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if pts := [(float(k), float(v)) for k, v in t.intermediate.items() if finite(v)]:
            series[f"#{t.number} {t.state}"] = pts
    note = ""
    if len(series) > _MAX_CURVES:
        note = f"First {_MAX_CURVES} of {len(series)} trials shown."
        series = dict(list(series.items())[:_MAX_CURVES])
    out = line_chart_svg(series, title="Per-epoch values (what the pruner saw)", x_label="epoch", y_label=metric)
    return out + macro("note")(note) if note else out


def _axis(values: list[Any], log: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in [0, 1] for one parallel axis, and its labels: low and high, or every category."""
    if all(finite(v) for v in values):
        lo, hi = min(values), max(values)
        scale = math.log10 if log and lo > 0 else float
        span = (scale(hi) - scale(lo)) or 1.0
        return [(scale(v) - scale(lo)) / span for v in values], [(0.0, fmt(lo)), (1.0, fmt(hi))]
    cats = sorted({str(v) for v in values})
    pos = {c: i / (len(cats) - 1) if len(cats) > 1 else 0.5 for i, c in enumerate(cats)}
    return [pos[str(v)] for v in values], [(p, c) for c, p in pos.items()]


def _parallel_figure(axes: list[tuple[str, list[Any], bool]], quality: list[float]) -> Figure:
    fig = new_figure(height=3.6)
    ax = fig.subplots()
    ax.axis("off")
    scaled = [_axis(values, log) for _, values, log in axes]
    blues = matplotlib.colormaps["Blues"]
    for j in sorted(range(len(quality)), key=lambda j: quality[j]):  # the best on top
        q = quality[j]
        ys = [positions[j] for positions, _ in scaled]
        ax.plot(range(len(axes)), ys, color=blues(0.3 + 0.7 * q), linewidth=1 + 1.5 * q, marker="o", markersize=3)
    for i, ((name, _, _), (_, labels)) in enumerate(zip(axes, scaled, strict=True)):
        ax.axvline(i, color=MUTED, linewidth=1, zorder=0)
        ax.text(i, 1.07, name, ha="center", va="bottom", fontsize=9)
        for y, label in labels:
            ax.text(i + 0.03, y, label, va="center", fontsize=8, color=MUTED, zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.85})  # fmt: skip
    ax.set(xlim=(-0.2, len(axes) - 0.6), ylim=(-0.05, 1.12))
    return fig


def parallel_chart(trials: Sequence[Trial], space: Mapping[str, Any], metric: str, maximize: bool) -> Markup:
    """One vertical axis per tuned key plus the metric; one line per complete trial, darker = better."""
    title = "Parallel coordinates (complete trials; darker and thicker = better)"
    done = [t for t in trials if t.state == "complete" and finite(t.value)]
    keys = [k for k in space if all(k in t.params for t in done)]
    if len(done) < 2 or not keys:
        return chart("Parallel coordinates", None, empty="needs at least 2 complete trials")
    values = [float(t.value) for t in done if t.value is not None]
    log = {k: any(s in space[k] for s in ("log_uniform", "log_int_uniform")) for k in keys}
    axes = [(k, [t.params[k] for t in done], log[k]) for k in keys] + [(metric, values, False)]
    lo, hi = min(values), max(values)
    quality = [(v - lo) / ((hi - lo) or 1.0) for v in values]
    with styled():
        return chart(title, _parallel_figure(axes, quality if maximize else [1 - q for q in quality]))


def tune_html(summary: TuneSummary) -> str:
    """The report of a study summary (`lakenet tune` writes summary.to_dict() as tune.json beside it)."""
    return render(
        "tune.html",
        s=summary,
        history_chart=history_chart,
        curves_chart=curves_chart,
        parallel_chart=parallel_chart,
        bar_chart_svg=bar_chart_svg,
    )
