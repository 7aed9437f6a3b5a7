"""Checks the numpy metrics against hand-computed values and scikit-learn as a reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from lakenet.evaluation import (
    RegressionAccumulator,
    classification_metrics,
    confusion_matrix,
    metric_mode,
    per_class_metrics,
    regression_metrics,
    regression_metrics_from_sums,
    regression_sums,
    roc_auc_binary,
)

SEEDS = [0, 1, 2, 3, 7]


def _names(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


# --- confusion matrix ---------------------------------------------------------------------------------


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 0]), 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 2, 0], [1, 0, 0]])


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    y_true = rng.integers(0, k, size=500)
    y_pred = rng.integers(0, k, size=500)
    expected = skm.confusion_matrix(y_true, y_pred, labels=list(range(k)))
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, k), expected)


def test_confusion_matrix_empty_and_invalid() -> None:
    np.testing.assert_array_equal(confusion_matrix(np.array([], np.int64), np.array([], np.int64), 2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 3)
    with pytest.raises(ValueError, match="y_pred has"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1]), 3)


def test_confusion_matrices_from_shards_add_up() -> None:
    rng = np.random.default_rng(5)
    y_true, y_pred = rng.integers(0, 4, size=300), rng.integers(0, 4, size=300)
    shards = sum(confusion_matrix(y_true[i : i + 100], y_pred[i : i + 100], 4) for i in range(0, 300, 100))
    np.testing.assert_array_equal(shards, confusion_matrix(y_true, y_pred, 4))


# --- classification metrics ---------------------------------------------------------------------------


def test_classification_metrics_by_hand() -> None:
    # class 0: tp=2, fp=0, fn=1 -> p=1, r=2/3, f1=0.8; class 1: tp=3, fp=1, fn=0 -> p=3/4, r=1, f1=6/7
    cm = np.array([[2, 1], [0, 3]])
    m = classification_metrics(cm, ["a", "b"], prefix="val")
    assert set(m) == {
        "val_accuracy", "val_macro_f1", "val_macro_precision", "val_macro_recall", "val_balanced_accuracy",
    }  # fmt: skip
    assert m["val_balanced_accuracy"] == m["val_macro_recall"]
    assert m["val_accuracy"] == pytest.approx(5 / 6)
    assert m["val_macro_precision"] == pytest.approx((1 + 3 / 4) / 2)
    assert m["val_macro_recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["val_macro_f1"] == pytest.approx((0.8 + 6 / 7) / 2)


def test_classification_metrics_skip_absent_classes_and_handle_zero_division() -> None:
    # Class 2 never occurs at all: excluded. Class 1 is never predicted: precision 0 by convention, included.
    cm = np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    m = classification_metrics(cm, ["a", "b", "c"], prefix="test")
    assert m["test_accuracy"] == pytest.approx(3 / 5)
    assert m["test_macro_precision"] == pytest.approx((3 / 5 + 0) / 2)
    assert m["test_macro_recall"] == pytest.approx((1 + 0) / 2)
    assert m["test_macro_f1"] == pytest.approx((2 * 3 / (3 + 5) + 0) / 2)


def test_classification_metrics_empty_matrix_is_all_zero() -> None:
    m = classification_metrics(np.zeros((3, 3), np.int64), _names(3), prefix="val")
    assert m == {
        "val_balanced_accuracy": 0.0,
        "val_accuracy": 0.0,
        "val_macro_f1": 0.0,
        "val_macro_precision": 0.0,
        "val_macro_recall": 0.0,
    }


def test_classification_metrics_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="square"):
        classification_metrics(np.zeros((2, 3)), _names(2), prefix="val")
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(np.zeros((3, 3)), _names(2), prefix="val")


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn_with_absent_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 7
    # Only some classes ever occur; class k-1 shows up in predictions only, to exercise the union rule.
    used = rng.choice(k - 1, size=4, replace=False)
    y_true = rng.choice(used, size=400)
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.choice(used, size=400))
    y_pred[:5] = k - 1
    cm = confusion_matrix(y_true, y_pred, k)
    m = classification_metrics(cm, _names(k), prefix="val")
    assert m["val_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for ours, fn in (
        ("val_macro_f1", skm.f1_score),
        ("val_macro_precision", skm.precision_score),
        ("val_macro_recall", skm.recall_score),
    ):
        assert m[ours] == pytest.approx(fn(y_true, y_pred, average="macro", zero_division=0)), ours


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 5
    y_true = rng.integers(0, k - 1, size=300)  # class 4 has no support
    y_pred = rng.integers(0, k, size=300)
    names = ["cat", "dog", "bird", "fish", "ghost"]
    got = per_class_metrics(confusion_matrix(y_true, y_pred, k), names)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    assert list(got) == names
    for i, name in enumerate(names):
        assert got[name]["precision"] == pytest.approx(p[i])
        assert got[name]["recall"] == pytest.approx(r[i])
        assert got[name]["f1"] == pytest.approx(f[i])
        assert got[name]["support"] == s[i]
    assert got["ghost"]["support"] == 0.0
    assert got["ghost"]["recall"] == 0.0


# --- ROC AUC ------------------------------------------------------------------------------------------


def test_roc_auc_by_hand() -> None:
    # Pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3 of 4.
    assert roc_auc_binary(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # A tie between a positive and a negative counts as half a win.
    assert roc_auc_binary(np.array([0, 1, 0, 1]), np.array([0.2, 0.5, 0.5, 0.9])) == pytest.approx(0.875)
    assert roc_auc_binary(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == pytest.approx(0.5)
    assert roc_auc_binary(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_roc_auc_matches_sklearn_with_ties(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(600) < 0.3).astype(np.int64)
    # Rounding creates many ties; adding y makes the scores informative so the AUC is not just ~0.5.
    scores = np.round(rng.random(600) + 0.4 * y, decimals)
    assert roc_auc_binary(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_single_class_and_invalid_input() -> None:
    assert roc_auc_binary(np.ones(5, np.int64), np.linspace(0, 1, 5)) is None
    assert roc_auc_binary(np.zeros(5, np.int64), np.linspace(0, 1, 5)) is None
    assert roc_auc_binary(np.array([], np.int64), np.array([])) is None
    with pytest.raises(ValueError, match="0 and 1"):
        roc_auc_binary(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        roc_auc_binary(np.array([0, 1]), np.array([0.1, np.nan]))


# --- regression ---------------------------------------------------------------------------------------


def test_regression_metrics_by_hand() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 3.0, 2.0, 4.0])
    m = regression_metrics(y, p, prefix="val")
    assert set(m) == {"val_mae", "val_rmse", "val_r2"}
    assert m["val_mae"] == pytest.approx(0.5)
    assert m["val_rmse"] == pytest.approx(math.sqrt(0.5))
    # SS_res = 2, SS_tot = 5
    assert m["val_r2"] == pytest.approx(1 - 2 / 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(50.0, 10.0, size=1000)
    p = y + rng.normal(0.0, 3.0, size=1000)
    m = regression_metrics(y, p, prefix="test")
    assert m["test_mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["test_rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert m["test_r2"] == pytest.approx(skm.r2_score(y, p))


@pytest.mark.parametrize("value", [0.0, 0.1, 123456.789])
def test_constant_target_gives_zero_r2(value: float) -> None:
    y = np.full(1000, value)
    p = y + np.linspace(-1, 1, 1000)
    assert regression_metrics(y, p, prefix="val")["val_r2"] == 0.0
    assert regression_metrics_from_sums(regression_sums(y, p), prefix="val")["val_r2"] == 0.0


def test_regression_empty_input_is_nan() -> None:
    direct = regression_metrics(np.array([]), np.array([]), prefix="val")
    from_sums = regression_metrics_from_sums(regression_sums(np.array([]), np.array([])), prefix="val")
    assert all(math.isnan(v) for v in [*direct.values(), *from_sums.values()])


def test_regression_sums_layout() -> None:
    sums = regression_sums(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0]))
    assert sums.dtype == np.float64
    np.testing.assert_allclose(sums, [3, 1 + 0 + 3, 1 + 0 + 9, 7, 1 + 4 + 16])


@pytest.mark.parametrize("seed", SEEDS)
def test_sums_from_shards_equal_direct_metrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(100.0, 20.0, size=997)
    p = y + rng.normal(1.0, 5.0, size=997)
    direct = regression_metrics(y, p, prefix="val")
    bounds = sorted(rng.choice(np.arange(1, 997), size=3, replace=False))
    shards = np.split(np.arange(997), bounds)
    total = sum(regression_sums(y[idx], p[idx]) for idx in shards)
    merged = regression_metrics_from_sums(total, prefix="val")
    assert merged.keys() == direct.keys()
    for key in direct:
        assert merged[key] == pytest.approx(direct[key], rel=1e-9), key

    acc, other = RegressionAccumulator(), RegressionAccumulator()
    acc.update(y[:500], p[:500])
    other.update(y[500:900], p[500:900])
    acc.merge(other)
    acc.merge(regression_sums(y[900:], p[900:]))
    for key, value in acc.compute(prefix="val").items():
        assert value == pytest.approx(direct[key], rel=1e-9), key


def test_regression_shape_errors() -> None:
    with pytest.raises(ValueError, match="y_pred has"):
        regression_metrics(np.zeros(3), np.zeros(2), prefix="val")
    with pytest.raises(ValueError, match="5 regression sums"):
        regression_metrics_from_sums(np.zeros(4), prefix="val")
    with pytest.raises(ValueError, match="5 regression sums"):
        RegressionAccumulator().merge(np.zeros(3))


# --- metric direction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("val_loss", "min"),
        ("train_loss", "min"),
        ("loss", "min"),
        ("test_mae", "min"),
        ("val_rmse", "min"),
        ("val_mse", "min"),
        ("val_accuracy", "max"),
        ("test_macro_f1", "max"),
        ("val_r2", "max"),
        ("val_auc", "max"),
        ("accuracy", "max"),
    ],
)
def test_metric_mode(name: str, mode: str) -> None:
    assert metric_mode(name) == mode


def test_binary_score_histograms_match_the_exact_areas() -> None:
    from lakenet.evaluation.metrics import BinaryScores, average_precision, roc_auc_binary

    rng = np.random.default_rng(3)
    y = rng.random(4000) < 0.03  # a rare positive class
    p = np.clip(rng.normal(0.3 + 0.35 * y, 0.15), 0, 1)
    parts = [BinaryScores() for _ in range(3)]
    for i, part in enumerate(parts):  # three workers' shares, added up
        part.update(y[i::3], p[i::3])
    merged = BinaryScores(sum(part.counts for part in parts))
    assert merged.roc_auc() == pytest.approx(roc_auc_binary(y.astype(int), p), abs=2e-3)
    assert merged.average_precision() == pytest.approx(average_precision(y, p), abs=1e-2)
    assert BinaryScores().roc_auc() is None


def test_the_threshold_maximises_f1_of_the_positive_class() -> None:
    from lakenet.evaluation.metrics import best_f1_threshold

    y = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.72, 0.9])
    threshold, f1 = best_f1_threshold(y, p)  # type: ignore[misc]
    assert threshold == pytest.approx(0.6) and f1 == pytest.approx(2 * 0.75 / 1.75)
    assert best_f1_threshold(np.zeros(4), np.linspace(0, 1, 4)) is None


def test_the_binned_threshold_of_separable_classes_is_the_lowest_positive_score_bin() -> None:
    """Where every threshold between the classes gives the same F1, the binned choice is the exact one's bin (the
    lowest positive score), not the first bin above the negatives."""
    from lakenet.evaluation.metrics import BinaryScores, best_f1_threshold

    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.01, 0.3, 50), np.linspace(0.6, 0.99, 50)])
    h = BinaryScores()
    h.update(y == 1, p)
    found, exact = h.best_f1_threshold(), best_f1_threshold(y, p)
    assert found is not None and exact is not None and found[1] == exact[1] == 1.0
    assert found[0] <= exact[0] and BinaryScores.bin_of([found[0]])[0] == BinaryScores.bin_of([exact[0]])[0]
