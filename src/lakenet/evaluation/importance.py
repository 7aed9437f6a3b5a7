"""The global view of a model in its evaluation: permutation importance per input column on the test split
(scikit-learn's, with a confidence interval over the repeats), and for image models the average attribution map
of each true class."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.config.schema import SplitConfig
from lakenet.data.sources import Snapshot
from lakenet.data.split import TEST, split_columns, table_splits
from lakenet.evaluation.report import ColumnImportance
from lakenet.inference.predictor import Predictor

__all__ = ["class_maps", "permutation_importance", "test_rows"]


def test_rows(snap: Snapshot, predictor: Predictor, split: SplitConfig, limit: int) -> pa.Table | None:
    """Up to `limit` labelled test rows, in table order (deterministic)."""
    pre = predictor.pre
    cols = list(dict.fromkeys([*pre.columns(with_label=True), *split_columns(pre.key, split)]))
    got: list[pa.Table] = []
    n = 0
    for frag in snap.fragments:
        table = snap.read(frag, cols)
        table = table.filter(pa.array(table_splits(table, pre.key, split) == TEST))
        table = table.filter(pa.compute.is_valid(table.column(pre.label.column)))
        got.append(table.slice(0, limit - n))
        n += got[-1].num_rows
        if n >= limit:
            break
    return pa.concat_tables(got) if n else None


class _Scored:
    """The predictor as scikit-learn's permutation_importance wants it (an estimator whose score it can take)."""

    def __init__(self, predictor: Predictor, metric: str) -> None:
        self.predictor, self.metric = predictor, metric

    def fit(self, *_: Any) -> _Scored:  # already trained
        return self

    def score(self, x: Any, y: Any) -> float:
        from sklearn import metrics

        p = self.predictor
        out = p(pa.Table.from_pandas(x, preserve_index=False))
        ok = np.asarray(pa.compute.is_null(out.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
        y = np.asarray(y, dtype=object)[ok]
        if not p.classification:
            pred = out.column("prediction").to_numpy(zero_copy_only=False)[ok].astype(np.float64)
            return float(metrics.r2_score(y.astype(np.float64), pred))
        pred = np.asarray(out.column("prediction").to_pylist(), dtype=object)[ok]
        truth = np.asarray([str(v) for v in y], dtype=object)
        if self.metric == "roc_auc":
            probs = np.asarray(out.column("probabilities").items.to_numpy(zero_copy_only=False)).reshape(-1, 2)[ok]
            pos = p.pre.label.positive if p.pre.label.positive in p.classes else p.classes[1]
            if len(set(truth)) < 2:
                return float(np.mean(pred == truth))
            return float(metrics.roc_auc_score(truth == pos, probs[:, p.classes.index(pos)]))
        return float(metrics.f1_score(truth, pred, average="macro", labels=p.classes, zero_division=0))


def permutation_importance(
    predictor: Predictor, rows: pa.Table, metric: str, *, repeats: int = 5, seed: int = 0
) -> list[ColumnImportance]:
    """How much the test `metric` drops when one input column's values are shuffled across the rows, per column,
    with a 95 % interval over `repeats` shuffles (Student's t); largest drop first."""
    from scipy import stats
    from sklearn.inspection import permutation_importance as sk_permutation

    pre = predictor.pre
    columns = pre.input_columns()
    x = rows.select(columns).to_pandas()
    y = rows.column(pre.label.column).to_pylist()
    model = _Scored(predictor, metric)
    res = sk_permutation(model, x, y, scoring=lambda m, xx, yy: m.score(xx, yy), n_repeats=repeats, random_state=seed)
    t = float(stats.t.ppf(0.975, max(repeats - 1, 1)))
    out = []
    for j, col in enumerate(columns):
        mean, std = float(res.importances_mean[j]), float(res.importances_std[j])
        half = t * std * np.sqrt(repeats / max(repeats - 1, 1)) / np.sqrt(repeats)  # sample sd, not population
        out.append(ColumnImportance(column=col, mean=mean, std=std, low=mean - half, high=mean + half))
    return sorted(out, key=lambda c: -c.mean)


def class_maps(predictor: Predictor, rows: pa.Table, *, per_class: int = 16, n_steps: int = 32) -> dict[str, str]:
    """Image models: the mean |attribution| map of up to `per_class` test images of each true class, as base64
    PNG heat maps (where the model looks, class by class)."""
    from lakenet.inference.explain import Explainer, heat_map_png

    pre = predictor.pre
    ex = Explainer(predictor.bundle, n_steps=n_steps)
    labels = [str(v) for v in rows.column(pre.label.column).to_pylist()]
    out = {}
    for cls in predictor.classes:
        idx = [i for i, v in enumerate(labels) if v == cls][:per_class]
        if not idx:
            continue
        enc = pre.encode(rows.take(pa.array(idx)), with_label=False)
        if not enc.num_valid:
            continue
        e = ex.explain(enc.inputs)
        if e.image_maps is not None:
            out[cls] = base64.b64encode(heat_map_png(np.abs(e.image_maps).mean(0))).decode()
    return out
