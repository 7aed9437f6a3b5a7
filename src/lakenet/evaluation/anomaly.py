"""task: anomaly — calibration after training, on the engine.

A raw anomaly score (the autoencoder's reconstruction error, each part divided by its typical error) means
nothing to a reader. After training, one pass over the validation split (the training split when there is none)
measures each part's typical error on rows not known to be anomalies, then maps a raw score to the share of
those rows that score lower: a calibrated score in (0, 1), strictly increasing in the raw one (0.99 = more
unusual than 99 % of validation rows). The threshold is on that scale: 1 − contamination, or where labelled
anomalies exist in validation, the one that finds them with the best F1.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lakenet.config.schema import Config
from lakenet.data.sources import Fragment, Snapshot
from lakenet.data.split import TRAIN, VAL, split_columns, table_splits
from lakenet.evaluation.metrics import BinaryScores
from lakenet.inference.calibration import Calibration
from lakenet.inference.predictor import BundleTask, Predictor

if TYPE_CHECKING:
    from lakenet.models.bundle import Bundle

__all__ = ["DEFAULT_CONTAMINATION", "calibrate_anomaly"]

DEFAULT_CONTAMINATION = 0.05
_MIN_LABELLED = 5  # known anomalies (and known normal rows) in validation to choose the threshold on
_SAMPLE = 50_000  # validation rows kept (bottom-k by key hash) for the calibration


class _PartsTask(BundleTask):
    """`(fragment index, fragment, table) -> sample`: each calibration row's per-part errors, its key hash and
    its label (1 known anomaly, 0 known normal, -1 unknown), at most `_SAMPLE` rows of smallest hash."""

    def __init__(self, predictor: Predictor, bundle_dir: str | None, cfg: Config, split: int) -> None:
        super().__init__(predictor, bundle_dir)
        self.split_cfg, self.split = cfg.data.split, split

    def __call__(self, fi: int, frag: Fragment, table: pa.Table) -> _Sample:
        import pandas as pd
        import torch

        predictor = self.scorer()
        pre = predictor.pre
        table = table.filter(pa.array(table_splits(table, pre.key, self.split_cfg) == self.split))
        enc = pre.encode(table, with_label=True)
        if not enc.num_valid:
            return _Sample(np.zeros(0, np.uint64), np.zeros((0, 0)), np.zeros(0, np.int64))
        keys = np.asarray(table.column(pre.key).cast(pa.string()).to_pylist(), dtype=object)[enc.valid]
        hashes = pd.util.hash_array(keys, categorize=False)
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in enc.inputs.items()}
            model: Any = predictor.model
            parts = model.errors(inputs).double().numpy()
        assert enc.target is not None
        return _Sample(hashes, parts, enc.target)


class _Sample:
    """Calibration rows, bounded and mergeable: the `_SAMPLE` rows of smallest key hash, with their per-part
    errors and labels (the same rows whatever the engine and the fragments)."""

    def __init__(self, hashes: np.ndarray, parts: np.ndarray, labels: np.ndarray) -> None:
        keep = np.argsort(hashes, kind="stable")[:_SAMPLE]
        self.hashes, self.parts, self.labels = hashes[keep], parts[keep], labels[keep]

    def merge(self, other: _Sample) -> _Sample:
        if not len(other.hashes):
            return self
        if not len(self.hashes):
            return other
        return _Sample(
            np.concatenate([self.hashes, other.hashes]),
            np.concatenate([self.parts, other.parts]),
            np.concatenate([self.labels, other.labels]),
        )


def calibrate_anomaly(
    cfg: Config,
    snap: Snapshot,
    bundle: Bundle,
    trust: tuple[str, ...],
    *,
    engine: Any = None,
    bundle_dir: str | None = None,
) -> dict[str, float]:
    """Set the bundle's part scales, calibration and threshold from the validation split (scored on `engine`
    from the saved `bundle_dir`, else in this process); the figures it chose by."""
    import torch

    split = VAL if cfg.data.split.val > 0 else TRAIN
    task = _PartsTask(Predictor(bundle, trust_modules=trust), bundle_dir, cfg, split)
    pre = bundle.preprocessor
    columns = list(dict.fromkeys([*pre.columns(with_label=True), *split_columns(pre.key, cfg.data.split)]))
    if engine is not None and bundle_dir is not None:
        samples = list(engine.map_fragments(task, snap, columns))
    else:
        samples = [task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns)]
    merged = _Sample(np.zeros(0, np.uint64), np.zeros((0, 0)), np.zeros(0, np.int64))
    for sample in samples:
        merged = merged.merge(sample)
    parts, labels = merged.parts, merged.labels
    normal = labels != 1
    if not normal.any():
        return {}
    scale = np.maximum(parts[normal].mean(axis=0), 1e-8)
    raw = (parts / scale).mean(axis=1)
    calibration = Calibration.fit(raw[normal])
    calibrated = calibration(raw)
    label = bundle.preprocessor.label
    train = (bundle.profile.get("label") or {}).get("by_split", {}).get("train", {})
    prior = (int(train.get(label.positive, 0)), sum(v for k, v in train.items() if k != label.positive))
    threshold, figures = _threshold(cfg, calibrated, labels, prior)
    bundle.weights["scale"] = torch.tensor(scale, dtype=torch.float32)
    bundle.preprocessor.label = replace(label, calibration=calibration.to_list(), threshold=float(threshold))
    return {"threshold": float(threshold), "calibration_rows": float(normal.sum()), **figures}


def _threshold(
    cfg: Config, calibrated: np.ndarray, labels: np.ndarray, prior: tuple[int, int]
) -> tuple[float, dict[str, float]]:
    """On the calibrated scale: 1 − contamination. With contamination auto: the F1-best threshold where validation
    has at least `_MIN_LABELLED` known anomalies and as many known normal rows (fewer make that choice a coin
    toss: two labelled anomalies gave a threshold that flagged 71 % of the rows); with fewer, the known anomalies'
    share of the labelled training and validation rows (`prior`: training's known anomalies and normal rows);
    without any, 5 %."""
    setting = cfg.anomaly.contamination
    known = labels >= 0
    anomalies, normals = int((labels == 1).sum()), int((labels == 0).sum())
    if setting == "auto" and anomalies >= _MIN_LABELLED and normals >= _MIN_LABELLED:
        scores = BinaryScores()
        scores.update(labels[known] == 1, calibrated[known])
        found = scores.best_f1_threshold()
        if found is not None:
            return found[0], {"val_f1_at_threshold": found[1]}
    if setting != "auto":
        c = float(setting)
    elif anomalies + prior[0]:
        c = float(np.clip((anomalies + prior[0]) / (anomalies + normals + sum(prior)), 0.001, 0.45))
    else:
        c = DEFAULT_CONTAMINATION
    return 1.0 - c, {"contamination": c}
