"""What a model needs to know about its inputs and outputs; built from a fitted Preprocessor and the config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lakenet.errors import ModelError

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
    def from_dict(cls, d: dict[str, Any], where: str = "the model") -> ModelSpec:
        """Rebuild from JSON (bundle.json): unknown or missing keys are refused, not passed on."""
        if not isinstance(d, dict):
            raise ModelError(f"{where}: the model spec must be a JSON object, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"{where}: unknown model spec keys {unknown}; the file was not written by this lakenet")
        d = dict(d)
        try:
            d["category_sizes"] = tuple(d.get("category_sizes", ()))
            d["category_dims"] = tuple(d.get("category_dims", ()))
            d["texts"] = tuple(d.get("texts", ()))
            spec = cls(**d)
        except TypeError as err:
            raise ModelError(f"{where}: invalid model spec ({err})") from None
        spec.validate(where)
        return spec

    def validate(self, where: str = "the model") -> None:
        """Types and sizes within what lakenet trains (the config's own bounds): a tampered spec cannot make a
        loader allocate without limit or pass odd values to a constructor."""

        def check(name: str, value: Any, lo: float, hi: float, typ: type | tuple[type, ...] = int) -> None:
            if isinstance(value, bool) or not isinstance(value, typ) or not isinstance(value, int | float):
                raise ModelError(f"{where}: model spec {name} = {value!r} is not a number")
            if not lo <= value <= hi:
                raise ModelError(f"{where}: model spec {name} = {value!r} is outside [{lo:g}, {hi:g}]")

        if not isinstance(self.architecture, str) or not self.architecture:
            raise ModelError(f"{where}: model spec architecture must be a name, not {self.architecture!r}")
        check("num_outputs", self.num_outputs, 1, 1_000_000)
        check("numeric_dim", self.numeric_dim, 0, 1_000_000)
        check("width", self.width, 1, 4096)
        check("depth", self.depth, 1, 32)
        check("dropout", self.dropout, 0.0, 1.0, (int, float))
        check("image_channels", self.image_channels, 0, 4)
        check("image_size", self.image_size, 0, 4096)
        check("vector_dim", self.vector_dim, 0, 1_000_000)
        if len(self.category_sizes) != len(self.category_dims):
            raise ModelError(f"{where}: model spec has {len(self.category_sizes)} category sizes but "
                             f"{len(self.category_dims)} embedding widths")  # fmt: skip
        for n in self.category_sizes:
            check("category_sizes[]", n, 1, 100_000_000)
        for n in self.category_dims:
            check("category_dims[]", n, 1, 4096)
        if not isinstance(self.options, dict):
            raise ModelError(f"{where}: model spec options must be a mapping, not {self.options!r}")
        for t in self.texts:
            if not isinstance(t, dict) or t.get("kind") not in ("bag", "pretrained"):
                raise ModelError(f"{where}: model spec text entry {t!r} is not a bag or pretrained encoder")
        if self.backbone is not None and (
            not isinstance(self.backbone, dict) or self.backbone.get("kind") not in ("onnx", "hf")
        ):
            raise ModelError(f"{where}: model spec backbone {self.backbone!r} is not an ONNX or Hugging Face backbone")
