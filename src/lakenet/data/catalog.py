"""task: recommendation — the item catalogue: for every item of the vocabulary, the item features of its latest
training interaction (encoded as the model reads them) and its count of training interactions (its popularity),
learned in one pass on the engine; the state is O(items), never O(interactions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.encoders import Preprocessor
from lakenet.data.holdout import order_values
from lakenet.data.split import TRAIN, Split, split_columns, table_splits

__all__ = ["Catalog", "learn_catalog"]


@dataclass
class Catalog:
    """(n_items, ·) arrays indexed like the item vocabulary (0: unknown)."""

    category: np.ndarray  # (n_items, item categories) int64: indices into each item feature's vocabulary
    numeric: np.ndarray  # (n_items, item numeric columns) float32
    popularity: np.ndarray  # (n_items,) training interactions
    latest: dict[int, tuple[float, str]] = field(default_factory=dict)  # the interaction the features came from

    def merge(self, other: Catalog) -> Catalog:
        for idx, when in other.latest.items():
            if idx not in self.latest or when > self.latest[idx]:
                self.latest[idx] = when
                self.category[idx] = other.category[idx]
                self.numeric[idx] = other.numeric[idx]
        self.popularity += other.popularity
        return self

    def tensors(self) -> dict[str, Any]:
        """The two-tower model's catalogue buffers."""
        import torch

        return {
            "catalog_category": torch.from_numpy(self.category.astype(np.int64)),
            "catalog_numeric": torch.from_numpy(self.numeric.astype(np.float32)),
            "popularity": torch.from_numpy(self.popularity.astype(np.float32)),
        }


class _CatalogTask:
    def __init__(
        self, pre: Preprocessor, split: Split, time: str | None, categories: tuple[int, ...], numeric: tuple[int, ...]
    ) -> None:
        self.pre, self.split, self.time = pre, split, time
        self.categories, self.numeric = list(categories), list(numeric)
        self.n_items = pre.item_codec().state.size

    def empty(self) -> Catalog:
        return Catalog(
            np.zeros((self.n_items, len(self.categories)), np.int64),
            np.zeros((self.n_items, len(self.numeric)), np.float32),
            np.zeros(self.n_items, np.float64),
        )

    def __call__(self, _fi: int, _frag: Any, table: pa.Table) -> Catalog:
        out = self.empty()
        table = table.filter(pa.array(table_splits(table, self.pre.key, self.split) == TRAIN))
        enc = self.pre.encode(table, with_label=True)
        if not enc.num_valid:
            return out
        assert enc.target is not None
        times, keys = order_values(table.filter(pa.array(enc.valid)), self.time, self.pre.key)
        items = enc.target
        known = np.flatnonzero(items >= 0)
        out.popularity += np.bincount(items[known], minlength=self.n_items)
        cats = enc.inputs["category"][:, self.categories] if self.categories else None
        nums = enc.inputs["numeric"][:, self.numeric] if self.numeric else None
        for i in known:
            idx, when = int(items[i]), (float(times[i]), keys[i])
            if idx not in out.latest or when > out.latest[idx]:
                out.latest[idx] = when
                if cats is not None:
                    out.category[idx] = cats[i]
                if nums is not None:
                    out.numeric[idx] = nums[i]
        return out


def learn_catalog(
    snap: Any,
    pre: Preprocessor,
    split: Split,
    *,
    time: str | None,
    categories: tuple[int, ...],
    numeric: tuple[int, ...],
    map_fragments: Any = None,
) -> Catalog:
    """One pass over the training interactions (on the engine when `map_fragments` is given)."""
    task = _CatalogTask(pre, split, time, categories, numeric)
    columns = list(
        dict.fromkeys([*pre.columns(with_label=True), *split_columns(pre.key, split), *([time] if time else [])])
    )
    if map_fragments is None:
        parts: Any = (task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns))
    else:
        parts = map_fragments(task, snap, columns)
    merged = task.empty()
    for p in parts:
        merged = merged.merge(p)
    return merged
