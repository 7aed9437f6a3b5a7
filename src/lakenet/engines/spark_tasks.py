"""Stages of Python tasks on a Spark session, classic or Spark Connect.

Every Spark job lakenet runs is a stage of n Python tasks, each given its own list of items (fragment groups,
trial numbers, ...) and returning a few picklable results. They run as `spark.range(n, numPartitions=n)
.mapInArrow(...)`: the one API that classic sessions and Spark Connect sessions (`SparkSession.builder.remote`,
which have no SparkContext and no RDDs) share, barrier mode included. The task function and its items travel in
the closure; each result comes back pickled in one binary cell.

Independent tasks (tuning trials, scoring, scans) may outnumber the slots: Spark queues the rest. A task that
dies is retried by Spark like any other.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from lakenet.errors import LakenetError, TuningError

__all__ = ["Cluster", "is_connect", "run_spark_tasks", "spark_task_threads", "task_error"]

T = TypeVar("T")
R = TypeVar("R")

_SCHEMA = "payload binary"


def is_connect(spark: Any) -> bool:
    """A Spark Connect session (pyspark.sql.connect), which has no SparkContext."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


_SLOTS: dict[int, int] = {}  # Connect sessions: the task slots, measured once per session


class Cluster:
    """What lakenet needs from a Spark session, the same for classic and Connect sessions."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.connect = is_connect(spark)

    @property
    def master(self) -> str:
        if not self.connect:
            return str(self.spark.sparkContext.master)
        return str(self.conf("spark.master", "local[*]"))

    def conf(self, key: str, default: str | None = None) -> str | None:
        """A Spark setting. The session's runtime conf, which holds the context's settings too: one call, where
        SparkContext.getConf() copies every setting across Py4J (14 ms, in every scoring job)."""
        try:
            value = self.spark.conf.get(key, default)
        except Exception:  # a static conf the server does not expose
            return default
        return None if value is None else str(value)

    @property
    def task_cpus(self) -> int:
        return int(self.conf("spark.task.cpus", "1") or 1)

    @property
    def slots(self) -> int:
        """Tasks that run at once (SparkContext.defaultParallelism). A Connect session cannot ask for it: it is
        spark.default.parallelism when the server sets it, else the partitions of an unsized `spark.range`, which
        Spark makes exactly defaultParallelism of (one small job, once per session)."""
        if not self.connect:
            return int(self.spark.sparkContext.defaultParallelism)
        key = id(self.spark)
        if key not in _SLOTS:
            configured = self.conf("spark.default.parallelism")
            if configured:
                _SLOTS[key] = int(configured)
            else:
                from pyspark.sql import functions as F

                parts = self.spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
                top = parts.agg(F.max("p")).collect()[0][0]
                _SLOTS[key] = int(top) + 1
        return _SLOTS[key]

    @property
    def own_executor_jvms(self) -> bool:
        """Executors outside the client's process tree, which may see only shared storage: a cluster,
        local-cluster[...], or any Connect server (the client cannot tell where it runs)."""
        master = self.master
        return self.connect or not (master == "local" or master.startswith("local["))

    def executor_hosts(self) -> set[str]:
        """The host names the tasks run on (two tasks per slot, so every executor is likely seen)."""
        import socket

        def host(_: Iterator[int]) -> Iterator[str]:  # pragma: no cover - Spark Python workers
            yield socket.gethostname()

        n = max(2 * self.slots, 1)
        with self.described("lakenet: where do the tasks run?"):
            return set(self.collect([[i] for i in range(n)], host))

    @contextlib.contextmanager
    def described(self, text: str) -> Iterator[None]:
        """The Spark UI's description of the jobs run inside (classic sessions; Connect has no job groups)."""
        if self.connect:
            yield
            return
        sc = self.spark.sparkContext
        sc.setJobDescription(text)
        try:
            yield
        finally:
            sc.setJobDescription(None)

    def stage(
        self,
        partitions: Sequence[Sequence[T]],
        fn: Callable[[Iterator[T]], Iterator[R]],
        *,
        barrier: bool = False,
        profile: Any = None,
    ) -> Any:
        """A DataFrame whose task i runs fn(iter(partitions[i])); each value it yields is one pickled row."""
        parts = [list(p) for p in partitions]

        def run(batches: Iterator[Any]) -> Iterator[Any]:  # pragma: no cover - Spark Python workers
            import pyarrow as pa

            for batch in batches:
                for i in batch.column(0).to_pylist():
                    for out in fn(iter(parts[i])):
                        blob = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
                        yield pa.RecordBatch.from_arrays([pa.array([blob], pa.binary())], ["payload"])

        n = len(parts)
        kwargs: dict[str, Any] = {"barrier": barrier}
        if profile is not None:
            kwargs["profile"] = profile
        return self.spark.range(0, n, 1, n).mapInArrow(run, _SCHEMA, **kwargs)

    def collect(
        self, partitions: Sequence[Sequence[T]], fn: Callable[[Iterator[T]], Iterator[R]], **kw: Any
    ) -> list[R]:
        """Every task's results, in task order."""
        if not partitions:
            return []
        return [pickle.loads(row[0]) for row in self.stage(partitions, fn, **kw).collect()]

    def stream(self, partitions: Sequence[Sequence[T]], fn: Callable[[Iterator[T]], Iterator[R]]) -> Iterator[R]:
        """The tasks' results in task order, brought to the client one task's output at a time (the next
        task's fetched meanwhile)."""
        if not partitions:
            return
        df = self.stage(partitions, fn)
        rows = df.toLocalIterator() if self.connect else df.toLocalIterator(prefetchPartitions=True)
        for row in rows:
            yield pickle.loads(row[0])


def spark_task_threads(spark: Any, n: int) -> int:
    """Torch threads per task: the cores of a local master shared by the tasks that run at once, else
    spark.task.cpus."""
    cluster = Cluster(spark)
    task_cpus = cluster.task_cpus
    if cluster.master.startswith("local"):
        concurrent = max(1, min(n, cluster.slots))
        return max(task_cpus, (os.cpu_count() or 1) // concurrent)
    return task_cpus


def run_spark_tasks(spark: Any, fn: Callable[[int], T], n: int) -> list[T]:
    """fn(0) … fn(n - 1) as the n tasks of one Spark stage; results in index order."""

    def task(items: Iterator[int]) -> Iterator[T]:  # pragma: no cover - Spark Python workers
        for i in items:
            yield fn(i)

    try:
        return Cluster(spark).collect([[i] for i in range(n)], task)
    except Exception as err:
        raise task_error(err, TuningError, "a Spark task failed") from None


_NAMES = ("BadRowsError", "DataError", "ModelError", "ConfigError", "TrainingError", "TuningError")


def task_error(err: Exception, fallback: type[LakenetError], prefix: str) -> LakenetError:
    """A lakenet error raised inside a task, as itself rather than a Py4J / gRPC stack trace."""
    from lakenet import errors

    text = str(err)
    for name in _NAMES:
        marker = f"lakenet.errors.{name}: "
        if marker in text:
            cls = getattr(errors, name)
            return cls(text.split(marker, 1)[1].split("\n", 1)[0])
    first = next((ln for ln in text.splitlines() if re.search(r"Error|Exception", ln)), text[:300])
    return fallback(f"{prefix}: {first.strip()}")
