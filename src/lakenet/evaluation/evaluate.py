"""Score the held-out test split with the Predictor (the same path as batch scoring) and build the report.

The pass runs on the engine (`Engine.map_fragments`: on Spark, in the executors) and every fragment's result is
a bounded, mergeable tally: the confusion matrix and, for two classes, histograms of the positive class's
probability (`BinaryScores`: ROC-AUC, PR-AUC and the threshold); for regression the sums behind MAE, RMSE and
R²; the most confident mistakes (at most 12) and a fixed-size sample of (actual, predicted) points. The driver
holds O(classes²) and a few hundred rows, never O(rows).
"""

from __future__ import annotations

import base64
import heapq
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.config.schema import SplitConfig
from lakenet.data.sources import Fragment, Snapshot
from lakenet.data.split import TEST, split_columns, table_splits
from lakenet.evaluation.metrics import (
    BinaryScores,
    RegressionAccumulator,
    classification_metrics,
    per_class_metrics,
)
from lakenet.evaluation.report import ClassMetrics, Evaluation, Scores, Threshold, WorstExample
from lakenet.inference.predictor import BundleTask, Predictor

__all__ = ["evaluate_split"]

_WORST = 12
_SCATTER = 500
_SCORE_BINS = 50  # anomaly: the calibrated score's distribution, in bins of 0.02


def _thumb(blob: bytes | None) -> str | None:
    from PIL import Image

    if not blob:
        return None
    try:
        with Image.open(io.BytesIO(blob)) as src:
            im = src.convert("RGB")
            scale = max(1, 48 // max(im.width, im.height))
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
            im.thumbnail((64, 64))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError, SyntaxError):
        return None
    return base64.b64encode(buf.getvalue()).decode()


def evaluate_split(
    snap: Snapshot,
    predictor: Predictor,
    split_cfg: SplitConfig,
    *,
    split: int = TEST,
    prefix: str = "test",
    scores: bool = False,
    parts: Callable[[Fragment], str] | None = None,
    engine: Any = None,
    bundle_dir: str | None = None,
) -> Evaluation:
    """Metrics named `<prefix>_<metric>` plus the material for the HTML report. `scores`: also return, for two
    classes, the histograms of the rarer class's probability (`.scores`: for the threshold). `parts`: also
    evaluate each part of the table (named per fragment) in `.parts`, from the same pass. `engine` (with the
    saved `bundle_dir`, which its workers load): where the fragments are scored; default: in this process."""
    task = _EvalTask(predictor, bundle_dir, split_cfg, split, parts)
    columns = list(
        dict.fromkeys([*predictor.pre.columns(with_label=True), *split_columns(predictor.pre.key, split_cfg)])
    )
    if engine is not None and bundle_dir is not None:
        tallies = list(engine.map_fragments(task, snap, columns))
    else:
        tallies = [task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns)]
    whole = _Tally(predictor)
    for t in tallies:
        whole = whole.merge(t)
    report = whole.report(predictor, prefix, scores=scores)
    if parts is not None:
        by_part = {name: t.report(predictor, prefix, scores=False) for name, t in sorted(whole.parts.items())}
        report = replace(report, parts=by_part)
    return report


class _EvalTask(BundleTask):
    """`(fragment index, fragment, table) -> _Tally`, on an engine's workers or here (see BundleTask)."""

    def __init__(
        self,
        predictor: Predictor,
        bundle_dir: str | None,
        split_cfg: SplitConfig,
        split: int,
        parts: Callable[[Fragment], str] | None,
    ) -> None:
        super().__init__(predictor, bundle_dir)
        self.split_cfg, self.split, self.parts = split_cfg, split, parts

    def __call__(self, fi: int, frag: Fragment, table: pa.Table) -> _Tally:
        predictor = self.scorer()
        tally = _Tally(predictor)
        mask = table_splits(table, predictor.pre.key, self.split_cfg) == self.split
        if not mask.any():
            return tally
        rows = np.flatnonzero(mask)
        table = table.take(pa.array(rows))
        out = predictor(table)
        priority = _priority(fi, frag.offset + rows)  # rows of a piece: their place in the fragment's row group
        tally.add(predictor, table, out, priority)
        if self.parts is not None:
            part = _Tally(predictor)
            part.add(predictor, table, out, priority)
            tally.parts[self.parts(frag)] = part
        return tally


def _priority(fi: int, rows: np.ndarray) -> np.ndarray:
    """A pseudo-random, reproducible priority per row (splitmix64 of its fragment and position): the scatter keeps
    the rows of lowest priority, the same sample on every engine, however the fragments are grouped."""
    with np.errstate(over="ignore"):
        z = (np.uint64(fi) << np.uint64(32)) + rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _Tally:
    """The scored rows of one evaluation, in bounded state that merges: counts, sums, the most confident mistakes
    and a sample of points."""

    def __init__(self, predictor: Predictor) -> None:
        k = len(predictor.classes)
        self.classification, self.anomaly = predictor.classification, predictor.anomaly
        self.rows = self.skipped = 0
        self.cm = np.zeros((k, k), dtype=np.int64)
        if self.anomaly:  # known normal/anomalous rows against flagged or not
            self.cm = np.zeros((2, 2), dtype=np.int64)
        self.binary = BinaryScores() if (self.classification and k == 2) or self.anomaly else None
        self.histogram = np.zeros(_SCORE_BINS, dtype=np.int64)  # anomaly: calibrated scores of every scored row
        self.flagged = 0  # anomaly: scored rows at or above the threshold
        self.sums = RegressionAccumulator()
        self.worst: list[tuple[float, str, int, dict[str, Any]]] = []  # min-heap: (confidence, key, priority, item)
        self.scatter: list[tuple[int, float, float]] = []  # (priority, actual, predicted), lowest priorities
        self.parts: dict[str, _Tally] = {}

    def merge(self, other: _Tally) -> _Tally:
        self.rows += other.rows
        self.skipped += other.skipped
        self.cm += other.cm
        if self.binary is not None and other.binary is not None:
            self.binary = self.binary.merge(other.binary)
        self.sums.merge(other.sums)
        self.histogram += other.histogram
        self.flagged += other.flagged
        self.worst = heapq.nlargest(_WORST, self.worst + other.worst, key=lambda e: e[:3])
        heapq.heapify(self.worst)
        self.scatter = heapq.nsmallest(_SCATTER, self.scatter + other.scatter)
        for name, part in other.parts.items():
            self.parts[name] = self.parts[name].merge(part) if name in self.parts else part
        return self

    def add(self, predictor: Predictor, table: pa.Table, out: pa.Table, priority: np.ndarray) -> None:
        ok = np.asarray(pa.compute.is_null(out.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
        if self.anomaly:
            self._add_anomalies(predictor, table, out, ok, priority)
            self.skipped += int((~ok).sum())
            return
        assert predictor.pre.label.column is not None
        labels = table.column(predictor.pre.label.column)
        if self.classification:
            ok &= self._add_classes(predictor, table, out, labels, ok, priority)
        else:
            truth = labels.cast(pa.float64()).to_numpy(zero_copy_only=False)
            pred = out.column("prediction").to_numpy(zero_copy_only=False).astype(np.float64)
            ok &= np.isfinite(truth)
            self.sums.update(truth[ok], pred[ok])
            self.rows += int(ok.sum())
            keep = np.flatnonzero(ok)
            keep = keep[np.argsort(priority[keep])[:_SCATTER]]
            points = [(int(priority[i]), float(truth[i]), float(pred[i])) for i in keep]
            self.scatter = heapq.nsmallest(_SCATTER, self.scatter + points)
        self.skipped += int((~ok).sum())

    def _add_anomalies(
        self, predictor: Predictor, table: pa.Table, out: pa.Table, ok: np.ndarray, priority: np.ndarray
    ) -> None:
        """Every scored row counts in the score histogram; rows with a known label also in the ROC/PR histograms
        and the confusion of known against flagged. `worst` keeps the most anomalous rows."""
        score = np.nan_to_num(out.column("score").to_numpy(zero_copy_only=False).astype(np.float64))
        flagged = np.asarray(out.column("is_anomaly").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        use = np.flatnonzero(ok)
        self.rows += len(use)
        bins = np.clip((score[use] * _SCORE_BINS).astype(np.int64), 0, _SCORE_BINS - 1)
        self.histogram += np.bincount(bins, minlength=_SCORE_BINS)
        self.flagged += int(flagged[use].sum())
        truth = predictor.pre.encode_anomaly_label(table)
        known = use[truth[use] >= 0]
        assert self.binary is not None
        self.binary.update(truth[known] == 1, score[known])
        np.add.at(self.cm, (truth[known], flagged[known].astype(np.int64)), 1)
        top = use[np.argsort(-score[use], kind="stable")[:_WORST]]
        keys = table.column(predictor.pre.key).cast(pa.string()).take(pa.array(top)).to_pylist()
        for i, key in zip(top, keys, strict=True):
            label = {1: "anomaly", 0: "normal"}.get(int(truth[i]), "unknown")
            item = {"key": key, "label": label, "prediction": "anomaly" if flagged[i] else "normal",
                    "confidence": float(score[i]), "thumbnail": None}  # fmt: skip
            entry = (float(score[i]), key, int(priority[i]), item)
            if len(self.worst) < _WORST:
                heapq.heappush(self.worst, entry)
            elif entry[:3] > self.worst[0][:3]:
                heapq.heappushpop(self.worst, entry)

    def _add_classes(
        self,
        predictor: Predictor,
        table: pa.Table,
        out: pa.Table,
        labels: pa.ChunkedArray,
        ok: np.ndarray,
        priority: np.ndarray,
    ) -> np.ndarray:
        classes = predictor.classes
        index = {c: i for i, c in enumerate(classes)}
        truth = np.asarray([index.get(v, -1) if v is not None else -1 for v in labels.cast(pa.string()).to_pylist()])
        known = truth >= 0
        k = len(classes)
        p = np.asarray(out.column("probabilities").items.to_numpy(zero_copy_only=False)).reshape(-1, k)
        pred = predictor.decide(p)
        use = np.flatnonzero(ok & known)
        np.add.at(self.cm, (truth[use], pred[use]), 1)
        self.rows += len(use)
        if self.binary is not None:
            pos = classes.index(_positive(predictor))
            self.binary.update(truth[use] == pos, p[use, pos])
        wrong = use[pred[use] != truth[use]]
        if len(wrong):
            conf = p[wrong, pred[wrong]]
            wrong = wrong[np.argsort(-conf, kind="stable")[:_WORST]]  # only these can enter the list
            keys = table.column(predictor.pre.key).cast(pa.string()).take(pa.array(wrong)).to_pylist()
            image = predictor.pre.image
            blobs = table.column(image.column).take(pa.array(wrong)).to_pylist() if image else [None] * len(wrong)
            for i, key, blob in zip(wrong, keys, blobs, strict=True):
                c, prio = float(p[i, pred[i]]), int(priority[i])
                if len(self.worst) == _WORST and (c, key, prio) <= self.worst[0][:3]:
                    continue
                item = {"key": key, "label": classes[truth[i]], "prediction": classes[pred[i]], "confidence": c,
                        "thumbnail": _thumb(blob)}  # fmt: skip
                entry = (c, key, prio, item)
                if len(self.worst) < _WORST:
                    heapq.heappush(self.worst, entry)
                else:
                    heapq.heappushpop(self.worst, entry)
        return known

    def report(self, predictor: Predictor, prefix: str, *, scores: bool) -> Evaluation:
        head: dict[str, Any] = {
            "task": predictor.pre.label.task,
            "split": prefix,
            "rows": self.rows,
            "skipped_rows": self.skipped,
        }
        if not self.rows:
            return Evaluation(**head, metrics={})
        if self.anomaly:
            return self._anomaly(predictor, prefix, head, scores=scores)
        if self.classification:
            return self._classification(predictor, prefix, head, scores=scores)
        scatter = [[actual, predicted] for _, actual, predicted in sorted(self.scatter, key=lambda e: e[1])]
        return Evaluation(**head, scatter=scatter, metrics=self.sums.compute(prefix=prefix))

    def _anomaly(self, predictor: Predictor, prefix: str, head: dict[str, Any], *, scores: bool) -> Evaluation:
        return _anomaly_report(self, predictor, prefix, head, scores=scores)

    def _classification(self, predictor: Predictor, prefix: str, head: dict[str, Any], *, scores: bool) -> Evaluation:
        classes, label = predictor.classes, predictor.pre.label
        metrics = classification_metrics(self.cm, classes, prefix=prefix)
        found_scores, threshold = None, None
        if self.binary is not None:
            positive = _positive(predictor)
            auc, ap = self.binary.roc_auc(), self.binary.average_precision()
            if auc is not None:
                metrics[f"{prefix}_roc_auc"] = auc
            if ap is not None:
                metrics[f"{prefix}_pr_auc"] = ap
            if scores:
                found_scores = Scores(positive=positive, histogram=self.binary)
            if label.threshold is not None:
                threshold = Threshold(positive=positive, value=label.threshold)
        worst = [WorstExample(**e[3]) for e in sorted(self.worst, key=lambda e: (-e[0], e[1], e[2]))]
        return Evaluation(
            **head,
            scores=found_scores,
            threshold=threshold,
            classes=classes,
            confusion_matrix=self.cm.tolist(),
            per_class={k: ClassMetrics(**v) for k, v in per_class_metrics(self.cm, classes).items()},
            worst=worst,
            metrics=metrics,
        )


def _anomaly_report(
    tally: _Tally, predictor: Predictor, prefix: str, head: dict[str, Any], *, scores: bool
) -> Evaluation:
    """Anomaly: the share flagged and the score distribution always; with known labels, ROC-AUC, PR-AUC and
    precision, recall and F1 of the flags."""
    metrics = {f"{prefix}_flagged_rate": tally.flagged / tally.rows}
    assert tally.binary is not None
    auc, ap = tally.binary.roc_auc(), tally.binary.average_precision()
    if auc is not None:
        metrics[f"{prefix}_roc_auc"] = auc
    if ap is not None:
        metrics[f"{prefix}_pr_auc"] = ap
    (tn, fp), (fn, tp) = tally.cm.tolist()
    if tp + fn and tn + fp:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn)
        metrics[f"{prefix}_precision"] = precision
        metrics[f"{prefix}_recall"] = recall
        metrics[f"{prefix}_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    label = predictor.pre.label
    labelled = bool(tp + fn and tn + fp)
    worst = [WorstExample(**e[3]) for e in sorted(tally.worst, key=lambda e: (-e[0], e[1], e[2]))]
    return Evaluation(
        **head,
        scores=Scores(positive="anomaly", histogram=tally.binary) if scores and labelled else None,
        threshold=Threshold(positive="anomaly", value=label.threshold) if label.threshold is not None else None,
        classes=["normal", "anomaly"] if labelled else None,
        confusion_matrix=tally.cm.tolist() if labelled else None,
        worst=worst,
        score_histogram=tally.histogram.tolist(),
        metrics=metrics,
    )


def _positive(predictor: Predictor) -> str:
    classes, positive = predictor.classes, predictor.pre.label.positive
    return positive if positive in classes else classes[1]
