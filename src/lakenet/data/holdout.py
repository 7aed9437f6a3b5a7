"""task: recommendation — the time-based holdout: each user's last `holdout` interactions are the test split and
the `holdout` before them validation; the rest train. Learned in one pass on the engine (a bounded, mergeable
state per user: the count and the last 2·holdout (time, key) pairs), then a pure function of the row."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import strings
from lakenet.data.codecs.datetime import epoch_seconds
from lakenet.data.split import TEST, TRAIN, VAL

__all__ = ["HoldoutPartial", "UserHoldout", "learn_holdout", "order_values"]

_Cut = tuple[float, str]  # (time, key): a user's interactions are ordered by time, ties by key


def order_values(table: pa.Table | pa.RecordBatch, time: str | None, key: str) -> tuple[np.ndarray, list[str]]:
    """Each row's place in its user's history: (time in seconds, or 0.0 without a time column; key). A row
    without a time goes first (it cannot be among the last)."""
    keys = [k if k is not None else "" for k in strings(table.column(key))]
    if time is None:
        return np.zeros(len(keys)), keys
    t = epoch_seconds(table.column(time))
    return np.where(np.isfinite(t), t, -math.inf), keys


@dataclass
class HoldoutPartial:
    """Per user: interactions seen and the latest 2·holdout (time, key) pairs."""

    holdout: int
    users: dict[str, list[_Cut]] = field(default_factory=dict)  # a min-heap of the latest pairs
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, user: str, cut: _Cut) -> None:
        self.counts[user] = self.counts.get(user, 0) + 1
        heap = self.users.setdefault(user, [])
        if len(heap) < 2 * self.holdout:
            heapq.heappush(heap, cut)
        elif cut > heap[0]:
            heapq.heapreplace(heap, cut)

    def merge(self, other: HoldoutPartial) -> HoldoutPartial:
        for user, heap in other.users.items():
            self.counts[user] = self.counts.get(user, 0)
            for cut in heap:
                self.add(user, cut)
            self.counts[user] += other.counts[user] - len(heap)
        return self


@dataclass(frozen=True)
class UserHoldout:
    """The split of a recommendation table: per user, where validation and test start in its history. A user
    with too few interactions keeps them all for training: test needs at least `holdout` + 1 interactions
    (one left to learn from), validation `2·holdout` + 1."""

    user: str
    time: str | None
    key: str
    holdout: int
    cuts: dict[str, tuple[_Cut | None, _Cut | None]]  # user -> (validation from, test from)

    def columns(self, key: str) -> list[str]:
        return list(dict.fromkeys([key, self.user, *([self.time] if self.time else [])]))

    def codes(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        users = strings(table.column(self.user))
        times, keys = order_values(table, self.time, self.key)
        out = np.full(len(users), TRAIN, dtype=np.int8)
        for i, u in enumerate(users):
            cut = self.cuts.get(u) if u is not None else None
            if cut is None:
                continue
            here = (float(times[i]), keys[i])
            if cut[1] is not None and here >= cut[1]:
                out[i] = TEST
            elif cut[0] is not None and here >= cut[0]:
                out[i] = VAL
        return out

    @classmethod
    def from_partial(cls, part: HoldoutPartial, *, user: str, time: str | None, key: str) -> UserHoldout:
        h = part.holdout
        cuts: dict[str, tuple[_Cut | None, _Cut | None]] = {}
        for u, heap in part.users.items():
            n = part.counts[u]
            latest = sorted(heap, reverse=True)  # newest first
            test = latest[h - 1] if n >= h + 1 else None
            val = latest[2 * h - 1] if n >= 2 * h + 1 and len(latest) >= 2 * h else None
            if test is not None:
                cuts[u] = (val, test)
        return cls(user, time, key, h, cuts)

    def summary(self) -> dict[str, Any]:
        return {"users_held_out": len(self.cuts), "holdout": self.holdout, "time": self.time}


class _HoldoutTask:
    """`(fragment index, fragment, table) -> HoldoutPartial`, picklable for an engine's workers."""

    def __init__(self, user: str, time: str | None, key: str, holdout: int) -> None:
        self.user, self.time, self.key, self.holdout = user, time, key, holdout

    def __call__(self, _fi: int, _frag: Any, table: pa.Table) -> HoldoutPartial:
        part = HoldoutPartial(self.holdout)
        times, keys = order_values(table, self.time, self.key)
        for u, t, k in zip(strings(table.column(self.user)), times.tolist(), keys, strict=True):
            if u is not None:
                part.add(u, (t, k))
        return part


def learn_holdout(
    snap: Any, *, user: str, time: str | None, key: str, holdout: int, map_fragments: Any = None
) -> UserHoldout:
    """One pass over the table (on the engine when `map_fragments` is given)."""
    task = _HoldoutTask(user, time, key, holdout)
    columns = list(dict.fromkeys([key, user, *([time] if time else [])]))
    if map_fragments is None:
        parts: Any = (task(fi, piece, table) for fi, piece, table in snap.iter_pieces(columns))
    else:
        parts = map_fragments(task, snap, columns)
    merged = HoldoutPartial(holdout)
    for p in parts:
        merged = merged.merge(p)
    return UserHoldout.from_partial(merged, user=user, time=time, key=key)
