"""`lakenet predict` with a recommendation model: the top-k items of every user in the table, one row per
(user, rank), written to a Delta table as one commit, exactly once per input version and model. The users pass
runs on the engine (each user's latest row, with the user-side features as they are now, and the items they
already interacted with, which are left out); the scoring is a user-tower pass and a product with the catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs import strings
from lakenet.data.delta_io import already_committed, app_id, commit_once
from lakenet.data.holdout import order_values
from lakenet.data.sources import Snapshot
from lakenet.inference.predictor import BundleTask, Predictor
from lakenet.workflows.common import table_uri

__all__ = ["RECOMMENDATION_SCHEMA", "write_recommendations"]

RECOMMENDATION_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("rank", pa.int32()),
        ("item", pa.string()),
        ("score", pa.float32()),
        ("source", pa.string()),  # model, or popularity for a user the model never learned
        ("model_name", pa.string()),
        ("model_version", pa.string()),
    ]
)
_CHUNK = 256  # users scored at a time: their (users × catalogue) float32 scores stay ≤ 100 MB at 100,000 items


@dataclass
class _Latest:
    """Per user: the latest row (by time, then key) and the catalogue indices seen."""

    rows: dict[str, tuple[tuple[float, str], pa.Table]] = field(default_factory=dict)
    seen: dict[str, set[int]] = field(default_factory=dict)

    def merge(self, other: _Latest) -> _Latest:
        for u, (when, row) in other.rows.items():
            if u not in self.rows or when > self.rows[u][0]:
                self.rows[u] = (when, row)
        for u, s in other.seen.items():
            self.seen.setdefault(u, set()).update(s)
        return self


class _LatestTask(BundleTask):
    def __init__(self, predictor: Predictor, bundle_dir: str, time: str | None, exclude_seen: bool) -> None:
        super().__init__(predictor, bundle_dir)
        self.time, self.exclude_seen = time, exclude_seen

    def __call__(self, _fi: int, _frag: Any, table: pa.Table) -> _Latest:
        rec = self.scorer().recommender()
        out = _Latest()
        users = strings(table.column(rec.user_codec.column))
        times, keys = order_values(table, self.time, rec.pre.key)
        items = None
        if self.exclude_seen and rec.item_codec.column in table.column_names:
            items = rec.item_index(strings(table.column(rec.item_codec.column)))
        for i, u in enumerate(users):
            if u is None:
                continue
            when = (float(times[i]), keys[i])
            if u not in out.rows or when > out.rows[u][0]:
                out.rows[u] = (when, table.slice(i, 1))
            if items is not None and items[i] > 0:
                out.seen.setdefault(u, set()).add(int(items[i]))
        return out


def write_recommendations(
    predictor: Predictor,
    snap: Snapshot,
    out: str,
    *,
    bundle_dir: Path,
    model: str,
    model_id: str,
    training: dict[str, Any],
    engine: Any = None,
    k: int | None = None,
) -> tuple[str, int, int, bool]:
    """(output URI, users, users that could not be scored, committed)."""
    rec_cfg = training.get("config", {}).get("recommend", {})
    time = rec_cfg.get("timestamp") if rec_cfg.get("timestamp") in snap.schema.names else None
    exclude_seen = bool(rec_cfg.get("exclude_seen", True))
    rec = predictor.recommender(k)
    k = k or rec.k
    out_uri = table_uri(out)
    txn = app_id("recommend", snap.uri, snap.version, snap.fingerprint, predictor.model_name, model_id, out_uri, k)
    if already_committed(out_uri, txn):
        return out_uri, 0, 0, False
    item = [rec.item_codec.column] if rec.item_codec.column in snap.schema.names else []
    columns = list(dict.fromkeys([rec.pre.key, *rec.user_columns, *([time] if time else []), *item]))
    task = _LatestTask(predictor, str(bundle_dir), time, exclude_seen)
    if engine is not None:
        parts: Any = engine.map_fragments(task, snap, columns)
    else:
        parts = (task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns))
    latest = _Latest()
    for p in parts:
        latest = latest.merge(p)
    users = sorted(latest.rows)
    batches, bad = [], 0
    for start in range(0, len(users), _CHUNK):
        chunk = users[start : start + _CHUNK]
        rows = pa.concat_tables([latest.rows[u][1] for u in chunk], promote_options="default")
        scored = rec(rows, exclude=[latest.seen.get(u, set()) for u in chunk], k=k)
        bad += int(sum(e is not None for e in scored.column("error").to_pylist()))
        batches.append(_explode(scored, predictor))
    table = pa.concat_tables(batches) if batches else RECOMMENDATION_SCHEMA.empty_table()
    metadata = {"lakenet.model": model, "lakenet.model_version": str(predictor.model_version),
                "lakenet.input": snap.uri, "lakenet.input_version": str(snap.version), "lakenet.k": str(k)}  # fmt: skip
    # The table holds the latest recommendations: each run for a new input version or model replaces them.
    committed = commit_once(out_uri, table, txn=txn, mode="overwrite", metadata=metadata)
    return out_uri, len(users), bad, committed


def _explode(scored: pa.Table, predictor: Predictor) -> pa.Table:
    """One row per (user, rank) from one row per user with lists."""
    users, items, scores, source = (scored.column(c).to_pylist() for c in ("user", "items", "scores", "source"))
    out: dict[str, list[Any]] = {n: [] for n in RECOMMENDATION_SCHEMA.names}
    for u, its, ss, src in zip(users, items, scores, source, strict=True):
        if its is None:
            continue
        for rank, (item, s) in enumerate(zip(its, ss, strict=True), start=1):
            for name, value in zip(RECOMMENDATION_SCHEMA.names, (u, rank, item, s, src, predictor.model_name,
                                                                   predictor.model_version), strict=True):  # fmt: skip
                out[name].append(value)
    return pa.table(out, schema=RECOMMENDATION_SCHEMA)


def recommendation_vectors(predictor: Predictor) -> tuple[list[str], np.ndarray]:
    """The catalogue's items and their vectors (the item tower's output), for `lakenet featurize`."""
    rec = predictor.recommender()
    keep = np.flatnonzero(~rec.never)
    return [str(v) for v in rec.items[keep]], rec.item_matrix[keep]
