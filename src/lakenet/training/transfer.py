"""Transfer learning plans: which pretrained tensors a new model starts from, which parameters stay frozen, and
which train at their own learning rate. Decided once on the driver; every worker applies the same plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lakenet.config.schema import Config, TextFeature
from lakenet.data.encoders import Preprocessor
from lakenet.errors import ConfigError, ModelError
from lakenet.models.backbone import ResolvedBackbone
from lakenet.models.registry import build_model, config_trust
from lakenet.models.spec import ModelSpec

__all__ = ["PretrainedInit", "apply_pretrained", "frozen_subtrees", "plan_pretrained"]


@dataclass(frozen=True)
class PretrainedInit:
    weights: dict[str, torch.Tensor]  # loaded into the freshly built model before training
    frozen: tuple[str, ...]  # parameter names that never change
    lrs: dict[str, float] = field(default_factory=dict)  # parameter name -> its own learning rate
    report: dict[str, Any] = field(default_factory=dict)  # what was loaded, frozen, reinitialised


def _layer_names(names: list[str], prefix: str) -> list[str]:
    """The module paths a user can name in `freeze` (one and two levels deep), in model order."""
    out: list[str] = []
    for n in names:
        parts = n.removeprefix(prefix).split(".")[:-1]
        for depth in (1, 2):
            if len(parts) >= depth:
                out.append(".".join(parts[:depth]))
    return list(dict.fromkeys(out))


def _frozen_backbone(rule: str, names: list[str], prefix: str, source: str) -> list[str]:
    if rule == "none":
        return []
    if rule == "all":
        return list(names)
    last = -1
    for i, n in enumerate(names):
        short = n.removeprefix(prefix)
        if rule in (n, short) or n.startswith(rule + ".") or short.startswith(rule + "."):
            last = i
    if last < 0:
        layers = ", ".join(_layer_names(names, prefix)[:40])
        raise ConfigError(
            f"model.backbone.freeze: {rule!r} is not a layer of backbone {source} (use all, none, or one of: {layers})"
        )
    return names[: last + 1]


def plan_pretrained(
    cfg: Config, spec: ModelSpec, pre: Preprocessor, backbone: ResolvedBackbone | None
) -> PretrainedInit | None:
    """The plan for a model built from `spec`: None when nothing is pretrained."""
    pretrained_texts = [t for t in pre.texts if t.kind == "pretrained"]
    if backbone is None and not pretrained_texts:
        return None
    model = build_model(spec, trusted=config_trust(cfg))
    state = model.state_dict()
    params = [n for n, _ in model.named_parameters()]
    weights: dict[str, torch.Tensor] = {}
    frozen: list[str] = []
    lrs: dict[str, float] = {}
    report: dict[str, Any] = {}
    if backbone is not None:
        bcfg = cfg.model.backbone
        assert bcfg is not None
        skipped = []
        for k, v in backbone.weights.items():
            if k in state and tuple(state[k].shape) == tuple(v.shape):
                weights[k] = v
            else:
                skipped.append(k)
        if not weights:
            raise ModelError(
                f"model.backbone {backbone.source}: none of its {len(backbone.weights)} tensors fit the model "
                f"(architecture {spec.architecture!r}); check model.architecture, width and depth"
            )
        names = [n for n in params if n in weights]
        if backbone.always_frozen:
            if "freeze" in bcfg.model_fields_set and bcfg.freeze != "all":
                raise ConfigError(
                    f"model.backbone.freeze: {bcfg.freeze!r}, but {backbone.source} runs in ONNX Runtime, which "
                    "cannot train it: set freeze: all (or convert the model to torch and use its weights)"
                )
            rule = "all"
        else:
            rule = bcfg.freeze
        frozen = _frozen_backbone(rule, names, backbone.prefix, backbone.source)
        if bcfg.learning_rate is not None:
            lrs.update({n: bcfg.learning_rate for n in names if n not in frozen})
        report["backbone"] = {
            **backbone.lineage,
            "freeze": rule,
            "loaded_tensors": len(weights),
            "frozen_parameters": len(frozen),
            "trainable_backbone_parameters": len(names) - len(frozen),
            "not_transferred": sorted(skipped)[:50],
        }
    for i, t in enumerate(pre.texts):
        if t.kind != "pretrained":
            continue
        from lakenet.models.pretrained import load_text_encoder

        feat = cfg.features.inputs[t.name]
        assert isinstance(feat, TextFeature)
        enc = load_text_encoder(feat.encoder)
        prefix = f"tabular.texts.{i}.model."
        text_weights = {prefix + k: v for k, v in enc.weights.items() if prefix + k in state}
        weights.update(text_weights)
        names = [n for n in params if n.startswith(prefix)]
        if feat.freeze:
            frozen += names
        else:
            lrs.update({n: feat.learning_rate for n in names})
        report[f"text.{t.name}"] = {"encoder": feat.encoder, "loaded_tensors": len(text_weights), "frozen": feat.freeze}
    report["reinitialised"] = [n for n in params if n not in weights][:50]
    return PretrainedInit(weights, tuple(frozen), lrs, report)


def apply_pretrained(model: nn.Module, weights: dict[str, torch.Tensor] | None, frozen: tuple[str, ...]) -> None:
    """Load the pretrained tensors (when starting fresh) and freeze the named parameters."""
    if weights:
        model.load_state_dict(weights, strict=False)
    keep = set(frozen)
    for name, p in model.named_parameters():
        if name in keep:
            p.requires_grad_(False)


def frozen_subtrees(model: nn.Module) -> list[nn.Module]:
    """The largest submodules whose parameters are all frozen: they run in eval mode during training too, so
    a frozen backbone's BatchNorm statistics and dropout stay as they were pretrained."""
    out: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        ps = list(m.parameters())
        if ps and not any(p.requires_grad for p in ps):
            out.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return out
