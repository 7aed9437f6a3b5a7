"""What a model needs to know about its inputs and outputs; built from a fitted Preprocessor and the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """Shapes and hyper-parameters: everything needed to rebuild the network from JSON."""

    architecture: str  # "mlp", "resnet", or "package.module:Class"
    num_outputs: int
    numeric_dim: int = 0
    category_sizes: tuple[int, ...] = ()  # vocabulary size + 1 (unknown) per category feature
    category_dims: tuple[int, ...] = ()
    image_channels: int = 0
    image_size: int = 0
    width: int = 64
    depth: int = 2
    dropout: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)
    vector_dim: int = 0  # width of the concatenated vector features
    # One entry per text feature: {"name", "kind": "bag" | "pretrained", "dim", "buckets" | "hf_config", ...}
    texts: tuple[dict[str, Any], ...] = ()
    # An external image backbone (architecture "transfer"): {"kind": "onnx" | "hf", "out_dim", ...}
    backbone: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["category_sizes"] = list(self.category_sizes)
        d["category_dims"] = list(self.category_dims)
        d["texts"] = list(self.texts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        d = dict(d)
        d["category_sizes"] = tuple(d.get("category_sizes", ()))
        d["category_dims"] = tuple(d.get("category_dims", ()))
        d["texts"] = tuple(d.get("texts", ()))
        return cls(**d)
