"""Arrow → tensor batches for one worker: its own shard of fragments, a deterministic order, a decoded cache.

The order of rows in an epoch is a pure function of (seed, epoch, shard), never of what is cached or of how the
process got there, so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from lakenet.data.encoders import Preprocessor
from lakenet.data.sources import PIECE_ROWS, Fragment, Snapshot
from lakenet.data.split import Split, split_columns, table_splits

__all__ = ["Batch", "SplitLoader", "plan_shards"]

_WINDOW_FRAGMENTS = 16  # rows are shuffled within windows of this many fragments (pieces of a big one)
_Unit = tuple[int, Fragment]  # a fragment index and the row range of it read at once (at most PIECE_ROWS rows)
# One decode thread: on 2 cores a second one competed with torch's own threads (cold epoch 0.75 vs 0.80 of the
# in-memory loop, bench/train_from_table).
_DECODE_THREADS = 1


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
            self.target.to(device, non_blocking=True),
        )


def plan_shards(counts: np.ndarray, world: int) -> list[list[int]]:
    """Assign fragments to `world` shards, balancing usable rows (largest first, to the lightest shard)."""
    shards: list[list[int]] = [[] for _ in range(world)]
    load = np.zeros(world, dtype=np.int64)
    for fi in sorted(range(len(counts)), key=lambda i: (-int(counts[i]), i)):
        if counts[fi] == 0:
            continue
        r = int(np.argmin(load))
        shards[r].append(fi)
        load[r] += counts[fi]
    return [sorted(s) for s in shards]


_Arrays = tuple[dict[str, np.ndarray], np.ndarray]


class SplitLoader:
    """Batches of one split from a list of fragments of a snapshot."""

    def __init__(
        self,
        snap: Snapshot,
        pre: Preprocessor,
        *,
        split: int | tuple[int, ...],
        split_cfg: Split,
        fragments: list[int],
        batch_size: int,
        shuffle: bool,
        seed: int,
        cache_mb: int = 0,
    ) -> None:
        self.snap, self.pre = snap, pre
        self.split, self.split_cfg = split, split_cfg
        self.fragments = fragments
        self.batch_size = batch_size
        self.shuffle, self.seed = shuffle, seed
        self._cache: dict[tuple[int, int], _Arrays] = {}
        self._cache_budget = cache_mb * 2**20
        self._cache_bytes = 0
        self._lock = threading.Lock()
        self._columns = list(dict.fromkeys([*pre.columns(with_label=True), *split_columns(pre.key, split_cfg)]))
        self._cursor = threading.local()  # per decode thread: the row group being read piece after piece

    def _units(self, fi: int) -> list[_Unit]:
        """A fragment as the row ranges read at once: itself, or for a big one its pieces, cut where
        `Snapshot.read_pieces` cuts them (so consecutive pieces continue one decode of the row group)."""
        f = self.snap.fragments[fi]
        if f.num_rows <= PIECE_ROWS or self.snap.format == "csv":
            return [(fi, f)]
        units, lo, end = [], f.offset, f.offset + f.num_rows
        while lo < end:
            hi = min(end, (lo // PIECE_ROWS + 1) * PIECE_ROWS)
            units.append((fi, Fragment(f.path, f.index, hi - lo, lo)))
            lo = hi
        return units

    def _read(self, unit: _Unit) -> pa.Table:
        fi, piece = unit
        f = self.snap.fragments[fi]
        if piece == f:
            return self.snap.read(f, self._columns)
        cur = self._cursor
        if getattr(cur, "at", None) != (fi, piece.offset):  # not the next piece of the row group being read
            rest = Fragment(f.path, f.index, f.offset + f.num_rows - piece.offset, piece.offset)
            cur.pieces = self.snap.read_pieces(rest, self._columns, max_rows=PIECE_ROWS)
        got, table = next(cur.pieces)
        assert (got.offset, got.num_rows) == (piece.offset, piece.num_rows), (got, piece)
        cur.at = (fi, piece.offset + piece.num_rows)
        return table

    def _load(self, unit: _Unit) -> _Arrays:
        key = (unit[0], unit[1].offset)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        table = self._read(unit)
        mask = np.isin(table_splits(table, self.pre.key, self.split_cfg), self.split)
        if not mask.all():
            table = table.filter(pa.array(mask))
        enc = self.pre.encode(table, with_label=True)
        assert enc.target is not None
        arrays = (enc.inputs, enc.target)
        size = enc.target.nbytes + sum(a.nbytes for a in enc.inputs.values())
        with self._lock:  # fragments are decoded on several threads
            if self._cache_bytes + size <= self._cache_budget:
                self._cache[key] = arrays
                self._cache_bytes += size
        return arrays

    def _fragment_stream(self, order: list[_Unit]) -> Iterator[_Arrays]:
        if all((fi, u.offset) in self._cache for fi, u in order):
            yield from (self._cache[(fi, u.offset)] for fi, u in order)
            return
        # Decode ahead on a thread while the current batches train (Pillow and Arrow release the GIL); a whole
        # shuffle window ahead, so the next window is ready when this one ends. Results come back in order.
        ahead = _WINDOW_FRAGMENTS + 1
        with ThreadPoolExecutor(_DECODE_THREADS, thread_name_prefix="lakenet-loader") as pool:
            pending: list[Future[_Arrays]] = [pool.submit(self._load, fi) for fi in order[:ahead]]
            for nxt in order[ahead:]:
                yield pending.pop(0).result()
                pending.append(pool.submit(self._load, nxt))
            for fut in pending:
                yield fut.result()

    def batches(self, epoch: int, *, max_batches: int | None = None, skip: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`; `skip` fast-forwards past batches already trained (resume)."""
        rng = np.random.default_rng([self.seed, epoch, *np.atleast_1d(self.split).tolist()])
        order = list(self.fragments)
        if self.shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        emitted = 0
        carry: _Arrays | None = None
        stream = self._fragment_stream([u for fi in order for u in self._units(fi)])
        windows_done = False
        while not windows_done:
            window: list[_Arrays] = []
            for _ in range(_WINDOW_FRAGMENTS):
                nxt = next(stream, None)
                if nxt is None:
                    windows_done = True
                    break
                window.append(nxt)
            if carry is not None:
                window.insert(0, carry)
                carry = None
            if not window:
                break
            inputs, target = _concat(window)
            n = len(target)
            idx = rng.permutation(n) if self.shuffle else np.arange(n)
            start = 0
            while n - start >= self.batch_size or (windows_done and start < n):
                if max_batches is not None and emitted >= max_batches:
                    return
                sel = idx[start : start + self.batch_size]
                start += len(sel)
                emitted += 1
                if emitted > skip:
                    yield Batch(
                        {k: torch.from_numpy(v[sel]) for k, v in inputs.items()},
                        torch.from_numpy(target[sel]),
                    )
            if start < n:
                rest = idx[start:]
                carry = ({k: v[rest] for k, v in inputs.items()}, target[rest])

    def steps(self, rows: int) -> int:
        return (rows + self.batch_size - 1) // self.batch_size


def _concat(parts: list[_Arrays]) -> _Arrays:
    if len(parts) == 1:
        return parts[0]
    keys = parts[0][0].keys()
    return (
        {k: np.concatenate([p[0][k] for p in parts]) for k in keys},
        np.concatenate([p[1] for p in parts]),
    )
