"""The evaluation of a model on one split, typed: metrics, the confusion matrix and the most confident mistakes
(classification) or predicted against actual (regression), the baseline beside it and, for an update, each
part of the table. `Evaluation.to_dict()` is evaluation.json; the evaluation report
(`lakenet.reports.evaluation_html`) reads the dataclasses themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

from lakenet.evaluation.metrics import BinaryScores

__all__ = ["Baseline", "ClassMetrics", "ColumnImportance", "Evaluation", "Scores", "Threshold", "WorstExample"]


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: float  # true rows of the class


@dataclass(frozen=True)
class WorstExample:
    """One of the most confidently wrong predictions."""

    key: str
    label: str
    prediction: str
    confidence: float
    thumbnail: str | None  # base64 PNG of the image input, if there is one


@dataclass(frozen=True)
class ColumnImportance:
    """How much the test metric drops when the column is shuffled: the mean over repeats and its 95 % interval."""

    column: str
    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class Threshold:
    """The decision threshold on `positive`'s probability (two classes)."""

    positive: str
    value: float


@dataclass(frozen=True)
class Scores:
    """Two classes: histograms of the positive class's probability over positive and negative rows, to choose the
    threshold on. Not part of evaluation.json."""

    positive: str
    histogram: BinaryScores


@dataclass(frozen=True)
class Baseline:
    """scikit-learn's gradient boosting beside the deep model: fitted (every field but `skipped`), skipped
    (only `skipped`: why), or not asked for (no field: `{}` in evaluation.json)."""

    model: str | None = None
    metrics: dict[str, float] | None = None  # test metrics without the `test_` prefix
    seconds: float | None = None
    train_rows: int | None = None
    headline: str | None = None  # the metric the summary compares
    summary: str | None = None  # who wins, in one sentence
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Metrics named `<split>_<metric>` plus the material of the report. Fields left None are sections this
    evaluation does not have (classification: classes, confusion_matrix, per_class, worst; regression: scatter)."""

    task: str
    split: str  # the prefix of the metric names: test or val
    rows: int  # rows scored with a known label
    skipped_rows: int  # rows the model could not score, or whose label it does not know
    scores: Scores | None = None
    threshold: Threshold | None = None
    classes: list[str] | None = None
    confusion_matrix: list[list[int]] | None = None  # rows: truth, columns: prediction
    per_class: dict[str, ClassMetrics] | None = None
    worst: list[WorstExample] | None = None
    scatter: list[list[float]] | None = None  # [actual, predicted], a sample of the rows
    score_histogram: list[int] | None = None  # anomaly: scored rows per 0.02 of the calibrated score
    metrics: dict[str, float]
    parts: dict[str, Evaluation] | None = None  # the same evaluation of each part of the table
    baseline: Baseline | None = None
    history: list[dict[str, float]] | None = None  # the training run's per-epoch figures
    model: dict[str, Any] | None = None  # name, and version and uri when known
    # The global view: permutation importance per input column on the test split, and the metric it drops
    importance: list[ColumnImportance] | None = None
    importance_metric: str | None = None
    class_maps: dict[str, str] | None = None  # image models: the mean attribution map per true class (base64 PNG)

    def to_dict(self) -> dict[str, Any]:
        """evaluation.json: the sections this evaluation has, in this order; never the scores."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "scores")
        return {name: _plain(v) for name, v in values if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """An evaluation.json read back: the inverse of `to_dict`."""
        d = dict(data)
        if "threshold" in d:
            d["threshold"] = Threshold(**d["threshold"])
        if "per_class" in d:
            d["per_class"] = {name: ClassMetrics(**m) for name, m in d["per_class"].items()}
        if "worst" in d:
            d["worst"] = [WorstExample(**w) for w in d["worst"]]
        if "parts" in d:
            d["parts"] = {name: cls.from_dict(part) for name, part in d["parts"].items()}
        if "baseline" in d:
            d["baseline"] = Baseline(**d["baseline"])
        if "importance" in d:
            d["importance"] = [ColumnImportance(**c) for c in d["importance"]]
        return cls(**d)


def _plain(value: Any) -> Any:
    if isinstance(value, Evaluation | Baseline):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
