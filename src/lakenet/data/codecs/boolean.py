"""Yes/no values: Arrow booleans, 0/1, or the strings true/false, yes/no, y/n, t/f, 1/0 (any case), as one 0/1
input; a missing value is read as the training split's share of true (or a constant) and flagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Stats, indicator, missing_rule, strings
from lakenet.errors import DataError

__all__ = ["BooleanCodec", "BooleanState", "to_bool"]

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


@dataclass(frozen=True)
class BooleanState:
    name: str
    column: str
    missing: str = "impute"  # impute | constant | quarantine
    fill: float = 0.0  # what a missing value is read as (impute: the share of true in training)
    indicator: bool = False


def to_bool(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as 0/1 floats, missing mask, present-but-not-a-boolean mask)."""
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        raw = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        missing = np.isnan(raw)
        bad = ~missing & ~np.isin(raw, [0.0, 1.0])
        return np.where(missing | bad, 0.0, raw), missing, bad
    values = [v.strip().lower() if v is not None else None for v in strings(col)]
    missing = np.array([v is None for v in values], dtype=bool)
    truth = np.array([v in _TRUE for v in values], dtype=bool)
    bad = ~missing & ~truth & ~np.array([v in _FALSE for v in values], dtype=bool)
    return truth.astype(np.float64), missing, bad


class BooleanStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.true = self.present = self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        vals, missing, bad = to_bool(col)
        ok = ~missing & ~bad
        self.true += int(vals[ok].sum())
        self.present += int(ok.sum())
        self.missing += int(missing.sum())

    def merge(self, other: BooleanStats) -> None:
        self.true += other.true
        self.present += other.present
        self.missing += other.missing

    def finish(self) -> BooleanState:
        rule, constant = missing_rule(self.spec)
        share = self.true / self.present if self.present else 0.0
        fill = float(bool(constant)) if rule == "constant" else share
        return BooleanState(self.name, self.column, rule, fill, rule != "quarantine" and self.missing > 0)


class BooleanCodec(Codec[BooleanState]):
    type = "boolean"
    state_class = BooleanState

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        ok = (
            pa.types.is_boolean(dtype)
            or pa.types.is_integer(dtype)
            or pa.types.is_floating(dtype)
            or pa.types.is_string(dtype)
            or pa.types.is_large_string(dtype)
            or pa.types.is_null(dtype)
        )
        if not ok:
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}; a boolean feature needs booleans, 0/1 or "
                f"yes/no strings. Change features.{name}.type or pick another column."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> BooleanStats:
        return BooleanStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> BooleanCodec:
        rule, _ = missing_rule(spec)
        return cls(BooleanState(name, column, rule))

    def numeric_width(self) -> int:
        return 1 + int(self.state.indicator)

    @property
    def logical_type(self) -> str:
        return "boolean"

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        vals, missing, bad = to_bool(col)
        mark(bad, "not_boolean", s.column)
        if s.missing == "quarantine":
            mark(missing, "missing_boolean", s.column)
        out = np.where(missing, s.fill, vals).astype(np.float32).reshape(-1, 1)
        if s.indicator:
            out = np.hstack([out, indicator(missing)])
        return {"numeric": out}

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        cols = (rng.random((n, 1)) < 0.5).astype(np.float32) if rng else np.zeros((n, 1), np.float32)
        if self.state.indicator:
            cols = np.hstack([cols, np.zeros((n, 1), np.float32)])
        return {"numeric": cols}
