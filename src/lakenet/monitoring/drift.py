"""Drift: do the rows a model is asked about now look like the rows it learned from?

Reference: the training split of the table version the model learned from (its lineage). Current: the rows later
versions added (or any table/version). Both sides are sampled deterministically by key hash (bottom-k), so the
same tables give the same verdict. Per input feature:

- numbers: the population stability index over the reference's deciles (plus a missing bin) and the two-sample
  Kolmogorov-Smirnov test (scipy); drifted when PSI ≥ monitor.psi and the KS test rejects at monitor.pvalue
  (Bonferroni-corrected over the features) — both, so a large sample's tiny shift or a small sample's noise
  alone raises nothing;
- categories and booleans: PSI over the values (plus missing and "never seen"), and the rate of values the model
  has never seen;
- dates: PSI over hour of day and day of week (the calendar itself always moves on);
- images, text and vectors: the model's own embedding of the rows (what its head sees), projected on the
  reference's first principal components, one KS test per component (Bonferroni);
- the label (when the new rows have one) and the model's predictions: PSI, or KS for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lakenet.config.schema import MonitorConfig, SplitConfig
from lakenet.data.codecs import strings, to_float
from lakenet.data.codecs.boolean import to_bool
from lakenet.data.codecs.datetime import parse_datetimes
from lakenet.data.sources import Snapshot
from lakenet.data.split import TRAIN, split_columns, table_splits
from lakenet.inference.predictor import Predictor

__all__ = ["Check", "DriftReport", "compare", "psi", "sample_rows"]

_EPS = 1e-4
_COMPONENTS = 5
_EMBED_ROWS = 1000


@dataclass(frozen=True)
class Check:
    """One feature (or the label, or the predictions) compared."""

    name: str
    kind: str  # numeric, category, boolean, datetime, embedding, label, prediction
    statistic: str  # psi, ks, psi+ks, unseen_rate, ks_components
    value: float  # the statistic that decides (PSI, or the largest KS statistic for embeddings)
    threshold: float
    drifted: bool
    pvalue: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # bins and shares, for the report's plot


@dataclass(frozen=True)
class DriftReport:
    reference_rows: int
    current_rows: int
    checks: list[Check]
    verdict: str  # "drift", "no drift", or "too few rows"

    @property
    def drifted(self) -> list[Check]:
        return [c for c in self.checks if c.drifted]


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two vectors of bin shares (each summing to 1)."""
    r = np.clip(reference, _EPS, None)
    c = np.clip(current, _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _shares(values: list[Any], bins: list[Any]) -> np.ndarray:
    counts = pd.Series(values, dtype=object).value_counts()
    out = np.array([counts.get(b, 0) for b in bins], dtype=np.float64)
    return out / max(out.sum(), 1.0)


def sample_rows(
    snap: Snapshot,
    columns: list[str],
    key: str,
    k: int,
    *,
    split: SplitConfig | None = None,
    map_fragments: Any = None,
) -> pa.Table:
    """Up to `k` rows (training split only when `split` is given), the same ones whatever the file layout: the
    rows whose key hashes are smallest. `map_fragments` (an engine's): where the fragments are read; each returns
    at most `k` rows and the samples merge, so the driver holds O(k) rows, never the table."""
    read = list(dict.fromkeys([*(split_columns(key, split) if split is not None else [key]), *columns]))
    sample = _Sample(k, key, split)
    if map_fragments is None:
        parts: Any = (sample(fi, piece, table) for fi, piece, table in snap.iter_pieces(read))
    else:
        parts = map_fragments(sample, snap, read)
    merged: _Sample | None = None
    for part in parts:
        merged = part if merged is None else merged.merge(part)
    if merged is None or merged.rows is None:
        return pa.table({c: pa.array([]) for c in read})
    order = np.argsort(merged.rows.column("__h").to_numpy(), kind="stable")[:k]
    return merged.rows.take(pa.array(order)).drop_columns(["__h"])


class _Sample:
    """`(fragment index, fragment, table) -> _Sample`: the bottom-k rows by key hash of what it has seen; two
    samples merge into the bottom k of both."""

    def __init__(self, k: int, key: str, split: SplitConfig | None, rows: pa.Table | None = None) -> None:
        self.k, self.key, self.split, self.rows = k, key, split, rows

    def __call__(self, _fi: int, _frag: Any, table: pa.Table) -> _Sample:
        if self.split is not None:
            table = table.filter(pa.array(table_splits(table, self.key, self.split) == TRAIN))
        if not table.num_rows:
            return _Sample(self.k, self.key, self.split)
        keys = np.asarray(table.column(self.key).cast(pa.string()).to_pylist(), dtype=object)
        hashes = pd.util.hash_array(keys, categorize=False)
        return _Sample(self.k, self.key, self.split, table.append_column("__h", pa.array(hashes))).bottom()

    def merge(self, other: _Sample) -> _Sample:
        if self.rows is None or other.rows is None:
            return self if other.rows is None else other
        both = pa.concat_tables([self.rows, other.rows], promote_options="default")
        return _Sample(self.k, self.key, self.split, both).bottom()

    def bottom(self) -> _Sample:
        assert self.rows is not None
        if self.rows.num_rows <= self.k:
            return self
        order = np.argsort(self.rows.column("__h").to_numpy(), kind="stable")[: self.k]
        return _Sample(self.k, self.key, self.split, self.rows.take(pa.array(np.sort(order))))


def _numeric_check(name: str, ref: np.ndarray, cur: np.ndarray, cfg: MonitorConfig, tests: int) -> Check:
    from scipy.stats import ks_2samp

    r_ok, c_ok = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    edges = np.unique(np.quantile(r_ok, np.linspace(0, 1, 11))) if len(r_ok) else np.array([0.0])
    inner = edges[1:-1]

    def shares(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(inner, ok, side="right"), minlength=len(inner) + 1).astype(float)
        counts = np.append(counts, len(x) - len(ok))  # the missing bin
        return counts / max(len(x), 1)

    rs, cs = shares(ref, r_ok), shares(cur, c_ok)
    value = psi(rs, cs)
    p = float(ks_2samp(r_ok, c_ok).pvalue) if len(r_ok) and len(c_ok) else 1.0
    alpha = cfg.pvalue / max(tests, 1)
    labels = [f"≤{e:.4g}" for e in inner] + ([f">{inner[-1]:.4g}"] if len(inner) else ["all"]) + ["missing"]
    return Check(name, "numeric", "psi+ks", value, cfg.psi, value >= cfg.psi and p < alpha, p,
                 {"bins": labels, "reference": rs.tolist(), "current": cs.tolist()})  # fmt: skip


def _category_check(name: str, ref: list[Any], cur: list[Any], known: set[str] | None, cfg: MonitorConfig,
                    kind: str = "category") -> Check:  # fmt: skip
    values = sorted({v for v in ref if v is not None}, key=str)[:50]
    bins = [*values, "(other)", "(missing)"]

    def binned(xs: list[Any]) -> list[Any]:
        return ["(missing)" if v is None else v if v in values else "(other)" for v in xs]

    rs, cs = _shares(binned(ref), bins), _shares(binned(cur), bins)
    value = psi(rs, cs)
    present = [v for v in cur if v is not None]
    unseen = sum(1 for v in present if known is not None and v not in known) / max(len(present), 1)
    drifted = value >= cfg.psi or (known is not None and unseen >= cfg.unseen_rate)
    detail = {"bins": [str(b) for b in bins], "reference": rs.tolist(), "current": cs.tolist(), "unseen_rate": unseen}
    return Check(name, kind, "psi", value, cfg.psi, drifted, None, detail)


def _embedding_check(name: str, ref: np.ndarray, cur: np.ndarray, cfg: MonitorConfig) -> Check:
    """Two-sample test in the model's embedding space: KS on the reference's first principal components."""
    from scipy.stats import ks_2samp

    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    comps = vt[: min(_COMPONENTS, vt.shape[0])]
    r, c = (ref - mean) @ comps.T, (cur - mean) @ comps.T
    stats = [ks_2samp(r[:, j], c[:, j]) for j in range(comps.shape[0])]
    pmin = min(float(s.pvalue) for s in stats) * len(stats)  # Bonferroni
    dmax = max(float(s.statistic) for s in stats)
    # drifted: significant, and not a negligible effect (a KS distance under 0.1 is a sample-size artefact)
    drifted = pmin < cfg.pvalue and dmax >= 0.1
    return Check(name, "embedding", "ks_components", dmax, 0.1, drifted, min(pmin, 1.0),
                 {"components": len(stats), "ks": [float(s.statistic) for s in stats]})  # fmt: skip


def compare(
    predictor: Predictor, reference: pa.Table, current: pa.Table, cfg: MonitorConfig, *, label: str | None
) -> DriftReport:
    """Every check between two samples of rows, with the verdict."""
    pre = predictor.pre
    if current.num_rows < cfg.min_rows:
        return DriftReport(reference.num_rows, current.num_rows, [], "too few rows")
    checks: list[Check] = []
    tests = len(pre.features) + 2
    embed = False
    for codec in pre.features:
        col, name = codec.column, codec.name
        if codec.type == "numeric":
            r, _ = to_float(reference.column(col), col)
            c, _ = to_float(current.column(col), col)
            checks.append(_numeric_check(name, r, c, cfg, tests))
        elif codec.type == "category":
            known = set(codec.state.vocab) if codec.state.vocab else None
            checks.append(_category_check(name, strings(reference.column(col)), strings(current.column(col)),
                                          known, cfg))  # fmt: skip
        elif codec.type == "boolean":
            rb, cb = _as_bool(reference.column(col)), _as_bool(current.column(col))
            checks.append(_category_check(name, rb, cb, None, cfg, "boolean"))
        elif codec.type == "datetime":
            tz = codec.state.timezone
            rt, ct = parse_datetimes(reference.column(col), tz)[0], parse_datetimes(current.column(col), tz)[0]
            for part, fn in (("hour", lambda s: s.dt.hour), ("weekday", lambda s: s.dt.dayofweek)):
                ref_v = [None if pd.isna(v) else int(v) for v in fn(rt)]
                cur_v = [None if pd.isna(v) else int(v) for v in fn(ct)]
                checks.append(_category_check(f"{name}.{part}", ref_v, cur_v, None, cfg, "datetime"))
        else:
            embed = True
    if embed:
        checks.append(_embedding_check("embedding", _embed(predictor, reference), _embed(predictor, current), cfg))
    if label is not None and label in current.column_names and label in reference.column_names:
        if pre.label.task in ("classification", "anomaly"):
            checks.append(_category_check("label", strings(reference.column(label)), strings(current.column(label)),
                                          set(pre.label.classes or []), cfg, "label"))  # fmt: skip
        else:
            r, _ = to_float(reference.column(label), label)
            c, _ = to_float(current.column(label), label)
            checks.append(replace(_numeric_check("label", r, c, cfg, tests), kind="label"))
    rp, cp = predictor(reference), predictor(current)
    if pre.label.task == "classification":
        checks.append(_category_check("prediction", rp.column("prediction").to_pylist(),
                                      cp.column("prediction").to_pylist(), None, cfg, "prediction"))  # fmt: skip
    else:  # a value, or an anomaly model's calibrated score
        out = "score" if pre.label.task == "anomaly" else "prediction"
        r = np.asarray(rp.column(out).to_numpy(zero_copy_only=False), dtype=np.float64)
        c = np.asarray(cp.column(out).to_numpy(zero_copy_only=False), dtype=np.float64)
        checks.append(replace(_numeric_check("prediction", r, c, cfg, tests), kind="prediction"))
    inputs = [c for c in checks if c.kind not in ("label", "prediction")]
    verdict = "drift" if any(c.drifted for c in inputs) else "no drift"
    return DriftReport(reference.num_rows, current.num_rows, checks, verdict)


def _as_bool(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    v, missing, _ = to_bool(col)
    return [None if m else bool(x) for x, m in zip(v, missing, strict=True)]


def _embed(predictor: Predictor, rows: pa.Table) -> np.ndarray:
    """What the model's head sees for these rows (its features()), for a sample of them."""
    import torch

    rows = rows.slice(0, _EMBED_ROWS)
    enc = predictor.pre.encode(rows, with_label=False)
    model = predictor.model
    if model is None or not hasattr(model, "features"):
        return predictor.forward(enc.inputs).reshape(enc.num_valid, -1).astype(np.float64)
    with torch.inference_mode():
        out = model.features({k: torch.from_numpy(v) for k, v in enc.inputs.items()})  # type: ignore[operator]
    return np.asarray(out.float().numpy(), dtype=np.float64)
