"""The engine interface: WHERE work runs. The training loop and the predictor are the same on every engine."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from lakenet.data.changes import OutputMerge
from lakenet.data.delta_io import Staging
from lakenet.data.sources import Fragment, Snapshot
from lakenet.errors import ConfigError, DataError

if TYPE_CHECKING:  # annotations only: the interface imports no torch (the engines that train import it)
    from lakenet.data.encoders import Preprocessor
    from lakenet.training.callbacks import Callback
    from lakenet.training.loop import TrainJob

__all__ = ["Engine", "ScoreJob", "merge_commit", "plan_tasks"]

T = TypeVar("T")
P = TypeVar("P")


# A scoring job is cut into this many tasks per slot (fewer when they would get smaller than _MIN_TASK_ROWS),
# of equal row counts: no slot idles at the end while another runs a lone last task, and a slot slowed down by
# something else on the machine leaves its second share to the others. A task costs its stage ~30 ms on Spark
# (local[2]) before it scores a row: a second wave of tasks pays only when each scores some 16,000 rows (a
# 50,000-row append in 4 tasks: 0.44-0.59 s; in 2: 0.30-0.32 s).
_TASKS_PER_SLOT = 2
_MIN_TASK_ROWS = 16_384


def plan_tasks(fragments: Sequence[Fragment], slots: int, *, max_rows: int | None = None) -> list[list[Fragment]]:
    """The fragments cut into contiguous groups of equal row counts (±1), a multiple of `slots` of them when
    the table is big enough (and enough of them that none has more than `max_rows`); a row group is split into
    row ranges where a boundary falls inside it. Both engines score by this plan: cutting by whole row groups
    instead leaves a slot idle at the end (5 row groups on 2 slots: 3 + 2, 83 % of the ideal)."""
    total = sum(f.num_rows for f in fragments)
    if total == 0:
        return []
    slots = max(slots, 1)
    per_slot = max(1, min(_TASKS_PER_SLOT, total // (slots * _MIN_TASK_ROWS)))
    if max_rows:
        per_slot = max(per_slot, -(-total // (slots * max_rows)))
    n = min(total, slots * per_slot)
    ends = [total * (i + 1) // n for i in range(n)]  # cumulative rows at the end of each group
    groups: list[list[Fragment]] = [[] for _ in range(n)]
    task = done = 0
    for f in fragments:
        at = 0
        while at < f.num_rows:
            take = min(f.num_rows - at, ends[task] - done)
            groups[task].append(Fragment(f.path, f.index, take, f.offset + at))
            at += take
            done += take
            if done == ends[task] and task < n - 1:
                task += 1
    return groups


@dataclass(frozen=True)
class ScoreJob:
    """Score (or embed) every row of a snapshot with a model; the scorer is built once per worker."""

    snapshot: Snapshot
    bundle_dir: str
    columns: tuple[str, ...]
    model_name: str | None = None
    model_version: str | None = None
    batch_rows: int = 256
    runtime: str = "torch"  # torch, or onnx (ONNX Runtime)
    featurize: str | None = None  # a FeaturizeSpec as JSON: embed rows instead of predicting
    reads: tuple[str, ...] = ()  # featurize: the columns the network reads (not copied to the output)
    trust_modules: tuple[str, ...] = ()  # custom architectures the user allowed this bundle to import
    keep: tuple[str, ...] = ()  # predict: input columns copied to the output
    explain: str | None = None  # {"n_steps", "top_k"} as JSON: attributions per row instead of predictions

    def scorer(self) -> Any:
        """The per-worker callable (arrow batch -> arrow batch): a Predictor, a Featurizer or an Explainer."""
        if self.explain is not None:
            from lakenet.inference.explain import Explainer

            opts = json.loads(self.explain)
            return Explainer(self.bundle_dir, model_name=self.model_name, model_version=self.model_version,
                             trust_modules=self.trust_modules, batch_size=self.batch_rows, **opts)  # fmt: skip
        if self.featurize is not None:
            from lakenet.inference.featurizer import Featurizer, FeaturizeSpec

            return Featurizer(FeaturizeSpec(**json.loads(self.featurize)), trust_modules=self.trust_modules)
        from lakenet.inference.predictor import Predictor

        return Predictor(
            self.bundle_dir,
            model_name=self.model_name,
            model_version=self.model_version,
            runtime=self.runtime,
            trust_modules=self.trust_modules,
            keep=self.keep,
        )

    def scorer_key(self) -> str:
        """Identifies the scorer a worker may cache and reuse across tasks and jobs."""
        parts = (
            self.bundle_dir, self.model_name, self.model_version, self.runtime, self.featurize, self.trust_modules,
            self.keep, self.explain,
        )  # fmt: skip
        return "\x1f".join(str(x) for x in parts)

    def output_schema(self, pre: Preprocessor | None = None) -> pa.Schema:
        """The scorer's output schema, known without building the model (`pre`: the bundle's preprocessing,
        if the caller has it already)."""
        if self.featurize is not None:
            from lakenet.inference.featurizer import FeaturizeSpec, featurize_schema

            spec = FeaturizeSpec(**json.loads(self.featurize))
            schema = pa.schema([self.snapshot.schema.field(c) for c in self.columns])
            return featurize_schema(schema, spec, list(self.reads))
        from lakenet.inference.predictor import output_schema
        from lakenet.models.bundle import Bundle

        pre = pre if pre is not None else Bundle.load(self.bundle_dir).preprocessor
        if self.explain is not None:
            from lakenet.inference.explain import explain_schema

            return explain_schema(pre, with_model=self.model_name is not None)
        return output_schema(
            pre,
            with_key=pre.key in self.snapshot.schema.names,
            with_model=self.model_name is not None,
            keep=[self.snapshot.schema.field(c) for c in self.keep],
        )


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

    def map_fragments(
        self, fn: Callable[[int, Fragment, pa.Table], P], snapshot: Snapshot, columns: Sequence[str]
    ) -> Iterator[P]:
        """`fn(index, piece, table)` over every fragment of `snapshot` (reading only `columns`), in pieces of
        bounded rows (`Snapshot.read_pieces`: `fn` may see one fragment index several times, with the row range
        of each piece), each partial result merged with `.merge` where the engine groups them; the driver merges
        what comes back. Holds O(partials), never the rows. The default: one piece after another here."""
        for fi, piece, table in snapshot.iter_pieces(columns):
            yield fn(fi, piece, table)

    @abstractmethod
    def score(self, job: ScoreJob, *, workers: int | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the predictor's output batches, in fragment order."""

    @abstractmethod
    def output_schema(self, job: ScoreJob) -> pa.Schema:
        """The schema of the batches `score` yields."""

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
        """Score into the Delta table `out_uri` in one commit tagged `txn`: (rows, rows with an error, committed).
        `merge`: output rows the same commit replaces or deletes (incremental scoring), planned on a version of
        the output: if another writer moved it on meanwhile, nothing is committed and the run is to be repeated.

        The default streams `score` through this process into the writer; distributed engines override it to
        write from their workers and commit once from the driver.
        """
        from lakenet.data.delta_io import already_committed, commit_once, is_local

        if already_committed(out_uri, txn):
            return 0, 0, False
        counts = [0, 0]

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in self.score(job, workers=workers):
                counts[0] += batch.num_rows
                counts[1] += batch.num_rows - batch.column("error").null_count
                yield batch

        # Rows are staged where no reader looks while they are scored; the commit is conditional: a run that finds
        # this very job committed by another run meanwhile commits nothing.
        reader = pa.RecordBatchReader.from_batches(self.output_schema(job), counted())
        if merge is None or not is_local(out_uri):
            if merge is not None and (merge.removes or merge.version is not None):
                raise ConfigError(f"Incremental scoring into {out_uri}: merges are written on local/mounted storage")
            committed = commit_once(out_uri, reader, txn=txn, mode="append", metadata=metadata)
        else:
            committed = merge_commit(out_uri, reader, reader.schema, txn=txn, metadata=metadata, merge=merge)
        return (counts[0], counts[1], True) if committed else (0, 0, False)


def merge_commit(
    out_uri: str,
    rows: pa.RecordBatchReader | None,
    schema: pa.Schema,
    *,
    txn: str,
    metadata: dict[str, str],
    merge: OutputMerge,
    staging: Staging | None = None,
) -> bool:
    """New rows (streamed, or already in `staging`) plus the merge's rewritten output files, committed in one
    transaction that also removes the files they replace, on the output version the merge was planned at."""
    from lakenet.data.delta_io import Moved, commit_staged, remove_stale_staging

    remove_stale_staging(out_uri)
    own = staging is None
    staging = staging or Staging(out_uri)
    try:
        merge.stage(staging)
        if rows is not None:
            staging.write(rows)
        return commit_staged(
            out_uri,
            staging,
            schema,
            txn=txn,
            metadata=metadata,
            removes=merge.removes,
            expect_version=merge.version if merge.version is not None else -1,
        )
    except Moved:
        staging.discard()
        raise DataError(
            f"The output table {out_uri} changed while this run scored (another writer committed); nothing was "
            "committed. Run again: the next run starts from what is there now."
        ) from None
    finally:
        if own:
            staging.__exit__(None, None, None)
