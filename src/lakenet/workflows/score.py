"""`lakenet predict` and `lakenet featurize`: one scoring path. Both resolve a model, check the table has its
columns, name the work by an application transaction id, and commit the engine's output into a Delta table
exactly once; predict can also score incrementally (only what the input gained since the output last read it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakenet.data.delta_io import already_committed, app_id
from lakenet.data.sources import Snapshot, open_table
from lakenet.engines import ScoreJob, get_engine
from lakenet.errors import ConfigError, DataError
from lakenet.workflows.common import bundle_digest, check_runtime, resolve, table_uri

if TYPE_CHECKING:
    from lakenet.config.schema import EngineConfig
    from lakenet.data.changes import OutputMerge
    from lakenet.data.encoders import Preprocessor
    from lakenet.inference.featurizer import FeaturizeSpec

__all__ = [
    "ExplainResult",
    "FeaturizeResult",
    "PredictResult",
    "last_input_version",
    "run_explain",
    "run_featurize",
    "run_predict",
]


@dataclass(frozen=True)
class PredictResult:
    table: str
    rows: int
    bad_rows: int
    committed: bool  # False: this exact scoring was already committed, nothing was written
    model: str
    model_version: str | None
    # incremental: the input versions consumed (from, exclusive; to) and the output rows replaced or deleted
    since_version: int | None = None
    input_version: int | None = None
    replaced: int = 0
    deleted: int = 0
    scored: str = "rows"  # what `rows` counts: rows, or users (a recommendation model's top-k per user)


@dataclass(frozen=True)
class FeaturizeResult:
    table: str
    rows: int
    bad_rows: int
    committed: bool  # False: these embeddings were already committed, nothing was written
    model: str
    dim: int


@dataclass(frozen=True)
class ExplainResult:
    table: str
    rows: int
    bad_rows: int
    committed: bool  # False: these explanations were already committed, nothing was written
    model: str
    model_version: str | None
    columns: tuple[str, ...]  # the input columns attributions are reported for


@dataclass(frozen=True)
class _Commit:
    """Where the scored rows go and under which transaction id; `merge`: output rows an incremental run replaces."""

    out_uri: str
    txn: str
    metadata: dict[str, str]
    merge: OutputMerge | None = None


def _score(
    job: ScoreJob, commit: _Commit, engine_cfg: EngineConfig, *, workers: int | None, spark: Any
) -> tuple[int, int, bool]:
    """The shared tail of predict and featurize: (rows, bad rows, committed)."""
    if workers is None and engine_cfg.type == "local":
        workers = engine_cfg.score_workers
    return get_engine(engine_cfg, spark=spark).predict_to_table(
        job, commit.out_uri, txn=commit.txn, metadata=commit.metadata, workers=workers, merge=commit.merge
    )


# ---- predict ---------------------------------------------------------------------------------------------------
_OUTPUT_COLUMNS = {"prediction", "confidence", "probabilities", "error", "model_name", "model_version"}


def _kept_columns(keep: Sequence[str], snap: Snapshot, pre: Preprocessor) -> tuple[str, ...]:
    """`--keep a,b`: columns of the input table copied to the predictions (the key always is)."""
    cols = tuple(dict.fromkeys(c.strip() for c in keep if c.strip() and c.strip() != pre.key))
    snap.require_columns({c: "--keep" for c in cols})
    clash = sorted(set(cols) & _OUTPUT_COLUMNS)
    if clash:
        raise ConfigError(f"--keep {clash}: the predictions already have columns of that name; rename them first")
    return cols


def _require_model_columns(snap: Snapshot, pre: Preprocessor) -> None:
    snap.require_columns(
        {pre.key: "the model's key column", **{c: "the model's input columns" for c in pre.input_columns()}}
    )


def last_input_version(out_uri: str, input_uri: str, model_version: str) -> int | None:
    """The input version the output table last consumed for a model version (None: never)."""
    from lakenet.data.changes import last_consumed

    return last_consumed(out_uri, input_uri=input_uri, model_version=model_version)


def _keys(snap: Snapshot, key: str) -> set[str]:
    keys: set[str] = set()
    for _, table in snap.iter_tables([key]):
        keys.update(v for v in table.column(key).cast(pa.string()).to_pylist() if v is not None)
    return keys


@dataclass(frozen=True)
class _Incremental:
    """What an incremental run scores: the rows added since `since`, and the output rows it replaces."""

    snap: Snapshot
    since: int | None
    merge: OutputMerge
    deleted: int


def _incremental(snap: Snapshot, out_uri: str, key: str, model_version: str) -> _Incremental | int | None:
    """The added rows and the output merge; or the version already consumed (int / None) when there is nothing."""
    from lakenet.data.changes import plan_output_merge, table_changes

    since = last_input_version(out_uri, snap.uri, model_version)
    if since is not None and since >= (snap.version or 0):
        return since
    changes = table_changes(snap.uri, since, key, snap.version)
    if changes.empty:
        return since
    affected = set(changes.deleted_keys)
    if changes.rewritten:
        affected |= _keys(changes.added, key)
    merge = plan_output_merge(
        out_uri, key=key, model_column="model_version", model_version=model_version, keys=affected
    )
    return _Incremental(changes.added, since, merge, len(changes.deleted_keys))


def run_predict(
    model: str,
    table: str,
    out: str,
    wd: Path,
    *,
    version: int | None,
    engine_cfg: EngineConfig,
    workers: int | None,
    runtime: str,
    trust: tuple[str, ...],
    keep: Sequence[str],
    incremental: bool,
    spark: Any,
) -> PredictResult:
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import check_buildable

    check_runtime(runtime)
    resolved = resolve(model, wd)
    bundle = Bundle.load(resolved.bundle_dir)
    check_buildable(bundle.spec, trusted=trust, where=f"Model {model}")  # before any worker starts
    pre = bundle.preprocessor
    snap = open_table(table, version)
    model_id = resolved.version if resolved.version else bundle_digest(resolved.bundle_dir)
    if pre.label.task == "recommendation":
        return _recommend(model, resolved, bundle, snap, out, model_id, engine_cfg, spark, trust, incremental)
    _require_model_columns(snap, pre)
    kept = _kept_columns(keep, snap, pre)
    out_uri = table_uri(out)
    inc: _Incremental | None = None
    if incremental:
        found = _incremental(snap, out_uri, pre.key, str(resolved.version or model_id))
        if not isinstance(found, _Incremental):
            return PredictResult(out_uri, 0, 0, False, model, resolved.version, found, snap.version)
        inc, snap = found, found.snap
        txn = app_id("predict-incremental", snap.uri, inc.since, snap.version, resolved.name, model_id, out_uri, *kept)
    else:
        txn = app_id("predict", snap.uri, snap.version, snap.fingerprint, resolved.name, model_id, out_uri, *kept)
    since = inc.since if inc else None
    if already_committed(out_uri, txn):
        return PredictResult(out_uri, 0, 0, False, model, resolved.version, since, snap.version)
    job = ScoreJob(
        snapshot=snap,
        bundle_dir=str(resolved.bundle_dir),
        columns=tuple(dict.fromkeys([*pre.columns(with_label=False), *kept])),
        model_name=resolved.name or "bundle",
        model_version=resolved.version or model_id,
        runtime=runtime,
        trust_modules=trust,
        keep=kept,
    )
    metadata = {
        "lakenet.model": model,
        "lakenet.model_version": str(job.model_version),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
        **({"lakenet.incremental_from": str(since)} if incremental else {}),
    }
    commit = _Commit(out_uri, txn, metadata, inc.merge if inc else None)
    rows, bad, committed = _score(job, commit, engine_cfg, workers=workers, spark=spark)
    deleted = inc.deleted if inc and committed else 0
    replaced = max(inc.merge.replaced_rows - inc.deleted, 0) if inc and committed else 0
    return PredictResult(out_uri, rows, bad, committed, model, resolved.version, since, snap.version, replaced, deleted)


def _recommend(
    model: str,
    resolved: Any,
    bundle: Any,
    snap: Snapshot,
    out: str,
    model_id: str,
    engine_cfg: EngineConfig,
    spark: Any,
    trust: tuple[str, ...],
    incremental: bool,
) -> PredictResult:
    """A recommendation model: the top-k items of every user of the table (see workflows.recommend)."""
    from lakenet.inference.predictor import Predictor
    from lakenet.workflows.recommend import write_recommendations

    if incremental:
        raise ConfigError(
            "--incremental is for row-wise models; a recommendation model ranks for every user of the table, and a "
            "new table version replaces the recommendations (run predict without --incremental)"
        )
    predictor = Predictor(bundle, model_name=resolved.name or "bundle", model_version=resolved.version or model_id,
                          trust_modules=trust)  # fmt: skip
    predictor.recommender().pre.require_inputs(
        set(snap.schema.names) | predictor.recommender().item_columns,
        what="the recommendation model",
        fix="score a table with the user column and the user features it was trained with.",
    )
    engine = get_engine(engine_cfg, spark=spark)
    out_uri, users, bad, committed = write_recommendations(
        predictor, snap, out, bundle_dir=resolved.bundle_dir, model=model, model_id=model_id,
        training=bundle.training, engine=engine,
    )  # fmt: skip
    return PredictResult(out_uri, users, bad, committed, model, resolved.version, None, snap.version, scored="users")


# ---- featurize -------------------------------------------------------------------------------------------------
def _featurizer_source(model: str, wd: Path, column: str | None) -> tuple[str, Path, str | None, str]:
    """(kind, local path, registry version, identity) of what embeds the rows."""
    from lakenet.models.backbone import backbone_kind
    from lakenet.models.pretrained import resolve_hf_dir

    kind = backbone_kind(model)
    if kind == "weights":
        raise ConfigError(
            f"{model}: featurize needs a bundle, a registered model, an .onnx file or a Hugging Face model"
        )
    if kind != "lakenet" and column is None:
        raise ConfigError(f"featurize with {model}: pass --column, the column of images or text it should read")
    if kind == "lakenet":
        resolved = resolve(model, wd)
        return kind, resolved.bundle_dir, resolved.version, resolved.version or bundle_digest(resolved.bundle_dir)
    if kind == "onnx":
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"ONNX file {model} not found")
        return kind, path, None, bundle_digest(path)
    path = resolve_hf_dir(model)
    return kind, path, None, bundle_digest(path)  # config, tokenizer and weights: new weights, a new featurizer


def run_featurize(
    model: str,
    table: str,
    out: str,
    wd: Path,
    *,
    spec: FeaturizeSpec,
    version: int | None,
    engine_cfg: EngineConfig,
    workers: int | None,
    trust: tuple[str, ...],
    spark: Any,
) -> FeaturizeResult:
    """`spec` without its kind and path: they come from `model`."""
    from dataclasses import replace

    from lakenet.inference.featurizer import Featurizer

    kind, path, version_tag, model_id = _featurizer_source(model, wd, spec.column)
    spec = replace(spec, kind=kind, path=str(path), source=model)
    snap = open_table(table_uri(table), version)
    if kind == "lakenet" and _task_of(path) == "recommendation":
        return _item_vectors(model, path, snap, out, model_id, version_tag, trust)
    probe = Featurizer(spec, trust_modules=trust)  # fails here, on the driver, if the model cannot be loaded
    reads, dim = probe.input_columns, probe.dim
    del probe
    snap.require_columns({spec.key: "--key", **{c: "--column" for c in reads}})
    out_uri = table_uri(out)
    txn = app_id("featurize", snap.uri, snap.version, snap.fingerprint, spec.to_json(), model_id, out_uri)
    if already_committed(out_uri, txn):
        return FeaturizeResult(out_uri, 0, 0, False, model, dim)
    job = ScoreJob(
        snapshot=snap,
        bundle_dir=str(path),
        columns=tuple(snap.schema.names),
        model_name=None,
        model_version=version_tag,
        featurize=spec.to_json(),
        reads=tuple(reads),
        trust_modules=trust,
    )
    metadata = {
        "lakenet.featurizer": model + (f" (version {version_tag})" if version_tag else ""),
        "lakenet.featurizer_id": str(model_id),
        "lakenet.embedding_dim": str(dim),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
    }
    rows, bad, committed = _score(job, _Commit(out_uri, txn, metadata), engine_cfg, workers=workers, spark=spark)
    return FeaturizeResult(out_uri, rows, bad, committed, model, dim)


def _task_of(bundle_dir: Path) -> str:
    from lakenet.models.bundle import Bundle

    return str(Bundle.load(bundle_dir).preprocessor.label.task)


def _item_vectors(
    model: str, path: Path, snap: Snapshot, out: str, model_id: str, version_tag: str | None, trust: tuple[str, ...]
) -> FeaturizeResult:
    """A recommendation model's embeddings are its items': one row per catalogue item (the item tower's vector
    and the item's training interactions), one commit, exactly once per model and output."""
    from lakenet.data.delta_io import commit_once
    from lakenet.inference.predictor import Predictor
    from lakenet.workflows.recommend import recommendation_vectors

    predictor = Predictor(path, trust_modules=trust)
    items, vectors = recommendation_vectors(predictor)
    rec = predictor.recommender()
    popularity = rec.popularity[rec.item_index(items)]
    table = pa.table(
        {
            "item": pa.array(items, pa.string()),
            "embedding": pa.array(list(vectors.astype("float32")), pa.list_(pa.float32())),
            "interactions": pa.array(popularity.astype("int64"), pa.int64()),
        }
    )
    out_uri = table_uri(out)
    txn = app_id("featurize-items", model_id, out_uri)
    metadata = {
        "lakenet.featurizer": model + (f" (version {version_tag})" if version_tag else ""),
        "lakenet.featurizer_id": str(model_id),
        "lakenet.embedding_dim": str(vectors.shape[1]),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
        "lakenet.embeds": "items",
    }
    committed = commit_once(out_uri, table, txn=txn, metadata=metadata)
    return FeaturizeResult(out_uri, len(items) if committed else 0, 0, committed, model, int(vectors.shape[1]))


# ---- explain ---------------------------------------------------------------------------------------------------
def run_explain(
    model: str,
    table: str,
    out: str,
    wd: Path,
    *,
    version: int | None,
    engine_cfg: EngineConfig,
    workers: int | None,
    trust: tuple[str, ...],
    top_k: int,
    n_steps: int,
    spark: Any,
) -> ExplainResult:
    """One row of attributions per input row into the Delta table `out`, exactly once per (input version,
    model version, settings, output)."""
    import json

    from lakenet.inference.explain import explain_batch_rows
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import check_buildable

    resolved = resolve(model, wd)
    bundle = Bundle.load(resolved.bundle_dir)
    check_buildable(bundle.spec, trusted=trust, where=f"Model {model}")
    if not bundle.weights:
        raise ConfigError(f"{model} is an ONNX export: explain needs the model's torch weights (the registered model)")
    if bundle.preprocessor.label.task == "recommendation":
        raise ConfigError(f"{model} is a recommender: explain attributes one prediction per row, not a top-k")
    pre = bundle.preprocessor
    snap = open_table(table_uri(table), version)
    snap.require_columns(
        {pre.key: "the model's key column", **{c: "the model's input columns" for c in pre.input_columns()}}
    )
    out_uri = table_uri(out)
    model_id = resolved.version or bundle_digest(resolved.bundle_dir)
    opts = json.dumps({"n_steps": n_steps, "top_k": top_k}, sort_keys=True)
    txn = app_id("explain", snap.uri, snap.version, snap.fingerprint, resolved.name, model_id, opts, out_uri)
    columns = tuple(pre.input_columns())
    if already_committed(out_uri, txn):
        return ExplainResult(out_uri, 0, 0, False, model, resolved.version, columns)
    job = ScoreJob(
        snapshot=snap, bundle_dir=str(resolved.bundle_dir), columns=tuple(pre.columns(with_label=False)),
        model_name=resolved.name or "bundle", model_version=resolved.version or model_id, trust_modules=trust,
        explain=opts, batch_rows=explain_batch_rows(pre),
    )  # fmt: skip
    metadata = {
        "lakenet.model": model,
        "lakenet.model_version": str(job.model_version),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
        "lakenet.explain": opts,
    }
    rows, bad, committed = _score(job, _Commit(out_uri, txn, metadata), engine_cfg, workers=workers, spark=spark)
    return ExplainResult(out_uri, rows, bad, committed, model, resolved.version, columns)
