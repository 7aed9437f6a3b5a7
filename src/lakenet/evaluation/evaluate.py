"""Score the held-out test split with the Predictor (the same path as batch scoring) and build the report."""

from __future__ import annotations

import base64
import heapq
import io
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.config.schema import SplitConfig
from lakenet.data.sources import Snapshot
from lakenet.data.split import TEST, assign_splits
from lakenet.evaluation.metrics import (
    average_precision,
    classification_metrics,
    confusion_matrix,
    per_class_metrics,
    regression_metrics,
    roc_auc_binary,
)
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
) -> dict[str, Any]:
    """Metrics named `<prefix>_<metric>` plus the material for the HTML report. `scores`: also return, for two
    classes, the truth and the rarer class's probability per row (`report["scores"]`: for the threshold)."""
    pre = predictor.pre
    label_col = pre.label.column
    cols = list(dict.fromkeys([*pre.columns(with_label=True)]))
    image_col = pre.image.column if pre.image else None
    classification = predictor.classification
    classes = predictor.classes
    index = {c: i for i, c in enumerate(classes)}
    y_true: list[Any] = []
    y_pred: list[Any] = []
    probs: list[np.ndarray] = []
    worst: list[tuple[float, int, dict[str, Any]]] = []
    skipped = 0
    counter = 0
    for frag in snap.fragments:
        table = snap.read(frag, cols)
        mask = assign_splits(table.column(pre.key), split_cfg) == split
        if not mask.any():
            continue
        table = table.filter(pa.array(mask))
        out = predictor(table)
        ok = np.asarray(pa.compute.is_null(out.column("error")).to_numpy(zero_copy_only=False), dtype=bool)
        labels = table.column(label_col)
        if classification:
            truth = [index.get(v, -1) if v is not None else -1 for v in labels.cast(pa.string()).to_pylist()]
            ok &= np.asarray(truth) >= 0
            k = len(classes)
            p = np.asarray(out.column("probabilities").items.to_numpy(zero_copy_only=False)).reshape(-1, k)
            pred = predictor.decide(p)
            keys = table.column(pre.key).cast(pa.string()).to_pylist()
            blobs = table.column(image_col).to_pylist() if image_col else None
            for i in np.flatnonzero(ok):
                y_true.append(truth[i])
                y_pred.append(int(pred[i]))
                probs.append(p[i])
                if pred[i] != truth[i]:
                    counter += 1
                    item = {
                        "key": keys[i],
                        "label": classes[truth[i]],
                        "prediction": classes[pred[i]],
                        "confidence": float(p[i, pred[i]]),
                        "_blob": blobs[i] if blobs else None,
                    }
                    entry = (item["confidence"], counter, item)
                    if len(worst) < _WORST:
                        heapq.heappush(worst, entry)
                    else:
                        heapq.heappushpop(worst, entry)
        else:
            truth_v = labels.cast(pa.float64()).to_numpy(zero_copy_only=False)
            pred_v = out.column("prediction").to_numpy(zero_copy_only=False).astype(np.float64)
            ok &= np.isfinite(truth_v)
            y_true.extend(truth_v[ok].tolist())
            y_pred.extend(pred_v[ok].tolist())
        skipped += int((~ok).sum())

    report: dict[str, Any] = {
        "task": pre.label.task,
        "split": prefix,
        "rows": len(y_true),
        "skipped_rows": skipped,
    }
    if not y_true:
        report["metrics"] = {}
        return report
    if classification:
        cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), len(classes))
        metrics = classification_metrics(cm, classes, prefix=prefix)
        if len(classes) == 2:
            positive = pre.label.positive if pre.label.positive in classes else classes[1]
            pos = classes.index(positive)
            truth_pos = (np.asarray(y_true) == pos).astype(np.int64)
            p_pos = np.asarray(probs)[:, pos]
            auc = roc_auc_binary(truth_pos, p_pos)
            if auc is not None:
                metrics[f"{prefix}_roc_auc"] = auc
            ap = average_precision(truth_pos, p_pos)
            if ap is not None:
                metrics[f"{prefix}_pr_auc"] = ap
            if scores:
                report["scores"] = {"positive": positive, "truth": truth_pos, "p": p_pos}
            if pre.label.threshold is not None:
                report["threshold"] = {"positive": positive, "value": pre.label.threshold}
        report.update(
            classes=classes,
            confusion_matrix=cm.tolist(),
            per_class=per_class_metrics(cm, classes),
            worst=[
                {**{k: v for k, v in item.items() if k != "_blob"}, "thumbnail": _thumb(item["_blob"])}
                for _, _, item in sorted(worst, key=lambda e: -e[0])
            ],
        )
    else:
        yt, yp = np.asarray(y_true), np.asarray(y_pred)
        metrics = regression_metrics(yt, yp, prefix=prefix)
        take = np.linspace(0, len(yt) - 1, min(len(yt), _SCATTER)).astype(int)
        report["scatter"] = [[float(yt[i]), float(yp[i])] for i in take]
    report["metrics"] = metrics
    return report
