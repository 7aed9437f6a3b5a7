"""The façade: every entry point (CLI, server, notebooks, Python users) calls these functions and nothing else."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakenet._version import __version__
from lakenet.config.loader import config_hash, dump_config, load_config
from lakenet.config.schema import Config
from lakenet.data.delta_io import already_committed, app_id
from lakenet.data.ingest import ingest
from lakenet.data.quarantine import enforce_bad_fraction, write_quarantine
from lakenet.data.scan import ScanResult
from lakenet.data.sources import open_table
from lakenet.engines import ScoreJob, get_engine
from lakenet.errors import ConfigError, DataError, LakenetError, ModelError
from lakenet.training.callbacks import Callback, ConsoleProgress

if TYPE_CHECKING:
    from collections.abc import Callable

    from lakenet.inference.predictor import Predictor
    from lakenet.monitoring.workflow import DriftResult
    from lakenet.serving.server import ServerHandle
    from lakenet.training.plan import TrainPlan
    from lakenet.workflows.update import UpdateResult

__all__ = [
    "ExportResult",
    "FeaturizeResult",
    "FitResult",
    "PredictResult",
    "ProfileResult",
    "TuneResult",
    "drift",
    "evaluate",
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
    already_registered: bool = False  # `resume` of a run that had finished: nothing was trained or registered
    alias_refused: str | None = None  # why the alias stayed where it was (another task or input signature)
    baseline: str | None = None  # the deep model against HistGradientBoosting, in one sentence


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


def _workdir(workdir: str | Path | None) -> Path:
    return Path(workdir).resolve() if workdir is not None else Path.cwd()


def _reports_dir(cfg: Config, workdir: Path) -> Path:
    d = workdir / "reports" / cfg.registry.name
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- ingest / init ------------------------------------------------------------------------------------------
def init_config(
    table: str, *, label: str, name: str | None = None, key: str | None = None, config_dir: str | Path | None = None
) -> str:
    """A short starting YAML config for `table`: the label's task, the row key, and every column's type or why it
    is left out (as comments), with `features: {include: auto}`. `data.table` is relative to `config_dir`."""
    from lakenet.starter import init_config as starter

    return starter(table, label=label, name=name, key=key, config_dir=config_dir)


# ---- profile ------------------------------------------------------------------------------------------------
def _scan(
    cfg: Config, version: int | None = None, workdir: Path | None = None, spark: Any = None
) -> tuple[TrainPlan, str | None]:
    """Plan and scan on the config's engine: on Spark the executors read and profile the fragments."""
    from lakenet.training.plan import plan_training

    plan = plan_training(cfg, version=version, workdir=workdir, engine=get_engine(cfg.engine, spark=spark))
    quarantine = write_quarantine(plan.scan, job=config_hash(cfg))
    return plan, quarantine


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


def profile(config: ConfigLike, *, spark: Any = None, workdir: str | Path | None = None) -> ProfileResult:
    """Profile the config's table (JSON + HTML report) and quarantine its bad rows."""
    cfg = load_config(config)
    wd = _workdir(workdir)
    if cfg.model.backbone is not None and cfg.model.backbone.source.startswith(("models:/", "runs:/")):
        from lakenet.tracking.store import setup_tracking

        setup_tracking(cfg.tracking, workdir=wd)
    plan, quarantine = _scan(cfg, workdir=wd, spark=spark)
    json_path, html_path = _write_profile(plan.scan, _reports_dir(cfg, wd))
    return ProfileResult(plan.scan.profile, json_path, html_path, quarantine)


# ---- fit ----------------------------------------------------------------------------------------------------
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
    if resume and restart:
        raise ConfigError("Pass either resume or restart, not both.")
    return _fit(
        load_config(config),
        _workdir(workdir),
        resume=resume,
        restart=restart,
        callbacks=callbacks,
        progress=progress,
        spark=spark,
    )


@dataclass(frozen=True)
class _Trained:
    """Weights trained elsewhere (a tuning trial): register them instead of training again."""

    output_dir: Path
    table_version: int | None


def _fit(
    cfg: Config,
    wd: Path,
    *,
    resume: bool = False,
    restart: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    spark: Any = None,
    refit: bool = False,
    trained: _Trained | None = None,
    tags: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> FitResult:
    from safetensors.torch import load_file

    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import build_model, config_trust
    from lakenet.tracking.store import MlflowMetrics, git_commit, setup_tracking, start_run
    from lakenet.training.loop import resolve_device

    setup_tracking(cfg.tracking, workdir=wd)
    ckpt_dir = wd / ".lakenet" / "checkpoints" / cfg.registry.name
    job_state = _job_state(ckpt_dir)
    pinned = _resume_version(cfg, ckpt_dir) if resume else None
    if resume and job_state.get("state") == "registered":
        return _registered_fit(cfg, wd, job_state)
    if not resume and not restart and trained is None:
        _refuse_to_drop_checkpoint(cfg, ckpt_dir, job_state)
    if trained is not None:
        pinned = trained.table_version
    requested = config_hash(cfg)  # the config as written: what --resume compares
    plan, quarantine = _scan(cfg, pinned, wd, spark=spark)
    cfg = plan.config  # features: {include: auto} resolved for this table version
    snap, result, spec = plan.snapshot, plan.scan, plan.spec
    enforce_bad_fraction(result, cfg.data.max_bad_fraction, quarantine)
    reports = _reports_dir(cfg, wd)
    profile_json, profile_html_path = _write_profile(result, reports)
    pre = result.preprocessor
    trust = config_trust(cfg)
    build_model(spec, trusted=trust)  # fail fast (bad custom module) before any process starts
    device = resolve_device(cfg.trainer.device)
    if not resume and trained is None:
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True)
        job_state = {"config_hash": requested, "table_version": snap.version, "state": "running"}
        _write_job_state(ckpt_dir, job_state)
    lineage = {
        "lakenet.table": snap.uri,
        "lakenet.table_version": snap.version,
        "lakenet.table_fingerprint": snap.fingerprint,
        "lakenet.config_hash": requested,
        "lakenet.version": __version__,
        "lakenet.git_commit": git_commit(Path(cfg.data.table).parent),
        "lakenet.engine": cfg.engine.type,
        "lakenet.workers": cfg.engine.workers,
        **plan.lineage,
        **(tags or {}),
    }
    experiment = cfg.tracking.experiment or cfg.registry.name
    # A resumed run continues the interrupted run's MLflow run: one training run, one registered version.
    continued = job_state.get("run_id") if resume else None
    with start_run(experiment, run_name or f"train-{cfg.registry.name}", tags=lineage, run_id=continued) as run:
        if trained is None:
            _write_job_state(ckpt_dir, {**job_state, "run_id": run.run_id, "state": "running"})
        run.log_params(cfg.to_yaml_dict())
        run.log_text(dump_config(cfg), "config.yaml")
        run.log_artifact(profile_json, "reports")
        run.log_artifact(profile_html_path, "reports")
        run.log_metrics({"bad_rows": result.bad_rows.num_rows, "rows": snap.num_rows})
        out_dir = trained.output_dir if trained else Path(tempfile.mkdtemp(prefix="train-", dir=_scratch(wd)))
        try:
            if trained is None:
                job = plan.job(output_dir=out_dir, checkpoint_dir=ckpt_dir, resume=resume, refit=refit)
                cbs: list[Callback] = [MlflowMetrics(run.run_id, run.tracking_uri), *callbacks]
                if progress:
                    cbs.insert(0, ConsoleProgress(job.watch))
                workers = cfg.engine.workers
                get_engine(cfg.engine, spark=spark).train(job, workers=workers, device=device, callbacks=cbs)
            outcome = json.loads((out_dir / "result.json").read_text())
            weights = load_file(str(out_dir / "weights.safetensors"))
        finally:
            if trained is None:
                shutil.rmtree(out_dir, ignore_errors=True)
        history = outcome["history"]
        # The figures of the weights that were kept (the best epoch when early stopping restored it).
        best = outcome.get("best_epoch", -1)
        kept = (
            history[best] if cfg.trainer.early_stopping and 0 <= best < len(history) else history[-1] if history else {}
        )
        kept_val = {k: v for k, v in kept.items() if k.startswith("val_")}
        bundle = Bundle(
            spec=spec,
            preprocessor=pre,
            weights=weights,
            lineage={k[len("lakenet.") :]: v for k, v in lineage.items()},
            profile={k: result.profile[k] for k in ("table", "splits", "label", "bad_rows")},
            training={
                **{
                    k: outcome[k]
                    for k in ("history", "best_epoch", "stopped_early", "nonfinite_steps", "step", "resumed_from_step")
                },
                **({"pretrained": plan.pretrained.report} if plan.pretrained else {}),
                "split": cfg.data.split.model_dump(),  # drift and updates find the training rows again
                "config": cfg.to_yaml_dict(),  # the resolved config: what an update starts from
            },
        )
        threshold = _choose_threshold(cfg, snap, bundle, trust)
        bundle_dir = bundle.save(wd / ".lakenet" / "bundles" / run.run_id)
        report = evaluate_split(snap, Predictor(bundle, trust_modules=trust), cfg.data.split)
        metrics = {**kept_val, **report["metrics"], **threshold}
        baseline = _baseline(cfg, plan, report) if trained is None or refit else {}
        report["baseline"] = baseline
        metrics.update({f"baseline_{k}": v for k, v in baseline.get("metrics", {}).items()})
        bundle.metrics = metrics
        bundle.save(bundle_dir)
        run.log_metrics({k: v for k, v in metrics.items() if not k.startswith("val_")})
        if baseline.get("summary"):
            run.set_tags({"lakenet.baseline": baseline["summary"]})
        eval_paths = _write_evaluation(report, history, reports, model={"name": cfg.registry.name})
        for p in eval_paths.values():
            run.log_artifact(p, "reports")
        run.log_metrics({"train_seconds": outcome["train_seconds"], "nonfinite_steps": outcome["nonfinite_steps"]})
        version = run.register_bundle(
            bundle_dir,
            name=cfg.registry.name,
            alias=cfg.registry.alias,
            signature=bundle.signature(),
            requirements=bundle.requirements(),
            tags={
                **lineage,
                "lakenet.metrics": json.dumps({k: v for k, v in metrics.items() if not k.startswith("val_")}),
                "lakenet.run_id": run.run_id,
                "lakenet.task": pre.label.task,
                "lakenet.signature": json.dumps(bundle.signature()),
                **({"lakenet.baseline": baseline["summary"]} if baseline.get("summary") else {}),
            },
            allow_incompatible=cfg.registry.allow_incompatible,
        )
        if trained is None:
            _write_job_state(ckpt_dir, {**job_state, "run_id": run.run_id, "state": "registered", "version": version})
    refused = run.alias_refused
    return FitResult(
        model_uri=f"models:/{cfg.registry.name}/{version}"
        if refused
        else f"models:/{cfg.registry.name}@{cfg.registry.alias}",
        name=cfg.registry.name,
        version=version,
        run_id=run.run_id,
        metrics=metrics,
        reports={"profile": profile_html_path, **eval_paths},
        bundle_dir=bundle_dir,
        history=history,
        alias_refused=refused,
        baseline=baseline.get("summary") or baseline.get("skipped"),
    )


# ---- tune ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    counts: dict[str, int]  # complete, pruned, failed, in this study so far (all sessions)
    best_config: Path  # the full YAML of the best configuration
    report: Path
    fit: FitResult | None  # the registered model (None with register=False)


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
    import sys
    from functools import partial

    import optuna

    from lakenet.tracking.store import setup_tracking, start_run
    from lakenet.training.loop import resolve_device
    from lakenet.tuning import TuneJob, run_trials, storage_url, study_name
    from lakenet.tuning.study import finished, open_study

    cfg = load_config(config)
    if cfg.tune is None:
        raise ConfigError(
            "The config has no tune: section. Add one, e.g.\n"
            "tune:\n  metric: val_accuracy\n  trials: 20\n  space:\n"
            "    trainer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}"
        )
    overrides = {k: v for k, v in {"trials": trials, "parallel": parallel}.items() if v is not None}
    if overrides:
        cfg = load_config({**cfg.to_yaml_dict(), "tune": {**cfg.to_yaml_dict()["tune"], **overrides}})
    assert cfg.tune is not None
    tcfg = cfg.tune
    wd = _workdir(workdir)
    tracking_uri = setup_tracking(cfg.tracking, workdir=wd)
    name = study_name(cfg)
    url = storage_url(tcfg, tracking_uri, wd)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def pin(study: optuna.Study) -> None:
        version = open_table(cfg.data.table, cfg.data.version).version
        study.set_user_attr("table_version", version)
        study.set_user_attr("config", cfg.to_yaml_dict())

    study = open_study(tcfg, name, url, max_epochs=cfg.trainer.epochs, seed=tcfg.seed, create=True, on_create=pin)
    # A continued study keeps the table version it started on, so its trials stay comparable.
    version = study.user_attrs.get("table_version")
    plan, quarantine = _scan(cfg, version, wd, spark=spark)
    enforce_bad_fraction(plan.scan, cfg.data.max_bad_fraction, quarantine)
    base = plan.config.to_yaml_dict()  # features resolved: every trial trains on the same ones
    base["data"]["version"] = plan.snapshot.version
    engine = get_engine(cfg.engine, spark=spark)
    _check_shared_stores(cfg, engine, url, tracking_uri)

    lineage = {
        "lakenet.tune.study": name,
        "lakenet.tune.storage": url,
        "lakenet.table": plan.snapshot.uri,
        "lakenet.table_version": plan.snapshot.version,
        "lakenet.config_hash": config_hash(cfg),
        **plan.lineage,
    }
    experiment = cfg.tracking.experiment or cfg.registry.name
    previous = len(study.trials)
    with start_run(experiment, f"tune-{name}", tags=lineage, run_id=study.user_attrs.get("mlflow_run_id")) as run:
        study.set_user_attr("mlflow_run_id", run.run_id)
        if previous == 0:
            run.log_params({"tune": base["tune"]})
        job = TuneJob(
            config=base,
            study=name,
            storage=url,
            trials_dir=str(wd / ".lakenet" / "tune" / name),
            device=resolve_device(cfg.trainer.device),
            threads=engine.task_threads(tcfg.parallel),
            time_budget=tcfg.time_budget,
            # Seeded by how far the study got: a continued random search does not replay its first samples.
            seed=tcfg.seed + 1000 * previous,
            parent_run=run,
            quiet=quiet,
        )
        if not quiet:
            print(
                f"tuning {name}: {len(finished(study.trials))}/{tcfg.trials} trials done, {tcfg.parallel} at once, "
                f"study in {url}",
                file=sys.stderr,
                flush=True,
            )
        engine.run_tasks(partial(run_trials, job), tcfg.parallel)
        summary = _tune_summary(study, tcfg.metric)
        run.log_metrics(
            {
                "best_value": summary["best_value"] if summary["best_value"] is not None else float("nan"),
                **{f"trials_{k}": float(v) for k, v in summary["counts"].items()},
            }
        )
        out = _reports_dir(cfg, wd) / "tune"
        out.mkdir(parents=True, exist_ok=True)
        report = _write_tune_report(summary, out)
        run.log_artifact(report, "reports")
        best = _best_trial(study)
        best_cfg = _best_config(base, best, summary, out / "best.yaml")
        run.log_artifact(best_cfg, "reports")
    result_fit = None
    if register:
        tags = {**lineage, "lakenet.tune.best_trial": best.number, "lakenet.tune.parent_run": run.run_id}
        best_config = load_config(best_cfg)
        if tcfg.refit:
            epochs = (best.user_attrs.get("best_epoch", -1) + 1) or best.user_attrs.get("epochs", 1)
            raw = best_config.to_yaml_dict()
            raw["trainer"] = {**raw["trainer"], "epochs": max(1, epochs), "early_stopping": None}
            result_fit = _fit(
                load_config(raw), wd, progress=not quiet, spark=spark, refit=True, tags=tags, run_name=f"refit-{name}"
            )
        else:
            trained = _Trained(Path(best.user_attrs["config_dir"]) / "out", plan.snapshot.version)
            result_fit = _fit(best_config, wd, trained=trained, tags=tags, run_name=f"best-{name}")
    return TuneResult(
        study=name,
        storage=url,
        metric=tcfg.metric,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_trial=best.number,
        counts=summary["counts"],
        best_config=best_cfg,
        report=report,
        fit=result_fit,
    )


def _check_shared_stores(cfg: Config, engine: Any, url: str, tracking_uri: str) -> None:
    """Trials on a Spark cluster write to the study and the tracking store from the executors."""
    if cfg.engine.type != "spark":
        return
    master = str(engine.spark.sparkContext.master)
    if master.startswith("local"):
        return
    for what, uri, key in ((("study", url, "tune.storage")), ("MLflow tracking", tracking_uri, "tracking.uri")):
        if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
            raise ConfigError(
                f"tune on Spark master {master}: the {what} store {uri} is a local file the executors cannot "
                f"share; set {key} to a database every executor can reach (e.g. postgresql://host/db)"
            )


def _best_trial(study: Any) -> Any:
    from optuna.trial import TrialState

    from lakenet.errors import TuningError

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        states: dict[str, int] = {}
        reasons: list[str] = []
        for t in study.get_trials(deepcopy=False):
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
            reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("state_reason")
            if reason:
                reasons.append(f"  trial {t.number}: {reason}")
        detail = "\n".join(reasons[-5:]) or "  (no trial started: the time budget was spent before the first one)"
        raise TuningError(
            f"No trial of study {study.study_name!r} completed ({states or 'no trials'}). Last reasons:\n{detail}\n"
            "Fix the search space or raise tune.trials / tune.time_budget, then run again to continue the study."
        )
    return study.best_trial


def _tune_summary(study: Any, metric: str) -> dict[str, Any]:
    from optuna.trial import TrialState

    from lakenet.tuning.study import finished

    trials = study.get_trials(deepcopy=False)
    counted = {t.number for t in finished(trials)}
    retried_as = {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])[-1:]}
    counts = {"complete": 0, "pruned": 0, "failed": 0, "retried": 0, "running": 0}
    rows = []
    for t in trials:
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
            t.state, t.state.name.lower()
        )
        if t.state == TrialState.FAIL and t.number not in counted:
            state = "retried"
        counts[state] = counts.get(state, 0) + 1
        rows.append(
            {
                "number": t.number,
                "state": state,
                "value": t.value,
                "params": dict(t.params),
                "intermediate": {int(k): float(v) for k, v in t.intermediate_values.items()},
                "epochs": t.user_attrs.get("trained_epochs"),
                "seconds": t.user_attrs.get("seconds"),
                "reason": _trial_reason(t, retried_as.get(t.number)),
                "start": t.datetime_start.isoformat() if t.datetime_start else None,
            }
        )
    best = next((t for t in trials if t.state == TrialState.COMPLETE), None)
    best_value = study.best_value if best is not None else None
    importances: dict[str, float] = {}
    importance_note = None
    if counts["complete"] >= 3 and len(study.best_params) >= 1:
        try:
            import warnings

            import optuna

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = {
                    k: float(v)
                    for k, v in optuna.importance.get_param_importances(
                        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
                    ).items()
                }
        except (RuntimeError, ValueError) as err:
            importance_note = f"parameter importances unavailable: {err}"
    else:
        importance_note = "parameter importances need at least 3 complete trials"
    return {
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "counts": counts,
        "best_value": best_value,
        "best_trial": study.best_trial.number if best is not None else None,
        "best_params": dict(study.best_params) if best is not None else {},
        "importances": importances,
        "importance_note": importance_note,
        "space": study.user_attrs.get("config", {}).get("tune", {}).get("space", {}),
        "trials": rows,
    }


def _trial_reason(t: Any, retried_as: int | None) -> str | None:
    reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("state_reason")
    if retried_as is None:
        return reason
    return f"{reason or 'its process stopped'}; retried as trial {retried_as}"


def _write_tune_report(summary: dict[str, Any], out: Path) -> Path:
    from lakenet.reports import tune_html

    _atomic_write(out / "tune.json", json.dumps(summary, indent=2, default=str))
    _atomic_write(out / "tune.html", tune_html(summary))
    return out / "tune.html"


def _best_config(base: dict[str, Any], best: Any, summary: dict[str, Any], path: Path) -> Path:
    from lakenet.tuning.study import apply_params

    raw = apply_params(base, dict(best.params))
    load_config(raw)  # what we write must validate
    header = (
        f"# Best configuration of study {summary['study']}: trial {best.number}, "
        f"{summary['metric']} {best.value:.6g} ({summary['direction']}).\n"
        f"# Tuned values: {json.dumps(dict(best.params))}\n"
        "# data.version is pinned to the table version the study searched on.\n"
    )
    _atomic_write(path, header + yaml.safe_dump(raw, sort_keys=False))
    return path


def _choose_threshold(cfg: Config, snap: Any, bundle: Any, trust: tuple[str, ...]) -> dict[str, float]:
    """Two classes: the decision threshold on the rarer class's probability, chosen on the validation split to
    maximise its F1 (or as configured), stored in the bundle so predict and serve use it. Its figures."""
    from dataclasses import replace

    from lakenet.data.split import VAL
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.evaluation.metrics import best_f1_threshold
    from lakenet.inference.predictor import Predictor

    label = bundle.preprocessor.label
    setting = cfg.trainer.threshold
    if label.task != "classification" or len(label.classes or []) != 2 or setting == "none":
        return {}
    if isinstance(setting, float):
        value, f1 = setting, None
    else:
        if cfg.data.split.val == 0:
            return {}
        val = evaluate_split(snap, Predictor(bundle, trust_modules=trust), cfg.data.split, split=VAL, prefix="val",
                             scores=True)  # fmt: skip
        found = best_f1_threshold(val["scores"]["truth"], val["scores"]["p"]) if "scores" in val else None
        if found is None:
            return {}
        value, f1 = found
    bundle.preprocessor.label = replace(label, threshold=float(value))
    return {"threshold": float(value), **({"val_f1_at_threshold": f1} if f1 is not None else {})}


def _baseline(cfg: Config, plan: Any, report: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn's HistGradientBoosting on the same split, compared with the deep model (trainer.baseline)."""
    if cfg.trainer.baseline == "none":
        return {}
    from lakenet.evaluation.baseline import fit_baseline

    return fit_baseline(cfg, plan.snapshot, plan.scan.preprocessor, report["metrics"])


def _job_state(ckpt_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt_dir / "job.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_job_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    _atomic_write(ckpt_dir / "job.json", json.dumps(state))


def _refuse_to_drop_checkpoint(cfg: Config, ckpt_dir: Path, job_state: dict[str, Any]) -> None:
    """A new run would delete an interrupted run's checkpoint: say so instead, and how to choose."""
    from lakenet.errors import TrainingError
    from lakenet.training.checkpoint import latest_checkpoint

    if job_state.get("state") == "registered":
        return
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        return
    step = int(latest.name.split("-")[-1])
    same = job_state.get("config_hash") == config_hash(cfg)
    raise TrainingError(
        f"An interrupted training run of {cfg.registry.name!r} left a checkpoint at step {step} in {ckpt_dir}"
        + ("" if same else " (with a different config)")
        + ". Continue it with `lakenet train CONFIG --resume`"
        + ("" if same else " after restoring that config")
        + ", or discard it and start over with `lakenet train CONFIG --restart`."
    )


def _registered_fit(cfg: Config, wd: Path, job_state: dict[str, Any]) -> FitResult:
    """`--resume` of a run that already finished: its registration, not a second one."""
    from lakenet.tracking.store import list_models

    version = str(job_state.get("version"))
    info = next(
        (v for m in list_models() if m["name"] == cfg.registry.name for v in m["versions"] if v["version"] == version),
        None,
    )
    if info is None:
        from lakenet.errors import TrainingError

        raise TrainingError(
            f"--resume: the run of {cfg.registry.name!r} finished and registered version {version}, which is no "
            "longer in the registry. Train again with --restart."
        )
    reports = _reports_dir(cfg, wd)
    run_id = str(job_state.get("run_id"))
    bundle_dir = wd / ".lakenet" / "bundles" / run_id
    history = []
    if (bundle_dir / "bundle.json").is_file():
        history = json.loads((bundle_dir / "bundle.json").read_text()).get("training", {}).get("history", [])
    return FitResult(
        model_uri=f"models:/{cfg.registry.name}@{cfg.registry.alias}",
        name=cfg.registry.name,
        version=version,
        run_id=run_id,
        metrics=info["metrics"],
        reports={k: reports / f"{k}.html" for k in ("profile", "evaluation") if (reports / f"{k}.html").is_file()},
        bundle_dir=bundle_dir,
        history=history,
        already_registered=True,
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
def evaluate(
    config: ConfigLike, *, model: str, trust_modules: Sequence[str] = (), workdir: str | Path | None = None
) -> dict[str, Any]:
    """Score the config's test split with a registered model; writes the evaluation report, logs a run."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor
    from lakenet.models.registry import config_trust
    from lakenet.tracking.store import resolve_model, setup_tracking, start_run

    cfg = load_config(config)
    wd = _workdir(workdir)
    setup_tracking(cfg.tracking, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    predictor = Predictor(
        resolved.bundle_dir,
        model_name=resolved.name,
        model_version=resolved.version,
        trust_modules=(*trust_modules, *config_trust(cfg)),
    )
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
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import check_buildable
    from lakenet.tracking.store import resolve_model, setup_tracking

    wd = _workdir(workdir)
    engine_cfg = _score_engine(config, engine, master)
    _check_runtime(runtime)
    trust = _trust(trust_modules, config)
    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    bundle = Bundle.load(resolved.bundle_dir)
    check_buildable(bundle.spec, trusted=trust, where=f"Model {model}")  # before any worker starts
    pre = bundle.preprocessor
    snap = open_table(table, version)
    wanted = {pre.key: "the model's key column"}
    wanted.update({c: "the model's input columns" for c in pre.input_columns()})
    snap.require_columns(wanted)
    kept = _kept_columns(keep, snap, pre)
    out_uri = str(Path(out).resolve()) if "://" not in out else out
    model_id = resolved.version if resolved.version else _bundle_digest(resolved.bundle_dir)
    merge, since, deleted = None, None, 0
    if incremental:
        from lakenet.data.changes import plan_output_merge, table_changes

        since = last_input_version(out_uri, snap.uri, str(resolved.version or model_id))
        if since is not None and since >= (snap.version or 0):
            return PredictResult(out_uri, 0, 0, False, model, resolved.version, since, snap.version)
        changes = table_changes(snap.uri, since, pre.key, snap.version)
        if changes.empty:
            return PredictResult(out_uri, 0, 0, False, model, resolved.version, since, snap.version)
        affected = set(changes.deleted_keys)
        if changes.rewritten:
            affected |= _keys(changes.added, pre.key)
        merge = plan_output_merge(
            out_uri, key=pre.key, model_column="model_version", model_version=str(resolved.version or model_id),
            keys=affected,
        )  # fmt: skip
        deleted = len(changes.deleted_keys)
        txn = app_id("predict-incremental", snap.uri, since, snap.version, resolved.name, model_id, out_uri, *kept)
        snap = changes.added
    else:
        txn = app_id("predict", snap.uri, snap.version, snap.fingerprint, resolved.name, model_id, out_uri, *kept)
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
    if workers is None and engine_cfg.type == "local":
        workers = engine_cfg.score_workers
    metadata = {
        "lakenet.model": model,
        "lakenet.model_version": str(job.model_version),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
        **({"lakenet.incremental_from": str(since)} if incremental else {}),
    }
    rows, bad, committed = get_engine(engine_cfg, spark=spark).predict_to_table(
        job, out_uri, txn=txn, metadata=metadata, workers=workers, merge=merge
    )
    replaced = (merge.replaced_rows - deleted) if merge is not None and committed else 0
    return PredictResult(
        out_uri, rows, bad, committed, model, resolved.version, since, snap.version, max(replaced, 0),
        deleted if committed else 0,
    )  # fmt: skip


def last_input_version(out_uri: str, input_uri: str, model_version: str) -> int | None:
    """The input version the output table last consumed for a model version (None: never)."""
    from lakenet.data.changes import last_consumed

    return last_consumed(out_uri, input_uri=input_uri, model_version=model_version)


def _keys(snap: Any, key: str) -> set[str]:
    import pyarrow as pa

    keys: set[str] = set()
    for _, table in snap.iter_tables([key]):
        keys.update(v for v in table.column(key).cast(pa.string()).to_pylist() if v is not None)
    return keys


_OUTPUT_COLUMNS = {"prediction", "confidence", "probabilities", "error", "model_name", "model_version"}


def _kept_columns(keep: Sequence[str], snap: Any, pre: Any) -> tuple[str, ...]:
    """`--keep a,b`: columns of the input table copied to the predictions (the key always is)."""
    cols = tuple(dict.fromkeys(c.strip() for c in keep if c.strip() and c.strip() != pre.key))
    snap.require_columns({c: "--keep" for c in cols})
    clash = sorted(set(cols) & _OUTPUT_COLUMNS)
    if clash:
        raise ConfigError(f"--keep {clash}: the predictions already have columns of that name; rename them first")
    return cols


def _trust(trust_modules: Sequence[str], config: ConfigLike | None) -> tuple[str, ...]:
    from lakenet.models.registry import config_trust

    return (*trust_modules, *(config_trust(load_config(config)) if config is not None else ()))


def _score_engine(config: ConfigLike | None, engine: str | None, master: str | None) -> Any:
    from lakenet.config.schema import LocalEngineConfig, SparkEngineConfig

    if config is not None:
        return load_config(config).engine
    if engine in (None, "local") and master is None:
        return LocalEngineConfig()
    if engine in (None, "spark"):
        return SparkEngineConfig(master=master)
    raise DataError(f"--engine must be local or spark, not {engine!r}")


def _check_runtime(runtime: str) -> None:
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"--runtime must be torch or onnx, not {runtime!r}")


def _bundle_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---- update -------------------------------------------------------------------------------------------------
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
    return run_update(load_config(config), _workdir(workdir), strategy=strategy, spark=spark, progress=progress)


# ---- drift --------------------------------------------------------------------------------------------------
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
    from lakenet.monitoring.workflow import run_drift

    wd = _workdir(workdir)
    monitor = load_config(config).monitor if config is not None else MonitorConfig()
    predictor = _serving_predictor(model, wd, "cpu", "torch", _trust(trust_modules, config))
    name = predictor.model_name or "bundle"
    out = wd / "reports" / name / "drift"
    resolved_table = str(Path(table).resolve()) if table is not None and "://" not in table else table
    return run_drift(
        predictor, model=model, table=resolved_table, version=version, since=since, cfg=monitor, out_dir=out
    )


# ---- featurize ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeaturizeResult:
    table: str
    rows: int
    bad_rows: int
    committed: bool  # False: these embeddings were already committed, nothing was written
    model: str
    dim: int


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
    from lakenet.inference.featurizer import Featurizer, FeaturizeSpec
    from lakenet.models.backbone import backbone_kind
    from lakenet.models.pretrained import resolve_hf_dir
    from lakenet.tracking.store import resolve_model, setup_tracking

    wd = _workdir(workdir)
    engine_cfg = _score_engine(config, engine, master)
    kind = backbone_kind(model)
    if kind == "weights":
        raise ConfigError(
            f"{model}: featurize needs a bundle, a registered model, an .onnx file or a Hugging Face model"
        )
    version_tag: str | None = None
    if kind == "lakenet":
        if model.startswith(("models:/", "runs:/")):
            setup_tracking(None, workdir=wd)
        resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
        path, version_tag = resolved.bundle_dir, resolved.version
        model_id = version_tag or _bundle_digest(path)
    elif kind == "onnx":
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"ONNX file {model} not found")
        model_id = _bundle_digest(path)
    else:
        path = resolve_hf_dir(model)
        model_id = _bundle_digest(path)  # config, tokenizer and weights: new weights are a new featurizer
    if kind != "lakenet" and column is None:
        raise ConfigError(f"featurize with {model}: pass --column, the column of images or text it should read")
    spec = FeaturizeSpec(
        kind=kind,
        path=str(path),
        source=model,
        key=key,
        column=column,
        max_length=max_length,
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
    )
    snap = open_table(str(Path(table).resolve()) if "://" not in table else table, version)
    trust = _trust(trust_modules, config)
    probe = Featurizer(spec, trust_modules=trust)  # fails here, on the driver, if the model cannot be loaded
    reads = probe.input_columns
    snap.require_columns({key: "--key", **{c: "--column" for c in reads}})
    dim = probe.dim
    del probe
    out_uri = str(Path(out).resolve()) if "://" not in out else out
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
    if workers is None and engine_cfg.type == "local":
        workers = engine_cfg.score_workers
    metadata = {
        "lakenet.featurizer": model + (f" (version {version_tag})" if version_tag else ""),
        "lakenet.featurizer_id": str(model_id),
        "lakenet.embedding_dim": str(dim),
        "lakenet.input": snap.uri,
        "lakenet.input_version": str(snap.version),
    }
    rows, bad, committed = get_engine(engine_cfg, spark=spark).predict_to_table(
        job, out_uri, txn=txn, metadata=metadata, workers=workers
    )
    return FeaturizeResult(out_uri, rows, bad, committed, model, dim)


# ---- export -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # between the export and the registered model, on the rows checked
    rows_checked: int
    tolerance: float


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
    import os

    import numpy as np

    from lakenet.models.bundle import Bundle
    from lakenet.models.export import OnnxModel, export_onnx, export_safetensors, parity
    from lakenet.tracking.store import resolve_model, setup_tracking

    if format not in ("onnx", "safetensors"):
        raise ConfigError(f"--format must be onnx or safetensors, not {format!r}")
    wd = _workdir(workdir)
    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    bundle = Bundle.load(resolve_model(model, cache_dir=wd / ".lakenet" / "models").bundle_dir)
    trust = tuple(trust_modules)
    if not bundle.weights:
        raise ConfigError(f"{model} is already an ONNX export; export the registered model instead")
    inputs = bundle.preprocessor.example_inputs(16, seed=0)
    real = _sample_rows(bundle)
    if real is not None:
        inputs = {k: np.concatenate([inputs[k], real[k]]) for k in inputs}
    dest = Path(out).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        if format == "onnx":
            data = export_onnx(bundle, trusted=trust)
            tmp.write_bytes(data)
            diff = parity(bundle, OnnxModel(data, bundle.preprocessor.input_keys()), inputs, trusted=trust)
        else:
            from safetensors.torch import load_file

            export_safetensors(bundle, tmp)
            reloaded = Bundle(bundle.spec, bundle.preprocessor, load_file(str(tmp)))
            from lakenet.inference.predictor import Predictor

            diff = parity(bundle, Predictor(reloaded, trust_modules=trust).forward, inputs, trusted=trust)
        if not diff <= tolerance:
            raise ModelError(
                f"Export parity check failed: max abs difference {diff:.3g} > tolerance {tolerance:g} on "
                f"{len(next(iter(inputs.values())))} rows; nothing was written. Raise --tolerance if that is "
                "acceptable for this model."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(dest, format, diff, len(next(iter(inputs.values()))), tolerance)


def _sample_rows(bundle: Any, n: int = 32) -> dict[str, Any] | None:
    """Encoded rows of the table the model was trained on, when it is still readable (best effort)."""
    table, version = bundle.lineage.get("table"), bundle.lineage.get("table_version")
    if not table:
        return None
    try:
        snap = open_table(str(table), version if isinstance(version, int) else None)
        if not snap.fragments:
            return None
        rows = snap.read(snap.fragments[0], bundle.preprocessor.input_columns()).slice(0, n)
        enc = bundle.preprocessor.encode(rows, with_label=False)
    except LakenetError:
        return None
    return enc.inputs if enc.num_valid else None


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
    body_timeout_s: float = 5.0,
    max_connections: int = 1000,
    max_image_pixels: int = 16 * 2**20,
    max_request_pixels: int = 64 * 2**20,
    follow_alias: bool = False,
    poll_interval_s: float = 5.0,
    device: str = "cpu",
    torch_threads: int | None = None,
    runtime: str = "torch",
    trust_modules: Sequence[str] = (),
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
    the alias points to, between batches, without failing a request. `runtime="onnx"` runs the model in ONNX
    Runtime (an exported .onnx file always does). The settings are described in
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
        body_timeout_s=body_timeout_s,
        max_connections=max_connections,
        max_image_pixels=max_image_pixels,
        max_request_pixels=max_request_pixels,
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
    _check_runtime(runtime)
    wd = _workdir(workdir)
    trust = tuple(trust_modules)
    predictor = _serving_predictor(model, wd, settings.device, runtime, trust)
    refresh = (
        _alias_follower(followed, predictor.model_version, wd, settings.device, runtime, trust)
        if follow_alias and followed
        else None
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


def _serving_predictor(
    model: str, wd: Path, device: str, runtime: str = "torch", trust: tuple[str, ...] = ()
) -> Predictor:
    from lakenet.inference.predictor import Predictor
    from lakenet.tracking.store import resolve_model, setup_tracking

    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    return Predictor(
        resolved.bundle_dir,
        device=device,
        model_name=resolved.name,
        model_version=resolved.version,
        runtime=runtime,
        trust_modules=trust,
    )


def _alias_follower(
    ref: tuple[str, str],
    version: str | None,
    wd: Path,
    device: str,
    runtime: str = "torch",
    trust: tuple[str, ...] = (),
) -> Callable[[], Predictor | None]:
    """A refresh function for the server: the Predictor of the version `name@alias` points to, once per new
    version (None while it has not moved). Runs on a worker thread."""
    from lakenet.tracking.store import alias_version

    name, alias = ref
    seen = [version]

    def refresh() -> Predictor | None:
        now = alias_version(name, alias)
        if now == seen[0]:
            return None
        predictor = _serving_predictor(f"models:/{name}/{now}", wd, device, runtime, trust)
        seen[0] = now  # only once loaded: a failed download is retried at the next poll
        return predictor

    return refresh
