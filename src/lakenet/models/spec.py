"""What a model needs to know about its inputs and outputs; built from a fitted Preprocessor and the config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lakenet.errors import ModelError

__all__ = ["BackboneSpec", "ModelSpec", "RecSpec", "TextSpec"]


def _fields_only(cls: type, d: Any, what: str, where: str) -> dict[str, Any]:
    """`d` as keyword arguments of `cls`: a mapping whose keys are all its fields (unknown keys are refused)."""
    if not isinstance(d, dict):
        raise ModelError(f"{where}: model spec {what} must be a JSON object, not {d!r}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ModelError(f"{where}: unknown model spec {what} keys {unknown}; the file was not written by this lakenet")
    return d


@dataclass(frozen=True)
class TextSpec:
    """One text feature's encoder: a trainable bag of hashed words, or a pretrained transformer."""

    name: str
    kind: str  # bag, pretrained
    dim: int
    buckets: int = 0  # bag: hashed word and bigram ids
    hf_config: dict[str, Any] | None = None  # pretrained: the Hugging Face config (JSON by nature)
    pooling: str = "mean"  # pretrained: mean or cls
    normalize: bool = False  # pretrained: L2-normalise the pooled vector

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "bag":
            return {"name": self.name, "kind": "bag", "buckets": self.buckets, "dim": self.dim}
        return {"name": self.name, "dim": self.dim, "kind": self.kind, "hf_config": self.hf_config,
                "pooling": self.pooling, "normalize": self.normalize}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Any, where: str = "the model") -> TextSpec:
        t = cls(**_fields_only(cls, d, "text entry", where))
        if t.kind not in ("bag", "pretrained") or not isinstance(t.name, str):
            raise ModelError(f"{where}: model spec text entry {d!r} is not a bag or pretrained encoder")
        if t.kind == "pretrained" and not isinstance(t.hf_config, dict):
            raise ModelError(f"{where}: model spec text entry {t.name!r} has no Hugging Face config")
        if t.pooling not in ("mean", "cls") or not isinstance(t.normalize, bool):
            raise ModelError(f"{where}: model spec text entry {t.name!r} has pooling {t.pooling!r}")
        return t


@dataclass(frozen=True)
class BackboneSpec:
    """An external image backbone: an ONNX graph (its bytes travel as a buffer in the weights) or a Hugging Face
    vision model built from its config."""

    kind: str  # onnx, hf
    out_dim: int
    nbytes: int = 0  # onnx: the graph's size
    input: str = ""  # onnx: input and output names, and a fixed batch size if the graph has one
    output: str = ""
    batch: int | None = None
    hf_config: dict[str, Any] | None = None  # hf

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "onnx":
            return {"kind": "onnx", "nbytes": self.nbytes, "input": self.input, "output": self.output,
                    "batch": self.batch, "out_dim": self.out_dim}  # fmt: skip
        return {"kind": self.kind, "hf_config": self.hf_config, "out_dim": self.out_dim}

    @classmethod
    def from_dict(cls, d: Any, where: str = "the model") -> BackboneSpec:
        b = cls(**_fields_only(cls, d, "backbone", where))
        if b.kind not in ("onnx", "hf"):
            raise ModelError(f"{where}: model spec backbone {d!r} is not an ONNX or Hugging Face backbone")
        if b.kind == "hf" and not isinstance(b.hf_config, dict):
            raise ModelError(f"{where}: model spec backbone has no Hugging Face config")
        return b


@dataclass(frozen=True)
class RecSpec:
    """A two-tower recommender's layout: where the user and the item sit in the category block, which category
    positions and numeric columns describe the item (the item tower reads them from its catalogue), and the
    width of the vectors whose dot product scores a (user, item) pair."""

    user: int  # position in the category block
    item: int
    item_categories: tuple[int, ...] = ()
    item_numeric: tuple[int, ...] = ()  # columns of the numeric block
    dim: int = 32
    negatives: int = 0  # training: items sampled per batch as negatives; 0: the whole catalogue

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "item": self.item, "item_categories": list(self.item_categories),
                "item_numeric": list(self.item_numeric), "dim": self.dim, "negatives": self.negatives}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Any, where: str = "the model") -> RecSpec:
        d = dict(_fields_only(cls, d, "recommend", where))
        try:
            r = cls(
                int(d["user"]), int(d["item"]), tuple(int(i) for i in d.get("item_categories", ())),
                tuple(int(i) for i in d.get("item_numeric", ())), int(d.get("dim", 32)), int(d.get("negatives", 0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{where}: invalid model spec recommend entry ({err})") from None
        return r


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
    texts: tuple[TextSpec, ...] = ()  # one per text feature
    backbone: BackboneSpec | None = None  # an external image backbone (architecture "transfer")
    audio_bins: int = 0  # mel bands of an audio feature's spectrogram (0: no audio)
    audio_frames: int = 0  # its frames
    recommend: RecSpec | None = None  # a two-tower recommender (architecture "twotower")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["category_sizes"] = list(self.category_sizes)
        d["category_dims"] = list(self.category_dims)
        d["options"] = dict(self.options)
        d["texts"] = [t.to_dict() for t in self.texts]
        d["backbone"] = self.backbone.to_dict() if self.backbone is not None else None
        d["recommend"] = self.recommend.to_dict() if self.recommend is not None else None
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
            d["texts"] = tuple(TextSpec.from_dict(t, where) for t in d.get("texts", ()))
            if d.get("backbone") is not None:
                d["backbone"] = BackboneSpec.from_dict(d["backbone"], where)
            if d.get("recommend") is not None:
                d["recommend"] = RecSpec.from_dict(d["recommend"], where)
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
        check("audio_bins", self.audio_bins, 0, 256)
        if self.recommend is not None:
            r, k = self.recommend, len(self.category_sizes)
            check("recommend.dim", r.dim, 2, 512)
            check("recommend.negatives", r.negatives, 0, 10_000_000)
            for pos in (r.user, r.item, *r.item_categories):
                check("recommend category position", pos, 0, max(k - 1, 0))
            for col in r.item_numeric:
                check("recommend numeric column", col, 0, max(self.numeric_dim - 1, 0))
        check("audio_frames", self.audio_frames, 0, 100_000)
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
            if not isinstance(t, TextSpec):
                raise ModelError(f"{where}: model spec text entry {t!r} is not a bag or pretrained encoder")
            check("texts[].dim", t.dim, 1, 65_536)
            if t.kind == "bag":
                check("texts[].buckets", t.buckets, 1, 100_000_000)
        if self.backbone is not None:
            if not isinstance(self.backbone, BackboneSpec):
                raise ModelError(f"{where}: model spec backbone {self.backbone!r} is not an ONNX or Hugging Face one")
            check("backbone.out_dim", self.backbone.out_dim, 1, 1_000_000)
            check("backbone.nbytes", self.backbone.nbytes, 0, 2**34)
