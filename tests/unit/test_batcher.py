"""The micro-batcher: lone requests run at once, concurrent ones are batched up to max_batch_size, a full queue
sheds load, deadlines drop queued work, a failing request does not fail its batch-mates, swaps happen between
batches, and close() drains."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pyarrow as pa
import pytest

from lakenet.serving.batcher import Draining, MicroBatcher, Overloaded
from lakenet.serving.metrics import ServeMetrics


class Model:
    """Doubles column x; records each batch's size; the first call can be held until `release` is set."""

    def __init__(self, tag: str = "a", *, hold: bool = False) -> None:
        self.tag = tag
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, table: pa.Table) -> Sequence[tuple[str, float]]:
        self.entered.set()
        self.release.wait(10)
        xs = table.column("x").to_pylist()
        if any(x < 0 for x in xs):
            raise ValueError("negative input")
        self.batches.append(len(xs))
        return [(self.tag, 2 * x) for x in xs]


def rows(*xs: float) -> pa.Table:
    return pa.table({"x": pa.array(xs, pa.float64())})


async def wait_until_entered(model: Model) -> None:
    while not model.entered.is_set():
        await asyncio.sleep(0)  # no timer: yields to the loop until the inference thread has started


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_lone_request_is_scored_at_once_and_alone() -> None:
    async def main() -> None:
        model = Model()
        b = MicroBatcher(model, max_batch_size=8)
        await b.start()
        used, out = await b.submit(rows(1.0, 2.0))
        assert used is model and list(out) == [("a", 2.0), ("a", 4.0)]
        await b.close()
        assert model.batches == [2]

    run(main())


def test_requests_arriving_while_busy_are_batched_up_to_the_limit() -> None:
    async def main() -> None:
        model = Model(hold=True)
        metrics = ServeMetrics()
        b = MicroBatcher(model, max_batch_size=4, max_queue_rows=100, metrics=metrics)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        later = [b.submit(rows(float(i))) for i in range(1, 11)]
        assert b.queued_rows == 10 and metrics.queue_rows.get() == 10
        model.release.set()
        results = await asyncio.gather(first, *later)
        assert [r[1][0][1] for r in results] == [2.0 * i for i in range(11)]  # each request gets its own rows
        assert model.batches == [1, 4, 4, 2]
        assert metrics.batch_rows.count == 4 and metrics.batch_rows.sum == 11
        assert metrics.queue_rows.get() == 0
        await b.close()

    run(main())


def test_a_request_larger_than_the_batch_goes_alone() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=2, max_queue_rows=100)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        big, small = b.submit(rows(1.0, 2.0, 3.0)), b.submit(rows(4.0))
        model.release.set()
        await asyncio.gather(first, big, small)
        assert model.batches == [1, 3, 1]
        await b.close()

    run(main())


def test_delay_collects_requests_that_arrive_within_it() -> None:
    async def main() -> None:
        model = Model()
        b = MicroBatcher(model, max_batch_size=8, max_batch_delay_ms=10_000)
        await b.start()
        futures = [b.submit(rows(float(i))) for i in range(8)]  # the 8th fills the batch: no waiting out the delay
        await asyncio.gather(*futures)
        assert model.batches == [8]
        await b.close()

    run(main())


def test_full_queue_sheds_load_at_once() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=4, max_queue_rows=3)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)  # the running batch does not count against the queue
        queued = b.submit(rows(1.0, 2.0, 3.0))
        with pytest.raises(Overloaded) as err:
            b.submit(rows(4.0))
        assert err.value.retry_after_s >= 1
        model.release.set()
        await asyncio.gather(first, queued)
        await b.submit(rows(5.0))  # room again
        await b.close()

    run(main())


def test_a_request_whose_deadline_passed_in_the_queue_is_not_scored() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=4)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        late = b.submit(rows(1.0))
        late.cancel()  # what asyncio.wait_for does when the deadline passes
        kept = b.submit(rows(2.0))
        model.release.set()
        await asyncio.gather(first, kept)
        assert model.batches == [1, 1]
        await b.close()

    run(main())


def test_a_request_that_times_out_in_the_queue_frees_its_rows_at_once_and_is_never_scored() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=4, max_queue_rows=3)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        late = b.submit(rows(1.0, 2.0, 3.0))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late, 0.01)  # the server's deadline
        await asyncio.sleep(0)
        assert b.queued_rows == 0
        kept = b.submit(rows(4.0, 5.0, 6.0))  # room at once: the timed-out rows no longer count
        model.release.set()
        await first
        assert (await kept)[1] == [("a", 8.0), ("a", 10.0), ("a", 12.0)]
        assert model.batches == [1, 3]  # the late request never reached the model
        await b.close()

    run(main())


def test_a_batch_holds_at_most_max_batch_cost() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=8, max_batch_cost=10)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        queued = [b.submit(rows(1.0), cost=6), b.submit(rows(2.0), cost=4), b.submit(rows(3.0), cost=1)]
        costly = b.submit(rows(4.0), cost=25)  # more than the limit: alone
        model.release.set()
        await asyncio.gather(first, *queued, costly)
        assert model.batches == [1, 2, 1, 1]
        await b.close()

    run(main())


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=8)
        await b.start()
        first = b.submit(rows(0.0))
        await wait_until_entered(model)
        good1, bad, good2 = b.submit(rows(1.0)), b.submit(rows(-1.0)), b.submit(rows(2.0))
        model.release.set()
        await first
        assert (await good1)[1] == [("a", 2.0)] and (await good2)[1] == [("a", 4.0)]
        with pytest.raises(ValueError, match="negative"):
            await bad
        await b.close()

    run(main())


def test_swap_applies_from_the_next_batch() -> None:
    async def main() -> None:
        old, new = Model("old", hold=True), Model("new")
        b = MicroBatcher(old, max_batch_size=8)
        await b.start()
        running = b.submit(rows(1.0))
        await wait_until_entered(old)
        b.swap(new)
        queued = b.submit(rows(2.0))
        old.release.set()
        assert (await running)[1] == [("old", 2.0)]
        assert (await queued)[1] == [("new", 4.0)]
        await b.close()

    run(main())


def test_close_drains_the_queue_then_refuses() -> None:
    async def main() -> None:
        model = Model(hold=True)
        b = MicroBatcher(model, max_batch_size=2)
        await b.start()
        futures = [b.submit(rows(float(i))) for i in range(5)]
        await wait_until_entered(model)
        closing = asyncio.ensure_future(b.close())
        await asyncio.sleep(0)
        with pytest.raises(Draining):
            b.submit(rows(9.0))
        model.release.set()
        await closing
        assert [(await f)[1][0][1] for f in futures] == [0.0, 2.0, 4.0, 6.0, 8.0]
        assert not b.running

    run(main())
