"""`lakenet drift`: sample the model's training rows and the newer rows, compare them, and leave the evidence: an
HTML report with a plot per drifted feature, a JSON file, and one row per check appended (once) to a Delta
monitoring table that a dashboard can read."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakenet.config.schema import MonitorConfig, SplitConfig
from lakenet.data.changes import table_changes
from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.sources import open_table
from lakenet.errors import DataError
from lakenet.inference.predictor import Predictor
from lakenet.monitoring.drift import DriftReport, compare, sample_rows

__all__ = ["MONITORING_SCHEMA", "DriftResult", "run_drift"]

MONITORING_SCHEMA = pa.schema(
    [
        ("checked_at", pa.timestamp("us", tz="UTC")),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("table", pa.string()),
        ("reference_version", pa.int64()),
        ("current_from", pa.int64()),
        ("current_to", pa.int64()),
        ("check", pa.string()),
        ("kind", pa.string()),
        ("statistic", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("pvalue", pa.float64()),
        ("drifted", pa.bool_()),
        ("verdict", pa.string()),
        ("reference_rows", pa.int64()),
        ("current_rows", pa.int64()),
    ]
)


@dataclass(frozen=True)
class DriftResult:
    verdict: str  # drift, no drift, too few rows
    drifted: list[str]
    report: DriftReport
    html: Path
    json: Path
    monitoring_table: str | None
    reference: dict[str, Any]
    current: dict[str, Any]


def run_drift(
    predictor: Predictor,
    *,
    model: str,
    table: str | None,
    version: int | None,
    since: int | None,
    cfg: MonitorConfig,
    out_dir: Path,
    engine: Any = None,
) -> DriftResult:
    """Compare the model's training rows with `table` (default: the table it learned from): the rows added after
    `since` (default: the version it learned from), or every row of `version` when `since` is None and a version
    or another table is given. `engine`: where the tables are read and sampled (default: this process)."""
    bundle = predictor.bundle
    if predictor.task == "recommendation":
        raise DataError(
            f"{model} is a recommender: drift compares a row-wise model's inputs and predictions, which a top-k per "
            "user is not; watch its test recall@k with `lakenet evaluate` instead"
        )
    where = engine.map_fragments if engine is not None else None
    ref_uri, ref_version = bundle.lineage.get("table"), bundle.lineage.get("table_version")
    if not ref_uri:
        raise DataError(f"{model} records no training table in its lineage; it cannot be compared with one.")
    pre = predictor.pre
    split = SplitConfig(**bundle.training.get("split", {}))
    labels = [pre.label.column] if pre.label.column is not None else []
    columns = list(dict.fromkeys([*pre.input_columns(), *labels]))
    ref_snap = open_table(str(ref_uri), ref_version if isinstance(ref_version, int) else None)
    reference = sample_rows(ref_snap, _present(columns, ref_snap), pre.key, cfg.sample_rows, split=split,
                            map_fragments=where)  # fmt: skip
    target = table or str(ref_uri)
    start = since if since is not None else (ref_version if table is None and version is None else None)
    cur_from: int | None
    cur_to: int | None
    if start is not None:
        changes = table_changes(target, start, pre.key, version)
        snap, cur_from, cur_to = changes.added, start, changes.version
    else:
        snap = open_table(target, version)
        cur_from, cur_to = None, snap.version
    current = sample_rows(snap, _present(columns, snap), pre.key, cfg.sample_rows, map_fragments=where)
    report = compare(predictor, reference, current, cfg, label=pre.label.column)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_info = {"table": str(ref_uri), "version": ref_version, "rows": reference.num_rows, "split": "train"}
    cur_info = {"table": target, "from_version": cur_from, "to_version": cur_to, "rows": current.num_rows}
    doc = {
        "model": model,
        "model_version": predictor.model_version,
        "verdict": report.verdict,
        "reference": ref_info,
        "current": cur_info,
        "thresholds": cfg.model_dump(),
        "checks": [asdict(c) for c in report.checks],
    }
    json_path, html_path = out_dir / "drift.json", out_dir / "drift.html"
    _atomic(json_path, json.dumps(doc, indent=2, default=str))
    _atomic(html_path, _html(doc, report))
    monitoring = None
    if report.checks:
        monitoring = cfg.table or _monitoring_uri(target)
        _append_checks(monitoring, doc, report, ref_version, cur_from, cur_to)
    return DriftResult(
        report.verdict, [c.name for c in report.drifted], report, html_path, json_path, monitoring, ref_info, cur_info
    )


def _present(columns: list[str], snap: Any) -> list[str]:
    return [c for c in columns if c in snap.schema.names]


def _monitoring_uri(table: str) -> str:
    p = Path(table[len("file://") :] if table.startswith("file://") else table)
    stem = p.stem if p.is_file() else p.name
    return str(p.with_name(f"{stem}_monitoring"))


def _append_checks(uri: str, doc: dict[str, Any], report: DriftReport, ref: Any, cur_from: Any, cur_to: Any) -> None:
    """One row per check, once per (model version, table, versions compared): a rerun appends nothing."""
    now = pa.scalar(int(time.time() * 1e6), pa.timestamp("us", tz="UTC"))
    rows: dict[str, list[Any]] = {f.name: [] for f in MONITORING_SCHEMA}
    for c in report.checks:
        values = {
            "checked_at": now.as_py(),
            "model": doc["model"],
            "model_version": str(doc["model_version"]),
            "table": doc["current"]["table"],
            "reference_version": ref if isinstance(ref, int) else None,
            "current_from": cur_from,
            "current_to": cur_to,
            "check": c.name,
            "kind": c.kind,
            "statistic": c.statistic,
            "value": float(c.value),
            "threshold": float(c.threshold),
            "pvalue": None if c.pvalue is None else float(c.pvalue),
            "drifted": bool(c.drifted),
            "verdict": report.verdict,
            "reference_rows": report.reference_rows,
            "current_rows": report.current_rows,
        }
        for k, v in values.items():
            rows[k].append(v)
    txn = app_id("drift", doc["model"], doc["model_version"], doc["current"]["table"], ref, cur_from, cur_to)
    commit_once(uri, pa.table(rows, schema=MONITORING_SCHEMA), txn=txn, metadata={"lakenet.job": "drift"})


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _plot(check: Any) -> str | None:
    """Reference and current shares per bin as grouped bars: an inline SVG in the reports' style (no pyplot, and
    fixed margins: a constrained or tight layout draws the figure twice, half the cost of a drift check)."""
    detail = check.detail
    if "bins" not in detail:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    from lakenet.reports.charts import PALETTE, figure_svg, styled

    bins = detail["bins"]
    x = np.arange(len(bins))
    with styled():
        fig = Figure(figsize=(max(4.0, 0.45 * len(bins)), 2.8))
        ax = fig.subplots()
        ax.bar(x - 0.2, detail["reference"], 0.4, label="reference (training)", color=PALETTE[0])
        ax.bar(x + 0.2, detail["current"], 0.4, label="current", color=PALETTE[1])
        ax.set_xticks(x, [str(b)[:14] for b in bins], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share of rows", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{check.name}: PSI {check.value:.3f}", fontsize=9)
        ax.legend(fontsize=7)
        fig.subplots_adjust(left=0.13, right=0.98, top=0.9, bottom=0.33)
        return str(figure_svg(fig))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift: {{ doc.model }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.bad{background:#fde2e1}.verdict{font-size:1.3em}
</style></head><body>
<h1>Drift report: {{ doc.model }} (version {{ doc.model_version }})</h1>
<p class="verdict">Verdict: <b>{{ doc.verdict }}</b>{% if drifted %} ({{ drifted|join(", ") }}){% endif %}</p>
<p>Reference: the training split of {{ doc.reference.table }} version {{ doc.reference.version }},
{{ doc.reference.rows }} rows sampled. Current: {{ doc.current.table }}
{% if doc.current.from_version is not none %}rows added after version {{ doc.current.from_version }} up to
{% else %}version {% endif %}{{ doc.current.to_version }}, {{ doc.current.rows }} rows sampled.</p>
<table><tr><th>check</th><th>kind</th><th>statistic</th><th>value</th><th>threshold</th><th>p-value</th>
<th>drifted</th></tr>
{% for c in checks %}<tr class="{{ 'bad' if c.drifted else '' }}"><td>{{ c.name }}</td><td>{{ c.kind }}</td>
<td>{{ c.statistic }}</td><td>{{ '%.4f'|format(c.value) }}</td><td>{{ c.threshold }}</td>
<td>{{ '' if c.pvalue is none else '%.3g'|format(c.pvalue) }}</td><td>{{ 'yes' if c.drifted else 'no' }}</td></tr>
{% endfor %}</table>
{% for name, svg in plots %}<h3>{{ name }}</h3>{{ svg }}
{% endfor %}
<p>Thresholds: {{ doc.thresholds }}</p></body></html>
"""


def _html(doc: dict[str, Any], report: DriftReport) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(autoescape=True)
    plots = [(c.name, Markup(svg)) for c in report.drifted if (svg := _plot(c)) is not None]
    return env.from_string(_TEMPLATE).render(doc=doc, checks=report.checks, drifted=[c.name for c in report.drifted],
                                             plots=plots)  # fmt: skip
