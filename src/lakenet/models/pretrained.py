"""Pretrained networks from outside lakenet: Hugging Face models (hub ids, local directories, packaged sentence
encoders) and ONNX files exported from any framework.

Everything a bundle needs to rebuild them travels inside the bundle (the Hugging Face config as JSON, the ONNX
graph as a byte buffer of the state dict), so a trained model never reaches back to the hub or to the file it
started from.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lakenet.data.hf import config_positions, quiet_transformers, resolve_hf_dir, sentence_max_length, tokenizer_json
from lakenet.errors import ModelError

__all__ = [
    "HFVisionBackbone",
    "OnnxBackbone",
    "OnnxInfo",
    "TextEncoderAssets",
    "build_hf_model",
    "hf_image_assets",
    "load_text_encoder",
    "onnx_info",
    "ort_session",
    "resolve_hf_dir",
]


def build_hf_model(hf_config: dict[str, Any]) -> nn.Module:
    """The bare transformer (AutoModel) for a config dict, with random weights."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModel

    cfg = dict(hf_config)
    # A config can name its own modelling code (auto_map, loaded with trust_remote_code): a bundle's config is
    # data, so only architectures transformers itself ships are built.
    for key in ("auto_map", "trust_remote_code", "custom_pipelines"):
        cfg.pop(key, None)
    model_type = cfg.pop("model_type", None)
    try:
        config = AutoConfig.for_model(str(model_type), **cfg)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"Hugging Face config of model type {model_type!r} cannot be built: {err}") from None
    # eager attention: the same numbers with and without a padding mask, and exportable to ONNX.
    return AutoModel.from_config(config, attn_implementation="eager")


def _hf_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, weights) of the model directory, loaded by transformers (prefixes, shards, .bin files)."""
    quiet_transformers()
    from transformers import AutoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    config = model.config.to_dict()
    return config, {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class TextEncoderAssets:
    """A pretrained text encoder: what a bundle needs to rebuild it, and its pretrained weights."""

    source: str
    path: Path
    hf_config: dict[str, Any]
    pooling: str  # mean or cls
    normalize: bool
    tokenizer_json: str
    max_positions: int
    weights: dict[str, torch.Tensor]

    @property
    def dim(self) -> int:
        return int(self.hf_config["hidden_size"])

    def spec(self) -> dict[str, Any]:
        return {"kind": "pretrained", "hf_config": self.hf_config, "pooling": self.pooling, "normalize": self.normalize}


@functools.lru_cache(maxsize=4)
def load_text_encoder(source: str) -> TextEncoderAssets:
    """Load a sentence encoder (sentence-transformers layout: pooling and normalisation from its modules) or a
    plain Hugging Face encoder (mean pooling) from a name, hub id or directory."""
    path = resolve_hf_dir(source)
    pooling, normalize = "mean", False
    modules = path / "modules.json"
    if modules.is_file():
        for m in json.loads(modules.read_text()):
            kind = str(m.get("type", ""))
            if kind.endswith("Pooling"):
                pc = json.loads((path / m["path"] / "config.json").read_text())
                if pc.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif not pc.get("pooling_mode_mean_tokens", True):
                    raise ModelError(f"{source}: only mean and CLS pooling are supported (config {pc})")
            elif kind.endswith("Normalize"):
                normalize = True
    max_len = sentence_max_length(path)
    text = tokenizer_json(path, source)
    config, weights = _hf_state_dict(path)
    return TextEncoderAssets(
        source=source,
        path=path,
        hf_config=config,
        pooling=pooling,
        normalize=normalize,
        tokenizer_json=text,
        max_positions=config_positions(config, max_len),
        weights=weights,
    )


# ---- image backbones ----------------------------------------------------------------------------------------
def hf_image_assets(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config, weights, image facts: size, channels, mean, std) of a Hugging Face vision model."""
    path = resolve_hf_dir(source)
    config, weights = _hf_state_dict(path)
    size = config.get("image_size", 224)
    size = int(size if isinstance(size, int) else max(size))
    facts: dict[str, Any] = {"size": size, "channels": int(config.get("num_channels", 3)), "mean": None, "std": None}
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        if p.get("image_mean") and p.get("image_std"):
            facts["mean"], facts["std"] = list(p["image_mean"]), list(p["image_std"])
    return config, weights, facts


class HFVisionBackbone(nn.Module):
    """A Hugging Face vision model as a feature extractor: its pooled output, else the mean of its tokens."""

    def __init__(self, hf_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = build_hf_model(hf_config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=image)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(1)  # (B, T, H) -> (B, H)
        return pooled.flatten(1)  # (B, ...) -> (B, D)


@dataclass(frozen=True)
class OnnxInfo:
    """What lakenet reads off an ONNX feature extractor."""

    data: bytes
    input: str
    output: str
    channels: int
    size: int
    out_dim: int
    batch: int | None  # a fixed batch size baked into the graph, else None
    metadata: dict[str, str]


def ort_session(data: bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU for the serialized graph `data` (`threads`: intra-op threads, default
    torch's)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError("ONNX models need onnxruntime: pip install 'lakenet[onnx]'") from err
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_info(path: str | Path, output: str | None = None) -> OnnxInfo:
    """Open an ONNX image model: its (N, C, H, W) input, the chosen output and the feature width."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(
            f"ONNX file {p} does not exist; check the path (relative paths start at the working directory)"
        )
    data = p.read_bytes()
    try:
        sess = ort_session(data, 1)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"{p} is not a loadable ONNX model: {str(err).splitlines()[0][:300]}") from None
    inputs = sess.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [(i.name, i.shape) for i in inputs]
        raise ModelError(f"{p}: an ONNX backbone needs one image input (N, C, H, W); this one has {shapes}")
    inp = inputs[0]
    n, c, h, w = inp.shape
    if not all(isinstance(d, int) for d in (c, h, w)) or h != w:
        raise ModelError(f"{p}: the input {inp.name!r} needs fixed, square C, H, W dimensions; found {inp.shape}")
    outputs = [o.name for o in sess.get_outputs()]
    name = output or outputs[0]
    if name not in outputs:
        raise ModelError(f"{p}: no output {name!r} (outputs: {', '.join(outputs)}); fix model.backbone.output")
    batch = n if isinstance(n, int) else None
    probe = np.zeros((batch or 2, c, h, w), dtype=np.float32)
    out = sess.run([name], {inp.name: probe})[0]
    dim = int(np.prod(out.shape[1:2] if out.ndim == 4 else out.shape[1:]))
    meta = dict(sess.get_modelmeta().custom_metadata_map or {})
    return OnnxInfo(data, inp.name, name, int(c), int(h), dim, batch, meta)


class OnnxBackbone(nn.Module):
    """A frozen image feature extractor run in ONNX Runtime. The graph is a uint8 buffer of the state dict, so
    checkpoints and bundles carry it; the session is made on first use (after the weights are loaded)."""

    def __init__(self, nbytes: int, input_name: str, output: str, batch: int | None = None) -> None:
        super().__init__()
        self.register_buffer("onnx", torch.zeros(nbytes, dtype=torch.uint8))
        self.input_name, self.output, self.batch = input_name, output, batch
        self._session: Any = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._session = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            graph: torch.Tensor = self.get_buffer("onnx")
            self._session = ort_session(graph.cpu().numpy().tobytes())
        x = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
        step = self.batch or max(len(x), 1)
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            pad = step - len(chunk) if self.batch else 0
            if pad:  # a graph with a fixed batch size: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            out = self._session.run([self.output], {self.input_name: chunk})[0]
            outs.append(out[: len(out) - pad])
        feats = torch.from_numpy(np.concatenate(outs) if outs else np.zeros((0, 1), dtype=np.float32))
        if feats.ndim == 4:
            feats = feats.mean((2, 3))  # (B, C, H, W) -> (B, C)
        return feats.flatten(1).to(image.device)  # (B, D)
