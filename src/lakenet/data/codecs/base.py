"""The codec contract: one class per feature type owns its column check, its statistics (update / merge /
finish, so partial results from many fragments or executors combine), its encoding and missing-value rule, its
input signature, its example inputs and its share of the model's input blocks.

Blocks are what the network sees: `numeric` (N, F) float32 columns from every numeric-like feature in config
order, `category` (N, K) int64 indices, `image` (N, C, S, S), `vector` (N, V) and `text.<name>` token ids. A
codec's `encode` returns its contribution to one or more blocks (a numeric missing-indicator lands in `numeric`
whatever the feature's own block).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.errors import DataError

__all__ = [
    "Codec",
    "Mark",
    "Moments",
    "Sample",
    "Stats",
    "blank_to_null",
    "missing_rule",
    "strings",
    "to_float",
]

S = TypeVar("S")
Mark = Callable[[np.ndarray, str, str], None]  # (rows mask, reason, column): rows set aside as bad


def missing_rule(spec: Any) -> tuple[str, Any]:
    """The config's `missing:` as (rule, constant): impute, quarantine, constant, or zeros."""
    rule = getattr(spec, "missing", "impute")
    if isinstance(rule, str):
        return rule, None
    return "constant", rule.constant


def blank_to_null(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Strings that are empty or only whitespace are missing values, not a category or a word."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    blank = pc.match_substring_regex(col, r"^\s*$")
    return pc.if_else(blank, pa.scalar(None, col.type), col)


def strings(col: pa.ChunkedArray | pa.Array) -> list[str | None]:
    """Values as strings, blanks as None."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return blank_to_null(col).to_pylist()


def to_float(col: pa.ChunkedArray | pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Float values (missing: NaN) and a mask of present values that are not numbers ("abc")."""
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        vals = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(vals, dtype=np.float64), np.zeros(len(vals), dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        raw = pd.Series(strings(col) if not pa.types.is_null(t) else [None] * len(col), dtype=object)
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        return num, raw.notna().to_numpy() & np.isnan(num)
    raise DataError(f"Column {name!r} has type {t}, which cannot be used as a numeric feature.")


class Moments:
    """Count, mean and sum of squared deviations, merged with Chan's parallel update: exact to rounding for
    large-valued columns (timestamps in seconds) where sum-of-squares loses every digit."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        if len(values):
            other = Moments()
            other.n, other.mean = len(values), float(values.mean())
            other.m2 = float(np.square(values - other.mean).sum())
            self.merge(other)

    def merge(self, other: Moments) -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return 0.0, 1.0
        std = float(np.sqrt(self.m2 / self.n))
        return float(self.mean), std if std > 1e-8 else 1.0


class Sample:
    """A deterministic, mergeable sample: the `k` values whose row-key hashes are smallest (bottom-k). The same
    rows are kept whatever the order or the partitioning of the table; medians come from it."""

    def __init__(self, k: int = 4096) -> None:
        self.k = k
        self.hashes = np.empty(0, dtype=np.uint64)
        self.values = np.empty(0, dtype=np.float64)

    def update(self, hashes: np.ndarray, values: np.ndarray) -> None:
        keep = np.isfinite(values)
        self._keep(np.concatenate([self.hashes, hashes[keep]]), np.concatenate([self.values, values[keep]]))

    def merge(self, other: Sample) -> None:
        self._keep(np.concatenate([self.hashes, other.hashes]), np.concatenate([self.values, other.values]))

    def _keep(self, hashes: np.ndarray, values: np.ndarray) -> None:
        if len(hashes) > self.k:
            order = np.argsort(hashes, kind="stable")[: self.k]
            hashes, values = hashes[order], values[order]
        self.hashes, self.values = hashes, values

    def median(self, default: float = 0.0) -> float:
        return float(np.median(self.values)) if len(self.values) else default


class Stats(ABC):
    """Statistics of one feature over training rows: `update` per fragment, `merge` partial results,
    `finish` into the codec's state."""

    missing = 0  # missing values seen (for the profile and the indicator decision)

    @abstractmethod
    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None: ...

    @abstractmethod
    def merge(self, other: Any) -> None: ...

    @abstractmethod
    def finish(self) -> Any:
        """The learned state (a JSON-able dataclass)."""


class Codec(ABC, Generic[S]):
    """Encodes one feature with its learned state; the state is JSON-able and travels in the bundle."""

    type: ClassVar[str]  # the config's `type:`
    state_class: ClassVar[Any]

    def __init__(self, state: S) -> None:
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.name)  # type: ignore[attr-defined]

    @property
    def column(self) -> str:
        return str(self.state.column)  # type: ignore[attr-defined]

    # ---- learning ----------------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        """Refuse a column of the wrong type, naming the column and the fix."""

    @classmethod
    @abstractmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> Stats:
        """Empty statistics for the training rows."""

    @classmethod
    @abstractmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> Codec[Any]:
        """A codec with neutral state: it finds present-but-unusable values before any statistics exist."""

    # ---- encoding ----------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        """This feature's contribution to the input blocks, one row per input row (bad rows: anything)."""

    @abstractmethod
    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """Encoded inputs for `n` rows without a table: zeros (rng None) or random values of the right range."""

    def numeric_width(self) -> int:
        """Columns this feature adds to the numeric block."""
        return 0

    @property
    def logical_type(self) -> str:
        """The input signature's type: double, string, boolean, datetime, binary or vector."""
        return "string"

    def signature(self) -> dict[str, str]:
        return {"name": self.column, "type": self.logical_type, "feature": self.type}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self.state)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Codec[Any]:
        known = {f.name for f in fields(cls.state_class)}
        return cls(cls.state_class(**{k: v for k, v in d.items() if k in known}))


def indicator(missing: np.ndarray) -> np.ndarray:
    """(N, 1) float32: 1 where the value was missing."""
    return missing.astype(np.float32).reshape(-1, 1)
