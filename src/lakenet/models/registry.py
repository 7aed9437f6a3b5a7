"""Build a network from a ModelSpec: built-in architectures by name, or the user's own nn.Module."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.errors import ModelError
from lakenet.models.mlp import MLP
from lakenet.models.resnet import ResNet
from lakenet.models.spec import ModelSpec
from lakenet.models.transfer import TransferNet

__all__ = ["ARCHITECTURES", "build_model", "model_spec"]

ARCHITECTURES: dict[str, Callable[[ModelSpec], nn.Module]] = {"mlp": MLP, "resnet": ResNet, "transfer": TransferNet}


def _text_specs(cfg: Config, pre: Preprocessor) -> tuple[dict[str, Any], ...]:
    from lakenet.config.schema import TextFeature

    out = []
    for t in pre.texts:
        spec = cfg.features.inputs[t.name]
        assert isinstance(spec, TextFeature)
        if t.kind == "bag":
            out.append({"name": t.name, "kind": "bag", "buckets": t.buckets, "dim": spec.embedding_dim})
        else:
            from lakenet.models.pretrained import load_text_encoder

            enc = load_text_encoder(spec.encoder)
            out.append({"name": t.name, "dim": enc.dim, **enc.spec()})
    return tuple(out)


def model_spec(cfg: Config, pre: Preprocessor, backbone: dict[str, Any] | None = None) -> ModelSpec:
    """The spec for `cfg` once the preprocessor knows vocabularies and classes. `backbone` holds the fields a
    pretrained backbone fixes (its architecture and sizes, or an external image backbone)."""
    m = cfg.model
    arch = m.module or m.architecture
    if arch == "auto":
        arch = "resnet" if pre.image is not None else "mlp"
    fixed = dict(backbone or {})
    return ModelSpec(
        architecture=fixed.pop("architecture", arch),
        num_outputs=pre.num_outputs,
        numeric_dim=len(pre.numeric),
        category_sizes=tuple(len(c.vocab) + 1 for c in pre.categories),
        category_dims=tuple(c.embedding_dim for c in pre.categories),
        image_channels=pre.image.channels if pre.image else 0,
        image_size=pre.image.size if pre.image else 0,
        dropout=m.dropout,
        vector_dim=sum(v.dim for v in pre.vectors),
        texts=_text_specs(cfg, pre),
        **{"width": m.width, "depth": m.depth, "options": dict(m.options), **fixed},
    )


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the network (random weights)."""
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
