"""The local engine (the default): in-process for one worker, torch.distributed processes on 127.0.0.1 for
several, and a process pool for scoring with torch threads × processes ≤ cores.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from lakenet.data.sources import Fragment
from lakenet.engines.base import Engine, ScoreJob, plan_tasks
from lakenet.errors import LakenetError, ScoringError, TrainingError
from lakenet.host import cpu_count
from lakenet.training.callbacks import Callback
from lakenet.training.loop import TrainJob, WorkerContext, train_worker

__all__ = ["LocalEngine", "cpu_count"]

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(
    rank: int, world: int, port: int, job: TrainJob, device: str, threads: int, callbacks: Sequence[Callback]
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    backend = "nccl" if device == "cuda" else "gloo"
    dev = f"cuda:{rank % max(torch.cuda.device_count(), 1)}" if device == "cuda" else "cpu"
    if device == "cuda":
        torch.cuda.set_device(dev)
    err_file = Path(job.output_dir) / f"error-rank{rank}.json"
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        train_worker(job, WorkerContext(rank, world, dev), callbacks)
        # The DDP wrapper sits in a reference cycle that keeps the gloo group alive until interpreter exit,
        # where tearing it down aborted ~6% of runs: collect it now and leave the group together.
        gc.collect()
        dist.barrier()
    except LakenetError as err:
        err_file.parent.mkdir(parents=True, exist_ok=True)
        err_file.write_text(json.dumps({"type": type(err).__name__, "message": str(err)}))
        raise SystemExit(3) from None
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the group; the parent reports it
        raise SystemExit(130) from None
    except BaseException:
        err_file.parent.mkdir(parents=True, exist_ok=True)
        err_file.write_text(json.dumps({"type": "crash", "message": traceback.format_exc()}))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _raise_worker_error(job: TrainJob, world: int) -> None:
    from lakenet import errors

    for rank in range(world):
        f = Path(job.output_dir) / f"error-rank{rank}.json"
        if f.is_file():
            info = json.loads(f.read_text())
            cls = getattr(errors, info["type"], TrainingError)
            if not (isinstance(cls, type) and issubclass(cls, LakenetError)):
                raise TrainingError(f"training worker {rank} failed:\n{info['message']}")
            raise cls(info["message"])
    raise TrainingError("a training worker died without a message (killed, or out of memory?)")


# ---- scoring pool -------------------------------------------------------------------------------------------
_predictor: Any = None
_init_error: LakenetError | None = None
_job: ScoreJob | None = None
_TASK_ROWS = 65_536  # rows per scoring task at most
# Below this estimated in-process time (the probed seconds per row × the table's rows) the job is scored in
# this process. A pool starts its processes, loads the model in each and ships rows both ways: measured on 2
# cores with an MLP of 25 columns, 10^5 rows took 2.7 s in-process against 3.9 s with the pool, 10^6 rows 12.8
# against 10.0 s; the pool pays from about 4 s of in-process work.
_POOL_PAYS_S = 4.0
_PROBE_BIG = 10  # a first probe this many times over the bar needs no second one
_PROBE_ROWS = 16  # rows scored in this process to measure the cost per row (their output is kept)


def _init_scorer(job: ScoreJob, threads: int) -> None:
    global _predictor, _init_error, _job
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    _job = job
    try:
        _predictor = job.scorer()
    except LakenetError as err:
        _init_error = err  # raised by the first task, so the parent reports it (a raising initializer is retried)
    except Exception as err:
        _init_error = ScoringError(f"the scoring process could not load the model: {type(err).__name__}: {err}")


def _score_fragments(frags: tuple[Fragment, ...], path: str) -> bool:
    """Score a task's fragments into an Arrow stream file at `path` (the parent reads it batch by batch: a big
    row group's output never sits whole in memory, here or there); False when there were no rows."""
    if _init_error is not None:
        raise _init_error
    assert _job is not None
    out = None
    with pa.OSFile(path, "wb") as sink:
        for frag in frags:
            for _, table in _job.snapshot.read_pieces(frag, list(_job.columns)):
                for batch in table.to_batches(max_chunksize=_job.batch_rows):
                    res = _predictor(batch)
                    if out is None:
                        out = pa.ipc.new_stream(sink, res.schema)
                    out.write_batch(res)
        if out is not None:
            out.close()
    return out is not None


def _pool_context() -> Any:
    """Scoring workers fork from a server that imported torch and lakenet once (and ran no torch op, so no
    OpenMP threads exist to break the fork): starting a worker costs milliseconds instead of an import."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "pyarrow", "lakenet.inference.predictor", "lakenet.engines.local"])
    return ctx


class LocalEngine(Engine):
    name = "local"

    def task_threads(self, n: int) -> int | None:
        return max(1, cpu_count() // n) if n > 1 else None

    def run_tasks(self, fn: Callable[[int], T], n: int) -> list[T]:
        if n == 1:
            return [fn(0)]
        from concurrent.futures import ProcessPoolExecutor

        # Spawned (not forked) processes: the parent may hold OpenMP threads and database connections.
        pool = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))
        try:
            futures = [pool.submit(fn, i) for i in range(n)]
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            # Ctrl-C reached the children too: let them record their trials' state before returning.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def train(self, job: TrainJob, *, workers: int, device: str, callbacks: Sequence[Callback] = ()) -> None:
        if workers == 1:
            train_worker(job, WorkerContext(0, 1, "cuda:0" if device == "cuda" else "cpu"), callbacks)
            return
        import torch.multiprocessing as tmp

        if device == "cuda":
            import torch

            if torch.cuda.device_count() < 1:
                raise TrainingError("engine.workers > 1 on cuda needs at least one GPU")
        threads = max(1, cpu_count() // workers)
        ctx = tmp.start_processes(
            _ddp_worker,
            args=(workers, _free_port(), job, device, threads, list(callbacks)),
            nprocs=workers,
            join=False,
            start_method="spawn",
        )
        try:
            while not ctx.join():
                pass
        except KeyboardInterrupt:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            raise
        except Exception:
            _raise_worker_error(job, workers)

    def output_schema(self, job: ScoreJob) -> pa.Schema:
        return job.output_schema()

    def score(self, job: ScoreJob, *, workers: int | None = None) -> Iterator[pa.RecordBatch]:
        """In this process for one worker, or when a short measurement says the job is too small to pay for a
        pool (`workers` not given); else a pool of processes × threads ≤ cores."""
        frags: Sequence[Fragment] = job.snapshot.fragments
        cores = cpu_count()
        # tasks are row ranges (plan_tasks), so even a table of one row group can keep every core busy
        procs = max(1, min(workers or cores, cores, sum(f.num_rows for f in frags)))
        if procs == 1:
            yield from _in_process(job, job.scorer(), frags)
            return
        if workers is None:  # the layout from a measurement: the first few rows, scored here and kept
            import time

            pred = job.scorer()
            _, head = next(job.snapshot.read_pieces(frags[0], list(job.columns)))
            # Probes of the first rows. The first (16 rows) pays a fresh process's one-off costs and a call's
            # fixed cost, so for cheap models it overstates the cost per row many times over (an MLP: 0.27 ms a
            # row from 16 rows, 0.02 ms in batches of 256). Unless it already rules the job big, whole in-process
            # batches (job.batch_rows) follow, and the second of them decides: the first of a new shape still
            # pays for choosing its kernels (it sent a 10^5-row table to the pool once in three runs).
            took, per_row = 0, 0.0
            for want in (_PROBE_ROWS, job.batch_rows, job.batch_rows):
                batches = head.slice(took, min(want, head.num_rows - took)).combine_chunks().to_batches()
                if took >= head.num_rows or not batches:
                    break
                t0 = time.perf_counter()
                out = pred(batches[0])
                per_row = (time.perf_counter() - t0) / max(batches[0].num_rows, 1)
                took += batches[0].num_rows
                yield out  # the probes' rows are the table's first: never scored twice
                if per_row * (job.snapshot.num_rows - took) > _PROBE_BIG * _POOL_PAYS_S:
                    break
            if took:
                f0 = frags[0]
                rest = Fragment(f0.path, f0.index, f0.num_rows - took, f0.offset + took)
                frags = ([rest] if rest.num_rows else []) + list(frags[1:])
                if per_row * sum(f.num_rows for f in frags) < _POOL_PAYS_S:
                    yield from _in_process(job, pred, frags)
                    return
            del pred
            if not frags:
                return
        threads = max(1, cores // procs)
        # Each worker gets the job once, without the fragment list (which a large table makes long); each task
        # names its own fragments.
        worker_job = dataclasses.replace(job, snapshot=dataclasses.replace(job.snapshot, fragments=()))
        # concurrent.futures, not multiprocessing.Pool: a worker killed by a signal or the OOM killer breaks the
        # pool and fails the job at once, where Pool would replace the worker and wait forever for its task.
        pool = ProcessPoolExecutor(
            procs, mp_context=_pool_context(), initializer=_init_scorer, initargs=(worker_job, threads)
        )
        spool = Path(tempfile.mkdtemp(prefix="lakenet-score-"))
        names = (str(spool / f"task-{i}.arrow") for i in itertools.count())
        try:
            todo = iter(tuple(g) for g in plan_tasks(frags, procs, max_rows=_TASK_ROWS))
            window: deque[tuple[str, Future[bool]]] = deque()
            for task in itertools.islice(todo, 2 * procs):
                name = next(names)
                window.append((name, pool.submit(_score_fragments, task, name)))
            while window:
                name, fut = window.popleft()
                try:
                    wrote = fut.result()
                except BrokenProcessPool:
                    raise ScoringError(
                        f"a scoring process died (killed by a signal, or out of memory?) while scoring "
                        f"{job.snapshot.uri}; nothing was committed. Run again, with fewer --workers if memory is "
                        "short."
                    ) from None
                nxt = next(todo, None)
                if nxt is not None:
                    following = next(names)
                    window.append((following, pool.submit(_score_fragments, nxt, following)))
                if wrote:
                    with pa.OSFile(name) as src:
                        yield from pa.ipc.open_stream(src)
                os.unlink(name)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(spool, ignore_errors=True)


def _in_process(job: ScoreJob, pred: Any, frags: Sequence[Fragment]) -> Iterator[pa.RecordBatch]:
    for frag in frags:
        for _, table in job.snapshot.read_pieces(frag, list(job.columns)):
            for batch in table.to_batches(max_chunksize=job.batch_rows):
                yield pred(batch)
