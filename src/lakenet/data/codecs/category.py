"""Categories: a vocabulary learned on the training split (index 0: a value never seen), or hashed buckets for
columns with very many values; a missing value has a bucket of its own, distinct from "unknown"."""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Stats, missing_rule, strings
from lakenet.errors import DataError

__all__ = ["CategoryCodec", "CategoryState", "default_embedding_dim"]


@dataclass(frozen=True)
class CategoryState:
    name: str
    column: str
    vocab: list[str]  # index i + 1; index 0 is the unknown bucket
    embedding_dim: int
    # Bundles written before missing values had their own bucket mapped them to unknown: that stays their rule.
    missing: str = "unknown"  # impute (own bucket) | constant | quarantine | unknown
    fill: str | None = None  # constant: the value a missing cell is read as
    buckets: int | None = None  # hashed instead of a vocabulary

    @property
    def size(self) -> int:
        """Embedding rows: unknown + values (or buckets) + the missing bucket."""
        values = self.buckets if self.buckets is not None else len(self.vocab)
        return 1 + values + int(self.missing == "impute")


def default_embedding_dim(categories: int) -> int:
    return max(1, int(min(32, round(1.6 * categories**0.56))))


def _scalar(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))


class CategoryStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.counts: Counter[str] = Counter()
        self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        values = strings(col)
        self.missing += sum(v is None for v in values)
        if self.spec.buckets is None:
            self.counts.update(v for v in values if v is not None)

    def merge(self, other: CategoryStats) -> None:
        self.missing += other.missing
        self.counts.update(other.counts)

    def finish(self) -> CategoryState:
        spec = self.spec
        rule, constant = missing_rule(spec)
        counts = self.counts
        vocab = sorted(
            (v for v, c in counts.most_common(spec.max_categories) if c >= spec.min_count),
            key=lambda v: (-counts[v], v),
        )
        if spec.buckets is not None:
            vocab = []
        values = spec.buckets if spec.buckets is not None else len(vocab)
        dim = spec.embedding_dim or default_embedding_dim(values + 2)
        fill = str(constant) if rule == "constant" else None
        return CategoryState(self.name, self.column, vocab, dim, rule, fill, spec.buckets)


class CategoryCodec(Codec[CategoryState]):
    type = "category"
    state_class = CategoryState

    def __init__(self, state: CategoryState) -> None:
        super().__init__(state)
        self._index = {v: i + 1 for i, v in enumerate(state.vocab)}

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        if not _scalar(dtype):
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}; a category feature needs scalar values. "
                f"Set features.{name}.type: image for image bytes."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> CategoryStats:
        return CategoryStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> CategoryCodec:
        rule, constant = missing_rule(spec)
        return cls(CategoryState(name, column, [], 1, rule, None if constant is None else str(constant)))

    def index_of(self, values: list[str | None]) -> np.ndarray:
        s = self.state
        missing_index = s.size - 1 if s.missing == "impute" else 0
        if s.buckets is not None:
            return np.array(
                [missing_index if v is None else zlib.crc32(v.encode()) % s.buckets + 1 for v in values],
                dtype=np.int64,
            )
        return np.array([missing_index if v is None else self._index.get(v, 0) for v in values], dtype=np.int64)

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        values = strings(col)
        if s.missing == "quarantine":
            mark(np.array([v is None for v in values], dtype=bool), "missing_category", s.column)
        elif s.missing == "constant":
            values = [s.fill if v is None else v for v in values]
        return {"category": self.index_of(values).reshape(-1, 1)}

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.state.size, n) if rng else np.zeros(n, np.int64)
        return {"category": idx.astype(np.int64).reshape(-1, 1)}
