"""The façade: every entry point (CLI, server, notebooks, Python users) calls these functions and nothing else."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import yaml

from lakenet._version import __version__
from lakenet.config.loader import config_hash, dump_config, load_config
from lakenet.config.schema import Config
from lakenet.data.delta_io import already_committed, app_id
from lakenet.data.ingest import ingest
from lakenet.data.quarantine import enforce_bad_fraction, write_quarantine
from lakenet.data.scan import ScanResult, scan_table
from lakenet.data.sources import Snapshot, open_table
from lakenet.engines import ScoreJob, get_engine
from lakenet.errors import ConfigError, DataError
from lakenet.training.callbacks import Callback, ConsoleProgress

if TYPE_CHECKING:
    from collections.abc import Callable

    from lakenet.inference.predictor import Predictor
    from lakenet.serving.server import ServerHandle

__all__ = [
    "FitResult",
    "PredictResult",
    "ProfileResult",
    "evaluate",
    "fit",
    "ingest",
    "init_config",
    "models",
    "predict",
    "profile",
    "promote",
    "serve",
]

ConfigLike = str | Path | Config | dict[str, Any]


@dataclass(frozen=True)
class ProfileResult:
    profile: dict[str, Any]
    json_path: Path
    html_path: Path
    quarantine: str | None


@dataclass(frozen=True)
class FitResult:
    model_uri: str
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    reports: dict[str, Path]
    bundle_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class PredictResult:
    table: str
    rows: int
    bad_rows: int
    committed: bool  # False: this exact scoring was already committed, nothing was written
    model: str
    model_version: str | None


def _workdir(workdir: str | Path | None) -> Path:
    return Path(workdir).resolve() if workdir is not None else Path.cwd()


def _reports_dir(cfg: Config, workdir: Path) -> Path:
    d = workdir / "reports" / cfg.registry.name
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- ingest / init ------------------------------------------------------------------------------------------
_METADATA_COLUMNS = {"path", "size_bytes", "width", "height"}


def init_config(table: str, *, label: str, name: str | None = None, key: str = "key") -> str:
    """A starting YAML config inferred from the table's schema (and a peek at its first rows)."""
    from lakenet.data.encoders import decode_image  # noqa: F401  (Pillow present)

    snap = open_table(table)
    schema = snap.schema
    if label not in schema.names:
        raise DataError(f"Column {label!r} not in table {table} (columns: {', '.join(schema.names)}). Pass --label.")
    sample = snap.read(snap.fragments[0]) if snap.fragments else pa.table({n: [] for n in schema.names})
    features: dict[str, Any] = {}
    lt = schema.field(label).type
    distinct = len(set(sample.column(label).to_pylist()))
    task = "regression" if pa.types.is_floating(lt) or (pa.types.is_integer(lt) and distinct > 20) else "classification"
    features["label"] = {"column": label, "task": task}
    for f in schema:
        if f.name in {label, key} or (f.name in _METADATA_COLUMNS and "image" in schema.names):
            continue
        t = f.type
        spec: dict[str, Any]
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            spec = {"type": "image", **_image_defaults(sample.column(f.name).to_pylist()[:32])}
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            spec = {"type": "numeric"}
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            spec = {"type": "category"}
        else:
            continue
        # Feature names are identifiers; a column like "od280/od315" keeps its name in `column`.
        fname = re.sub(r"[^A-Za-z0-9_.-]", "_", f.name).lstrip("_.-") or "feature"
        if fname != f.name:
            spec["column"] = f.name
        features[fname] = spec
    if len(features) == 1:
        raise DataError(f"Table {table} has no usable feature columns besides the label {label!r}.")
    model_name = name or "".join(c if c.isalnum() or c in "_-." else "_" for c in Path(table).name) or "model"
    raw = {
        "version": 1,
        "data": {"table": str(Path(table).resolve()), "key": key},
        "features": features,
        "model": {"architecture": "auto"},
        "trainer": {"epochs": 20, "batch_size": 64, "learning_rate": 0.001},
        "engine": {"type": "local", "workers": 1},
        "registry": {"name": model_name, "alias": "champion"},
    }
    load_config(raw)  # what we print must validate
    header = f"# lakenet config for {table}, inferred by `lakenet init`. Every key: `lakenet config schema`.\n"
    return header + yaml.safe_dump(raw, sort_keys=False)


def _image_defaults(blobs: list[bytes | None]) -> dict[str, int]:
    import io

    from PIL import Image

    sizes, channels = [], 1
    for b in blobs:
        try:
            with Image.open(io.BytesIO(b or b"")) as im:
                sizes.append(max(im.size))
                if im.mode not in {"L", "1", "I", "I;16", "F", "LA"}:
                    channels = 3
        except (OSError, ValueError, SyntaxError):
            continue
    typical = sorted(sizes)[len(sizes) // 2] if sizes else 32
    return {"size": int(min(max(typical, 8), 64)), "channels": channels}


# ---- profile ------------------------------------------------------------------------------------------------
def _scan(cfg: Config, version: int | None = None) -> tuple[Snapshot, ScanResult, str | None]:
    # Enough fragments for every worker to get a share, even of a table stored as one big row group.
    snap = open_table(cfg.data.table, version if version is not None else cfg.data.version)
    snap = snap.subdivided(4 * cfg.engine.workers)
    result = scan_table(cfg, snap)
    quarantine = write_quarantine(result, job=config_hash(cfg))
    return snap, result, quarantine


def _write_profile(result: ScanResult, out: Path) -> tuple[Path, Path]:
    from lakenet.reports import profile_html

    json_path, html_path = out / "profile.json", out / "profile.html"
    _atomic_write(json_path, json.dumps(result.profile, indent=2, default=str))
    _atomic_write(html_path, profile_html(result.profile))
    return json_path, html_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def profile(config: ConfigLike, *, workdir: str | Path | None = None) -> ProfileResult:
    """Profile the config's table (JSON + HTML report) and quarantine its bad rows."""
    cfg = load_config(config)
    _, result, quarantine = _scan(cfg)
    json_path, html_path = _write_profile(result, _reports_dir(cfg, _workdir(workdir)))
    return ProfileResult(result.profile, json_path, html_path, quarantine)


# ---- fit ----------------------------------------------------------------------------------------------------
def fit(
    config: ConfigLike,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    spark: Any = None,
    workdir: str | Path | None = None,
) -> FitResult:
    """Profile, train, evaluate on the test split, and register the model under registry.name@alias."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import build_model, model_spec
    from lakenet.tracking.store import MlflowMetrics, git_commit, setup_tracking, start_run
    from lakenet.training.loop import TrainJob, resolve_device

    cfg = load_config(config)
    wd = _workdir(workdir)
    setup_tracking(cfg.tracking, workdir=wd)
    ckpt_dir = wd / ".lakenet" / "checkpoints" / cfg.registry.name
    pinned = _resume_version(cfg, ckpt_dir) if resume else None
    snap, result, quarantine = _scan(cfg, pinned)
    enforce_bad_fraction(result, cfg.data.max_bad_fraction, quarantine)
    reports = _reports_dir(cfg, wd)
    profile_json, profile_html_path = _write_profile(result, reports)
    pre = result.preprocessor
    spec = model_spec(cfg, pre)
    build_model(spec)  # fail fast (bad custom module) before any process starts
    device = resolve_device(cfg.trainer.device)
    if not resume:
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True)
        (ckpt_dir / "job.json").write_text(json.dumps({"config_hash": config_hash(cfg), "table_version": snap.version}))
    lineage = {
        "lakenet.table": snap.uri,
        "lakenet.table_version": snap.version,
        "lakenet.table_fingerprint": snap.fingerprint,
        "lakenet.config_hash": config_hash(cfg),
        "lakenet.version": __version__,
        "lakenet.git_commit": git_commit(Path(cfg.data.table).parent),
        "lakenet.engine": cfg.engine.type,
        "lakenet.workers": cfg.engine.workers,
    }
    experiment = cfg.tracking.experiment or cfg.registry.name
    with start_run(experiment, f"train-{cfg.registry.name}", tags=lineage) as run:
        run.log_params(cfg.to_yaml_dict())
        run.log_text(dump_config(cfg), "config.yaml")
        run.log_artifact(profile_json, "reports")
        run.log_artifact(profile_html_path, "reports")
        run.log_metrics({"bad_rows": result.bad_rows.num_rows, "rows": snap.num_rows})
        out_dir = Path(tempfile.mkdtemp(prefix="train-", dir=_scratch(wd)))
        try:
            job = TrainJob(
                config=cfg.to_yaml_dict(),
                snapshot=snap,
                preprocessor=pre.to_dict(),
                spec=spec.to_dict(),
                fragment_counts=result.fragment_counts,
                output_dir=str(out_dir),
                checkpoint_dir=str(ckpt_dir),
                resume=resume,
            )
            cbs: list[Callback] = [MlflowMetrics(run.run_id, run.tracking_uri), *callbacks]
            if progress:
                cbs.insert(
                    0,
                    ConsoleProgress(cfg.trainer.early_stopping.metric if cfg.trainer.early_stopping else None),
                )
            get_engine(cfg.engine, spark=spark).train(job, workers=cfg.engine.workers, device=device, callbacks=cbs)
            outcome = json.loads((out_dir / "result.json").read_text())
            from safetensors.torch import load_file

            weights = load_file(str(out_dir / "weights.safetensors"))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        history = outcome["history"]
        last_val = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("val_")}
        bundle = Bundle(
            spec=spec,
            preprocessor=pre,
            weights=weights,
            lineage={k[len("lakenet.") :]: v for k, v in lineage.items()},
            profile={k: result.profile[k] for k in ("table", "splits", "label", "bad_rows")},
            training={
                k: outcome[k]
                for k in ("history", "best_epoch", "stopped_early", "nonfinite_steps", "step", "resumed_from_step")
            },
        )
        bundle_dir = bundle.save(wd / ".lakenet" / "bundles" / run.run_id)
        report = evaluate_split(snap, Predictor(bundle), cfg.data.split)
        metrics = {**last_val, **report["metrics"]}
        bundle.metrics = metrics
        bundle.save(bundle_dir)
        run.log_metrics(report["metrics"])
        eval_paths = _write_evaluation(report, history, reports, model={"name": cfg.registry.name})
        for p in eval_paths.values():
            run.log_artifact(p, "reports")
        run.log_metrics({"train_seconds": outcome["train_seconds"], "nonfinite_steps": outcome["nonfinite_steps"]})
        version = run.register_bundle(
            bundle_dir,
            name=cfg.registry.name,
            alias=cfg.registry.alias,
            signature=bundle.signature(),
            tags={**lineage, "lakenet.metrics": json.dumps(report["metrics"]), "lakenet.run_id": run.run_id},
        )
    return FitResult(
        model_uri=f"models:/{cfg.registry.name}@{cfg.registry.alias}",
        name=cfg.registry.name,
        version=version,
        run_id=run.run_id,
        metrics=metrics,
        reports={"profile": profile_html_path, **eval_paths},
        bundle_dir=bundle_dir,
        history=history,
    )


def _resume_version(cfg: Config, ckpt_dir: Path) -> int | None:
    """A resumed run reads the table version the interrupted run read, and only with the same config."""
    from lakenet.errors import TrainingError

    job_file = ckpt_dir / "job.json"
    if not job_file.is_file():
        raise TrainingError(
            f"--resume: nothing to resume in {ckpt_dir} (no interrupted run of {cfg.registry.name!r}); "
            "train without --resume"
        )
    job = json.loads(job_file.read_text())
    if job["config_hash"] != config_hash(cfg):
        raise TrainingError(
            "--resume: the config changed since the interrupted run (its hash was "
            f"{job['config_hash']}, now {config_hash(cfg)}); resuming would mix two experiments. "
            "Restore the config or train without --resume."
        )
    return job["table_version"] if isinstance(job.get("table_version"), int) else None


def _scratch(wd: Path) -> Path:
    d = wd / ".lakenet" / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_evaluation(
    report: dict[str, Any], history: list[dict[str, float]], out: Path, *, model: dict[str, Any]
) -> dict[str, Path]:
    from lakenet.reports import evaluation_html

    full = {**report, "history": history, "model": model}
    json_path, html_path = out / "evaluation.json", out / "evaluation.html"
    _atomic_write(json_path, json.dumps(full, indent=2, default=str))
    _atomic_write(html_path, evaluation_html(full))
    return {"evaluation": html_path, "evaluation_json": json_path}


# ---- evaluate -----------------------------------------------------------------------------------------------
def evaluate(config: ConfigLike, *, model: str, workdir: str | Path | None = None) -> dict[str, Any]:
    """Score the config's test split with a registered model; writes the evaluation report, logs a run."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor
    from lakenet.tracking.store import resolve_model, setup_tracking, start_run

    cfg = load_config(config)
    wd = _workdir(workdir)
    setup_tracking(cfg.tracking, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    predictor = Predictor(resolved.bundle_dir, model_name=resolved.name, model_version=resolved.version)
    snap = open_table(cfg.data.table, cfg.data.version)
    snap.require_columns({predictor.pre.key: "data.key", predictor.pre.label.column: "features.label.column"})
    report = evaluate_split(snap, predictor, cfg.data.split)
    history = predictor.bundle.training.get("history", [])
    info = {"name": resolved.name, "version": resolved.version, "uri": model}
    paths = _write_evaluation(report, history, _reports_dir(cfg, wd), model=info)
    with start_run(
        cfg.tracking.experiment or cfg.registry.name,
        f"evaluate-{resolved.name or 'bundle'}",
        tags={"lakenet.model": model, "lakenet.table": snap.uri, "lakenet.table_version": snap.version},
    ) as run:
        run.log_metrics(report["metrics"])
        for p in paths.values():
            run.log_artifact(p, "reports")
    return {**report, "reports": {k: str(v) for k, v in paths.items()}, "model": info}


# ---- predict ------------------------------------------------------------------------------------------------
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
    spark: Any = None,
    workdir: str | Path | None = None,
) -> PredictResult:
    """Score every row of `table` into the Delta table `out`, in one commit, exactly once per
    (input table + version, model version, output).

    The engine comes from `config`'s `engine:` section, else from `engine`/`master`, else a given SparkSession,
    else the local engine.
    """
    from lakenet.config.schema import LocalEngineConfig, SparkEngineConfig
    from lakenet.models.bundle import Bundle
    from lakenet.tracking.store import resolve_model, setup_tracking

    wd = _workdir(workdir)
    engine_cfg: LocalEngineConfig | SparkEngineConfig
    if config is not None:
        engine_cfg = load_config(config).engine
    elif engine in (None, "local") and master is None:
        engine_cfg = LocalEngineConfig()
    elif engine in (None, "spark"):
        engine_cfg = SparkEngineConfig(master=master)
    else:
        raise DataError(f"--engine must be local or spark, not {engine!r}")
    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    bundle = Bundle.load(resolved.bundle_dir)
    pre = bundle.preprocessor
    snap = open_table(table, version)
    wanted = {pre.key: "the model's key column"}
    wanted.update({c: "the model's input columns" for c in pre.input_columns()})
    snap.require_columns(wanted)
    out_uri = str(Path(out).resolve()) if "://" not in out else out
    model_id = resolved.version if resolved.version else _bundle_digest(resolved.bundle_dir)
    txn = app_id("predict", snap.uri, snap.version, snap.fingerprint, resolved.name, model_id, out_uri)
    if already_committed(out_uri, txn):
        return PredictResult(out_uri, 0, 0, False, model, resolved.version)
    job = ScoreJob(
        snapshot=snap,
        bundle_dir=str(resolved.bundle_dir),
        columns=tuple(pre.columns(with_label=False)),
        model_name=resolved.name or "bundle",
        model_version=resolved.version or model_id,
    )
    if workers is None and isinstance(engine_cfg, LocalEngineConfig):
        workers = engine_cfg.score_workers
    metadata = {
        "lakenet.model": model,
        "lakenet.model_version": str(job.model_version),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
    }
    rows, bad, committed = get_engine(engine_cfg, spark=spark).predict_to_table(
        job, out_uri, txn=txn, metadata=metadata, workers=workers
    )
    return PredictResult(out_uri, rows, bad, committed, model, resolved.version)


def _bundle_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---- registry -----------------------------------------------------------------------------------------------
def models(*, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Registered models, versions, aliases, metrics and lineage."""
    from lakenet.tracking.store import list_models, setup_tracking

    setup_tracking(None, workdir=_workdir(workdir))
    return list_models()


def promote(name: str, version: str | int, *, alias: str = "champion", workdir: str | Path | None = None) -> str | None:
    """Point `name@alias` at `version` (a server started with `follow_alias` switches to it); returns the version
    the alias pointed to before, or None if it is new."""
    from lakenet.tracking.store import set_alias, setup_tracking

    setup_tracking(None, workdir=_workdir(workdir))
    return set_alias(name, str(version), alias)


# ---- serve --------------------------------------------------------------------------------------------------
def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    token_file: str | Path | None = None,
    max_batch_size: int = 32,
    max_batch_delay_ms: float = 0.0,
    max_queue_rows: int = 256,
    max_inflight_requests: int = 64,
    max_request_rows: int = 256,
    max_body_bytes: int = 16 * 2**20,
    request_timeout_s: float = 10.0,
    drain_timeout_s: float = 30.0,
    follow_alias: bool = False,
    poll_interval_s: float = 5.0,
    device: str = "cpu",
    torch_threads: int | None = None,
    access_log: bool = False,
    log_level: str = "info",
    background: bool = False,
    workdir: str | Path | None = None,
) -> ServerHandle | None:
    """Serve `model` (models:/name@alias, models:/name/N or a bundle directory) over HTTP until SIGINT/SIGTERM,
    which stop new connections and answer every admitted request before returning. With `background=True`,
    return at once a handle (`.url`, `.stop()`, a context manager) to a server running on a thread.

    Binds 127.0.0.1 unless told otherwise, and refuses any other interface without a bearer token (`token` or,
    better, `token_file`). `follow_alias` polls the registry every `poll_interval_s` and switches to the version
    the alias points to, between batches, without failing a request. The settings are described in
    `lakenet.serving.settings.ServeSettings`.
    """
    from lakenet.serving.settings import make_settings, read_token_file

    if token is not None and token_file is not None:
        raise ConfigError("Pass either a token or a token file, not both.")
    settings = make_settings(
        host=host,
        port=port,
        token=read_token_file(token_file) if token_file is not None else token,
        max_batch_size=max_batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        max_queue_rows=max_queue_rows,
        max_inflight_requests=max_inflight_requests,
        max_request_rows=max_request_rows,
        max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout_s,
        drain_timeout_s=drain_timeout_s,
        follow_alias=follow_alias,
        poll_interval_s=poll_interval_s,
        device=device,
        torch_threads=torch_threads,
        access_log=access_log,
        log_level=log_level,
    )
    followed = _alias_ref(model)
    if follow_alias and followed is None:
        raise ConfigError(
            f"--follow-alias needs a registry alias to follow (models:/name@alias), not {model!r}: a version number "
            "or a bundle directory never moves."
        )
    if settings.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={settings.device!r}, but torch {torch.__version__} sees no CUDA device.")
    wd = _workdir(workdir)
    predictor = _serving_predictor(model, wd, settings.device)
    refresh = (
        _alias_follower(followed, predictor.model_version, wd, settings.device) if follow_alias and followed else None
    )
    from lakenet.serving.server import run, start_background

    if background:
        return start_background(predictor, settings, refresh=refresh)
    run(predictor, settings, refresh=refresh)
    return None


def _alias_ref(model: str) -> tuple[str, str] | None:
    body = model.removeprefix("models:/")
    if body == model or "@" not in body:
        return None
    name, alias = body.split("@", 1)
    return name, alias


def _serving_predictor(model: str, wd: Path, device: str) -> Predictor:
    from lakenet.inference.predictor import Predictor
    from lakenet.tracking.store import resolve_model, setup_tracking

    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    return Predictor(resolved.bundle_dir, device=device, model_name=resolved.name, model_version=resolved.version)


def _alias_follower(ref: tuple[str, str], version: str | None, wd: Path, device: str) -> Callable[[], Predictor | None]:
    """A refresh function for the server: the Predictor of the version `name@alias` points to, once per new
    version (None while it has not moved). Runs on a worker thread."""
    from lakenet.tracking.store import alias_version

    name, alias = ref
    seen = [version]

    def refresh() -> Predictor | None:
        now = alias_version(name, alias)
        if now == seen[0]:
            return None
        predictor = _serving_predictor(f"models:/{name}/{now}", wd, device)
        seen[0] = now  # only once loaded: a failed download is retried at the next poll
        return predictor

    return refresh
