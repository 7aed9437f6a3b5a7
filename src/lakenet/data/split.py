"""Deterministic train/val/test split from a hash of the row key: appending rows never moves existing ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from lakenet.config.schema import SplitConfig

__all__ = ["SPLIT_NAMES", "TEST", "TRAIN", "VAL", "assign_splits"]

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
