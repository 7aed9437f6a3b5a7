"""A champion grown to new data: vocabularies extended with new category values and the head with new classes,
while every old index keeps its meaning (old inputs are predicted as before), then shrunk and perturbed.

Numeric statistics (means, standard deviations, fill values, date references) are kept from the champion: the
numbers the network learned on keep their scale. A retrain refreshes them.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from lakenet.data.codecs import Codec, strings
from lakenet.data.codecs.category import CategoryCodec, CategoryState
from lakenet.data.encoders import LabelState, Preprocessor
from lakenet.errors import TrainingError

__all__ = ["Growth", "grow_preprocessor", "grow_weights", "shrink_perturb"]

_EMBEDDING = re.compile(r"(^|\.)embeddings\.(\d+)\.weight$")
_NEW_CLASS_BIAS = -10.0  # a new class starts improbable: the old classes' probabilities barely move


@dataclasses.dataclass(frozen=True)
class Growth:
    """What grew: new values per category feature, new classes."""

    values: dict[str, list[str]]
    classes: list[str]

    @property
    def any(self) -> bool:
        return bool(self.classes or any(self.values.values()))


def grow_preprocessor(
    champion: Preprocessor, tables: Iterable[pa.Table], max_categories: int = 1000
) -> tuple[Preprocessor, Growth]:
    """The champion's preprocessing, with the category values and classes seen in `tables` (new training rows)
    appended after the old ones."""
    counts: dict[str, Counter[str]] = {c.name: Counter() for c in champion.features if isinstance(c, CategoryCodec)}
    label_counts: Counter[str] = Counter()
    for table in tables:
        for codec in champion.features:
            if isinstance(codec, CategoryCodec) and codec.state.buckets is None and codec.column in table.column_names:
                counts[codec.name].update(v for v in strings(table.column(codec.column)) if v is not None)
        if champion.label.task == "classification" and champion.label.column in table.column_names:
            label_counts.update(v for v in strings(table.column(champion.label.column)) if v is not None)
    features: list[Codec[Any]] = []
    added: dict[str, list[str]] = {}
    for codec in champion.features:
        if isinstance(codec, CategoryCodec) and codec.state.buckets is None:
            old = codec.state.vocab
            known = set(old)
            room = max(0, max_categories - len(old))
            new = sorted((v for v in counts[codec.name] if v not in known), key=lambda v: (-counts[codec.name][v], v))
            added[codec.name] = new[:room]
            features.append(CategoryCodec(dataclasses.replace(codec.state, vocab=[*old, *added[codec.name]])))
        else:
            features.append(codec)
    label = champion.label
    new_classes: list[str] = []
    if label.task == "classification":
        new_classes = sorted(c for c in label_counts if c not in set(label.classes or []))
        if new_classes:
            classes = [*(label.classes or []), *new_classes]
            # the threshold and the positive class are about two classes: with more they no longer apply
            label = LabelState(
                label.column,
                label.task,
                classes=classes,
                mean=label.mean,
                std=label.std,
                positive=label.positive if len(classes) == 2 else None,
            )
    grown = Preprocessor(key=champion.key, label=label, features=features)
    return grown, Growth(added, new_classes)


def _index_map(old: CategoryState, new: CategoryState) -> list[int]:
    """For each row of the new embedding, the old row it starts from: unknown→unknown, each old value→itself,
    a new value→unknown (that is what it was until now), missing→missing."""
    rows = [0, *range(1, len(old.vocab) + 1), *([0] * (len(new.vocab) - len(old.vocab)))]
    if new.missing == "impute":
        rows.append(old.size - 1)
    return rows


def grow_weights(
    champion: dict[str, torch.Tensor], old: Preprocessor, new: Preprocessor, model: nn.Module
) -> dict[str, torch.Tensor]:
    """The champion's tensors reshaped for `model` (built from the grown spec): embeddings remapped row by row,
    the head extended with rows for new classes, everything else copied. A shape that changed otherwise means
    the inputs changed: a warm start is not possible."""
    old_cats, new_cats = old.categories, new.categories
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    n_old = len(old.label.classes or []) if old.label.task == "classification" else 1
    for name, t in target.items():
        src = champion.get(name)
        if src is None:
            out[name] = t
            continue
        if src.shape == t.shape:
            out[name] = src.clone()
            continue
        m = _EMBEDDING.search(name)
        if m is not None and int(m.group(2)) < len(new_cats):
            j = int(m.group(2))
            out[name] = src[torch.tensor(_index_map(old_cats[j], new_cats[j]))].clone()
            continue
        if name.endswith("head.weight") and src.shape[0] == n_old and src.shape[1:] == t.shape[1:]:
            out[name] = torch.cat([src, torch.zeros((t.shape[0] - n_old, *t.shape[1:]), dtype=src.dtype)])
            continue
        if name.endswith("head.bias") and src.shape[0] == n_old:
            out[name] = torch.cat([src, torch.full((t.shape[0] - n_old,), _NEW_CLASS_BIAS, dtype=src.dtype)])
            continue
        raise TrainingError(
            f"Warm start: the champion's {name} has shape {tuple(src.shape)}, the challenger needs {tuple(t.shape)}: "
            "its inputs changed beyond new category values and classes. Use update.strategy: retrain."
        )
    return out


def shrink_perturb(
    weights: dict[str, torch.Tensor], fresh: dict[str, Any], *, shrink: float, perturb: float
) -> dict[str, torch.Tensor]:
    """λ·w + σ·w_fresh for the learned parameters (floating point, not BatchNorm's running statistics, which
    describe the data and are kept)."""
    out = {}
    for name, w in weights.items():
        f = fresh.get(name)
        stats = name.endswith(("running_mean", "running_var", "num_batches_tracked"))
        if f is None or stats or not w.is_floating_point() or f.shape != w.shape:
            out[name] = w
        else:
            out[name] = shrink * w + perturb * f.to(w.dtype)
    return out
