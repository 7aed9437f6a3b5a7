"""Deterministic train/val/test split from a hash of the row key (or of a group the row belongs to: a speaker, a
customer): appending rows never moves existing ones."""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from lakenet.config.schema import SplitConfig

__all__ = [
    "SPLIT_NAMES",
    "TEST",
    "TRAIN",
    "VAL",
    "RowSplit",
    "Split",
    "assign_splits",
    "split_columns",
    "table_splits",
]

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")


def assign_splits(keys: pa.Array | pa.ChunkedArray, split: SplitConfig) -> np.ndarray:
    """Split code (TRAIN/VAL/TEST) per key: a pure function of (key, seed, fractions)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    values = np.asarray(keys.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    # pandas' hash_array is SipHash with a fixed key: stable across processes, machines and versions.
    hashed = pd.util.hash_array(values, hash_key=f"{split.seed:016d}"[-16:], categorize=False)
    u = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    codes = np.full(len(values), TEST, dtype=np.int8)
    codes[u < split.train + split.val] = VAL
    codes[u < split.train] = TRAIN
    return codes


class RowSplit(Protocol):
    """A split that is not a hash (a recommendation model's per-user holdout): the columns it reads and the split
    code of each row."""

    def columns(self, key: str) -> list[str]: ...

    def codes(self, table: pa.Table | pa.RecordBatch) -> np.ndarray: ...


Split = SplitConfig | RowSplit


def split_columns(key: str, split: Split) -> list[str]:
    """The columns `table_splits` reads: the key, and the group column if the split has one."""
    if not isinstance(split, SplitConfig):
        return split.columns(key)
    return [key] if split.group is None else list(dict.fromkeys([key, split.group]))


def table_splits(table: pa.Table | pa.RecordBatch, key: str, split: Split) -> np.ndarray:
    """Split code per row of `table`: a hash of the row's group (`split.group`, through `split.group_pattern`) or,
    where it has none, of its key; or the row split's own codes."""
    if not isinstance(split, SplitConfig):
        return split.codes(table)
    keys = table.column(key)
    if split.group is None:
        return assign_splits(keys, split)
    if split.group not in table.column_names:
        from lakenet.errors import DataError

        raise DataError(
            f"data.split.group {split.group!r} is not a column of the table ({', '.join(table.column_names)})"
        )
    pattern = re.compile(split.group_pattern) if split.group_pattern is not None else None
    out = []
    # "g:" and "k:" keep a group value from hashing like an unrelated row's key
    for k, g in zip(keys.cast(pa.string()).to_pylist(), table.column(split.group).cast(pa.string()).to_pylist(),
                    strict=True):  # fmt: skip
        if g is not None and pattern is not None:
            m = pattern.search(g)
            g = m.group(1) if m else None
        out.append(f"g:{g}" if g is not None else f"k:{k}")
    return assign_splits(pa.array(out, pa.string()), split)
