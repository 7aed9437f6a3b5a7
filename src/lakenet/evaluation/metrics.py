"""Classification and regression metrics in pure numpy, built from sums that distributed workers can add."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "BinaryScores",
    "RegressionAccumulator",
    "average_precision",
    "best_f1_threshold",
    "classification_metrics",
    "confusion_matrix",
    "metric_mode",
    "per_class_metrics",
    "regression_metrics",
    "regression_metrics_from_sums",
    "regression_sums",
    "roc_auc_binary",
]

# Relative tolerance below which the total sum of squares counts as zero. The sums-based path computes
# SS_tot as sum(y²) - sum(y)²/n, which leaves rounding noise of a few ulps of sum(y²) for a constant
# target; without a tolerance that noise would turn r2 into a huge negative number instead of 0.0.
_SS_TOT_RTOL = 1e-12

# Substrings that mark a metric as "lower is better".
_MIN_MARKERS = ("loss", "mae", "rmse", "mse")
_SPLIT_PREFIXES = ("val_", "test_")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def _as_matrix(cm: npt.ArrayLike, classes: Sequence[str] | None) -> npt.NDArray[np.float64]:
    m = np.asarray(cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    if classes is not None and len(classes) != m.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {m.shape[0]}x{m.shape[0]} confusion matrix")
    return m


def _safe_div(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _per_class_arrays(
    m: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    tp = np.diag(m)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    # 2tp / (2tp + fp + fn) equals the harmonic mean of precision and recall but cannot divide by zero
    # when both are zero yet the class is present.
    f1 = _safe_div(2.0 * tp, support + predicted)
    return precision, recall, f1, support


def confusion_matrix(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int) -> npt.NDArray[np.int64]:
    """Counts of (true, predicted) pairs: rows are true classes, columns predicted classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside [0, {num_classes})")
    flat = t.astype(np.int64) * num_classes + p.astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def classification_metrics(cm: npt.ArrayLike, classes: Sequence[str], *, prefix: str) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 from a confusion matrix.

    Classes that never occur, neither as a true label nor as a prediction, are left out of the macro
    averages (they say nothing about the model); any zero division counts as 0.0.
    """
    m = _as_matrix(cm, classes)
    total = float(m.sum())
    accuracy = float(np.trace(m)) / total if total > 0 else 0.0
    precision, recall, f1, support = _per_class_arrays(m)
    present = (support > 0) | (m.sum(axis=0) > 0)

    def macro(values: npt.NDArray[np.float64]) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return {
        _key(prefix, "accuracy"): accuracy,
        _key(prefix, "macro_f1"): macro(f1),
        _key(prefix, "macro_precision"): macro(precision),
        _key(prefix, "macro_recall"): macro(recall),
        _key(prefix, "balanced_accuracy"): macro(recall),  # the mean recall of the classes: not fooled by a rare one
    }


def per_class_metrics(cm: npt.ArrayLike, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support (true count) of every class, keyed by class name."""
    m = _as_matrix(cm, classes)
    precision, recall, f1, support = _per_class_arrays(m)
    return {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": float(support[i]),
        }
        for i, name in enumerate(classes)
    }


def roc_auc_binary(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic; None when only one class is present.

    Tied scores get their average rank, which counts each positive/negative tie as half a win, the same
    as the trapezoidal ROC area.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} labels but scores has {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must only hold 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # 1-based rank of the last element in each tie group, then step back to the group's mean rank.
    ends = np.cumsum(counts).astype(np.float64)
    avg_rank = ends - (counts - 1) / 2.0
    rank_sum_pos = float(avg_rank[inverse.ravel()][pos].sum())
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _r2(ss_res: float, ss_tot: float, sum_y2: float) -> float:
    if ss_tot <= _SS_TOT_RTOL * sum_y2 or ss_tot <= 0.0:
        return 0.0
    return 1.0 - ss_res / ss_tot


def _regression_arrays(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    return t, p


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, prefix: str) -> dict[str, float]:
    """MAE, RMSE and R² (0.0 when the target is constant); NaN for all three on empty input."""
    t, p = _regression_arrays(y_true, y_pred)
    if t.size == 0:
        return {_key(prefix, k): math.nan for k in ("mae", "rmse", "r2")}
    err = p - t
    ss_res = float(np.dot(err, err))
    centred = t - t.mean()
    ss_tot = float(np.dot(centred, centred))
    return {
        _key(prefix, "mae"): float(np.abs(err).mean()),
        _key(prefix, "rmse"): math.sqrt(ss_res / t.size),
        _key(prefix, "r2"): _r2(ss_res, ss_tot, float(np.dot(t, t))),
    }


def regression_sums(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Additive sufficient statistics [n, Σ|err|, Σerr², Σy, Σy²] for regression_metrics_from_sums."""
    t, p = _regression_arrays(y_true, y_pred)
    err = p - t
    return np.array([float(t.size), np.abs(err).sum(), np.dot(err, err), t.sum(), np.dot(t, t)], dtype=np.float64)


def regression_metrics_from_sums(sums: npt.ArrayLike, *, prefix: str) -> dict[str, float]:
    """The metrics of regression_metrics, from (possibly summed across workers) regression_sums output."""
    s = np.asarray(sums, dtype=np.float64).ravel()
    if s.shape != (5,):
        raise ValueError(f"expected 5 regression sums, got shape {s.shape}")
    n, sum_abs, sum_sq, sum_y, sum_y2 = (float(v) for v in s)
    if n <= 0:
        return {_key(prefix, k): math.nan for k in ("mae", "rmse", "r2")}
    ss_tot = sum_y2 - sum_y * sum_y / n
    return {
        _key(prefix, "mae"): sum_abs / n,
        _key(prefix, "rmse"): math.sqrt(sum_sq / n),
        _key(prefix, "r2"): _r2(sum_sq, ss_tot, sum_y2),
    }


class RegressionAccumulator:
    """Streams batches into regression_sums so metrics never need all predictions in memory at once."""

    def __init__(self) -> None:
        self.sums: npt.NDArray[np.float64] = np.zeros(5, dtype=np.float64)

    def update(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> None:
        self.sums += regression_sums(y_true, y_pred)

    def merge(self, other: RegressionAccumulator | npt.ArrayLike) -> None:
        """Adds another accumulator's (or another worker's raw) sums into this one."""
        extra = other.sums if isinstance(other, RegressionAccumulator) else np.asarray(other, np.float64)
        if extra.shape != (5,):
            raise ValueError(f"expected 5 regression sums, got shape {extra.shape}")
        self.sums += extra

    def compute(self, *, prefix: str) -> dict[str, float]:
        return regression_metrics_from_sums(self.sums, prefix=prefix)


def metric_mode(name: str) -> str:
    """Whether a metric is optimised downwards ("min": losses, errors) or upwards ("max": everything else)."""
    base = name.lower()
    for split in _SPLIT_PREFIXES:
        if base.startswith(split):
            base = base[len(split) :]
            break
    return "min" if any(marker in base for marker in _MIN_MARKERS) else "max"


class BinaryScores:
    """Histograms of the positive class's probability over positive and negative rows, in bins of its logit
    (log p − log(1 − p), 4,096 bins over ±18, each 0.0088 wide, the ends open): ROC-AUC, PR-AUC and the F1-best
    threshold from bounded, mergeable state (workers add their histograms). Logit bins keep the scores of a
    confident model apart (0.9990 and 0.9999 are 2.3 apart in logit, 0.0009 in probability); rows in one bin
    count as ties."""

    BINS = 4096
    LIMIT = 18.0

    def __init__(self, counts: npt.ArrayLike | None = None) -> None:
        self.counts = (
            np.zeros((2, self.BINS)) if counts is None else np.asarray(counts, dtype=np.float64).reshape(2, -1)
        )

    @classmethod
    def bin_of(cls, p: npt.ArrayLike) -> npt.NDArray[np.int64]:
        q = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            z = np.log(q) - np.log1p(-q)  # ±inf at 0 and 1: the end bins
        scaled = (np.clip(z, -cls.LIMIT, cls.LIMIT) + cls.LIMIT) * (cls.BINS / (2 * cls.LIMIT))
        return np.clip(scaled.astype(np.int64), 0, cls.BINS - 1)

    def update(self, is_positive: npt.ArrayLike, p: npt.ArrayLike) -> None:
        pos = np.asarray(is_positive, dtype=bool)
        bins = self.bin_of(p)
        self.counts[1] += np.bincount(bins[pos], minlength=self.BINS)
        self.counts[0] += np.bincount(bins[~pos], minlength=self.BINS)

    def merge(self, other: BinaryScores) -> BinaryScores:
        return BinaryScores(self.counts + other.counts)

    def roc_auc(self) -> float | None:
        neg, pos = self.counts[0][::-1], self.counts[1][::-1]  # from the highest scores down
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return None
        above = np.cumsum(pos) - pos  # positives scored strictly higher than each bin
        return float((neg * (above + pos / 2)).sum() / (n_pos * n_neg))

    def average_precision(self) -> float | None:
        neg, pos = self.counts[0][::-1], self.counts[1][::-1]
        n_pos = pos.sum()
        if n_pos == 0:
            return None
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        precision = _safe_div(tp, tp + fp)
        return float((pos / n_pos * precision).sum())

    def best_f1_threshold(self) -> tuple[float, float] | None:
        """The probability from which the positive class is predicted (a bin's lower edge: every row counted
        above it is predicted positive) that maximises its F1, and that F1; None without both classes. Where a
        range of thresholds ties (classes that separate cleanly), its top: the fewest rows predicted positive for
        that F1, as when the threshold is the lowest positive score (scikit-learn's precision-recall curve)."""
        neg, pos = self.counts
        n_pos = pos.sum()
        if n_pos == 0 or neg.sum() == 0:
            return None
        tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]  # rows at or above each bin
        f1 = _safe_div(2 * tp, tp + fp + n_pos)
        tied = np.flatnonzero(f1 >= f1.max() - 1e-12)
        run = tied[: int(np.argmax(np.diff(np.append(tied, -1)) != 1)) + 1]  # the first run of adjacent best bins
        best = int(run[-1])
        edge = -self.LIMIT + best * (2 * self.LIMIT / self.BINS)
        return (0.0 if best == 0 else float(1.0 / (1.0 + np.exp(-edge)))), float(f1[best])


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """PR-AUC (average precision) of the positive class; None when it never occurs."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true)
    if not y.any():
        return None
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)))


def best_f1_threshold(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[float, float] | None:
    """The probability from which the positive class is predicted that maximises its F1, and that F1; None when
    the positive class never occurs."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true)
    if not y.any() or y.all():
        return None
    precision, recall, thresholds = precision_recall_curve(y, np.asarray(scores, dtype=np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)[:-1]  # the last point has no threshold
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])
