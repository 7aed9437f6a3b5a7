"""Self-contained HTML reports (data profile, model evaluation): inline CSS and SVG, no external assets."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lakenet._version import __version__
from lakenet.evaluation.metrics import metric_mode

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

# Colour-blind friendly (Tableau 10); series past the tenth reuse colours with a dash pattern.
_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_HEAT_RGB = (78, 121, 167)

# Caps keep a report for a 1000-class model or a million-row scatter in the megabytes, not gigabytes.
_MAX_BARS = 60
_MAX_HEATMAP = 60
_MAX_SCATTER_POINTS = 2000
_MAX_LINE_POINTS = 2000
_MAX_TABLE_ROWS = 500

_WIDTH = 640
_PLOT_HEIGHT = 300
_MARGIN_LEFT = 64
_MARGIN_RIGHT = 20
_MARGIN_TOP = 14
_MARGIN_BOTTOM = 48

_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_DATA_URI_RE = re.compile(r"^data:(image/(?:png|jpeg|gif|webp));base64,(.*)$", re.DOTALL)
# First base64 characters of each format's magic bytes, so a JPEG passed where a PNG was expected still shows.
_B64_MAGIC = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)

_CSS = """
:root{--bg:#f6f7f9;--card:#fff;--fg:#1f2328;--muted:#656d76;--border:#d8dee4;--accent:#4e79a7;
--warn-bg:#fff8c5;--warn-border:#d4a72c;--zebra:#f6f8fa;--grid:#e6e9ed}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--fg:#e6edf3;--muted:#8d96a0;
--border:#30363d;--accent:#79a6d2;--warn-bg:#3b2e0a;--warn-border:#9e6a03;--zebra:#1c2128;--grid:#2d333b}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.5;
font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header{padding:24px 16px 8px;max-width:1160px;margin:0 auto}
header h1{margin:0 0 8px;font-size:1.7rem;word-break:break-word}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;font-size:.9rem}
nav a{color:var(--accent);text-decoration:none}nav a:hover{text-decoration:underline}
main{max-width:1160px;margin:0 auto;padding:8px 16px 24px}
section{background:var(--card);border:1px solid var(--border);border-radius:10px;padding:16px 20px;
margin:16px 0;overflow:hidden}
section h2{margin:0 0 12px;font-size:1.25rem}
h3{font-size:1.02rem;margin:18px 0 8px}
footer{text-align:center;color:var(--muted);font-size:.8rem;padding:0 0 24px}
.table-wrap{overflow-x:auto;max-width:100%;margin:6px 0 10px}
table{border-collapse:collapse;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--border);text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:var(--card);border-bottom:2px solid var(--border)}
tbody tr:nth-child(even){background:var(--zebra)}
td.num,th.num{text-align:right}
table.kv th{color:var(--muted);font-weight:600;white-space:nowrap}
td,th{word-break:break-word;max-width:520px}
table.heatmap td{text-align:center;min-width:44px;border:1px solid var(--border)}
table.heatmap tbody tr:nth-child(even){background:none}
table.heatmap td.diag{outline:2px solid var(--fg);outline-offset:-2px}
table.heatmap th.corner{color:var(--muted);font-weight:400;font-size:.8rem}
figure{margin:8px 0 14px}
figcaption{font-weight:600;margin-bottom:6px}
.chart svg{width:100%;height:auto;max-width:760px;display:block}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px 24px}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.85rem;margin-top:4px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.images{display:grid;grid-template-columns:repeat(auto-fill,minmax(132px,1fr));gap:10px}
.images figure{margin:0;padding:6px;border:1px solid var(--border);border-radius:8px;background:var(--zebra)}
.images img{width:100%;height:120px;object-fit:contain;image-rendering:auto;display:block}
.images figcaption{font-weight:400;font-size:.78rem;margin:4px 0 0;word-break:break-word}
.placeholder{height:120px;display:flex;align-items:center;justify-content:center;color:var(--muted);
font-size:.8rem}
.warnings{list-style:none;padding:0;margin:0 0 12px}
.warnings li{background:var(--warn-bg);border:1px solid var(--warn-border);border-radius:6px;
padding:6px 10px;margin:6px 0}
.warnings li::before{content:"\\26A0\\FE0E  ";font-weight:700}
.empty,.note{color:var(--muted);font-style:italic}
.note{font-size:.85rem}
svg text{fill:var(--fg)}
svg .axis{stroke:var(--muted)}
svg .gridline{stroke:var(--grid)}
svg .muted{fill:var(--muted)}
code{font-size:.85em;background:var(--zebra);padding:1px 4px;border-radius:4px;word-break:break-all}
@media (max-width:600px){section{padding:12px}header h1{font-size:1.35rem}}
"""


# ---------------------------------------------------------------------------------------------------------
# Tolerant readers: report dicts come from JSON written elsewhere, so any value may be missing or mistyped.


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _dict(value: object) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return []


def _num(value: object) -> float | None:
    """A finite float, or None; bools are rejected because True is not a count."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _present(value: object) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _fmt(value: object) -> str:
    """Human formatting: thousands separators for integers, 4 significant-ish digits for floats."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _fmt_metric(value: object) -> str:
    f = _num(value)
    if f is None:
        return _fmt(value)
    return f"{f:.4f}" if abs(f) < 1e5 else f"{f:.4g}"


def _empty(message: str = "no data") -> str:
    return f'<p class="empty">{_e(message)}</p>'


def _note(message: str) -> str:
    return f'<p class="note">{_e(message)}</p>'


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _figure(title: str, body: str, extra: str = "", css_class: str = "chart") -> str:
    caption = f"<figcaption>{_e(title)}</figcaption>" if title else ""
    return f'<figure class="{css_class}">{caption}{body}{extra}</figure>'


# ---------------------------------------------------------------------------------------------------------
# Axes


def _nice_step(span: float, target_ticks: int, integer: bool) -> float:
    raw = span / max(target_ticks - 1, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = 10.0 * magnitude
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * magnitude * (1 + 1e-9):
            step = m * magnitude
            break
    # Epoch axes should not get ticks at 1.5.
    if integer:
        step = max(1.0, round(step))
    return step


def _nice_range(
    lo: float, hi: float, *, target_ticks: int = 7, integer: bool = False
) -> tuple[float, float, list[float]]:
    """Axis bounds (data range plus a 5% margin) and the 1/2/2.5/5 x 10^k tick positions inside them."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = 1.0 if lo == 0 else abs(lo) * 0.1
        if integer:
            pad = max(1.0, math.ceil(pad))
    else:
        pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target_ticks, integer)
    start = math.ceil(lo / step - 1e-9)
    stop = math.floor(hi / step + 1e-9)
    ticks = [i * step for i in range(start, stop + 1)]
    # At extreme magnitudes float rounding can leave fewer than two ticks; the bounds then serve as ticks.
    if len(ticks) < 2:
        ticks = [lo, hi]
    return lo, hi, ticks


def _fmt_tick(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6 or abs(value) < 1e-4:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if not math.isclose(step * 10**decimals, round(step * 10**decimals), rel_tol=1e-6):
        decimals += 1
    return f"{value:,.{decimals}f}"


class _Axes:
    """Maps data coordinates onto a fixed-size SVG plot area and draws grid, ticks and axis titles."""

    def __init__(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        *,
        x_label: str,
        y_label: str,
        integer_x: bool = False,
        square: bool = False,
    ) -> None:
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = min(ys), max(ys)
        if square:
            # Predicted-vs-actual plots need the same scale on both axes or the y=x line misleads.
            x_lo = y_lo = min(x_lo, y_lo)
            x_hi = y_hi = max(x_hi, y_hi)
        self.x_lo, self.x_hi, self.x_ticks = _nice_range(x_lo, x_hi, integer=integer_x)
        self.y_lo, self.y_hi, self.y_ticks = _nice_range(y_lo, y_hi)
        self.x_label = x_label
        self.y_label = y_label
        self.left = _MARGIN_LEFT
        self.top = _MARGIN_TOP
        self.w = _WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
        self.h = _PLOT_HEIGHT
        self.height = _MARGIN_TOP + _PLOT_HEIGHT + _MARGIN_BOTTOM

    def x(self, v: float) -> float:
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * self.w

    def y(self, v: float) -> float:
        return self.top + self.h - (v - self.y_lo) / (self.y_hi - self.y_lo) * self.h

    def draw(self) -> str:
        parts: list[str] = []
        bottom = self.top + self.h
        right = self.left + self.w
        x_step = self.x_ticks[1] - self.x_ticks[0]
        y_step = self.y_ticks[1] - self.y_ticks[0]
        for t in self.y_ticks:
            y = self.y(t)
            parts.append(
                f'<line class="gridline" x1="{self.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="#e6e9ed" stroke-width="1"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                f"{_e(_fmt_tick(t, y_step))}</text>"
            )
        for t in self.x_ticks:
            x = self.x(t)
            parts.append(
                f'<line class="axis" x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" '
                f'stroke="#656d76"/>'
                f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" font-size="11">'
                f"{_e(_fmt_tick(t, x_step))}</text>"
            )
        parts.append(
            f'<line class="axis" x1="{self.left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#656d76"/>'
            f'<line class="axis" x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{bottom}" '
            f'stroke="#656d76"/>'
        )
        if self.x_label:
            parts.append(
                f'<text x="{self.left + self.w / 2:.1f}" y="{bottom + 38}" text-anchor="middle" '
                f'font-size="12">{_e(self.x_label)}</text>'
            )
        if self.y_label:
            cy = self.top + self.h / 2
            parts.append(
                f'<text x="14" y="{cy:.1f}" text-anchor="middle" font-size="12" '
                f'transform="rotate(-90 14 {cy:.1f})">{_e(self.y_label)}</text>'
            )
        return "".join(parts)

    def svg(self, title: str, body: str) -> str:
        return (
            f'<svg viewBox="0 0 {_WIDTH} {self.height}" role="img" aria-label="{_e(title)}" '
            f'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif">'
            f"<title>{_e(title)}</title>{self.draw()}{body}</svg>"
        )


def _downsample(items: list[Any], limit: int) -> list[Any]:
    # Even stride keeps the overall shape of a curve or cloud; random sampling would make reports flaky.
    if len(items) <= limit:
        return items
    stride = len(items) / limit
    return [items[int(i * stride)] for i in range(limit)]


def _finite_points(points: Iterable[object]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for p in points:
        if isinstance(p, list | tuple) and len(p) >= 2:
            x, y = _num(p[0]), _num(p[1])
            # Beyond ±1e300 the axis span itself would overflow to infinity.
            if x is not None and y is not None and abs(x) <= 1e300 and abs(y) <= 1e300:
                out.append((x, y))
    return out


# ---------------------------------------------------------------------------------------------------------
# Public building blocks


def bar_chart_svg(labels: list[str], values: list[float], *, title: str, max_bars: int = _MAX_BARS) -> str:
    """Horizontal bar chart (long class names stay readable); only the first max_bars bars are drawn."""
    pairs = [(str(lbl), _num(v)) for lbl, v in zip(labels, values, strict=False)]
    if not pairs:
        return _figure(title, _empty())
    note = ""
    if len(pairs) > max_bars:
        note = _note(f"First {max_bars} of {len(pairs):,} bars shown.")
        pairs = pairs[:max_bars]
    finite = [v for _, v in pairs if v is not None]
    v_lo = min([0.0, *finite])
    v_hi = max([0.0, *finite])
    span = (v_hi - v_lo) or 1.0
    label_chars = min(28, max(len(lbl) for lbl, _ in pairs))
    label_w = 16 + 7.5 * label_chars
    value_w = 64
    bar_area = _WIDTH - label_w - value_w
    row_h = 22
    height = row_h * len(pairs) + 8
    zero_x = label_w + (0.0 - v_lo) / span * bar_area
    parts: list[str] = []
    for i, (lbl, v) in enumerate(pairs):
        y = 4 + i * row_h
        colour = _PALETTE[0]
        shown = _truncate(lbl, 28)
        parts.append(
            f'<text x="{label_w - 8:.1f}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"<title>{_e(lbl)}</title>{_e(shown)}</text>"
        )
        if v is None:
            parts.append(
                f'<text class="muted" x="{zero_x + 4:.1f}" y="{y + 15}" font-size="11" fill="#656d76">'
                f"{_e(_fmt(values[i]))}</text>"
            )
            continue
        x0 = label_w + (min(v, 0.0) - v_lo) / span * bar_area
        width = abs(v) / span * bar_area
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(width, 0.5):.1f}" height="{row_h - 6}" rx="2" '
            f'fill="{colour}"><title>{_e(lbl)}: {_e(_fmt(v))}</title></rect>'
        )
        text_x = x0 + width + 4 if v >= 0 else zero_x + 4
        parts.append(f'<text x="{text_x:.1f}" y="{y + 15}" font-size="11">{_e(_fmt(v))}</text>')
    parts.append(f'<line class="axis" x1="{zero_x:.1f}" y1="2" x2="{zero_x:.1f}" y2="{height - 2}" stroke="#656d76"/>')
    svg = (
        f'<svg viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="{_e(title)}" '
        f'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif">'
        f"<title>{_e(title)}</title>{''.join(parts)}</svg>"
    )
    return _figure(title, svg, note)


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{_PALETTE[i % len(_PALETTE)]}"></span>{_e(n)}</span>'
        for i, n in enumerate(names)
    )
    return f'<div class="legend">{items}</div>'


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str, y_label: str
) -> str:
    """Several named (x, y) series on shared axes with a legend; non-finite points are skipped."""
    clean = {str(name): _finite_points(points) for name, points in series.items()}
    clean = {name: sorted(pts) for name, pts in clean.items() if pts}
    if not clean:
        return _figure(title, _empty())
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    axes = _Axes(xs, ys, x_label=x_label, y_label=y_label, integer_x=all(x.is_integer() for x in xs))
    parts: list[str] = []
    for i, (name, pts) in enumerate(clean.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        dash = ' stroke-dasharray="6 3"' if i >= len(_PALETTE) else ""
        drawn = _downsample(pts, _MAX_LINE_POINTS)
        coords = " ".join(f"{axes.x(x):.1f},{axes.y(y):.1f}" for x, y in drawn)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
            f"<title>{_e(name)}</title></polyline>"
        )
        if len(drawn) <= 60:
            parts.extend(
                f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3" fill="{colour}">'
                f"<title>{_e(name)}: ({_e(_fmt(x))}, {_e(_fmt(y))})</title></circle>"
                for x, y in drawn
            )
    return _figure(title, axes.svg(title, "".join(parts)), _legend(list(clean)))


def scatter_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    max_points: int = _MAX_SCATTER_POINTS,
) -> str:
    """Scatter plot; diagonal=True draws y = x on equal axes (for predicted-vs-actual)."""
    pts = _finite_points(points)
    if not pts:
        return _figure(title, _empty())
    note = ""
    if len(pts) > max_points:
        note = _note(f"{max_points:,} of {len(pts):,} points shown (evenly spaced sample).")
        pts = _downsample(pts, max_points)
    axes = _Axes([x for x, _ in pts], [y for _, y in pts], x_label=x_label, y_label=y_label, square=diagonal)
    parts: list[str] = []
    if diagonal:
        lo, hi = axes.x_lo, axes.x_hi
        parts.append(
            f'<line x1="{axes.x(lo):.1f}" y1="{axes.y(lo):.1f}" x2="{axes.x(hi):.1f}" y2="{axes.y(hi):.1f}" '
            f'stroke="{_PALETTE[2]}" stroke-width="1.5" stroke-dasharray="5 4"><title>y = x</title></line>'
        )
    opacity = 0.75 if len(pts) < 200 else 0.4
    parts.extend(
        f'<circle cx="{axes.x(x):.1f}" cy="{axes.y(y):.1f}" r="3" fill="{_PALETTE[0]}" fill-opacity="{opacity}"/>'
        for x, y in pts
    )
    return _figure(title, axes.svg(title, "".join(parts)), note)


def heatmap_table(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    normalize: str = "row",
    corner: str = "",
    max_size: int = _MAX_HEATMAP,
) -> str:
    """HTML table whose cells are shaded by value; normalize="row" shades by share of the row total, which
    keeps rare classes of a confusion matrix visible, "all" by share of the largest cell."""
    rows = [_list(r) for r in _list(matrix)]
    if not rows or not any(rows):
        return _figure(title, _empty(), css_class="heatmap")
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    note = ""
    if n_rows > max_size or n_cols > max_size:
        note = _note(f"First {max_size} of {n_rows:,} rows and {n_cols:,} columns shown.")
    shown_rows = rows[:max_size]
    shown_cols = min(n_cols, max_size)
    row_names = [str(row_labels[i]) if i < len(row_labels) else str(i) for i in range(len(shown_rows))]
    col_names = [str(col_labels[j]) if j < len(col_labels) else str(j) for j in range(shown_cols)]
    values = [[_num(r[j]) if j < len(r) else None for j in range(shown_cols)] for r in shown_rows]
    overall = max((abs(v) for r in values for v in r if v is not None), default=0.0)
    head = "".join(f"<th>{_e(_truncate(c, 24))}</th>" for c in col_names)
    body: list[str] = []
    for i, (name, row) in enumerate(zip(row_names, values, strict=True)):
        denom = sum(abs(v) for v in row if v is not None) if normalize == "row" else overall
        cells: list[str] = []
        for j, v in enumerate(row):
            diag = ' class="diag"' if i == j and n_rows == n_cols else ""
            if v is None:
                cells.append(f"<td{diag}>—</td>")
                continue
            share = abs(v) / denom if denom > 0 else 0.0
            fg = "#fff" if share > 0.55 else "inherit"
            r, g, b = _HEAT_RGB
            tip = f"{name} → {col_names[j]}: {_fmt(v)}"
            if normalize == "row" and denom > 0:
                tip += f" ({share:.1%} of row)"
            cells.append(
                f'<td{diag} style="background:rgba({r},{g},{b},{share:.3f});color:{fg}" title="{_e(tip)}">'
                f"{_e(_fmt(v))}</td>"
            )
        body.append(f"<tr><th>{_e(_truncate(name, 32))}</th>{''.join(cells)}</tr>")
    table = (
        f'<div class="table-wrap"><table class="heatmap"><thead><tr><th class="corner">{_e(corner)}</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    return _figure(title, table, note, css_class="heatmap")


def _data_uri(b64: object) -> str | None:
    """A safe data: URI for a base64 image, or None; anything else could break out of the src attribute."""
    if not isinstance(b64, str) or not b64:
        return None
    mime = None
    payload = b64
    match = _DATA_URI_RE.match(b64)
    if match:
        mime, payload = match.group(1), match.group(2)
    payload = "".join(payload.split())
    if not payload or not _B64_RE.match(payload) or len(payload) % 4 == 1:
        return None
    # Unpadded base64 is common in JSON; pad it so strict decoders accept it.
    payload += "=" * (-len(payload) % 4)
    if mime is None:
        mime = next((m for prefix, m in _B64_MAGIC if payload.startswith(prefix)), "image/png")
    return f"data:{mime};base64,{payload}"


def image_grid(items: Sequence[tuple[str, str | None]]) -> str:
    """Captioned thumbnails from base64 PNG/JPEG strings or data: URIs; unreadable ones get a placeholder."""
    entries = [it for it in _list(items) if isinstance(it, list | tuple) and len(it) >= 2]
    if not entries:
        return _empty("no images")
    cells: list[str] = []
    for caption, b64 in entries:
        uri = _data_uri(b64)
        text = _e(caption)
        visual = (
            f'<img src="{uri}" alt="{text}" loading="lazy">'
            if uri
            else '<div class="placeholder">image unavailable</div>'
        )
        cells.append(f"<figure>{visual}<figcaption>{text}</figcaption></figure>")
    return f'<div class="images">{"".join(cells)}</div>'


def data_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Sequence[bool] | None = None,
    max_rows: int = _MAX_TABLE_ROWS,
) -> str:
    """Plain HTML table; numeric columns are right-aligned, long tables are cut at max_rows."""
    if not rows:
        return _empty()
    num = list(numeric) if numeric is not None else [False] * len(headers)
    num += [False] * (len(headers) - len(num))

    def cls(j: int) -> str:
        return ' class="num"' if j < len(num) and num[j] else ""

    head = "".join(f"<th{cls(j)}>{_e(h)}</th>" for j, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(j)}>{_e(_fmt(v))}</td>" for j, v in enumerate(row)) + "</tr>"
        for row in rows[:max_rows]
    )
    note = _note(f"First {max_rows:,} of {len(rows):,} rows shown.") if len(rows) > max_rows else ""
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}'


def kv_table(data: Mapping[str, object]) -> str:
    """Two-column key/value table; nested values are shown as compact JSON."""
    items = list(_dict(data).items())
    if not items:
        return _empty()
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in items)
    return f'<div class="table-wrap"><table class="kv"><tbody>{body}</tbody></table></div>'


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A complete standalone HTML document: escaped title and headings, trusted section HTML, inline CSS."""
    ids: list[str] = []
    for i, (heading, _) in enumerate(sections):
        ids.append(f"s{i + 1}-{_slug(str(heading))}")
    nav = "".join(f'<a href="#{sid}">{_e(heading)}</a>' for sid, (heading, _) in zip(ids, sections, strict=True))
    body = "".join(
        f'<section id="{sid}"><h2>{_e(heading)}</h2>{content}</section>'
        for sid, (heading, content) in zip(ids, sections, strict=True)
    )
    if not sections:
        body = f"<section>{_empty()}</section>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="lakenet {_e(__version__)}">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1><nav>{nav}</nav></header>\n"
        f"<main>{body}</main>\n"
        f"<footer>Generated by lakenet {_e(__version__)}</footer>\n"
        "</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------------------
# Data profile report


def _counts(value: object) -> list[tuple[str, float]]:
    """A {name: count} mapping as (name, count) pairs, largest first, non-numeric counts dropped."""
    pairs = [(k, n) for k, v in _dict(value).items() if (n := _num(v)) is not None]
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


def _counts_chart(value: object, *, title: str, order: Sequence[str] = ()) -> str:
    """Bar chart of a {name: count} mapping, largest first, or in the given order (names not in it last)."""
    pairs = _counts(value)
    if order:
        rank = {name: i for i, name in enumerate(order)}
        pairs.sort(key=lambda kv: rank.get(kv[0], len(rank)))
    return bar_chart_svg([k for k, _ in pairs], [v for _, v in pairs], title=title)


def _warnings_list(warnings: object) -> str:
    items = [w for w in _list(warnings) if _present(w)]
    if not items:
        return ""
    return '<ul class="warnings">' + "".join(f"<li>{_e(_fmt(w))}</li>" for w in items) + "</ul>"


def _profile_overview(profile: dict[str, Any]) -> str:
    table = _dict(profile.get("table"))
    parts = [_warnings_list(profile.get("warnings"))]
    info = {
        "table": table.get("uri"),
        "version": table.get("version"),
        "format": table.get("format"),
        "rows": table.get("rows"),
    }
    info = {k: v for k, v in info.items() if v is not None}
    bad = _dict(profile.get("bad_rows"))
    if bad.get("total") is not None:
        info["bad rows"] = bad.get("total")
    parts.append(kv_table(info) if info else _empty("no table information"))
    splits = _dict(profile.get("splits"))
    if splits:
        total = sum(n for _, n in _counts(splits))
        rows: list[list[object]] = []
        for name, v in splits.items():
            n = _num(v)
            share = f"{n / total:.1%}" if n is not None and total > 0 else "—"
            rows.append([name, v, share])
        parts.append("<h3>Splits</h3>" + data_table(["split", "rows", "share"], rows, numeric=[False, True, True]))
    return "".join(parts)


def _profile_columns(columns: list[Any], total_rows: float | None) -> str:
    rows: list[list[object]] = []
    for col in columns:
        c = _dict(col)
        nulls = c.get("nulls")
        n_nulls = _num(nulls)
        null_txt = _fmt(nulls)
        if n_nulls is not None and total_rows:
            null_txt += f" ({n_nulls / total_rows:.1%})"
        rows.append(
            [
                c.get("name"),
                c.get("type"),
                null_txt,
                c.get("distinct"),
                c.get("min"),
                c.get("max"),
                c.get("mean"),
            ]
        )
    return data_table(
        ["column", "type", "nulls", "distinct", "min", "max", "mean"],
        rows,
        numeric=[False, False, True, True, True, True, True],
    )


def _profile_label(label: dict[str, Any]) -> str:
    parts: list[str] = []
    info = {k: label.get(k) for k in ("column", "task") if label.get(k) is not None}
    if info:
        parts.append(kv_table(info))
    counts = _dict(label.get("counts"))
    if counts:
        parts.append(_counts_chart(counts, title="Label counts (all splits)"))
    by_split = _dict(label.get("by_split"))
    # One class order for every split, so the same bar position means the same class across charts.
    order = [k for k, _ in _counts(counts)]
    for split_counts in by_split.values():
        order += [k for k, _ in _counts(split_counts) if k not in order]
    charts = []
    for split, split_counts in by_split.items():
        if not _dict(split_counts):
            continue
        total = sum(n for _, n in _counts(split_counts))
        charts.append(_counts_chart(split_counts, title=f"{split} ({_fmt(total)} rows)", order=order))
    if charts:
        parts.append(f'<h3>Per split</h3><div class="grid">{"".join(charts)}</div>')
    stats = _dict(label.get("stats"))
    if stats:
        parts.append("<h3>Target statistics</h3>" + kv_table(stats))
    return "".join(parts) or _empty()


def _profile_images(images: dict[str, Any]) -> str:
    parts: list[str] = []
    info = {k: images.get(k) for k in ("column", "count", "undecodable") if images.get(k) is not None}
    if info:
        parts.append(kv_table(info))
    sizes: list[tuple[str, float]] = []
    for entry in _list(images.get("sizes")):
        e = _list(entry)
        if len(e) >= 3 and (n := _num(e[2])) is not None:
            sizes.append((f"{_fmt(e[0])}x{_fmt(e[1])}", n))
    sizes.sort(key=lambda s: -s[1])
    charts: list[str] = []
    if sizes:
        charts.append(bar_chart_svg([s for s, _ in sizes], [n for _, n in sizes], title="Image sizes (WxH)"))
    if _dict(images.get("modes")):
        charts.append(_counts_chart(images.get("modes"), title="Colour modes"))
    if charts:
        parts.append(f'<div class="grid">{"".join(charts)}</div>')
    samples = _dict(images.get("samples"))
    for cls_name, thumbs in samples.items():
        shown = [(f"{cls_name} #{i + 1}", t) for i, t in enumerate(_list(thumbs))]
        if shown:
            parts.append(f"<h3>{_e(cls_name)}</h3>{image_grid(shown)}")
    return "".join(parts) or _empty()


def _profile_duplicates(dups: dict[str, Any], leakage: dict[str, Any]) -> str:
    parts: list[str] = []
    if dups:
        info = {k: dups.get(k) for k in ("rows", "groups") if dups.get(k) is not None}
        parts.append("<h3>Duplicate rows</h3>" + (kv_table(info) if info else ""))
        examples = [[", ".join(_fmt(k) for k in _list(ex)) or _fmt(ex)] for ex in _list(dups.get("examples"))]
        if examples:
            parts.append(data_table(["keys of one duplicate group"], examples))
    if leakage:
        info = {k: leakage.get(k) for k in ("rows",) if leakage.get(k) is not None}
        parts.append("<h3>Leakage across splits</h3>" + (kv_table(info) if info else ""))
        rows = []
        for ex in _list(leakage.get("examples")):
            d = _dict(ex)
            rows.append(
                [
                    ", ".join(_fmt(k) for k in _list(d.get("keys"))),
                    ", ".join(_fmt(s) for s in _list(d.get("splits"))),
                ]
            )
        if rows:
            parts.append(data_table(["keys", "splits"], rows))
    return "".join(parts) or _empty()


def _profile_bad_rows(bad: dict[str, Any]) -> str:
    parts: list[str] = []
    info: dict[str, object] = {}
    if bad.get("total") is not None:
        info["total"] = bad.get("total")
    frac = _num(bad.get("fraction"))
    if frac is not None:
        info["fraction"] = f"{frac:.2%}"
    if info:
        parts.append(kv_table(info))
    if _dict(bad.get("by_reason")):
        parts.append(_counts_chart(bad.get("by_reason"), title="Bad rows by reason"))
    rows = []
    for ex in _list(bad.get("examples")):
        d = _dict(ex)
        rows.append([d.get("key"), d.get("reason"), d.get("column"), d.get("source")])
    if rows:
        parts.append("<h3>Examples</h3>" + data_table(["key", "reason", "column", "source"], rows))
    return "".join(parts) or _empty()


def profile_html(profile: Mapping[str, Any]) -> str:
    """The data profile report; every key of the profile dict is optional."""
    p = _dict(profile)
    table = _dict(p.get("table"))
    uri = table.get("uri")
    title = f"Data profile: {uri}" if _present(uri) else "Data profile"
    sections: list[tuple[str, str]] = [("Overview", _profile_overview(p))]
    columns = _list(p.get("columns"))
    if columns:
        sections.append(("Columns", _profile_columns(columns, _num(table.get("rows")))))
    label = _dict(p.get("label"))
    if label:
        sections.append(("Label balance", _profile_label(label)))
    images = _dict(p.get("images"))
    if images:
        sections.append(("Images", _profile_images(images)))
    dups, leakage = _dict(p.get("duplicates")), _dict(p.get("leakage"))
    if dups or leakage:
        sections.append(("Duplicates and leakage", _profile_duplicates(dups, leakage)))
    missing = _dict(p.get("missing"))
    if missing:
        sections.append(("Missing values", _profile_missing(missing, _dict(p.get("unlabelled")))))
    bad = _dict(p.get("bad_rows"))
    if bad:
        sections.append(("Bad rows", _profile_bad_rows(bad)))
    return page(title, sections)


def _profile_missing(missing: dict[str, Any], unlabelled: dict[str, Any]) -> str:
    """Per feature: how many values are missing and what is done about them (missing is data, not a bad row)."""
    rows = [
        [name, info.get("column"), info.get("missing"), f"{_num(info.get('rate')) or 0.0:.1%}", info.get("action")]
        for name, info in ((n, _dict(v)) for n, v in missing.items())
    ]  # fmt: skip
    table = data_table(["feature", "column", "missing", "rate", "what is done"], rows)
    total = _num(unlabelled.get("total")) or 0
    note = (
        _note(f"{int(total)} row(s) have no label: not used for training or evaluation, still scored.") if total else ""
    )
    return table + note


# ---------------------------------------------------------------------------------------------------------
# Model evaluation report


def _eval_summary(report: dict[str, Any]) -> str:
    model = _dict(report.get("model"))
    info = {
        "model": model.get("name"),
        "version": model.get("version"),
        "uri": model.get("uri"),
        "task": report.get("task"),
        "split": report.get("split"),
        "rows": report.get("rows"),
    }
    info = {k: v for k, v in info.items() if v is not None}
    return kv_table(info) if info else _empty("no model information")


def _eval_metrics(metrics: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for name in sorted(metrics):
        arrow = "lower is better" if metric_mode(name) == "min" else "higher is better"
        rows.append([name, _fmt_metric(metrics[name]), arrow])
    return data_table(["metric", "value", "direction"], rows, numeric=[False, True, False])


def _eval_classification(report: dict[str, Any]) -> list[tuple[str, str]]:
    sections: list[tuple[str, str]] = []
    classes = [str(c) for c in _list(report.get("classes"))]
    cm = _list(report.get("confusion_matrix"))
    if cm:
        sections.append(
            (
                "Confusion matrix",
                heatmap_table(cm, classes, classes, title="", normalize="row", corner="true ↓ / predicted →"),
            )
        )
    per_class = _dict(report.get("per_class"))
    if per_class:
        order = [c for c in classes if c in per_class] + [c for c in per_class if c not in classes]
        rows = []
        for name in order:
            m = _dict(per_class[name])
            support = _num(m.get("support"))
            rows.append(
                [
                    name,
                    _fmt_metric(m.get("precision")),
                    _fmt_metric(m.get("recall")),
                    _fmt_metric(m.get("f1")),
                    int(support) if support is not None else m.get("support"),
                ]
            )
        sections.append(
            (
                "Per-class metrics",
                data_table(
                    ["class", "precision", "recall", "f1", "support"],
                    rows,
                    numeric=[False, True, True, True, True],
                ),
            )
        )
    return sections


def _eval_history(history: list[Any]) -> str:
    epochs = [_dict(h) for h in history]
    losses: dict[str, list[tuple[float, float]]] = {}
    others: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(epochs):
        x = _num(row.get("epoch"))
        x = float(i + 1) if x is None else x
        for key, value in row.items():
            y = _num(value)
            if key == "epoch" or y is None:
                continue
            if "loss" in key:
                losses.setdefault(key, []).append((x, y))
            elif key.startswith("val_"):
                others.setdefault(key, []).append((x, y))
    charts: list[str] = []
    if losses:
        # train_loss first, val_loss second, so colours match across reports.
        ordered = dict(sorted(losses.items(), key=lambda kv: (kv[0] != "train_loss", kv[0] != "val_loss", kv[0])))
        charts.append(line_chart_svg(ordered, title="Loss", x_label="epoch", y_label="loss"))
    if others:
        charts.append(line_chart_svg(others, title="Validation metrics", x_label="epoch", y_label="value"))
    if not charts:
        return _empty()
    return f'<div class="grid">{"".join(charts)}</div>'


def _eval_worst(worst: list[Any]) -> str:
    examples = [_dict(w) for w in worst]
    if any(_data_uri(w.get("thumbnail")) for w in examples):
        items: list[tuple[str, str | None]] = []
        for w in examples:
            conf = _num(w.get("confidence"))
            conf_txt = f" ({conf:.2f})" if conf is not None else ""
            caption = f"{_fmt(w.get('key'))}: {_fmt(w.get('label'))}→{_fmt(w.get('prediction'))}{conf_txt}"
            thumb = w.get("thumbnail")
            items.append((caption, thumb if isinstance(thumb, str) else None))
        return image_grid(items)
    rows = [[w.get("key"), w.get("label"), w.get("prediction"), _fmt_metric(w.get("confidence"))] for w in examples]
    return data_table(["key", "label", "prediction", "confidence"], rows, numeric=[False, False, False, True])


def _eval_baseline(baseline: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The deep model and the gradient-boosting baseline side by side, with the verdict in a sentence."""
    if baseline.get("skipped"):
        return _note(f"No baseline: {baseline['skipped']}.")
    theirs = _dict(baseline.get("metrics"))
    rows = [[k, _fmt_metric(metrics.get(f"test_{k}")), _fmt_metric(v)] for k, v in sorted(theirs.items())]
    summary = f"<p><b>{_e(baseline.get('summary', ''))}</b></p>"
    return summary + data_table(["test metric", "deep model", str(baseline.get("model", "baseline"))], rows)


def evaluation_html(report: Mapping[str, Any]) -> str:
    """The model evaluation report; every key of the report dict is optional."""
    r = _dict(report)
    model = _dict(r.get("model"))
    name = model.get("name")
    version = model.get("version")
    title = "Model evaluation"
    if _present(name):
        title += f": {name}"
        if _present(version):
            title += f" {version}" if str(version).lower().startswith("v") else f" v{version}"
    split = r.get("split")
    if _present(split):
        title += f" on {split}"
    sections: list[tuple[str, str]] = [("Summary", _eval_summary(r))]
    metrics = _dict(r.get("metrics"))
    if metrics:
        sections.append(("Metrics", _eval_metrics(metrics)))
    baseline = _dict(r.get("baseline"))
    if baseline:
        sections.append(("Baseline", _eval_baseline(baseline, metrics)))
    # Render what is present rather than trusting "task": a report may lack it or carry both kinds of data.
    sections.extend(_eval_classification(r))
    history = _list(r.get("history"))
    if history:
        sections.append(("Learning curves", _eval_history(history)))
    worst = _list(r.get("worst"))
    if worst:
        sections.append(("Most confidently wrong", _eval_worst(worst)))
    scatter = _list(r.get("scatter"))
    if scatter:
        sections.append(
            (
                "Predicted vs actual",
                scatter_svg(scatter, title="", x_label="actual", y_label="predicted", diagonal=True),
            )
        )
    return page(title, sections)
