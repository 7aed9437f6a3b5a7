"""Independent tasks on Spark (tuning trial runners): a plain, non-barrier stage of n tasks.

Unlike training, these tasks do not talk to each other (they share a study database instead), so they may
outnumber the slots: Spark queues the rest. A task that dies is retried by Spark like any other, and the trial
it was running is found dead by its missing heartbeats and queued again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lakenet.errors import LakenetError, TuningError

__all__ = ["run_spark_tasks", "spark_task_threads"]

T = TypeVar("T")


def spark_task_threads(spark: Any, n: int) -> int:
    """Torch threads per task: the cores of a local master shared by the tasks that run at once, else
    spark.task.cpus."""
    import os

    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    if sc.master.startswith("local"):
        concurrent = max(1, min(n, sc.defaultParallelism))
        return max(task_cpus, (os.cpu_count() or 1) // concurrent)
    return task_cpus


def run_spark_tasks(spark: Any, fn: Callable[[int], T], n: int) -> list[T]:
    """fn(0) … fn(n - 1) as the n tasks of one Spark stage; results in index order."""
    sc = spark.sparkContext
    try:
        return list(sc.parallelize(range(n), n).map(fn).collect())
    except Exception as err:
        raise _lakenet_error(err) from None


def _lakenet_error(err: Exception) -> LakenetError:
    """A lakenet error raised inside a task, as itself rather than a Py4J stack trace."""
    from lakenet import errors

    text = str(err)
    for name in ("BadRowsError", "DataError", "ModelError", "ConfigError", "TrainingError", "TuningError"):
        marker = f"lakenet.errors.{name}: "
        if marker in text:
            cls = getattr(errors, name)
            return cls(text.split(marker, 1)[1].split("\n", 1)[0])
    first = next((ln for ln in text.splitlines() if "Error" in ln or "Exception" in ln), text[:300])
    return TuningError(f"a Spark task failed: {first.strip()}")
