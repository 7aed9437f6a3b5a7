"""Build a network from a ModelSpec: built-in architectures by name, or the user's own nn.Module."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.errors import ModelError
from lakenet.models.audio import AudioNet
from lakenet.models.autoencoder import AutoEncoder
from lakenet.models.mlp import MLP
from lakenet.models.resnet import ResNet
from lakenet.models.spec import BackboneSpec, ModelSpec, RecSpec, TextSpec
from lakenet.models.transfer import TransferNet
from lakenet.models.twotower import TwoTower

__all__ = [
    "ARCHITECTURES",
    "TRUST_ENV",
    "build_model",
    "check_buildable",
    "config_trust",
    "model_spec",
    "trusted_modules",
]

ARCHITECTURES: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "mlp": MLP,
    "resnet": ResNet,
    "transfer": TransferNet,
    "autoencoder": AutoEncoder,
    "audiocnn": AudioNet,
    "twotower": TwoTower,
}


def _text_specs(cfg: Config, pre: Preprocessor) -> tuple[TextSpec, ...]:
    from lakenet.config.schema import TextFeature

    out = []
    for t in pre.texts:
        spec = cfg.features.inputs[t.name]
        assert isinstance(spec, TextFeature)
        if t.kind == "bag":
            out.append(TextSpec(name=t.name, kind="bag", buckets=t.buckets, dim=spec.embedding_dim))
        else:
            from lakenet.models.pretrained import load_text_encoder

            enc = load_text_encoder(spec.encoder)
            out.append(TextSpec(name=t.name, dim=enc.dim, **enc.spec()))
    return tuple(out)


def model_spec(cfg: Config, pre: Preprocessor, backbone: dict[str, Any] | None = None) -> ModelSpec:
    """The spec for `cfg` once the preprocessor knows vocabularies and classes. `backbone` holds the fields a
    pretrained backbone fixes (its architecture and sizes, or an external image backbone)."""
    m = cfg.model
    arch = m.module or m.architecture
    options: dict[str, Any] = dict(m.options)
    if arch == "auto":
        arch = "resnet" if pre.image is not None else "audiocnn" if pre.audio is not None else "mlp"
        if pre.label.task == "anomaly":
            arch = "autoencoder"
    if arch == "autoencoder":
        options = {"code_dim": cfg.anomaly.code_dim, "noise": cfg.anomaly.noise}
    recommend = None
    if pre.label.task == "recommendation":
        arch, recommend = "twotower", rec_layout(cfg, pre)
    fixed = dict(backbone or {})
    if isinstance(fixed.get("backbone"), dict):  # what a resolved backbone fixes, as JSON
        fixed["backbone"] = BackboneSpec.from_dict(fixed["backbone"], f"model.backbone {m.backbone}")
    return ModelSpec(
        architecture=fixed.pop("architecture", arch),
        num_outputs=pre.num_outputs,
        numeric_dim=pre.numeric_width,
        category_sizes=pre.category_sizes,
        category_dims=tuple(c.embedding_dim for c in pre.categories),
        image_channels=pre.image.channels if pre.image else 0,
        image_size=pre.image.size if pre.image else 0,
        dropout=m.dropout,
        vector_dim=sum(v.dim for v in pre.vectors),
        audio_bins=pre.audio.n_mels if pre.audio else 0,
        audio_frames=pre.audio.frames if pre.audio else 0,
        recommend=recommend,
        texts=_text_specs(cfg, pre),
        **{"width": m.width, "depth": m.depth, "options": options, **fixed},
    )


def rec_layout(cfg: Config, pre: Preprocessor) -> RecSpec:
    """Where a recommender's user, item and item features sit in the encoded blocks."""
    from lakenet.data.codecs import CategoryCodec

    rec = cfg.recommend
    item_side = set(rec.item_features)
    positions: dict[str, int] = {}
    item_categories: list[int] = []
    item_numeric: list[int] = []
    at = 0
    for c in pre.features:
        if isinstance(c, CategoryCodec):
            positions[c.name] = len(positions)
            if c.name in item_side:
                item_categories.append(positions[c.name])
        w = c.numeric_width()
        if w and c.name in item_side:
            item_numeric.extend(range(at, at + w))
        at += w
    n_items = pre.item_codec().state.size
    negatives = rec.negatives
    if negatives == "auto":
        negatives = 0 if n_items <= 4096 else 1024
    elif negatives == "all" or negatives >= n_items:
        negatives = 0
    return RecSpec(positions[rec.user], positions[rec.item], tuple(item_categories), tuple(item_numeric), rec.dim,
                   int(negatives))  # fmt: skip


# Options each built-in architecture accepts: name -> (type, minimum, maximum). A bundle's options are checked
# against this before anything is built, so a model file cannot smuggle arguments in.
OPTIONS: dict[str, dict[str, tuple[type, float, float]]] = {
    "mlp": {},
    "resnet": {"blocks": (int, 1, 8)},
    "transfer": {},
    "autoencoder": {"code_dim": (int, 1, 1024), "noise": (float, 0.0, 2.0)},
    "audiocnn": {"blocks": (int, 1, 8)},
    "twotower": {},
}

TRUST_ENV = "LAKENET_TRUSTED_MODULES"


def trusted_modules(extra: Iterable[str] = ()) -> frozenset[str]:
    """The user modules (`package.module:Class`) the loading user trusts: `extra` plus the comma-separated
    list in the LAKENET_TRUSTED_MODULES environment variable."""
    env = os.environ.get(TRUST_ENV, "")
    return frozenset(m.strip() for m in [*extra, *env.split(",")] if m and m.strip())


def config_trust(cfg: Config) -> tuple[str, ...]:
    """A training config trusts the module it names itself (the user who runs it wrote it)."""
    return (cfg.model.module,) if cfg.model.module else ()


def check_buildable(spec: ModelSpec, *, trusted: Iterable[str] = (), where: str = "the model") -> None:
    """Refuse, before any import or allocation, a spec that names code the loading user has not trusted or
    options the architecture does not take."""
    arch = spec.architecture
    spec.validate(where)
    if arch in ARCHITECTURES:
        allowed = OPTIONS[arch]
        for k, v in spec.options.items():
            if k not in allowed:
                raise ModelError(
                    f"{where}: architecture {arch!r} takes no option {k!r} (options: {', '.join(allowed) or 'none'}); "
                    "the model file was written by another tool or changed after it was saved."
                )
            typ, lo, hi = allowed[k]
            kinds = (int, float) if typ is float else (int,)
            if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
                raise ModelError(
                    f"{where}: option {k!r} of {arch!r} must be {typ.__name__} in [{lo:g}, {hi:g}], not {v!r}"
                )
        return
    if not _MODULE.match(arch):
        raise ModelError(
            f"{where}: unknown architecture {arch!r}; built-in ones are {', '.join(sorted(ARCHITECTURES))}, a custom "
            "one is named 'package.module:Class'."
        )
    if arch not in trusted_modules(trusted):
        raise ModelError(
            f"{where} is built by custom code, {arch!r}, and lakenet does not import code named by a model file "
            f"unless you trust it. If you wrote or reviewed {arch}, pass --trust-module {arch} (Python: "
            f"trust_modules=[{arch!r}]) or set {TRUST_ENV}={arch}."
        )


_MODULE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def build_model(spec: ModelSpec, *, trusted: Iterable[str] = ()) -> nn.Module:
    """Instantiate the network (random weights): a built-in architecture by name, or a user's nn.Module class
    that the loading user trusts (never any other callable)."""
    check_buildable(spec, trusted=trusted)
    if spec.architecture in ARCHITECTURES:
        return ARCHITECTURES[spec.architecture](spec)
    module_name, _, cls_name = spec.architecture.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise ModelError(
            f"model.module {spec.architecture!r} cannot be imported ({err}). Make the package importable "
            "(pip install -e it, or add it to PYTHONPATH) or fix model.module."
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelError(f"model.module {spec.architecture!r} is not a torch nn.Module class; refusing to call it")
    _check_signature(cls, spec)
    try:
        model = cls(spec=spec, **spec.options)
    except TypeError as err:
        raise ModelError(
            f"model.module {spec.architecture!r} could not be built: {err}. Its constructor must accept "
            "`spec` (a lakenet ModelSpec) plus the keys of model.options."
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.module {spec.architecture!r} built a {type(model).__name__}, not a torch nn.Module")
    return model


def _check_signature(cls: type, spec: ModelSpec) -> None:
    """Options must be named parameters of the class's constructor (or it takes **kwargs) and plain values."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for k, v in spec.options.items():
        if not isinstance(v, int | float | str | bool):
            raise ModelError(
                f"model.options {k!r} of {spec.architecture!r} must be a number, string or bool, not {v!r}"
            )
        if not takes_any and k not in params:
            raise ModelError(
                f"model.options {k!r}: {spec.architecture!r} has no such constructor argument "
                f"(arguments: {', '.join(p for p in params if p != 'spec') or 'none'})"
            )
