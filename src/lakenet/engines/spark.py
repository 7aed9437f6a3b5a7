"""The Spark engine: the same training loop as a barrier stage of N tasks (torch.distributed between them),
and the same Predictor in Arrow iterator UDFs for scoring. pyspark is imported only in this module.

Training tasks read their shard of the Delta version's files directly (listed by delta-rs on the driver); the
rank-0 task writes checkpoints and tracking. When Spark retries a failed barrier stage, every task resumes
from the last complete checkpoint instead of step zero. Scoring tasks write Parquet files into the run's staging
folder inside the output table and return only file metadata; the driver commits the files of the successful
attempts in one conditional Delta transaction tagged with the job's application id, so retries, reruns and
concurrent runs commit every row exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from lakenet.config.schema import SparkEngineConfig
from lakenet.data.changes import OutputMerge
from lakenet.data.delta_io import regroup
from lakenet.data.sources import Fragment
from lakenet.engines.base import Engine, ScoreJob, merge_commit, plan_tasks
from lakenet.engines.spark_tasks import Cluster, is_connect, task_error
from lakenet.errors import ConfigError, InfrastructureError, LakenetError, TrainingError

if TYPE_CHECKING:
    from lakenet.training.callbacks import Callback
    from lakenet.training.loop import TrainJob

T = TypeVar("T")

__all__ = ["SparkEngine", "get_or_create_session", "last_score_phases", "worker_predictor"]


def _check_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return
    if shutil.which("java"):
        return
    raise LakenetError(
        "engine.type spark needs Java 17+ and none was found (no `java` on PATH, JAVA_HOME unset). Install a "
        "JRE (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
    )


def get_or_create_session(cfg: SparkEngineConfig | None = None) -> Any:
    """The active SparkSession when no master is given; otherwise a new one with sane local settings."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise LakenetError("engine.type spark needs pyspark: pip install 'lakenet[spark]'") from None
    master = cfg.master if cfg else None
    remote = cfg.remote if cfg else None
    if master and master.startswith("sc://"):
        master, remote = None, master
    active = SparkSession.getActiveSession()
    if (
        active is not None
        and (master is None or Cluster(active).master == master)
        and (remote is None or is_connect(active))
    ):
        return active
    if remote:
        return _connect_session(remote, cfg)
    _check_java()
    # Workers must run this interpreter (else they miss packages), and a local driver stays on loopback.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = master or "local[*]"
    local = master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName("lakenet")
    defaults: dict[str, Any] = {
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.stage.maxConsecutiveAttempts": "4",
    }
    if local:
        # Loopback only, and no web UI (it would listen on a port of its own): a laptop job needs neither.
        defaults.update(
            {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false",
            }
        )
    for k, v in {**defaults, **(cfg.conf if cfg else {})}.items():
        builder = builder.config(k, str(v).lower() if isinstance(v, bool) else str(v))
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # py4j / JVM start-up errors carry the reason in their text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"Cannot start Spark with master {master!r}: {first}. Check engine.master.") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _connect_session(remote: str, cfg: SparkEngineConfig | None) -> Any:
    """A Spark Connect session: `sc://host:port` (a running server), or `local[N]` for a Connect server that
    pyspark starts in a JVM of its own on this machine."""
    from pyspark.sql import SparkSession

    if not remote.startswith("sc://"):
        _check_java()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.remote(remote).appName("lakenet")
    for k, v in (cfg.conf if cfg else {}).items():
        builder = builder.config(k, str(v).lower() if isinstance(v, bool) else str(v))

    def create() -> Any:
        with warnings.catch_warnings():  # static confs a server already has are reported, not failed
            warnings.simplefilter("ignore", UserWarning)
            session = builder.getOrCreate()
        if remote.startswith("sc://"):
            _ = session.version  # one round trip: the server answers
        return session

    try:
        return _within_deadline(create, remote) if remote.startswith("sc://") else create()
    except ImportError as err:
        raise LakenetError(f"Spark Connect needs its client packages ({err}): pip install 'lakenet[spark]'") from None
    except InfrastructureError:
        raise
    except Exception as err:
        raise ConfigError(
            f"Cannot open a Spark Connect session to {remote!r}: {_rpc_message(err)}. Check engine.remote."
        ) from None


_CONNECT_TIMEOUT_ENV = "LAKENET_CONNECT_TIMEOUT_S"


def _within_deadline(create: Callable[[], Any], remote: str) -> Any:
    """The Connect client retries a server it cannot talk to for as long as the job runs (a TLS client against a
    plaintext server, a wrong port behind a proxy): the session and one round trip, with a deadline, turn that into
    a clear error."""
    import threading

    timeout = float(os.environ.get(_CONNECT_TIMEOUT_ENV, "60"))
    answer: list[Any] = []

    def ask() -> None:
        try:
            answer.append(create())
        except BaseException as err:  # raised below, in the caller's thread
            answer.append(err)

    probe = threading.Thread(target=ask, name="lakenet-connect-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    if answer and not isinstance(answer[0], BaseException):
        return answer[0]
    if answer and not _unreachable(answer[0]):
        raise answer[0]
    _close_clients()
    why = f"no answer within {timeout:g} s" if not answer else _rpc_message(answer[0])
    hint = (
        " SPARK_CONNECT_AUTHENTICATE_TOKEN is set in this environment, which makes the client use TLS: unset it "
        "for a server without TLS, or give the server that token."
        if os.environ.get("SPARK_CONNECT_AUTHENTICATE_TOKEN")
        else ""
    )
    raise InfrastructureError(
        f"The Spark Connect server at {remote} does not answer ({why}).{hint} Check that it runs and that "
        f"engine.remote names it ({_CONNECT_TIMEOUT_ENV} sets the wait)."
    )


def _close_clients() -> None:
    """Close the Connect clients the failed attempt made: each registered an exit handler that would otherwise
    retry its clean-up calls against the unreachable server for ever, and the process would never end."""
    try:
        from pyspark.sql.connect.client.core import SparkConnectClient
    except ImportError:
        return
    for obj in gc.get_objects():
        if issubclass(type(obj), SparkConnectClient) and not obj.is_closed:  # type(): no proxy's __class__
            with contextlib.suppress(Exception):
                obj.close()


def _rpc_message(err: BaseException) -> str:
    """A gRPC error's status and details (its text starts with a line that says neither), else its first line."""
    import re

    text = str(err).strip()
    status = re.search(r"status = StatusCode\.(\w+)", text)
    details = re.search(r'details = "([^"]*)"', text)
    if status:
        return status.group(1) + (f": {details.group(1)}" if details else "")
    return text.splitlines()[0] if text else type(err).__name__


def _unreachable(err: BaseException) -> bool:
    """A failure to talk to the server at all (gRPC UNAVAILABLE, a refused connection), not a server's answer."""
    text = f"{type(err).__name__} {err}".lower()
    return any(s in text for s in ("unavailable", "connection refused", "failed to connect", "deadline"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _task_threads(workers: int, master: str, task_cpus: int) -> int:
    """Torch threads per task; 0 means "this host's cores shared by the `workers` tasks", decided in the task
    (over Spark Connect the client may be another machine than the executors)."""
    return 0 if master.startswith("local") else task_cpus


def _threads_here(threads: int, workers: int) -> int:  # pragma: no cover - Spark Python workers
    return threads or max(1, (os.cpu_count() or 1) // max(workers, 1))


def _barrier_train(
    job: TrainJob, workers: int, device: str, threads: int, callbacks: Sequence[Callback]
) -> Any:  # pragma: no cover - runs inside Spark Python workers (covered by tests/spark)
    def run(_: Iterator[int]) -> Iterator[tuple[int, int, int | None]]:
        import torch
        import torch.distributed as dist
        from pyspark import BarrierTaskContext

        from lakenet.training.checkpoint import latest_checkpoint
        from lakenet.training.loop import WorkerContext, train_worker

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        torch.set_num_threads(_threads_here(threads, workers))
        # Rank 0 picks a port on its host; everyone learns "host:port" through the barrier's all-gather.
        me = f"{ctx.getTaskInfos()[0].address.split(':')[0]}:{_free_port()}" if rank == 0 else ""
        master = next(a for a in ctx.allGather(me) if a)
        dev = "cpu"
        if device == "cuda":
            gpus = ctx.resources().get("gpu")
            dev = f"cuda:{gpus.addresses[0]}" if gpus else "cuda:0"
            torch.cuda.set_device(dev)
        # A retried stage (a task died) resumes from the last complete checkpoint, not from step zero.
        resume = job.resume or latest_checkpoint(job.checkpoint_dir) is not None
        task_job = dataclasses.replace(job, resume=resume)
        dist.init_process_group(
            "nccl" if device == "cuda" else "gloo",
            init_method=f"tcp://{master}",
            rank=rank,
            world_size=workers,
        )
        try:
            state = train_worker(task_job, WorkerContext(rank, workers, dev), callbacks if rank == 0 else ())
            gc.collect()  # free the DDP wrapper (a reference cycle) before the group goes away
            dist.barrier()
        finally:
            dist.destroy_process_group()
        yield rank, ctx.attemptNumber(), state.step

    return run


# ---- scoring --------------------------------------------------------------------------------------------------
_PREDICTORS: dict[str, Any] = {}  # per Python worker: the bundle is loaded once and reused across tasks and jobs


def worker_predictor(
    bundle: str, name: str | None, version: str | None, runtime: str = "torch", trust: tuple[str, ...] = ()
) -> Any:
    """The Predictor of `bundle` (a path, or a file shipped with SparkContext.addFile), loaded once per Python
    worker and reused across tasks and jobs."""
    key = f"{bundle}\x1f{name}\x1f{version}\x1f{runtime}\x1f{trust}"
    if key not in _PREDICTORS:
        from lakenet.inference.predictor import Predictor

        path = bundle
        if not Path(path).exists():  # shipped with SparkContext.addFile on a cluster
            from pyspark import SparkFiles

            path = SparkFiles.get(bundle)
        _PREDICTORS[key] = Predictor(path, model_name=name, model_version=version, runtime=runtime, trust_modules=trust)
    return _PREDICTORS[key]


def _scorer(job: ScoreJob) -> Any:
    if job.featurize is None and job.explain is None and not job.keep:
        return worker_predictor(job.bundle_dir, job.model_name, job.model_version, job.runtime, job.trust_modules)
    key = job.scorer_key()
    if key not in _PREDICTORS:
        _PREDICTORS[key] = job.scorer()
    return _PREDICTORS[key]


_PREPROCESSORS: dict[tuple[str, int, int], Any] = {}  # driver: a bundle's preprocessing, read once per bundle


def _bundle_preprocessor(bundle_dir: str) -> Any:
    from lakenet.models.bundle import Bundle

    st = os.stat(bundle_dir)  # Bundle.save replaces the whole directory: a new inode
    key = (bundle_dir, st.st_ino, st.st_mtime_ns)
    if key not in _PREPROCESSORS:
        _PREPROCESSORS[key] = Bundle.load(bundle_dir).preprocessor
    return _PREPROCESSORS[key]


def _scored_batches(
    job: ScoreJob, groups: Iterator[list[Fragment]], threads: int, slots: int
) -> Iterator[pa.RecordBatch]:  # pragma: no cover - Spark workers
    """A task's row ranges of the version's files, read straight into Arrow and scored, in order."""
    import torch

    torch.set_num_threads(_threads_here(threads, slots))
    pred = _scorer(job)
    columns = list(job.columns)
    for group in groups:
        for frag in group:
            for _, table in job.snapshot.read_pieces(frag, columns):
                for batch in table.to_batches(max_chunksize=job.batch_rows):
                    yield pred(batch)


def _stream_partitions(job: ScoreJob, threads: int, slots: int) -> Any:  # pragma: no cover - Spark workers
    """Each task scores its row ranges and returns each output batch as Arrow IPC bytes (for `score`)."""

    def run(groups: Iterator[list[Fragment]]) -> Iterator[bytes]:
        for res in _scored_batches(job, groups, threads, slots):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, res.schema) as writer:
                writer.write_batch(res)
            yield sink.getvalue().to_pybytes()

    return run


def _score_partitions(job: ScoreJob, out_dir: str, threads: int, slots: int) -> Any:  # pragma: no cover - Spark
    """Each task reads its row ranges of the version's files straight into Arrow, scores them and writes one
    Parquet file next to the output table; it returns only the file's name, size and counts."""

    def run(groups: Iterator[list[Fragment]]) -> Iterator[tuple[str, int, int, int, int]]:
        import pyarrow.parquet as pq

        name = f"part-{uuid.uuid4().hex}.zstd.parquet"
        writer = None
        rows = bad = 0
        for res in regroup(_scored_batches(job, groups, threads, slots)):
            if writer is None:
                writer = pq.ParquetWriter(os.path.join(out_dir, name), res.schema, compression="zstd")
            writer.write_table(res, row_group_size=res.num_rows)
            rows += res.num_rows
            bad += res.num_rows - res.column("error").null_count
        if writer is None:
            return
        writer.close()
        st = os.stat(os.path.join(out_dir, name))
        yield name, st.st_size, rows, bad, int(st.st_mtime * 1000)

    return run


_last_phases: dict[str, float] = {}


def last_score_phases() -> dict[str, float]:
    """Seconds spent in each phase of this process's last Spark scoring job (driver side), for benchmarks."""
    return dict(_last_phases)


class SparkEngine(Engine):
    name = "spark"

    def __init__(self, cfg: SparkEngineConfig | None = None, spark: Any = None) -> None:
        self.cfg = cfg or SparkEngineConfig()
        self._spark = spark

    @property
    def spark(self) -> Any:
        if self._spark is None:
            self._spark = get_or_create_session(self.cfg)
        return self._spark

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.spark)

    def task_threads(self, n: int) -> int | None:
        from lakenet.engines.spark_tasks import spark_task_threads

        return spark_task_threads(self.spark, n)

    def run_tasks(self, fn: Callable[[int], T], n: int) -> list[T]:
        from lakenet.engines.spark_tasks import run_spark_tasks

        return run_spark_tasks(self.spark, fn, n)

    def train(self, job: TrainJob, *, workers: int, device: str, callbacks: Sequence[Callback] = ()) -> None:
        cluster = self.cluster
        slots = cluster.slots
        if workers > slots:
            # A barrier stage with more tasks than slots cannot be scheduled: it would fail after retries.
            raise ConfigError(
                f"engine.workers = {workers} barrier tasks, but the Spark cluster ({cluster.master}) has {slots} "
                "task slots. Lower engine.workers or add executors/cores."
            )
        profile = None
        if self.cfg.gpus_per_worker:
            offered = float(cluster.conf("spark.executor.resource.gpu.amount", "0") or 0)
            if offered < self.cfg.gpus_per_worker:
                raise ConfigError(
                    f"engine.gpus_per_worker = {self.cfg.gpus_per_worker}, but the Spark cluster ({cluster.master}) "
                    f"offers {offered:g} GPU(s) per executor (spark.executor.resource.gpu.amount, with a GPU "
                    "discovery script). Configure GPU resources on the cluster, or set gpus_per_worker: 0 to train "
                    "on CPUs."
                )
            from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

            reqs = TaskResourceRequests().cpus(cluster.task_cpus).resource("gpu", self.cfg.gpus_per_worker)
            profile = ResourceProfileBuilder().require(reqs).build
            device = "cuda"
        else:
            device = "cpu"
        first = job.snapshot.fragments[0].path if job.snapshot.fragments else None
        Path(job.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        require_shared(self.spark, {"table file": first, "checkpoint directory": job.checkpoint_dir,
                                    "output directory": job.output_dir})  # fmt: skip
        threads = _task_threads(workers, cluster.master, cluster.task_cpus)
        fn = _barrier_train(job, workers, device, threads, list(callbacks))
        t0 = time.perf_counter()
        try:
            # The shuffle after the barrier stage makes it a ShuffleMapStage: Spark retries those when a task
            # dies (a barrier *result* stage is never retried), and the retry resumes from the checkpoint.
            with cluster.described(f"lakenet train {job.snapshot.uri}"):
                cluster.stage([[r] for r in range(workers)], fn, barrier=True, profile=profile).repartition(1).collect()
        except Exception as err:
            raise _task_error(err, job) from None
        if not (Path(job.output_dir) / "result.json").is_file():
            raise TrainingError(
                f"Spark training finished in {time.perf_counter() - t0:.0f}s but rank 0 left no result in "
                f"{job.output_dir}; on a cluster, the checkpoint and output directories must be on storage that "
                "every executor and the driver share."
            )

    def output_schema(self, job: ScoreJob) -> pa.Schema:
        return job.output_schema(None if job.featurize is not None else _bundle_preprocessor(job.bundle_dir))

    def map_fragments(self, fn: Callable[[int, Fragment, pa.Table], Any], snapshot: Any, columns: Any) -> Any:
        """Each Spark task reads its fragments (straight from the version's files, as scoring does), applies
        `fn` and merges the partial results; only one merged partial per task comes back to the driver."""
        cluster = self.cluster
        indexed = list(enumerate(snapshot.fragments))
        if not indexed:
            return iter(())
        require_shared(self.spark, {"table file": indexed[0][1].path})
        tasks = max(1, min(len(indexed), 2 * cluster.slots))
        parts = [indexed[len(indexed) * i // tasks : len(indexed) * (i + 1) // tasks] for i in range(tasks)]
        cols = list(columns)

        def run(items: Iterator[tuple[int, Fragment]]) -> Iterator[Any]:  # pragma: no cover - Spark workers
            merged = None
            for fi, frag in items:
                for piece, table in snapshot.read_pieces(frag, cols):
                    part = fn(fi, piece, table)
                    merged = part if merged is None else merged.merge(part)
            if merged is not None:
                yield merged

        with cluster.described(f"lakenet scan {snapshot.uri}"):
            return iter(cluster.collect(parts, run))

    def score(self, job: ScoreJob, *, workers: int | None = None) -> Iterator[pa.RecordBatch]:
        """The output batches, in fragment order, scored in Spark tasks and brought to the driver one task's
        output at a time (`toLocalIterator`, the next task's fetched meanwhile). For writing a table,
        `predict_to_table` keeps the rows on the executors instead."""
        snap = self._scorable(job)
        self._require_inputs(job)
        cluster = self.cluster
        slots = workers or cluster.slots
        groups = plan_tasks(snap.fragments, slots)
        if not groups:
            return
        threads = _task_threads(slots, cluster.master, cluster.task_cpus)
        task_job = dataclasses.replace(job, snapshot=dataclasses.replace(snap, fragments=()))
        schema = self.output_schema(job)
        with cluster.described(f"lakenet score {snap.uri}"):
            for payload in cluster.stream([[g] for g in groups], _stream_partitions(task_job, threads, slots)):
                for batch in pa.ipc.open_stream(payload):
                    yield batch if batch.schema == schema else batch.cast(schema)

    def _require_inputs(self, job: ScoreJob) -> None:
        first = job.snapshot.fragments[0].path if job.snapshot.fragments else None
        require_shared(self.spark, {"model bundle": job.bundle_dir, "table file": first})

    def _scorable(self, job: ScoreJob) -> Any:
        snap = job.snapshot
        if snap.format not in ("delta", "parquet"):
            raise ConfigError(
                f"The Spark engine scores Delta or Parquet tables; {snap.uri} is {snap.format}. "
                f"Ingest it first: lakenet ingest {snap.uri} --table <table>"
            )
        return snap

    def predict_to_table(
        self,
        job: ScoreJob,
        out_uri: str,
        *,
        txn: str,
        metadata: dict[str, str],
        workers: int | None = None,
        merge: OutputMerge | None = None,
    ) -> tuple[int, int, bool]:
        from lakenet.data.delta_io import Staging, already_committed, commit_staged, remove_stale_staging

        phases: dict[str, float] = {}
        t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            phases[name] = now - t
            t = now

        snap = self._scorable(job)
        if already_committed(out_uri, txn):
            return 0, 0, False
        schema = self.output_schema(job)
        remove_stale_staging(out_uri)
        self._require_inputs(job)
        lap("check_and_schema")
        cluster = self.cluster
        slots = workers or cluster.slots
        # Tasks read exactly the files of this Delta version (listed by delta-rs on the driver, never the raw
        # directory), by row group, straight into Arrow as the local engine does: no schema inference pass, no
        # file-split planning, no JVM-to-Python copy of the rows. Scoring costs far more per row than reading,
        # so the rows are shared out evenly over the slots instead of by file bytes.
        groups = plan_tasks(snap.fragments, slots)
        threads = _task_threads(slots, cluster.master, cluster.task_cpus)
        task_job = dataclasses.replace(job, snapshot=dataclasses.replace(snap, fragments=()))  # each task: its own
        lap("plan")
        with Staging(out_uri) as staging:
            require_shared(self.spark, {"output table's staging folder": str(staging.dir)})
            # Tasks write into this run's staging folder (where no reader looks); a killed and retried attempt's
            # file is never returned, and goes with the folder.
            with cluster.described(f"lakenet predict {snap.uri} -> {out_uri}"):
                written = cluster.collect(
                    [[g] for g in groups], _score_partitions(task_job, str(staging.dir), threads, slots)
                )
            lap("spark_job")
            for name, _, rows, _, _ in written:
                staging.adopt(name, rows)
            if merge is not None:
                committed = merge_commit(
                    out_uri, None, schema, txn=txn, metadata=metadata, merge=merge, staging=staging
                )
            else:
                committed = commit_staged(out_uri, staging, schema, txn=txn, mode="append", metadata=metadata)
        lap("commit")
        _last_phases.clear()
        _last_phases.update(phases)
        if not committed:
            return 0, 0, False
        return sum(w[2] for w in written), sum(w[3] for w in written), True


def _local(uri: str) -> str:
    from lakenet.data.delta_io import local_path

    return local_path(uri)


def require_shared(spark: Any, paths: dict[str, str | None]) -> None:
    """On a cluster, every path a task opens must be visible to every executor. One short job (two tasks per
    slot) checks them where the tasks run, before the real job, so a path only the driver has is a clear error
    instead of a missing file in an executor's stack trace. Remote URIs (s3://, abfss://, ...) are left to their
    file system."""
    from lakenet.data.delta_io import is_local

    cluster = Cluster(spark)
    if not cluster.own_executor_jvms:
        return
    items = [(what, _local(p)) for what, p in paths.items() if p and is_local(p)]
    if not items:
        return
    n = max(2 * cluster.slots, 1)

    def check(_: Iterator[int]) -> Iterator[tuple[str, list[str]]]:  # pragma: no cover - Spark workers
        yield socket.gethostname(), [what for what, path in items if not os.path.exists(path)]

    with cluster.described("lakenet: are the paths on shared storage?"):
        seen = cluster.collect([[i] for i in range(n)], check)
    for host, missing in seen:
        if missing:
            where = dict(items)
            raise ConfigError(
                f"The {missing[0]} {where[missing[0]]} is not visible on executor host {host} ({cluster.master}). On a "
                "cluster, tables, models, checkpoints and outputs must be on storage that the driver and every "
                "executor share (a mounted network file system, or an object store URI such as s3://...)."
            )


def _task_error(err: Exception, job: TrainJob) -> LakenetError:
    """Surface a lakenet error raised inside a task as itself, not as a Py4J stack trace."""
    return task_error(err, TrainingError, f"Spark training failed (checkpoints in {job.checkpoint_dir})")
