"""An honest baseline: scikit-learn's HistGradientBoosting on the same split and the same features, scored on the
same test rows with the same metrics, reported next to the deep model with a plain sentence on who wins."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.data.sources import Snapshot
from lakenet.data.split import TEST, TRAIN, VAL, split_columns, table_splits
from lakenet.evaluation.metrics import (
    average_precision,
    best_f1_threshold,
    classification_metrics,
    confusion_matrix,
    regression_metrics,
    roc_auc_binary,
)
from lakenet.evaluation.report import Baseline

__all__ = ["fit_baseline", "headline_metric"]

_TABULAR = {"numeric", "category", "boolean", "datetime"}
_MAX_TRAIN_ROWS = 200_000  # a sample beyond this: the baseline is a yardstick, not the product
_NATIVE_CATEGORIES = 255  # HistGradientBoosting's limit for a native categorical feature


def headline_metric(task: str, classes: int) -> str:
    """The one figure the sentence compares: ROC-AUC for two classes, macro-F1 for more, R² for regression."""
    if task == "regression":
        return "r2"
    if task == "anomaly":
        return "roc_auc"
    return "roc_auc" if classes == 2 else "macro_f1"


def _matrices(snap: Snapshot, pre: Preprocessor, cfg: Config) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(X, y) per split from the model's own encoding: numbers, booleans and dates as they reach the network
    (filled, with missing indicators), categories as their indices."""
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {TRAIN: [], VAL: [], TEST: []}
    cols = list(dict.fromkeys([*pre.columns(with_label=True), *split_columns(pre.key, cfg.data.split)]))
    for frag in snap.fragments:
        table = snap.read(frag, cols)
        enc = pre.encode(table, with_label=True)
        if not enc.num_valid:
            continue
        splits = table_splits(table, pre.key, cfg.data.split)[enc.valid]
        blocks = [enc.inputs[k].astype(np.float64) for k in ("numeric", "category") if k in enc.inputs]
        x = np.hstack(blocks) if blocks else np.zeros((enc.num_valid, 0))
        assert enc.target is not None
        y = enc.target
        for s in parts:
            m = splits == s
            if m.any():
                parts[s].append((x[m], y[m]))
    out = {}
    for s, chunks in parts.items():
        if chunks:
            out[s] = (np.vstack([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
    return out


def fit_baseline(cfg: Config, snap: Snapshot, pre: Preprocessor, deep: dict[str, float]) -> Baseline:
    """Fit, score on the test split, and compare with the deep model's `test_*` metrics. Skipped (saying why)
    when the features are not all tabular (images, text and vectors have no fair gradient-boosting counterpart
    here) or a split it needs is empty."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kinds = {s.type for s in cfg.features.inputs.values()}
    if not kinds <= _TABULAR:
        return Baseline(skipped=f"features of type {sorted(kinds - _TABULAR)} have no gradient-boosting baseline")
    t0 = time.perf_counter()
    data = _matrices(snap, pre, cfg)
    if TRAIN not in data or TEST not in data:
        return Baseline(skipped="the train or test split is empty")
    x_train, y_train = data[TRAIN]
    if len(y_train) > _MAX_TRAIN_ROWS:
        keep = np.random.default_rng(cfg.trainer.seed).choice(len(y_train), _MAX_TRAIN_ROWS, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    if pre.label.task == "anomaly":
        return _isolation_forest(cfg, data, x_train, y_train, deep, t0)
    n_numeric = pre.numeric_width
    categorical = [n_numeric + j for j, size in enumerate(pre.category_sizes) if size <= _NATIVE_CATEGORIES]
    mask = np.zeros(x_train.shape[1], dtype=bool)
    mask[categorical] = True
    classification = pre.label.task == "classification"
    classes = pre.label.classes or []
    common = {"categorical_features": mask if mask.any() else None, "random_state": cfg.trainer.seed}
    if classification:
        counts = np.bincount(y_train.astype(np.int64), minlength=len(classes))
        rare = counts.min() < counts.max() / 3
        model: Any = HistGradientBoostingClassifier(class_weight="balanced" if rare else None, **common)
        model.fit(x_train, y_train.astype(np.int64))
    else:
        model = HistGradientBoostingRegressor(**common)
        model.fit(x_train, y_train)
    x_test, y_test = data[TEST]
    metrics: dict[str, float] = {}
    if classification:
        proba = np.zeros((len(y_test), len(classes)))
        proba[:, model.classes_] = model.predict_proba(x_test)
        pred = proba.argmax(1)
        truth = y_test.astype(np.int64)
        if len(classes) == 2:
            pos = classes.index(pre.label.positive) if pre.label.positive in classes else 1
            if VAL in data and pre.label.threshold is not None:  # the same rule as the deep model: a tuned threshold
                x_val, y_val = data[VAL]
                pv = np.zeros((len(y_val), 2))
                pv[:, model.classes_] = model.predict_proba(x_val)
                found = best_f1_threshold(y_val.astype(np.int64) == pos, pv[:, pos])
                if found is not None:
                    pred = np.where(proba[:, pos] >= found[0], pos, 1 - pos)
            truth_pos = (truth == pos).astype(np.int64)
            auc = roc_auc_binary(truth_pos, proba[:, pos])
            ap = average_precision(truth_pos, proba[:, pos])
            metrics.update({k: v for k, v in (("test_roc_auc", auc), ("test_pr_auc", ap)) if v is not None})
        metrics.update(classification_metrics(confusion_matrix(truth, pred, len(classes)), classes, prefix="test"))
    else:
        yt = pre.decode_target(y_test.astype(np.float64))
        yp = pre.decode_target(model.predict(x_test).astype(np.float64))
        metrics.update(regression_metrics(yt, yp, prefix="test"))
    seconds = time.perf_counter() - t0
    name = headline_metric(pre.label.task, len(classes))
    return Baseline(
        model=type(model).__name__,
        metrics={k.removeprefix("test_"): v for k, v in metrics.items()},
        seconds=seconds,
        train_rows=len(y_train),
        headline=name,
        summary=_sentence(name, metrics.get(f"test_{name}"), deep.get(f"test_{name}")),
    )


def _isolation_forest(
    cfg: Config,
    data: dict[int, tuple[np.ndarray, np.ndarray]],
    x_train: np.ndarray,
    y_train: np.ndarray,
    deep: dict[str, float],
    t0: float,
) -> Baseline:
    """task anomaly: scikit-learn's IsolationForest on the same encoded features, fitted on the training rows not
    known to be anomalies, compared on the test rows whose label is known."""
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(random_state=cfg.trainer.seed).fit(x_train[y_train != 1])
    x_test, y_test = data[TEST]
    known = y_test >= 0
    metrics: dict[str, float] = {}
    if known.any():
        score = -model.score_samples(x_test[known])
        truth = (y_test[known] == 1).astype(np.int64)
        auc, ap = roc_auc_binary(truth, score), average_precision(truth, score)
        metrics.update({k: v for k, v in (("test_roc_auc", auc), ("test_pr_auc", ap)) if v is not None})
    return Baseline(
        model="IsolationForest",
        metrics={k.removeprefix("test_"): v for k, v in metrics.items()},
        seconds=time.perf_counter() - t0,
        train_rows=int((y_train != 1).sum()),
        headline="roc_auc",
        summary=_sentence("roc_auc", metrics.get("test_roc_auc"), deep.get("test_roc_auc"), "IsolationForest"),
    )


def _sentence(name: str, baseline: float | None, deep: float | None, model: str = "HistGradientBoosting") -> str:
    label = {"roc_auc": "ROC-AUC", "macro_f1": "macro-F1", "r2": "R²"}[name]
    if baseline is None or deep is None:
        return f"no comparable test {label} for the baseline ({model}; it needs test rows with known labels)"
    if baseline > deep + 0.005:
        return (
            f"The baseline ({model}) wins: test {label} {baseline:.3f} against the deep model's "
            f"{deep:.3f}. Prefer the simpler model here, or give the deep one more data or epochs."
        )
    if deep > baseline + 0.005:
        return f"The deep model wins: test {label} {deep:.3f} against the baseline's ({model}) {baseline:.3f}."
    return f"The deep model and the baseline ({model}) are level: test {label} {deep:.3f} and {baseline:.3f}."
