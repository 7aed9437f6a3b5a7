"""Resolve `model.backbone` into what training needs: the spec fields the backbone fixes, its pretrained weights
under the new model's parameter names (head excluded), and the image size and normalisation it expects."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lakenet.config.schema import BackboneConfig
from lakenet.errors import ModelError

__all__ = ["ResolvedBackbone", "backbone_kind", "find_bundle", "resolve_backbone"]

# Parameters a backbone never hands on: the head is sized from the new labels, and the input encoders'
# weights mean something only with the source table's vocabularies.
_NOT_TRANSFERRED = ("head.", "tabular.")


@dataclass(frozen=True)
class ResolvedBackbone:
    kind: str  # lakenet (a bundle), weights (a .safetensors file), onnx, hf
    source: str
    spec: dict[str, Any]  # ModelSpec fields the backbone decides (architecture, sizes, the external backbone)
    weights: dict[str, torch.Tensor]  # pretrained tensors under the new model's names
    image: dict[str, Any] | None  # size, channels, mean, std the backbone expects (None: no opinion)
    prefix: str = ""  # names under this prefix are the backbone's ("" = every pretrained name)
    always_frozen: bool = False  # ONNX Runtime graphs cannot be trained
    lineage: dict[str, Any] = field(default_factory=dict)


def find_bundle(path: Path) -> Path | None:
    if (path / "bundle.json").is_file():
        return path
    hits = sorted(path.rglob("bundle.json")) if path.is_dir() else []
    return hits[0].parent if hits else None


def backbone_kind(source: str) -> str:
    if source.startswith(("models:/", "runs:/")):
        return "lakenet"
    p = Path(source).expanduser()
    if p.suffix.lower() == ".onnx":
        return "onnx"
    if p.suffix.lower() == ".safetensors":
        return "weights"
    if p.is_dir() and find_bundle(p) is not None:
        return "lakenet"
    return "hf"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _from_lakenet(spec: dict[str, Any], pre: dict[str, Any] | None, weights: dict[str, torch.Tensor]) -> tuple:
    keep = {k: v for k, v in weights.items() if not k.startswith(_NOT_TRANSFERRED)}
    fixed = {k: spec[k] for k in ("architecture", "width", "depth", "options")}
    if spec.get("backbone") is not None:  # a lakenet model that itself sits on an external backbone
        fixed["backbone"] = spec["backbone"]
    image = None
    im = None
    if pre is not None:  # the preprocessing's JSON: a list of features, or (before codecs) one key per type
        im = pre.get("image") or next((f for f in pre.get("features", []) if f.get("type") == "image"), None)
    if im:
        image = {"size": im["size"], "channels": im["channels"], "mean": im["mean"], "std": im["std"]}
    return fixed, keep, image


def resolve_backbone(
    cfg: BackboneConfig, *, bundle_dir: Path | None = None, version: str | None = None
) -> ResolvedBackbone:
    """`bundle_dir`: the local bundle a registry URI (models:/...) was resolved to by the caller."""
    source = cfg.source
    kind = backbone_kind(source)
    lineage: dict[str, Any] = {"backbone": source, "backbone_kind": kind}
    if kind == "lakenet":
        from lakenet.models.bundle import Bundle

        where = bundle_dir or find_bundle(Path(source).expanduser())
        if where is None:
            raise ModelError(f"model.backbone {source!r}: no lakenet bundle there")
        b = Bundle.load(where)
        fixed, weights, image = _from_lakenet(b.spec.to_dict(), b.preprocessor.to_dict(), b.weights)
        if version is not None:
            lineage["backbone_version"] = version
        lineage.update({f"backbone_{k}": v for k, v in b.lineage.items() if k in ("table", "table_version")})
        onnx = (fixed.get("backbone") or {}).get("kind") == "onnx"
        return ResolvedBackbone(kind, source, fixed, weights, image, "", onnx, lineage)
    path = Path(source).expanduser()
    if kind == "weights":
        from safetensors import safe_open

        if not path.is_file():
            raise ModelError(f"model.backbone {source!r}: file not found")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        lineage["backbone_sha256"] = _digest(path)
        if "lakenet.spec" in meta:  # written by `lakenet export --format safetensors`
            spec = json.loads(meta["lakenet.spec"])
            pre = json.loads(meta["lakenet.preprocessor"]) if "lakenet.preprocessor" in meta else None
            fixed, weights, image = _from_lakenet(spec, pre, tensors)
            return ResolvedBackbone(kind, source, fixed, weights, image, "", False, lineage)
        weights = {k: v for k, v in tensors.items() if not k.startswith(_NOT_TRANSFERRED)}
        return ResolvedBackbone(kind, source, {}, weights, None, "", False, lineage)
    if kind == "onnx":
        from lakenet.models.pretrained import onnx_info

        info = onnx_info(path, cfg.output)
        lineage["backbone_sha256"] = hashlib.sha256(info.data).hexdigest()[:16]
        spec = {
            "architecture": "transfer",
            "backbone": {
                "kind": "onnx",
                "nbytes": len(info.data),
                "input": info.input,
                "output": info.output,
                "batch": info.batch,
                "out_dim": info.out_dim,
            },
        }
        mean = json.loads(info.metadata["lakenet.image_mean"]) if "lakenet.image_mean" in info.metadata else None
        std = json.loads(info.metadata["lakenet.image_std"]) if "lakenet.image_std" in info.metadata else None
        image = {"size": info.size, "channels": info.channels, "mean": mean, "std": std}
        weights = {"backbone.onnx": torch.frombuffer(bytearray(info.data), dtype=torch.uint8)}
        return ResolvedBackbone(kind, source, spec, weights, image, "backbone.", True, lineage)
    from lakenet.models.pretrained import HFVisionBackbone, hf_image_assets

    config, tensors, image = hf_image_assets(source)
    probe = HFVisionBackbone(config)
    missing, _ = probe.model.load_state_dict(tensors, strict=False)
    if len(missing) == len(list(probe.model.state_dict())):
        raise ModelError(f"model.backbone {source!r}: none of its weights fit the model its config describes")
    with torch.no_grad():
        probe.eval()
        out_dim = int(probe(torch.zeros(1, image["channels"], image["size"], image["size"])).shape[1])
    spec = {"architecture": "transfer", "backbone": {"kind": "hf", "hf_config": config, "out_dim": out_dim}}
    weights = {f"backbone.model.{k}": v for k, v in tensors.items()}
    return ResolvedBackbone("hf", source, spec, weights, image, "backbone.model.", False, lineage)
