"""The Jinja environment of the reports: templates under templates/, autoescaped, plus the formatting filters."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, TypeGuard

import jinja2
from markupsafe import Markup

from lakenet._version import __version__

__all__ = ["MAX_TABLE_ROWS", "env", "finite", "fmt", "in_order", "macro", "render", "trusted"]

# Caps keep a report for a 1000-class model or a 100,000-column table in the megabytes.
MAX_TABLE_ROWS = 500

_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_DATA_URI_RE = re.compile(r"^data:(image/(?:png|jpeg|gif|webp));base64,(.*)$", re.DOTALL)
# First base64 characters of each format's magic bytes, so a JPEG passed where a PNG was expected still shows.
_B64_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


def finite(value: object) -> TypeGuard[float]:
    """A real, finite number; bools are not counts."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: object) -> str:
    """Human formatting: thousands separators for integers, 4 significant-ish digits for floats."""
    if value is None or isinstance(value, jinja2.Undefined):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("∞" if value > 0 else "-∞")
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def fmt_metric(value: object) -> str:
    if not finite(value):
        return fmt(value)
    f = float(value)
    return f"{f:.4f}" if abs(f) < 1e5 else f"{f:.4g}"


def pct(value: object, digits: int = 1) -> str:
    return f"{float(value):.{digits}%}" if finite(value) else fmt(value)


def compact(data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries that have a value, for key/value tables built from optional fields."""
    return {k: v for k, v in data.items() if v is not None and not isinstance(v, jinja2.Undefined)}


def in_order(names: Iterable[str], order: Sequence[object]) -> list[str]:
    """names sorted by their place in order; names not in it keep their own order, after the others."""
    rank = {str(name): i for i, name in enumerate(order)}
    return sorted(map(str, names), key=lambda n: rank.get(n, len(rank)))


def slug(text: object) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section"


def data_uri(b64: object) -> str | None:
    """A safe data: URI for a base64 image, or None; anything else could break out of the src attribute."""
    if not isinstance(b64, str) or not b64:
        return None
    mime, payload = None, b64
    if match := _DATA_URI_RE.match(b64):
        mime, payload = match.group(1), match.group(2)
    payload = "".join(payload.split())
    if not payload or not _B64_RE.match(payload) or len(payload) % 4 == 1:
        return None
    # Unpadded base64 is common in JSON; pad it so strict decoders accept it.
    payload += "=" * (-len(payload) % 4)
    if mime is None:
        mime = next((m for prefix, m in _B64_MAGIC if payload.startswith(prefix)), "image/png")
    return f"data:{mime};base64,{payload}"


@cache
def env() -> jinja2.Environment:
    # ChainableUndefined: an absent section or field (report.model.name of a report without "model") renders as
    # nothing, and the templates decide with {% if %} what to show instead.
    e = jinja2.Environment(
        loader=jinja2.PackageLoader("lakenet.reports", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters.update(
        fmt=fmt, metric=fmt_metric, pct=pct, compact=compact, slug=slug, data_uri=data_uri, in_order=in_order
    )
    e.tests["finite"] = finite
    e.globals.update(lakenet_version=__version__, max_rows=MAX_TABLE_ROWS)
    return e


def macro(name: str) -> Any:
    """A macro of macros.html, callable from Python; it returns Markup."""
    return getattr(env().get_template("macros.html").module, name)


def render(template: str, **context: Any) -> str:
    return env().get_template(template).render(**context)


def trusted(html: str) -> Markup:
    """HTML that lakenet built itself (a chart, a table), to embed unescaped."""
    return Markup(html)
