"""The tuning report: optimisation history, learning curves, parameter importances, a parallel-coordinate plot
and every trial with its state and reason; standalone HTML with inline SVG, like the other reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lakenet.reports.html import (
    _PALETTE,
    _WIDTH,
    _Axes,
    _dict,
    _e,
    _empty,
    _figure,
    _fmt,
    _list,
    _note,
    bar_chart_svg,
    data_table,
    kv_table,
    line_chart_svg,
    page,
)

__all__ = ["tune_html"]

_MAX_CURVES = 40


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _history_svg(trials: Sequence[Mapping[str, Any]], maximize: bool, metric: str) -> str:
    """Each complete trial's value (filled), each pruned trial's last reported value (hollow, grey) and the
    best value so far (a step line)."""
    done = [(float(t["number"]), v) for t in trials if t.get("state") == "complete" and (v := _num(t.get("value")))]
    pruned = []
    for t in trials:
        inter = _dict(t.get("intermediate"))
        if t.get("state") == "pruned" and inter:
            last = _num(inter[max(inter, key=lambda k: int(k))])
            if last is not None:
                pruned.append((float(t["number"]), last))
    if not done and not pruned:
        return _figure("Optimisation history", _empty("no trial reported a value yet"))
    pts = done + pruned
    axes = _Axes([x for x, _ in pts], [y for _, y in pts], x_label="trial", y_label=metric, integer_x=True)
    parts: list[str] = []
    best: list[tuple[float, float]] = []
    current: float | None = None
    for x, y in sorted(done):
        if current is None or (y > current if maximize else y < current):
            current = y
        best.append((x, current))
    if best:
        steps: list[str] = []
        for i, (x, y) in enumerate(best):
            if i:
                steps.append(f"{axes.x(x):.1f},{axes.y(best[i - 1][1]):.1f}")
            steps.append(f"{axes.x(x):.1f},{axes.y(y):.1f}")
        parts.append(
            f'<polyline points="{" ".join(steps)}" fill="none" stroke="{_PALETTE[1]}" stroke-width="2">'
            "<title>best so far</title></polyline>"
        )
    parts.extend(
        f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3.5" fill="none" stroke="{_PALETTE[9]}">'
        f"<title>trial {int(x)} pruned at {_e(_fmt(y))}</title></circle>"
        for x, y in pruned
    )
    parts.extend(
        f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3.5" fill="{_PALETTE[0]}">'
        f"<title>trial {int(x)}: {_e(_fmt(y))}</title></circle>"
        for x, y in done
    )
    legend = (
        '<div class="legend">'
        f'<span><span class="swatch" style="background:{_PALETTE[0]}"></span>complete trial</span>'
        f'<span><span class="swatch" style="background:{_PALETTE[9]}"></span>pruned (last reported value)</span>'
        f'<span><span class="swatch" style="background:{_PALETTE[1]}"></span>best so far</span></div>'
    )
    return _figure("Optimisation history", axes.svg("Optimisation history", "".join(parts)), legend)


def _curves_svg(trials: Sequence[Mapping[str, Any]], metric: str) -> str:
    series: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        inter = _dict(t.get("intermediate"))
        pts = [(float(k), v) for k, raw in inter.items() if (v := _num(raw)) is not None]
        if pts:
            series[f"#{t['number']} {t.get('state', '')}"] = pts
    note = ""
    if len(series) > _MAX_CURVES:
        note = _note(f"First {_MAX_CURVES} of {len(series)} trials shown.")
        series = dict(list(series.items())[:_MAX_CURVES])
    return (
        line_chart_svg(series, title="Per-epoch values (what the pruner saw)", x_label="epoch", y_label=metric) + note
    )


def _axis_scale(values: list[Any], log: bool) -> tuple[Any, list[str]]:
    """A function value -> [0, 1] and tick labels (low, high or the categories)."""
    nums = [v for v in values if _num(v) is not None]
    if len(nums) == len(values) and nums:
        lo, hi = min(nums), max(nums)
        if log and lo > 0:
            llo, lhi = math.log10(lo), math.log10(hi)
            span = (lhi - llo) or 1.0
            return (lambda v: (math.log10(v) - llo) / span), [_fmt(lo), _fmt(hi)]
        span = (hi - lo) or 1.0
        return (lambda v: (v - lo) / span), [_fmt(lo), _fmt(hi)]
    cats = sorted({str(v) for v in values})
    pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return (lambda v: pos[str(v)]), cats


def _parallel_svg(trials: Sequence[Mapping[str, Any]], space: Mapping[str, Any], metric: str, maximize: bool) -> str:
    """One vertical axis per tuned key plus the metric; one line per complete trial, darker = better."""
    done = [t for t in trials if t.get("state") == "complete" and _num(t.get("value")) is not None]
    keys = [k for k in space if all(k in _dict(t.get("params")) for t in done)]
    if len(done) < 2 or not keys:
        return _figure("Parallel coordinates", _empty("needs at least 2 complete trials"))
    axes_names = [*keys, metric]
    columns = [[_dict(t.get("params"))[k] for t in done] for k in keys] + [[t["value"] for t in done]]
    scales = [
        _axis_scale(col, log=any(s in _dict(space.get(k)) for s in ("log_uniform", "log_int_uniform")))
        for k, col in zip(axes_names, columns, strict=False)
    ]
    left, right, top, height = 70, _WIDTH - 70, 30, 260
    step = (right - left) / max(len(axes_names) - 1, 1)
    xs = [left + i * step for i in range(len(axes_names))]
    values = [float(t["value"]) for t in done]
    vlo, vhi = min(values), max(values)
    parts: list[str] = []
    for j, t in enumerate(done):
        quality = (values[j] - vlo) / ((vhi - vlo) or 1.0)
        quality = quality if maximize else 1 - quality
        pts = " ".join(
            f"{xs[i]:.1f},{top + height - scales[i][0](columns[i][j]) * height:.1f}" for i in range(len(axes_names))
        )
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{_PALETTE[0]}" stroke-opacity="{0.15 + 0.85 * quality:.2f}"'
            f' stroke-width="{1 + 1.5 * quality:.1f}"><title>trial {t["number"]}: {_e(_fmt(values[j]))}</title>'
            "</polyline>"
        )
    for i, name in enumerate(axes_names):
        x = xs[i]
        parts.append(f'<line class="axis" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="#656d76"/>')
        parts.append(f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle" font-size="11">{_e(name)}</text>')
        labels = scales[i][1]
        for k, label in enumerate(labels):
            frac = k / (len(labels) - 1) if len(labels) > 1 else 0.5
            if len(labels) == 2 and isinstance(labels, list) and _num(columns[i][0]) is not None:
                frac = float(k)
            y = top + height - frac * height
            parts.append(f'<text class="muted" x="{x + 4:.1f}" y="{y + 4:.1f}" font-size="10">{_e(_fmt(label))}</text>')
    svg = (
        f'<svg viewBox="0 0 {_WIDTH} {top + height + 20}" role="img" aria-label="Parallel coordinates" '
        f'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif">{"".join(parts)}</svg>'
    )
    return _figure("Parallel coordinates (complete trials; darker and thicker = better)", svg)


def tune_html(summary: Mapping[str, Any]) -> str:
    """The report of a study summary as written by `lakenet tune` (tune.json)."""
    s = _dict(summary)
    trials = [_dict(t) for t in _list(s.get("trials"))]
    metric = str(s.get("metric", "value"))
    maximize = s.get("direction") == "maximize"
    counts = _dict(s.get("counts"))
    overview = kv_table(
        {
            "study": s.get("study"),
            "metric": f"{metric} ({s.get('direction')})",
            "best value": s.get("best_value"),
            "best trial": s.get("best_trial"),
            "best values": s.get("best_params"),
            **{f"trials {k}": v for k, v in counts.items() if v},
        }
    )
    importances = _dict(s.get("importances"))
    imp = (
        bar_chart_svg(
            list(importances), [float(v) for v in importances.values()], title="Parameter importance (fANOVA)"
        )
        if importances
        else _note(str(s.get("importance_note") or "no importances"))
    )
    rows = [
        [
            t.get("number"),
            t.get("state"),
            t.get("value"),
            t.get("epochs"),
            t.get("seconds"),
            ", ".join(f"{k}={_fmt(v)}" for k, v in _dict(t.get("params")).items()),
            t.get("reason") or "",
        ]
        for t in trials
    ]
    table = data_table(
        ["trial", "state", metric, "epochs", "seconds", "values", "reason"],
        rows,
        numeric=[True, False, True, True, True, False, False],
    )
    space = _dict(s.get("space"))
    return page(
        f"Tuning: {s.get('study', '')}",
        [
            ("Summary", overview),
            ("Optimisation history", _history_svg(trials, maximize, metric) + _curves_svg(trials, metric)),
            ("Parameter importances", imp),
            ("Parallel coordinates", _parallel_svg(trials, space, metric, maximize)),
            ("Trials", table),
        ],
    )
