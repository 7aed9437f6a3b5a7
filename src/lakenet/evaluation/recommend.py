"""task: recommendation — the evaluation on the time-based holdout: for a sample of the users with held-out
interactions, every catalogue item is ranked (the items a user interacted with in training and validation left
out, as a recommender would), and the test items' places give recall@k and NDCG@k; the same for the popularity
ranking (items by training interactions), the baseline a recommender must beat.

The pass runs on the engine: each fragment contributes, for the sampled users (a hash of the user below a bound,
the same users on every engine), the catalogue indices they interacted with by split and their earliest test
interaction's row (its user-side features, as they were then). The driver holds O(sampled users × their
interactions), never the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lakenet.data.codecs import strings
from lakenet.data.holdout import UserHoldout, order_values
from lakenet.data.sources import Snapshot
from lakenet.data.split import TEST, split_columns
from lakenet.evaluation.report import Baseline, Evaluation
from lakenet.inference.predictor import BundleTask, Predictor

__all__ = ["evaluate_recommendations", "ranking_metrics"]


def ranking_metrics(top: np.ndarray, relevant: list[set[int]], k: int) -> tuple[float, float]:
    """Mean recall@k (test items found in the top k ÷ the user's test items, at most k) and NDCG@k (binary
    relevance) over the users; `top` (users, ≥ k) catalogue indices, best first."""
    recall, ndcg = [], []
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for row, rel in zip(top[:, :k], relevant, strict=True):
        if not rel:
            continue
        hit = np.array([i in rel for i in row], dtype=np.float64)
        recall.append(hit.sum() / min(len(rel), k))
        ndcg.append(float((hit * discount).sum() / discount[: min(len(rel), k)].sum()))
    return (float(np.mean(recall)) if recall else 0.0), (float(np.mean(ndcg)) if ndcg else 0.0)


@dataclass
class _Users:
    """Sampled users: catalogue indices seen (train + validation) and held out (test), and their first test row."""

    seen: dict[str, set[int]] = field(default_factory=dict)
    test: dict[str, set[int]] = field(default_factory=dict)
    first: dict[str, tuple[tuple[float, str], pa.Table]] = field(default_factory=dict)

    def merge(self, other: _Users) -> _Users:
        for u, s in other.seen.items():
            self.seen.setdefault(u, set()).update(s)
        for u, s in other.test.items():
            self.test.setdefault(u, set()).update(s)
        for u, (when, row) in other.first.items():
            if u not in self.first or when < self.first[u][0]:
                self.first[u] = (when, row)
        return self


class _UsersTask(BundleTask):
    def __init__(self, predictor: Predictor, bundle_dir: str | None, holdout: UserHoldout, bound: int | None) -> None:
        super().__init__(predictor, bundle_dir)
        self.holdout, self.bound = holdout, bound

    def __call__(self, _fi: int, _frag: Any, table: pa.Table) -> _Users:
        pre = self.scorer().pre
        h = self.holdout
        users = strings(table.column(h.user))
        rows = (
            np.arange(len(users)) if self.bound is None else np.flatnonzero(_user_hash(users) < np.uint64(self.bound))
        )
        out = _Users()
        if not len(rows):
            return out
        table = table.take(pa.array(rows))
        users = [users[i] for i in rows]
        items = pre.encode_interactions(table)
        codes = h.codes(table)
        times, keys = order_values(table, h.time, h.key)
        for i, (u, item, code) in enumerate(zip(users, items.tolist(), codes.tolist(), strict=True)):
            if u is None or item < 0:
                continue
            if code == TEST:
                out.test.setdefault(u, set()).add(item)
                when = (float(times[i]), keys[i])
                if u not in out.first or when < out.first[u][0]:
                    out.first[u] = (when, table.slice(i, 1))
            else:
                out.seen.setdefault(u, set()).add(item)
        return out


def _user_hash(users: list[str | None]) -> np.ndarray:
    return pd.util.hash_array(np.asarray([u or "" for u in users], dtype=object), categorize=False)


def evaluate_recommendations(
    snap: Snapshot,
    predictor: Predictor,
    holdout: UserHoldout,
    *,
    k: int,
    eval_users: int,
    exclude_seen: bool = True,
    engine: Any = None,
    bundle_dir: str | None = None,
) -> Evaluation:
    """Recall@k and NDCG@k of the model and of the popularity ranking on the test interactions of up to
    `eval_users` users (sampled by a hash of the user: the same users on every engine and every run)."""
    share = eval_users / max(len(holdout.cuts), 1)
    task = _UsersTask(predictor, bundle_dir, holdout, None if share >= 1 else int(share * 2**64))
    columns = list(dict.fromkeys([*predictor.pre.columns(with_label=True), *split_columns(holdout.key, holdout)]))
    if engine is not None and bundle_dir is not None:
        parts: Any = engine.map_fragments(task, snap, columns)
    else:
        parts = (task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns))
    users = _Users()
    for p in parts:
        users = users.merge(p)
    names = sorted(u for u in users.first if users.test.get(u))[:eval_users]
    head: dict[str, Any] = {"task": "recommendation", "split": "test", "rows": len(names), "skipped_rows": 0}
    if not names:
        return Evaluation(**head, metrics={})
    rec = predictor.recommender(k)
    rows = pa.concat_tables([users.first[u][1] for u in names], promote_options="default")
    scores, valid, _cold, _ = rec.scores(rows)
    kept = [u for u, ok in zip(names, valid.tolist(), strict=True) if ok]
    relevant = [users.test[u] for u in kept]
    exclude = [users.seen.get(u, set()) if exclude_seen else set() for u in kept]
    model_recall, model_ndcg = ranking_metrics(rec.top(scores, exclude, k), relevant, k)
    popular = np.tile(rec.popularity, (len(kept), 1))
    pop_recall, pop_ndcg = ranking_metrics(rec.top(popular, exclude, k), relevant, k)
    metrics = {f"test_recall_at_{k}": model_recall, f"test_ndcg_at_{k}": model_ndcg, "test_users": float(len(kept))}
    baseline = Baseline(
        model="popularity",
        metrics={f"recall_at_{k}": pop_recall, f"ndcg_at_{k}": pop_ndcg},
        headline=f"ndcg_at_{k}",
        train_rows=int(rec.popularity.sum()),
        summary=_sentence(k, model_recall, model_ndcg, pop_recall, pop_ndcg),
    )
    return Evaluation(**{**head, "rows": len(kept), "skipped_rows": len(names) - len(kept)}, metrics=metrics,
                      baseline=baseline)  # fmt: skip


def _sentence(k: int, recall: float, ndcg: float, pop_recall: float, pop_ndcg: float) -> str:
    def times(a: float, b: float) -> str:
        return f"{a / b:.2f}×" if b > 0 else "∞×"

    verdict = "beats" if ndcg > pop_ndcg + 1e-9 else "does not beat"
    return (
        f"The model {verdict} the popularity ranking: recall@{k} {recall:.3f} against {pop_recall:.3f} "
        f"({times(recall, pop_recall)}), NDCG@{k} {ndcg:.3f} against {pop_ndcg:.3f} ({times(ndcg, pop_ndcg)})."
    )
