"""Micro-batching in front of the model: a bounded queue of requests drained by one task into batches of at most
`max_batch_size` rows, scored on one inference thread, off the event loop.

With `max_batch_delay_ms=0` (the default) a lone request is scored at once; requests that arrive while the model
is busy wait and go together in the next batch, so batches grow with the load and cost nothing when idle.
A full queue refuses new work at once (load shedding) instead of queueing without bound. A request whose deadline
passes while it waits (its future cancelled) leaves the queue at once and is never scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pyarrow as pa

from lakenet.serving.metrics import ServeMetrics

__all__ = ["Draining", "MicroBatcher", "Overloaded"]

log = logging.getLogger("lakenet.serve")

M = TypeVar("M", bound=Callable[[pa.Table], Sequence[Any]])


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 with Retry-After."""

    def __init__(self, queued_rows: int, retry_after_s: int) -> None:
        super().__init__(f"{queued_rows} rows already waiting")
        self.retry_after_s = retry_after_s


class Draining(Exception):
    """The server is shutting down and admits no new requests."""


@dataclass(eq=False)
class _Item(Generic[M]):
    table: pa.Table
    future: asyncio.Future[tuple[M, Sequence[Any]]]
    cost: float = 0.0
    enqueued: float = field(default_factory=time.monotonic)
    queued: bool = True  # still in the queue (not taken into a batch, not dropped)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


class MicroBatcher(Generic[M]):
    """Scores Arrow tables with `model(table) -> one result per row`, batching concurrent submissions.

    `model` may be swapped at any time (`swap`); a batch already running finishes on the model it started with.
    Everything but the model call runs on the event loop thread.
    """

    def __init__(
        self,
        model: M,
        *,
        max_batch_size: int = 32,
        max_batch_delay_ms: float = 0.0,
        max_queue_rows: int = 256,
        max_batch_cost: float | None = None,
        metrics: ServeMetrics | None = None,
    ) -> None:
        """`max_batch_cost`: most total `cost` (see `submit`) per batch; a request costing more goes alone."""
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.max_batch_cost = max_batch_cost
        self.metrics = metrics
        self._pending: deque[_Item[M]] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._batch_seconds = 0.0  # moving average of one batch's model time, for Retry-After

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakenet-infer")
        self._task = asyncio.create_task(self._run(), name="lakenet-batcher")

    async def close(self, timeout_s: float = 30.0) -> None:
        """Admit nothing new, score what is queued (up to `timeout_s`), then stop the inference thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                log.warning("drain timed out after %.1f s; %d queued requests dropped", timeout_s, len(self._pending))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._fail_pending(Draining("the server shut down before this request was scored"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def queued_requests(self) -> int:
        return len(self._pending)

    def swap(self, model: M) -> None:
        """Score every batch that starts from now on with `model`."""
        self.model = model

    # ---- submitting ----------------------------------------------------------------------------------------------
    def submit(self, table: pa.Table, *, cost: float = 0.0) -> asyncio.Future[tuple[M, Sequence[Any]]]:
        """Queue a table; the future gives (model that scored it, one result per row). `cost`: the work the
        request brings beyond its rows (the server passes its images' pixels), bounded per batch by max_batch_cost.

        Raises Overloaded when the queue cannot take `table.num_rows` more rows, Draining when shutting down.
        Cancelling the future (a deadline) drops the request if its batch has not started yet.
        """
        n = int(table.num_rows)
        self.admit(n)
        assert self._wakeup is not None
        item: _Item[M] = _Item(table, asyncio.get_running_loop().create_future(), cost)
        item.future.add_done_callback(lambda f: self._forget(item) if f.cancelled() else None)
        self._pending.append(item)
        self._queued_rows += n
        self._observe_queue()
        self._wakeup.set()
        return item.future

    def _forget(self, item: _Item[M]) -> None:
        """A queued request was cancelled: its rows stop counting against the queue now, not when a batch would
        have reached it, so a burst of timed-out requests does not keep refusing new ones."""
        if not item.queued:
            return
        item.queued = False
        self._pending.remove(item)
        self._queued_rows -= item.rows
        self._observe_queue()

    def admit(self, rows: int) -> None:
        """Raise Overloaded if `rows` more rows would overflow the queue now, Draining when shutting down."""
        if self._closing or self._wakeup is None:
            raise Draining("the server is shutting down")
        if self._queued_rows + rows > self.max_queue_rows:
            raise Overloaded(self._queued_rows, self._retry_after())

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained (whole seconds, at least 1: the header's unit)."""
        batches = self._queued_rows / self.max_batch_size + 1
        return max(1, min(60, round(batches * self._batch_seconds + 0.5)))

    def _observe_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_rows.set(self._queued_rows)
            self.metrics.queue_requests.set(len(self._pending))

    # ---- the batching task ---------------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_batch_delay > 0 and not self._closing:
                await self._wait_for_more(loop)
            batch = self._take()
            if batch:
                await self._score(loop, batch)

    async def _wait_for_more(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the batch is full or the oldest request has waited `max_batch_delay`."""
        assert self._wakeup is not None
        deadline = self._pending[0].enqueued + self.max_batch_delay
        while self._queued_rows < self.max_batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[_Item[M]]:
        """Up to max_batch_size rows (and max_batch_cost) of live requests, oldest first (a larger request goes
        alone)."""
        batch: list[_Item[M]] = []
        rows, cost = 0, 0.0
        limit = self.max_batch_cost
        while self._pending:
            item = self._pending[0]
            dead = item.future.done()  # its deadline passed while queued (cancelled, _forget not run yet)
            full = rows + item.rows > self.max_batch_size or (limit is not None and cost + item.cost > limit)
            if batch and full and not dead:
                break
            self._pending.popleft()
            self._queued_rows -= item.rows
            item.queued = False
            if dead:
                continue
            batch.append(item)
            rows += item.rows
            cost += item.cost
        self._observe_queue()
        return batch

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[_Item[M]]) -> None:
        model = self.model
        tables = [item.table for item in batch]
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, _call, model, tables)
        except Exception as err:
            if len(batch) == 1:
                _resolve(batch[0], exception=err)
                return
            # One request must not fail its batch-mates: score each alone to isolate the culprit.
            log.warning("batch of %d requests failed (%s: %s); scoring them one by one", len(batch), type(err), err)
            for item in batch:
                try:
                    res = await loop.run_in_executor(self._executor, _call, model, [item.table])
                except Exception as one_err:
                    _resolve(item, exception=one_err)
                else:
                    _resolve(item, result=(model, res))
            return
        seconds = time.perf_counter() - t0
        self._batch_seconds = seconds if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * seconds
        if self.metrics is not None:
            self.metrics.batch_rows.observe(sum(item.rows for item in batch))
            self.metrics.batch_seconds.observe(seconds)
        start = 0
        for item in batch:
            _resolve(item, result=(model, results[start : start + item.rows]))
            start += item.rows

    def _fail_pending(self, err: Exception) -> None:
        while self._pending:
            item = self._pending.popleft()
            item.queued = False
            _resolve(item, exception=err)
        self._queued_rows = 0
        self._observe_queue()


def _call(model: Callable[[pa.Table], Sequence[Any]], tables: list[pa.Table]) -> Sequence[Any]:
    """On the inference thread: one model call over the concatenated tables."""
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    out = model(table)
    if len(out) != table.num_rows:
        raise RuntimeError(f"the model returned {len(out)} results for {table.num_rows} rows")
    return out


def _resolve(
    item: _Item[M], *, result: tuple[M, Sequence[Any]] | None = None, exception: Exception | None = None
) -> None:
    if item.future.done():  # the request's deadline passed while its batch ran
        return
    if result is not None:
        item.future.set_result(result)
    else:
        item.future.set_exception(exception or RuntimeError("no result"))
