"""Numbers: standardised with the training split's mean and standard deviation; a missing value is filled with
the training median (or a constant) and flagged in an indicator input, so the model can learn what missing means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Moments, Sample, Stats, indicator, missing_rule, to_float
from lakenet.errors import DataError

__all__ = ["NumericCodec", "NumericState"]


@dataclass(frozen=True)
class NumericState:
    name: str
    column: str
    mean: float
    std: float
    # Bundles written before missing values were imputed quarantined them: that stays their behaviour.
    missing: str = "quarantine"  # impute | constant | quarantine
    fill: float | None = None  # the value a missing cell is read as (impute: the training median)
    indicator: bool = False  # an extra input: 1 where the value was missing


def numeric_type(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
    )


class NumericStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.moments, self.sample = Moments(), Sample()
        self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        vals, _ = to_float(col, self.column)
        self.missing += int(np.isnan(vals).sum())
        self.moments.update(vals)
        self.sample.update(hashes, vals)

    def merge(self, other: NumericStats) -> None:
        self.missing += other.missing
        self.moments.merge(other.moments)
        self.sample.merge(other.sample)

    def finish(self) -> NumericState:
        mean, std = self.moments.mean_std()
        rule, constant = missing_rule(self.spec)
        fill = float(constant) if rule == "constant" else self.sample.median(mean)
        # The indicator is an input only when training saw missing values: a constant-zero column teaches nothing.
        return NumericState(self.name, self.column, mean, std, rule, fill, rule != "quarantine" and self.missing > 0)


class NumericCodec(Codec[NumericState]):
    type = "numeric"
    state_class = NumericState

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        if not numeric_type(dtype):
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}, which is not numeric. "
                f"Set features.{name}.type to category, datetime or image, or pick another column."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> NumericStats:
        return NumericStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> NumericCodec:
        rule, constant = missing_rule(spec)
        return cls(NumericState(name, column, 0.0, 1.0, rule, float(constant or 0.0), False))

    def numeric_width(self) -> int:
        return 1 + int(self.state.indicator)

    @property
    def logical_type(self) -> str:
        return "double"

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        vals, non_numeric = to_float(col, s.column)
        missing = np.isnan(vals) & ~non_numeric
        mark(non_numeric, "not_numeric", s.column)
        if s.missing == "quarantine":
            mark(missing, "missing_numeric", s.column)
        mark(np.isinf(vals), "non_finite_numeric", s.column)
        fill = s.fill if s.fill is not None else s.mean
        vals = np.where(missing, fill, vals)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((np.nan_to_num(vals, nan=s.mean, posinf=s.mean, neginf=s.mean) - s.mean) / s.std).astype(
                np.float32
            )
        # A finite value can still overflow float32 once standardised (1e300): the model would emit NaN.
        mark(~np.isfinite(scaled), "non_finite_numeric", s.column)
        out = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).reshape(-1, 1)
        if s.indicator:
            out = np.hstack([out, indicator(missing)])
        return {"numeric": out}

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        cols = rng.standard_normal((n, 1)).astype(np.float32) if rng else np.zeros((n, 1), np.float32)
        if self.state.indicator:
            flag = (rng.random((n, 1)) < 0.2).astype(np.float32) if rng else np.zeros((n, 1), np.float32)
            cols = np.hstack([cols, flag])
        return {"numeric": cols}
