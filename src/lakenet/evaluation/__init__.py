"""Model evaluation: numpy metrics that can be merged across distributed workers."""

from lakenet.evaluation.metrics import (
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

__all__ = [
    "RegressionAccumulator",
    "classification_metrics",
    "confusion_matrix",
    "metric_mode",
    "per_class_metrics",
    "regression_metrics",
    "regression_metrics_from_sums",
    "regression_sums",
    "roc_auc_binary",
]
