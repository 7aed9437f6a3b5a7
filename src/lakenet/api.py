"""The façade: every entry point (CLI, server, notebooks, Python users) calls these functions and nothing else.

Each function validates its arguments, loads the config once and hands over to its workflow in
`lakenet.workflows`; the result types are re-exported here. Nothing heavy is imported until a function runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lakenet.config.loader import load_config
from lakenet.errors import ConfigError
from lakenet.workflows.common import ConfigLike, score_engine, table_uri, trusted, workdir

if TYPE_CHECKING:
    from lakenet.data.ingest import IngestResult
    from lakenet.monitoring.workflow import DriftResult
    from lakenet.serving.server import ServerHandle
    from lakenet.training.callbacks import Callback
    from lakenet.workflows.export import ExportResult
    from lakenet.workflows.profile import ProfileResult
    from lakenet.workflows.score import ExplainResult, FeaturizeResult, PredictResult
    from lakenet.workflows.train import FitResult
    from lakenet.workflows.tune import TuneResult
    from lakenet.workflows.update import UpdateResult

__all__ = [
    "ExplainResult",
    "ExportResult",
    "FeaturizeResult",
    "FitResult",
    "PredictResult",
    "ProfileResult",
    "TuneResult",
    "drift",
    "evaluate",
    "explain",
    "export",
    "featurize",
    "fit",
    "ingest",
    "init_config",
    "models",
    "predict",
    "profile",
    "promote",
    "serve",
    "tune",
    "update",
]

_RESULTS = {
    "ExplainResult": "lakenet.workflows.score",
    "ExportResult": "lakenet.workflows.export",
    "FeaturizeResult": "lakenet.workflows.score",
    "FitResult": "lakenet.workflows.train",
    "PredictResult": "lakenet.workflows.score",
    "ProfileResult": "lakenet.workflows.profile",
    "TuneResult": "lakenet.workflows.tune",
}


def __getattr__(name: str) -> Any:
    """The result types, imported when first asked for (their modules import the training stack)."""
    if name in _RESULTS:
        import importlib

        return getattr(importlib.import_module(_RESULTS[name]), name)
    raise AttributeError(f"module 'lakenet.api' has no attribute {name!r}")


def ingest(
    source: str | Path,
    table: str | Path,
    *,
    mode: Literal["append", "overwrite"] = "append",
    key: str = "key",
    delimiter: str | None = None,
) -> IngestResult:
    """Write `source` (image folder with one sub-folder per class, CSV or Parquet) to the Delta table `table`.

    In append mode rows whose key is already in the table are skipped, so ingesting a folder again only adds
    the new files, and a rerun adds nothing. Rows without a key column get one that identifies their source
    file by name and contents. The write is one conditional commit: two ingests running at once cannot add the
    same rows twice. A CSV's delimiter is detected unless `delimiter` is given.
    """
    from lakenet.data.ingest import ingest as run_ingest

    return run_ingest(source, table, mode=mode, key=key, delimiter=delimiter)


def init_config(
    table: str,
    *,
    label: str | None = None,
    name: str | None = None,
    key: str | None = None,
    config_dir: str | Path | None = None,
    task: str | None = None,
    user: str | None = None,
    item: str | None = None,
) -> str:
    """A short starting YAML config for `table`: the label's task, the row key, and every column's type or why it
    is left out (as comments), with `features: {include: auto}`. `data.table` is relative to `config_dir`.
    `task`: anomaly (the label, optional, marks known anomalies), recommendation (`user` and `item` columns,
    found by name when not given; the label, optional, is a rating); default: inferred from the label."""
    from lakenet.starter import init_config as starter

    return starter(table, label=label, name=name, key=key, config_dir=config_dir, task=task, user=user, item=item)


def profile(config: ConfigLike, *, spark: Any = None, workdir: str | Path | None = None) -> ProfileResult:
    """Profile the config's table (JSON + HTML report) and quarantine its bad rows."""
    from lakenet.workflows.profile import run_profile

    return run_profile(load_config(config), _wd(workdir), spark=spark)


def fit(
    config: ConfigLike,
    *,
    resume: bool = False,
    restart: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    spark: Any = None,
    workdir: str | Path | None = None,
) -> FitResult:
    """Profile, train, evaluate on the test split, and register the model under registry.name@alias.

    An interrupted run leaves a checkpoint: `resume=True` continues it (and a run that had already finished
    returns its registered version instead of registering another); `restart=True` discards it and starts over.
    """
    from lakenet.workflows.train import run_fit

    if resume and restart:
        raise ConfigError("Pass either resume or restart, not both.")
    cfg = load_config(config)
    return run_fit(cfg, _wd(workdir), resume=resume, restart=restart, callbacks=callbacks, progress=progress,
                   spark=spark)  # fmt: skip


def tune(
    config: ConfigLike,
    *,
    trials: int | None = None,
    parallel: int | None = None,
    register: bool = True,
    spark: Any = None,
    quiet: bool = False,
    workdir: str | Path | None = None,
) -> TuneResult:
    """Run (or continue) the config's hyperparameter search; write the best configuration as YAML, evaluate it
    on the test split and register it with the tuning lineage. `trials`/`parallel` override the config's."""
    from lakenet.workflows.tune import run_tune

    cfg = load_config(config)
    overrides = {f"tune.{k}": v for k, v in {"trials": trials, "parallel": parallel}.items() if v is not None}
    if overrides and cfg.tune is not None:
        cfg = cfg.with_overrides(overrides)
    return run_tune(cfg, _wd(workdir), register=register, spark=spark, quiet=quiet)


def evaluate(
    config: ConfigLike, *, model: str, trust_modules: Sequence[str] = (), workdir: str | Path | None = None
) -> dict[str, Any]:
    """Score the config's test split with a registered model; writes the evaluation report, logs a run."""
    from lakenet.workflows.train import run_evaluate

    cfg = load_config(config)
    return run_evaluate(cfg, _wd(workdir), model=model, trust=trusted(trust_modules, cfg))


def predict(
    model: str,
    table: str,
    out: str,
    *,
    version: int | None = None,
    engine: str | None = None,
    master: str | None = None,
    config: ConfigLike | None = None,
    workers: int | None = None,
    runtime: str = "torch",
    trust_modules: Sequence[str] = (),
    keep: Sequence[str] = (),
    incremental: bool = False,
    spark: Any = None,
    workdir: str | Path | None = None,
) -> PredictResult:
    """Score every row of `table` into the Delta table `out`, in one commit, exactly once per
    (input table + version, model version, output).

    The engine comes from `config`'s `engine:` section, else from `engine`/`master`, else a given SparkSession,
    else the local engine. `runtime="onnx"` runs the model in ONNX Runtime (an exported .onnx file always does).
    `trust_modules`: custom architectures (`package.module:Class`) the model may import (the config's own
    `model.module` is trusted too); built-in architectures need nothing. `keep`: input columns copied to the
    output next to the key (an amount, a customer id), so the predictions can be read without a join.

    `incremental=True` (Delta input): only the rows the input's versions added since the output last consumed it
    (for this model version) are scored, in one commit that also replaces the output rows of keys rewritten
    upstream and deletes those of keys deleted upstream: the output keeps exactly one row per input key per
    model. No new input version: nothing is committed.
    """
    from lakenet.workflows.score import run_predict

    return run_predict(
        model, table, out, _wd(workdir), version=version, engine_cfg=score_engine(config, engine, master),
        workers=workers, runtime=runtime, trust=trusted(trust_modules, config), keep=keep, incremental=incremental,
        spark=spark,
    )  # fmt: skip


def featurize(
    model: str,
    table: str,
    out: str,
    *,
    column: str | None = None,
    key: str = "key",
    version: int | None = None,
    max_length: int = 128,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    engine: str | None = None,
    master: str | None = None,
    config: ConfigLike | None = None,
    workers: int | None = None,
    trust_modules: Sequence[str] = (),
    spark: Any = None,
    workdir: str | Path | None = None,
) -> FeaturizeResult:
    """Write one embedding per row of `table` into the Delta table `out` (one commit, exactly once per input
    version, model and output), keeping the table's other columns, so `features: {emb: {type: vector}}` can
    train on it.

    `model`: a registered lakenet model or bundle (its own input columns; the embedding is what its head sees),
    an .onnx image model, or a Hugging Face text or image model (name, id or directory), which read `column`.
    """
    from lakenet.inference.featurizer import FeaturizeSpec
    from lakenet.workflows.score import run_featurize

    spec = FeaturizeSpec(
        kind="", path="", source=model, key=key, column=column, max_length=max_length,
        mean=tuple(mean) if mean else None, std=tuple(std) if std else None,
    )  # fmt: skip
    return run_featurize(
        model, table, out, _wd(workdir), spec=spec, version=version, engine_cfg=score_engine(config, engine, master),
        workers=workers, trust=trusted(trust_modules, config), spark=spark,
    )  # fmt: skip


def explain(
    model: str,
    table: str,
    out: str,
    *,
    version: int | None = None,
    top_k: int = 5,
    n_steps: int = 50,
    engine: str | None = None,
    master: str | None = None,
    config: ConfigLike | None = None,
    workers: int | None = None,
    trust_modules: Sequence[str] = (),
    spark: Any = None,
    workdir: str | Path | None = None,
) -> ExplainResult:
    """Why the model predicted what it did, for every row of `table`: one row per input row in the Delta table
    `out` (the key, the prediction, the `top_k` input columns by |attribution|, every column's attribution, the
    completeness gap; per-token attributions for text, a heat-map PNG and region shares for images), exactly
    once, on the local engine or Spark. Integrated Gradients (Captum, `n_steps`) from an average-row baseline;
    see `lakenet.inference.explain`."""
    from lakenet.workflows.score import run_explain

    return run_explain(
        model, table, out, _wd(workdir), version=version, engine_cfg=score_engine(config, engine, master),
        workers=workers, trust=trusted(trust_modules, config), top_k=top_k, n_steps=n_steps, spark=spark,
    )  # fmt: skip


def export(
    model: str,
    *,
    out: str | Path,
    format: str = "onnx",
    tolerance: float = 1e-4,
    trust_modules: Sequence[str] = (),
    workdir: str | Path | None = None,
) -> ExportResult:
    """Export a model to ONNX (run by ONNX Runtime anywhere; `lakenet predict/serve` take the file) or to one
    safetensors file, and check it: the largest absolute difference between the export's outputs and the
    model's, on random inputs of every kind plus rows of the table it was trained on (when readable), must
    stay within `tolerance`, else nothing is written."""
    from lakenet.workflows.export import run_export

    return run_export(model, _wd(workdir), out=out, fmt=format, tolerance=tolerance, trust=tuple(trust_modules))


def update(
    config: ConfigLike,
    *,
    strategy: str | None = None,
    progress: bool = True,
    spark: Any = None,
    workdir: str | Path | None = None,
) -> UpdateResult:
    """Update the config's registered model (registry.name@alias) on its table's new rows: drift check, a
    challenger (update.strategy: warm_start, retrain or both; `strategy` overrides), the gate on the current
    test split and the old rows, and registration as @champion (promoted) or @challenger, with the chain in its
    lineage (parent version, table versions, strategy, verdict) and an HTML report."""
    from lakenet.workflows.update import run_update

    if strategy is not None and strategy not in ("warm_start", "retrain", "both"):
        raise ConfigError(f"--strategy must be warm_start, retrain or both, not {strategy!r}")
    return run_update(load_config(config), _wd(workdir), strategy=strategy, spark=spark, progress=progress)


def drift(
    model: str,
    *,
    table: str | None = None,
    version: int | None = None,
    since: int | None = None,
    config: ConfigLike | None = None,
    trust_modules: Sequence[str] = (),
    workdir: str | Path | None = None,
) -> DriftResult:
    """Compare the rows `model` learned from (its training split) with newer rows: by default the rows the
    table it learned from gained since, or the rows `table` gained after version `since`, or every row of
    `table` at `version`. Thresholds come from `config`'s `monitor:` section. Returns a DriftResult (verdict,
    drifted checks, HTML and JSON report, the monitoring table the checks were appended to)."""
    from lakenet.config.schema import MonitorConfig
    from lakenet.engines import get_engine
    from lakenet.monitoring.workflow import run_drift
    from lakenet.workflows.common import load_predictor

    wd = _wd(workdir)
    cfg = load_config(config) if config is not None else None
    monitor = cfg.monitor if cfg is not None else MonitorConfig()
    predictor = load_predictor(model, wd, trust=trusted(trust_modules, config))
    out = wd / "reports" / (predictor.model_name or "bundle") / "drift"
    resolved_table = table_uri(table) if table is not None else None
    engine = get_engine(cfg.engine) if cfg is not None and cfg.engine.type != "local" else None
    return run_drift(predictor, model=model, table=resolved_table, version=version, since=since, cfg=monitor,
                     out_dir=out, engine=engine)  # fmt: skip


def models(*, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Registered models, versions, aliases, metrics and lineage."""
    from lakenet.tracking.store import list_models, setup_tracking

    setup_tracking(None, workdir=_wd(workdir))
    return list_models()


def promote(name: str, version: str | int, *, alias: str = "champion", workdir: str | Path | None = None) -> str | None:
    """Point `name@alias` at `version` (a server started with `follow_alias` switches to it); returns the version
    the alias pointed to before, or None if it is new."""
    from lakenet.tracking.store import set_alias, setup_tracking

    setup_tracking(None, workdir=_wd(workdir))
    return set_alias(name, str(version), alias)


def serve(
    model: str,
    *,
    token_file: str | Path | None = None,
    runtime: str = "torch",
    trust_modules: Sequence[str] = (),
    background: bool = False,
    workdir: str | Path | None = None,
    **settings: Any,
) -> ServerHandle | None:
    """Serve `model` (models:/name@alias, models:/name/N or a bundle directory) over HTTP until SIGINT/SIGTERM,
    which stop new connections and answer every admitted request before returning. With `background=True`,
    return at once a handle (`.url`, `.stop()`, a context manager) to a server running on a thread.

    `settings` are the fields of `lakenet.serving.settings.ServeSettings` (host, port, token, max_batch_size,
    max_batch_delay_ms, request_timeout_s, follow_alias, device, …: each with its default, bounds and
    description there); an unknown or invalid one is refused with the fix. The server binds 127.0.0.1 unless told
    otherwise, and refuses any other interface without a bearer token (`token` or, better, `token_file`).
    `follow_alias` polls the registry and switches to the version the alias points to, between batches, without
    failing a request. `runtime="onnx"` runs the model in ONNX Runtime (an exported .onnx file always does).
    """
    from lakenet.workflows.serve import run_serve

    return run_serve(model, _wd(workdir), settings=settings, token_file=token_file, runtime=runtime,
                     trust=tuple(trust_modules), background=background)  # fmt: skip


def _wd(path: str | Path | None) -> Path:
    return workdir(path)
