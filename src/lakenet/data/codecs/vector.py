"""Fixed-length lists of numbers (embeddings from `lakenet featurize`, or your own), fed to the model as they
are. A wrong length or a non-finite value is quarantined; a missing vector is zeros plus an indicator input
(or quarantined with `missing: quarantine`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.data.codecs.base import Codec, Mark, Stats, indicator
from lakenet.errors import DataError

__all__ = ["VectorCodec", "VectorState"]


@dataclass(frozen=True)
class VectorState:
    name: str
    column: str
    dim: int
    # Bundles written before missing vectors were zero-filled quarantined them: that stays their rule.
    missing: str = "quarantine"  # quarantine | zeros
    indicator: bool = False


class VectorStats(Stats):
    def __init__(self, name: str, column: str, spec: Any, dim: int) -> None:
        self.name, self.column, self.spec, self.dim = name, column, spec, dim
        self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        self.missing += col.null_count

    def merge(self, other: VectorStats) -> None:
        self.missing += other.missing

    def finish(self) -> VectorState:
        rule = self.spec.missing
        return VectorState(self.name, self.column, self.dim, rule, rule == "zeros" and self.missing > 0)


class VectorCodec(Codec[VectorState]):
    type = "vector"
    state_class = VectorState

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        ok = (pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)) and (
            pa.types.is_integer(dtype.value_type) or pa.types.is_floating(dtype.value_type)
        )
        if not ok:
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}, but a vector feature needs a list of numbers "
                f"per row (an embedding, as `lakenet featurize` writes). Change features.{name}.type or pick "
                "another column."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> VectorStats:
        return VectorStats(name, column, spec, hints["vector_dims"][name])

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> VectorCodec:
        return cls(VectorState(name, column, hints["vector_dims"][name], spec.missing))

    def vector_width(self) -> int:
        return self.state.dim

    def numeric_width(self) -> int:
        return int(self.state.indicator)

    @property
    def logical_type(self) -> str:
        return "vector"

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        n = len(col)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        mat = np.zeros((n, s.dim), dtype=np.float32)
        nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(arr).cast(pa.float32()).to_numpy(zero_copy_only=False)
        if s.missing == "quarantine":
            mark(nulls, "missing_vector", s.column)
        mark(~nulls & (lengths != s.dim), "wrong_vector_length", s.column)
        rows = np.flatnonzero(~nulls & (lengths == s.dim))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else np.zeros(0, np.int64)
        block = np.asarray(values, dtype=np.float32)[starts[rows, None] + np.arange(s.dim)]  # (R, dim)
        finite = np.isfinite(block).all(1)
        mark(np.isin(np.arange(n), rows[~finite]), "non_finite_vector", s.column)
        mat[rows] = np.where(np.isfinite(block), block, 0.0)
        out = {"vector": mat}
        if s.indicator:
            out["numeric"] = indicator(nulls)
        return out

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        shape = (n, self.state.dim)
        out = {"vector": rng.standard_normal(shape).astype(np.float32) if rng else np.zeros(shape, np.float32)}
        if self.state.indicator:
            out["numeric"] = np.zeros((n, 1), np.float32)
        return out
