"""The engine interface: WHERE work runs. The training loop and the predictor are the same on every engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

from lakenet.data.sources import Snapshot
from lakenet.training.callbacks import Callback
from lakenet.training.loop import TrainJob

__all__ = ["Engine", "ScoreJob"]

T = TypeVar("T")


@dataclass(frozen=True)
class ScoreJob:
    """Score every row of a snapshot with a model bundle; the predictor is built once per worker."""

    snapshot: Snapshot
    bundle_dir: str
    columns: tuple[str, ...]
    model_name: str | None = None
    model_version: str | None = None
    batch_rows: int = 256


class Engine(ABC):
    """How many copies of the work run, where, with what environment and which slice of the data."""

    name: str

    @abstractmethod
    def train(self, job: TrainJob, *, workers: int, device: str, callbacks: Sequence[Callback] = ()) -> None:
        """Run `train_worker` on `workers` replicas; rank 0 leaves result.json and weights in job.output_dir."""

    def run_tasks(self, fn: Callable[[int], T], n: int) -> list[T]:
        """Run `fn(0) … fn(n - 1)` concurrently (independent tasks, e.g. tuning trial runners); their results in
        index order. `fn` must be picklable. Each task pins its own torch threads."""
        raise NotImplementedError(f"the {self.name} engine cannot run independent tasks")

    def task_threads(self, n: int) -> int | None:
        """Torch threads per task when `n` tasks run at once (None: leave the default)."""
        return None

    @abstractmethod
    def score(self, job: ScoreJob, *, workers: int | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the predictor's output batches, in fragment order."""

    @abstractmethod
    def output_schema(self, job: ScoreJob) -> pa.Schema:
        """The schema of the batches `score` yields."""

    def predict_to_table(
        self, job: ScoreJob, out_uri: str, *, txn: str, metadata: dict[str, str], workers: int | None = None
    ) -> tuple[int, int, bool]:
        """Score into the Delta table `out_uri` in one commit tagged `txn`: (rows, rows with an error, committed).

        The default streams `score` through this process into the writer; distributed engines override it to
        write from their workers and commit once from the driver.
        """
        from lakenet.data.delta_io import already_committed, commit_once

        if already_committed(out_uri, txn):
            return 0, 0, False
        counts = [0, 0]

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in self.score(job, workers=workers):
                counts[0] += batch.num_rows
                counts[1] += batch.num_rows - batch.column("error").null_count
                yield batch

        reader = pa.RecordBatchReader.from_batches(self.output_schema(job), counted())
        committed = commit_once(out_uri, reader, txn=txn, mode="append", metadata=metadata)
        return counts[0], counts[1], committed
