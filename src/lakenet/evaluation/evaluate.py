"""Score the held-out test split with the Predictor (the same path as batch scoring) and build the report."""

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
from lakenet.data.split import TEST, assign_splits
from lakenet.evaluation.metrics import (
    average_precision,
    classification_metrics,
    confusion_matrix,
    per_class_metrics,
    regression_metrics,
    roc_auc_binary,
)
from lakenet.evaluation.report import ClassMetrics, Evaluation, Scores, Threshold, WorstExample
from lakenet.inference.predictor import Predictor

__all__ = ["evaluate_split"]

_WORST = 12
_SCATTER = 500


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
) -> Evaluation:
    """Metrics named `<prefix>_<metric>` plus the material for the HTML report. `scores`: also return, for two
    classes, the truth and the rarer class's probability per row (`.scores`: for the threshold). `parts`: also
    evaluate each part of the table (named per fragment) in `.parts`, from the same pass."""
    pre = predictor.pre
    cols = list(dict.fromkeys([*pre.columns(with_label=True)]))
    whole = _Tally(predictor, prefix)
    by_part: dict[str, _Tally] = {}
    for frag in snap.fragments:
        table = snap.read(frag, cols)
        mask = assign_splits(table.column(pre.key), split_cfg) == split
        if not mask.any():
            continue
        table = table.filter(pa.array(mask))
        out = predictor(table)
        whole.add(table, out)
        if parts is not None:
            by_part.setdefault(parts(frag), _Tally(predictor, prefix)).add(table, out)
    report = whole.report(scores=scores)
    if parts is not None:
        report = replace(report, parts={name: t.report(scores=False) for name, t in by_part.items()})
    return report


class _Tally:
    """The scored test rows of one evaluation: truth, predictions, and the most confident mistakes."""

    def __init__(self, predictor: Predictor, prefix: str) -> None:
        self.predictor = predictor
        self.prefix = prefix
        self.pre = predictor.pre
        self.classes = predictor.classes
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.y_true: list[Any] = []
        self.y_pred: list[Any] = []
        self.probs: list[np.ndarray] = []
        self.worst: list[tuple[float, int, dict[str, Any]]] = []
        self.skipped = 0
        self.counter = 0

    def add(self, table: pa.Table, out: pa.Table) -> None:
        ok = np.asarray(pa.compute.is_null(out.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
        labels = table.column(self.pre.label.column)
        if self.predictor.classification:
            ok &= self._add_classes(table, out, labels, ok)
        else:
            truth_v = labels.cast(pa.float64()).to_numpy(zero_copy_only=False)
            pred_v = out.column("prediction").to_numpy(zero_copy_only=False).astype(np.float64)
            ok &= np.isfinite(truth_v)
            self.y_true.extend(truth_v[ok].tolist())
            self.y_pred.extend(pred_v[ok].tolist())
        self.skipped += int((~ok).sum())

    def _add_classes(self, table: pa.Table, out: pa.Table, labels: pa.ChunkedArray, ok: np.ndarray) -> np.ndarray:
        truth = [self.index.get(v, -1) if v is not None else -1 for v in labels.cast(pa.string()).to_pylist()]
        known = np.asarray(truth) >= 0
        k = len(self.classes)
        p = np.asarray(out.column("probabilities").items.to_numpy(zero_copy_only=False)).reshape(-1, k)
        pred = self.predictor.decide(p)
        keys = table.column(self.pre.key).cast(pa.string()).to_pylist()
        image_col = self.pre.image.column if self.pre.image else None
        blobs = table.column(image_col).to_pylist() if image_col else None
        for i in np.flatnonzero(ok & known):
            self.y_true.append(truth[i])
            self.y_pred.append(int(pred[i]))
            self.probs.append(p[i])
            if pred[i] != truth[i]:
                self.counter += 1
                item = {
                    "key": keys[i],
                    "label": self.classes[truth[i]],
                    "prediction": self.classes[pred[i]],
                    "confidence": float(p[i, pred[i]]),
                    "_blob": blobs[i] if blobs else None,
                }
                entry = (item["confidence"], self.counter, item)
                if len(self.worst) < _WORST:
                    heapq.heappush(self.worst, entry)
                else:
                    heapq.heappushpop(self.worst, entry)
        return known

    def report(self, *, scores: bool) -> Evaluation:
        head: dict[str, Any] = {
            "task": self.pre.label.task,
            "split": self.prefix,
            "rows": len(self.y_true),
            "skipped_rows": self.skipped,
        }
        if not self.y_true:
            return Evaluation(**head, metrics={})
        if self.predictor.classification:
            return self._classification(head, scores=scores)
        yt, yp = np.asarray(self.y_true), np.asarray(self.y_pred)
        take = np.linspace(0, len(yt) - 1, min(len(yt), _SCATTER)).astype(int)
        scatter = [[float(yt[i]), float(yp[i])] for i in take]
        return Evaluation(**head, scatter=scatter, metrics=regression_metrics(yt, yp, prefix=self.prefix))

    def _classification(self, head: dict[str, Any], *, scores: bool) -> Evaluation:
        pre, prefix, classes = self.pre, self.prefix, self.classes
        cm = confusion_matrix(np.asarray(self.y_true), np.asarray(self.y_pred), len(classes))
        metrics = classification_metrics(cm, classes, prefix=prefix)
        found_scores, threshold = None, None
        if len(classes) == 2:
            positive = pre.label.positive if pre.label.positive in classes else classes[1]
            pos = classes.index(positive)
            truth_pos = (np.asarray(self.y_true) == pos).astype(np.int64)
            p_pos = np.asarray(self.probs)[:, pos]
            auc = roc_auc_binary(truth_pos, p_pos)
            if auc is not None:
                metrics[f"{prefix}_roc_auc"] = auc
            ap = average_precision(truth_pos, p_pos)
            if ap is not None:
                metrics[f"{prefix}_pr_auc"] = ap
            if scores:
                found_scores = Scores(positive=positive, truth=truth_pos, p=p_pos)
            if pre.label.threshold is not None:
                threshold = Threshold(positive=positive, value=pre.label.threshold)
        worst = [
            WorstExample(**{k: v for k, v in item.items() if k != "_blob"}, thumbnail=_thumb(item["_blob"]))
            for _, _, item in sorted(self.worst, key=lambda e: -e[0])
        ]
        return Evaluation(
            **head,
            scores=found_scores,
            threshold=threshold,
            classes=classes,
            confusion_matrix=cm.tolist(),
            per_class={k: ClassMetrics(**v) for k, v in per_class_metrics(cm, classes).items()},
            worst=worst,
            metrics=metrics,
        )
