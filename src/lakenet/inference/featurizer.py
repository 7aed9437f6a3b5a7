"""The Featurizer: a pretrained network's embedding of every row, with the same contract as the Predictor
(load once, then `__call__(arrow batch) -> arrow batch`), so `lakenet featurize` runs on every engine.

Output rows: the key, the embedding (list<float32>, null for a row that cannot be encoded, with the reason in
`error`) and every other column of the input except the ones the network read (image bytes are not copied),
so the embedding table can be trained on directly with `features: {emb: {type: vector}}`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakenet.data.encoders import ImageState, LabelState, Preprocessor, TextState
from lakenet.errors import ModelError

__all__ = ["FeaturizeSpec", "Featurizer", "featurize_schema"]

_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class FeaturizeSpec:
    """What a worker needs to rebuild the featurizer: picklable, small (no weights)."""

    kind: str  # lakenet, onnx, hf
    path: str  # the bundle directory, ONNX file or Hugging Face model directory
    source: str  # as the user named it (recorded in lineage)
    key: str
    column: str | None = None  # onnx / hf: the input column
    max_length: int = 128  # hf text
    mean: tuple[float, ...] | None = None  # onnx / hf image: normalisation
    std: tuple[float, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _dummy_label() -> LabelState:
    return LabelState("__none__", "regression")


class Featurizer:
    """Embeds Arrow batches with a pretrained network."""

    def __init__(self, spec: FeaturizeSpec, *, batch_size: int = 64, trust_modules: tuple[str, ...] = ()) -> None:
        """`trust_modules`: custom architectures a lakenet bundle may import (see Predictor)."""
        self.spec = spec
        self.batch_size = batch_size
        self._hf_image = False
        self._onnx_batch: int | None = None
        self._onnx: Any = None
        self._onnx_io: tuple[str, str] = ("", "")
        self.model: torch.nn.Module | None = None
        if spec.kind == "lakenet":
            from lakenet.models.bundle import Bundle

            bundle = Bundle.load(spec.path)
            self.pre = bundle.preprocessor
            self.pre.key = spec.key
            model = bundle.build("cpu", trusted=trust_modules)
            if not hasattr(model, "features"):
                raise ModelError(f"{spec.source}: its network ({bundle.spec.architecture}) has no features() method")
            self.model = model
        elif spec.kind == "onnx":
            from lakenet.models.pretrained import onnx_info, ort_session

            info = onnx_info(spec.path)
            mean = list(spec.mean or json.loads(info.metadata.get("lakenet.image_mean", "null")) or [])
            std = list(spec.std or json.loads(info.metadata.get("lakenet.image_std", "null")) or [])
            if not mean:  # the usual convention of image models from model zoos
                mean = _IMAGENET_MEAN if info.channels == 3 else [0.5]
                std = _IMAGENET_STD if info.channels == 3 else [0.5]
            assert spec.column is not None
            image = ImageState("image", spec.column, info.size, info.channels, mean, std)
            self.pre = Preprocessor(key=spec.key, numeric=[], categories=[], image=image, label=_dummy_label())
            self._onnx = ort_session(info.data)
            self._onnx_io = (info.input, info.output)
            self._onnx_batch = info.batch
        else:
            self._init_hf(spec)
        self.input_columns = self.pre.input_columns()

    def _init_hf(self, spec: FeaturizeSpec) -> None:
        assert spec.column is not None
        config = json.loads((Path(spec.path) / "config.json").read_text())
        if "image_size" in config and "vocab_size" not in config:
            from lakenet.models.pretrained import HFVisionBackbone, hf_image_assets

            cfg, weights, facts = hf_image_assets(spec.path)
            mean = list(spec.mean or facts["mean"] or (_IMAGENET_MEAN if facts["channels"] == 3 else [0.5]))
            std = list(spec.std or facts["std"] or (_IMAGENET_STD if facts["channels"] == 3 else [0.5]))
            image = ImageState("image", spec.column, facts["size"], facts["channels"], mean, std)
            self.pre = Preprocessor(key=spec.key, numeric=[], categories=[], image=image, label=_dummy_label())
            vision = HFVisionBackbone(cfg)
            vision.model.load_state_dict(weights, strict=False)
            self.model = vision.eval()
            self._hf_image = True
            return
        from lakenet.models.pretrained import load_text_encoder
        from lakenet.models.text import PretrainedTextEncoder

        enc = load_text_encoder(spec.path)
        length = min(spec.max_length, enc.max_positions)
        text = TextState("text", spec.column, "pretrained", length, tokenizer=enc.tokenizer_json, source=enc.source)
        self.pre = Preprocessor(key=spec.key, numeric=[], categories=[], image=None, label=_dummy_label(), texts=[text])
        model = PretrainedTextEncoder(enc.hf_config, enc.pooling, enc.normalize)
        model.model.load_state_dict(enc.weights, strict=False)
        self.model = model.eval()
        self._hf_image = False

    @property
    def dim(self) -> int:
        return int(self.embed(self.pre.example_inputs(1)).shape[1])

    @torch.inference_mode()
    def embed(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of encoded inputs."""
        n = len(next(iter(inputs.values()))) if inputs else 0
        outs = []
        for start in range(0, n, self.batch_size):
            chunk = {k: v[start : start + self.batch_size] for k, v in inputs.items()}
            if self._onnx is not None:
                name_in, name_out = self._onnx_io
                out = self._run_onnx(name_in, name_out, chunk["image"])
            elif self.spec.kind == "lakenet":
                assert self.model is not None
                t = {k: torch.from_numpy(v) for k, v in chunk.items()}
                out = self.model.features(t).float().numpy()  # type: ignore[operator]
            elif self._hf_image:
                assert self.model is not None
                out = self.model(torch.from_numpy(chunk["image"])).float().numpy()
            else:
                assert self.model is not None
                ids, mask = chunk["text.text"], chunk["text.text.mask"]
                out = self.model(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
            outs.append(out.reshape(len(out), -1))
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), dtype=np.float32)

    def _run_onnx(self, name_in: str, name_out: str, x: np.ndarray) -> np.ndarray:
        step = self._onnx_batch or max(len(x), 1)
        outs = []
        for s in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[s : s + step])
            pad = step - len(chunk) if self._onnx_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            out = self._onnx.run([name_out], {name_in: chunk})[0]
            out = out[: len(out) - pad]
            outs.append(out.mean((2, 3)) if out.ndim == 4 else out)
        return np.concatenate(outs)

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        return featurize_schema(input_schema, self.spec, self.input_columns)

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        if isinstance(batch, pa.Table):
            batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in batch.columns], schema=batch.schema)
        names = batch.schema.names
        self.pre.require_inputs(set(names), what=self.spec.source, fix="pass --column or rename the column.")
        enc = self.pre.encode(batch, with_label=False)
        emb = self.embed(enc.inputs)
        n = batch.num_rows
        errors = enc.reasons()
        dim = emb.shape[1] if len(emb) else 0
        full = np.zeros((n, dim), dtype=np.float32)
        full[enc.valid] = emb
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim, pa.int32())
        vectors = pa.ListArray.from_arrays(offsets, pa.array(full.ravel(), pa.float32()), mask=pa.array(~enc.valid))
        cols: dict[str, pa.Array] = {}
        if self.spec.key in names:
            cols[self.spec.key] = pa.array(batch.column(self.spec.key).to_pylist(), pa.string())
        for name in names:
            if name != self.spec.key and name not in self.input_columns and name not in ("embedding", "error"):
                cols[name] = batch.column(name)
        cols["embedding"] = vectors
        cols["error"] = pa.array(errors, pa.string())
        return pa.RecordBatch.from_pydict(cols, schema=self.output_schema(batch.schema))


def featurize_schema(input_schema: pa.Schema, spec: FeaturizeSpec, read: list[str]) -> pa.Schema:
    """The Featurizer's output schema for an input table (no model is built): `read` are the columns the
    network reads, which are not copied."""
    fields: list[pa.Field] = []
    if spec.key in input_schema.names:
        fields.append(pa.field(spec.key, pa.string()))
    for f in input_schema:
        if f.name != spec.key and f.name not in read and f.name not in ("embedding", "error"):
            fields.append(f)
    return pa.schema([*fields, pa.field("embedding", pa.list_(pa.float32())), pa.field("error", pa.string())])
