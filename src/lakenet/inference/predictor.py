"""The Predictor contract: load a bundle once, then `__call__(arrow batch) -> arrow batch`.

Batch scoring (local processes, Spark UDFs), the MLflow pyfunc model and the HTTP server all call this class,
with the preprocessing the model was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from lakenet.data.encoders import Preprocessor
from lakenet.errors import ModelError
from lakenet.inference.calibration import Calibration

if TYPE_CHECKING:
    from lakenet.inference.recommender import Recommender
from lakenet.models.bundle import Bundle
from lakenet.models.export import OnnxModel, bundle_onnx

__all__ = ["BundleTask", "Predictor", "bundle_stamp", "output_schema"]

# On a CPU, the forward pass runs in chunks of at most this many input values (8 MB of float32): activations of
# big chunks overflow the caches (a ResNet-18 at 224² on one thread: 15-17 rows/s at 4-16 rows per chunk,
# 12 rows/s at 64, fewer still at 256).
_CPU_CHUNK_VALUES = 1 << 21


def output_schema(
    pre: Preprocessor, *, with_key: bool = True, with_model: bool = False, keep: Sequence[pa.Field] = ()
) -> pa.Schema:
    """The Predictor's output schema, known from the preprocessing state alone (no model is built); `keep`: input
    columns copied to the output, after the key."""
    fields: list[pa.Field] = []
    if with_key:
        fields.append(pa.field(pre.key, pa.string()))
    fields += list(keep)
    if pre.label.task == "recommendation":
        from lakenet.inference.recommender import RECOMMEND_FIELDS

        fields += RECOMMEND_FIELDS
    elif pre.label.task == "anomaly":
        fields += [
            pa.field("score", pa.float64()),
            pa.field("is_anomaly", pa.bool_()),
            pa.field("raw_score", pa.float64()),
        ]
    elif pre.label.task == "classification":
        fields += [
            pa.field("prediction", pa.string()),
            pa.field("confidence", pa.float32()),
            pa.field("probabilities", pa.map_(pa.string(), pa.float32())),
        ]
    else:
        fields.append(pa.field("prediction", pa.float64()))
    fields.append(pa.field("error", pa.string()))
    if with_model:
        fields += [pa.field("model_name", pa.string()), pa.field("model_version", pa.string())]
    return pa.schema(fields)


class Predictor:
    """Scores Arrow batches. Rows that cannot be encoded get a null prediction and the reason in `error`."""

    def __init__(
        self,
        bundle: str | Path | Bundle,
        *,
        device: str = "cpu",
        batch_size: int = 256,
        model_name: str | None = None,
        model_version: str | None = None,
        runtime: str = "torch",
        trust_modules: Iterable[str] = (),
        keep: Sequence[str] = (),
    ) -> None:
        """`runtime`: torch, or onnx (the model exported to ONNX and run in ONNX Runtime, on the CPU). A bundle
        loaded from an exported .onnx file always runs in ONNX Runtime. `trust_modules`: custom architectures
        (`package.module:Class`) the caller allows the bundle to import; built-in ones need nothing."""
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.pre = self.bundle.preprocessor
        self.device = torch.device(device)
        if runtime not in ("torch", "onnx"):
            raise ModelError(f"runtime must be torch or onnx, not {runtime!r}")
        self.runtime = "onnx" if self.bundle.onnx is not None and not self.bundle.weights else runtime
        self.model: torch.nn.Module | None = None
        self._ort: OnnxModel | None = None
        if self.runtime == "onnx":
            if self.device.type != "cpu":
                raise ModelError("runtime onnx runs on the CPU here; use runtime torch for device cuda")
            where = Path(bundle) if isinstance(bundle, str | Path) else None
            graph = bundle_onnx(
                self.bundle, where if where is not None and where.is_dir() else None, trusted=tuple(trust_modules)
            )
            self._ort = OnnxModel(graph, self.pre.input_keys())
        else:
            self.model = self.bundle.build(self.device, trusted=trust_modules)
            if self.pre.image is not None and self.device.type == "cpu":
                self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # faster CPU convs
        self.batch_size = batch_size
        self.keep = tuple(keep)  # input columns copied to the output next to the key
        self.trust_modules = tuple(trust_modules)
        self.model_name, self.model_version = model_name, model_version
        self.classes = self.pre.label.classes or []
        self.task = self.pre.label.task
        self.classification = self.task == "classification"
        self.anomaly = self.task == "anomaly"
        cal = self.pre.label.calibration
        self.calibration = Calibration.from_list(cal) if self.anomaly and cal else None
        self._recommender: Recommender | None = None

    @property
    def input_columns(self) -> list[str]:
        return self.pre.input_columns()

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The predicted class index per row: the most probable class, or, for two classes with a decision
        threshold (chosen on the validation split), the rarer class from that probability up."""
        lab = self.pre.label
        if lab.threshold is not None and len(self.classes) == 2 and lab.positive in self.classes:
            pos = self.classes.index(lab.positive)
            return np.where(probs[:, pos] >= lab.threshold, pos, 1 - pos)
        return probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)

    def _recommend(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Recommendation: the top-k items of each row's user, with the key, kept columns and the model."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        out = self.recommender()(table)
        n = table.num_rows
        with_key = self.pre.key in table.column_names
        cols = {name: out.column(name).combine_chunks() for name in out.column_names}
        if with_key:
            cols[self.pre.key] = pa.array(table.column(self.pre.key).to_pylist(), pa.string())
        if self.model_name is not None:
            cols["model_name"] = pa.array([self.model_name] * n, pa.string())
            cols["model_version"] = pa.array([self.model_version] * n, pa.string())
        kept = [table.schema.field(c) for c in self.keep]
        for f in kept:
            cols[f.name] = table.column(f.name).combine_chunks()
        schema = output_schema(self.pre, with_key=with_key, with_model=self.model_name is not None, keep=kept)
        return pa.RecordBatch.from_pydict({name: cols[name] for name in schema.names}, schema=schema)

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Anomaly: raw scores → calibrated scores in (0, 1) (an uncalibrated model: raw / (1 + raw))."""
        return self.calibration(raw) if self.calibration is not None else raw / (1.0 + raw)

    def _anomaly_columns(self, raw: np.ndarray, rows: np.ndarray, valid: np.ndarray) -> dict[str, pa.Array]:
        n = len(valid)
        values, scores = np.full(n, np.nan), np.full(n, np.nan)
        values[rows] = raw
        scores[rows] = self.calibrated(raw)
        threshold = self.pre.label.threshold
        flagged = scores >= (threshold if threshold is not None else 1.0)
        return {
            "score": pa.array(scores, pa.float64(), mask=~valid),
            "is_anomaly": pa.array(flagged, pa.bool_(), mask=~valid),
            "raw_score": pa.array(values, pa.float64(), mask=~valid),
        }

    def output_schema(self, *, with_key: bool = True) -> pa.Schema:
        return output_schema(self.pre, with_key=with_key, with_model=self.model_name is not None)

    @torch.inference_mode()
    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Model outputs for encoded inputs: (N, classes) probabilities, (N,) values in the label's units, or (N,)
        raw anomaly scores."""
        n = len(next(iter(inputs.values()))) if inputs else 0
        step = self.batch_size
        if self.device.type == "cpu":
            per_row = sum(int(np.prod(v.shape[1:])) for v in inputs.values())
            step = max(1, min(step, _CPU_CHUNK_VALUES // max(per_row, 1)))
        outs = []
        for start in range(0, n, step):
            if self._ort is not None:
                outs.append(self._ort({k: v[start : start + step] for k, v in inputs.items()}))
                continue
            assert self.model is not None
            chunk = {k: torch.from_numpy(v[start : start + step]).to(self.device) for k, v in inputs.items()}
            if "image" in chunk and self.device.type == "cpu":
                chunk["image"] = chunk["image"].contiguous(memory_format=torch.channels_last)
            out = self.model(chunk)
            if self.task == "recommendation":
                outs.append(out.float().cpu().numpy())  # (B, n_items) scores
            elif self.anomaly:
                outs.append(out.float().view(-1).cpu().numpy().astype(np.float64))
            elif self.classification:
                outs.append(torch.softmax(out.float(), dim=1).cpu().numpy())
            else:
                outs.append(self.pre.decode_target(out.float().view(-1).cpu().numpy().astype(np.float64)))
        if not outs:
            return np.zeros((0, len(self.classes)) if self.classification else (0,), dtype=np.float32)
        return np.concatenate(outs)

    def recommender(self, k: int | None = None) -> Recommender:
        """Recommendation models: the top-k view of this predictor (built once)."""
        if self._recommender is None:
            from lakenet.inference.recommender import Recommender

            self._recommender = Recommender(self, k=k or self.pre.label.k or 10)
        return self._recommender

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        names = set(batch.schema.names)
        if self.task == "recommendation":
            return self._recommend(batch)
        self.pre.require_inputs(
            names, what="the model", fix="rename the columns or score a table with the training schema."
        )
        enc = self.pre.encode(batch, with_label=False)
        out = self.forward(enc.inputs)
        n = batch.num_rows
        valid = enc.valid
        errors = enc.reasons()
        with_key = self.pre.key in names
        cols: dict[str, pa.Array] = {}
        if with_key:
            cols[self.pre.key] = pa.array(batch.column(self.pre.key).to_pylist(), pa.string())
        rows = np.flatnonzero(valid)
        if self.anomaly:
            cols.update(self._anomaly_columns(out, rows, valid))
        elif self.classification:
            k = len(self.classes)
            probs = np.full((n, k), np.nan, dtype=np.float32)
            probs[rows] = out
            best = self.decide(np.nan_to_num(probs)) if k else np.zeros(n, dtype=np.int64)
            cls = np.asarray(self.classes, dtype=object)
            pred = [cls[best[i]] if valid[i] else None for i in range(n)]
            picked = probs[np.arange(n), best] if k else np.zeros(n)
            conf = np.where(valid, picked, np.nan)
            cols["prediction"] = pa.array(pred, pa.string())
            cols["confidence"] = pa.array(conf, pa.float32(), mask=~valid)
            # map<class, probability>: built from flat arrays, no per-row Python dicts
            offsets = np.arange(n + 1, dtype=np.int32) * k
            keys = pa.array(np.tile(cls, n) if n else [], pa.string())
            items = pa.array(np.nan_to_num(probs).ravel(), pa.float32())
            cols["probabilities"] = pa.MapArray.from_arrays(
                pa.array(offsets, pa.int32()), keys, items, mask=pa.array(~valid)
            )
        else:
            values = np.full(n, np.nan)
            values[rows] = out.astype(np.float64)
            cols["prediction"] = pa.array(values, pa.float64(), mask=~valid)
        cols["error"] = pa.array(errors, pa.string())
        if self.model_name is not None:
            cols["model_name"] = pa.array([self.model_name] * n, pa.string())
            cols["model_version"] = pa.array([self.model_version] * n, pa.string())
        kept = [batch.schema.field(c) for c in self.keep]
        for f in kept:
            col = batch.column(f.name)
            cols[f.name] = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        schema = output_schema(self.pre, with_key=with_key, with_model=self.model_name is not None, keep=kept)
        return pa.RecordBatch.from_pydict({name: cols[name] for name in schema.names}, schema=schema)


_SHARED: dict[tuple[str, tuple[str, ...], int], Predictor] = {}  # per engine worker process: loaded once


def bundle_stamp(bundle_dir: str | Path | None) -> int:
    """Which save of a bundle directory this is (a bundle saved again, e.g. with its threshold set, is reloaded)."""
    if bundle_dir is None:
        return 0
    meta = Path(bundle_dir) / "bundle.json"
    return (meta if meta.exists() else Path(bundle_dir)).stat().st_mtime_ns


class BundleTask:
    """The base of an engine task that scores with a bundle: in this process it uses the Predictor it was given;
    shipped to an engine's worker (pickled without it), it loads the bundle saved at `bundle_dir`, once per process
    and save."""

    def __init__(self, predictor: Predictor | None, bundle_dir: str | Path | None, trust: Iterable[str] = ()) -> None:
        self.predictor = predictor
        self.bundle_dir = str(bundle_dir) if bundle_dir is not None else None
        self.trust = tuple(predictor.trust_modules) if predictor is not None else tuple(trust)
        self.stamp = bundle_stamp(bundle_dir)

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "predictor": None}

    def scorer(self) -> Predictor:
        if self.predictor is None:
            assert self.bundle_dir is not None, "a task without a predictor needs the saved bundle's directory"
            key = (self.bundle_dir, self.trust, self.stamp)
            if key not in _SHARED:
                _SHARED[key] = Predictor(self.bundle_dir, trust_modules=self.trust)
            self.predictor = _SHARED[key]
        return self.predictor
