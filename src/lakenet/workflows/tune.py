"""`lakenet tune`: run (or continue) an Optuna study whose trials are the training loop, summarise it, write the
best configuration, and register it (refit on train+validation, or the best trial's own weights)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lakenet.config.loader import config_hash, load_config
from lakenet.config.schema import Config
from lakenet.data.quarantine import enforce_bad_fraction
from lakenet.data.sources import open_table
from lakenet.engines import get_engine
from lakenet.errors import ConfigError, TuningError
from lakenet.workflows.common import atomic_write, reports_dir, write_json
from lakenet.workflows.profile import scan
from lakenet.workflows.train import FitResult, Trained, run_fit

if TYPE_CHECKING:
    import optuna

    from lakenet.tracking.store import TrackedRun
    from lakenet.training.plan import TrainPlan
    from lakenet.tuning.summary import TuneSummary

__all__ = ["TuneResult", "run_tune"]


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


@dataclass(frozen=True)
class _Study:
    """The study being run and the table version its trials train on."""

    cfg: Config
    wd: Path
    name: str
    url: str
    tracking_uri: str
    study: optuna.Study
    plan: TrainPlan
    base: Config  # the config every trial starts from: features resolved, data.version pinned
    lineage: dict[str, Any]


def run_tune(cfg: Config, wd: Path, *, register: bool = True, spark: Any = None, quiet: bool = False) -> TuneResult:
    if cfg.tune is None:
        raise ConfigError(
            "The config has no tune: section. Add one, e.g.\n"
            "tune:\n  metric: val_accuracy\n  trials: 20\n  space:\n"
            "    trainer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}"
        )
    s = _open(cfg, wd, spark)
    summary, report, best, best_cfg, run = _search(s, spark=spark, quiet=quiet)
    result_fit = _register(s, best, best_cfg, run, spark=spark, quiet=quiet) if register else None
    return TuneResult(
        study=s.name,
        storage=s.url,
        metric=cfg.tune.metric,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_trial=best.number,
        counts=summary.counts,
        best_config=best_cfg,
        report=report,
        fit=result_fit,
    )


def _open(cfg: Config, wd: Path, spark: Any) -> _Study:
    """Open (or create) the study; a continued study keeps the table version it started on, so its trials stay
    comparable."""
    import optuna

    from lakenet.tracking.store import setup_tracking
    from lakenet.tuning import storage_url, study_name
    from lakenet.tuning.study import open_study

    tcfg = cfg.tune
    assert tcfg is not None
    tracking_uri = setup_tracking(cfg.tracking, workdir=wd)
    name = study_name(cfg)
    url = storage_url(tcfg, tracking_uri, wd)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def pin(study: optuna.Study) -> None:
        study.set_user_attr("table_version", open_table(cfg.data.table, cfg.data.version).version)
        study.set_user_attr("config", cfg.to_yaml_dict())

    study = open_study(tcfg, name, url, max_epochs=cfg.trainer.epochs, seed=tcfg.seed, create=True, on_create=pin)
    plan, quarantine = scan(cfg, study.user_attrs.get("table_version"), wd, spark=spark)
    enforce_bad_fraction(plan.scan, cfg.data.max_bad_fraction, quarantine)
    # Features resolved and the version pinned: every trial trains on the same rows and columns.
    base = plan.config.with_overrides({"data.version": plan.snapshot.version})
    lineage = {
        "lakenet.tune.study": name,
        "lakenet.tune.storage": url,
        "lakenet.table": plan.snapshot.uri,
        "lakenet.table_version": plan.snapshot.version,
        "lakenet.config_hash": config_hash(cfg),
        **plan.lineage,
    }
    return _Study(cfg, wd, name, url, tracking_uri, study, plan, base, lineage)


def _search(s: _Study, *, spark: Any, quiet: bool) -> tuple[TuneSummary, Path, Any, Path, TrackedRun]:
    """The trials, on the engine, under one parent MLflow run; then the summary, the report and the best config."""
    from lakenet.tracking.store import start_run
    from lakenet.training.loop import resolve_device
    from lakenet.tuning import TuneJob, run_trials
    from lakenet.tuning.study import finished
    from lakenet.tuning.summary import summarise_study

    cfg, study = s.cfg, s.study
    tcfg = cfg.tune
    assert tcfg is not None
    engine = get_engine(cfg.engine, spark=spark)
    _check_shared_stores(cfg, engine, s.url, s.tracking_uri)
    experiment = cfg.tracking.experiment or cfg.registry.name
    previous = len(study.trials)
    with start_run(experiment, f"tune-{s.name}", tags=s.lineage, run_id=study.user_attrs.get("mlflow_run_id")) as run:
        study.set_user_attr("mlflow_run_id", run.run_id)
        if previous == 0:
            run.log_params({"tune": s.base.to_yaml_dict()["tune"]})
        job = TuneJob(
            config=s.base,
            study=s.name,
            storage=s.url,
            trials_dir=str(s.wd / ".lakenet" / "tune" / s.name),
            device=resolve_device(cfg.trainer.device),
            threads=engine.task_threads(tcfg.parallel),
            time_budget=tcfg.time_budget,
            # Seeded by how far the study got: a continued random search does not replay its first samples.
            seed=tcfg.seed + 1000 * previous,
            parent_run=run,
            quiet=quiet,
        )
        if not quiet:
            done = len(finished(study.trials))
            print(f"tuning {s.name}: {done}/{tcfg.trials} trials done, {tcfg.parallel} at once, study in {s.url}",
                  file=sys.stderr, flush=True)  # fmt: skip
        engine.run_tasks(partial(run_trials, job), tcfg.parallel)
        summary = summarise_study(study, tcfg.metric)
        best_value = summary.best_value
        run.log_metrics(
            {
                "best_value": best_value if best_value is not None else float("nan"),
                **{f"trials_{k}": float(v) for k, v in summary.counts.items()},
            }
        )
        out = reports_dir(cfg, s.wd) / "tune"
        out.mkdir(parents=True, exist_ok=True)
        report = _write_tune_report(summary, out)
        run.log_artifact(report, "reports")
        best = _best_trial(study)
        best_cfg = _best_config(s.base, best, summary, out / "best.yaml")
        run.log_artifact(best_cfg, "reports")
    return summary, report, best, best_cfg, run


def _register(s: _Study, best: Any, best_cfg: Path, run: TrackedRun, *, spark: Any, quiet: bool) -> FitResult:
    """Refit the best configuration on train+validation for its best number of epochs, or register the best
    trial's own weights."""
    tags = {**s.lineage, "lakenet.tune.best_trial": best.number, "lakenet.tune.parent_run": run.run_id}
    best_config = load_config(best_cfg)
    assert s.cfg.tune is not None
    if s.cfg.tune.refit:
        epochs = (best.user_attrs.get("best_epoch", -1) + 1) or best.user_attrs.get("epochs", 1)
        refit_cfg = best_config.with_overrides({"trainer.epochs": max(1, epochs), "trainer.early_stopping": None})
        return run_fit(
            refit_cfg, s.wd, progress=not quiet, spark=spark, refit=True, tags=tags, run_name=f"refit-{s.name}"
        )
    trained = Trained(Path(best.user_attrs["config_dir"]) / "out", s.plan.snapshot.version)
    return run_fit(best_config, s.wd, trained=trained, tags=tags, run_name=f"best-{s.name}")


def _check_shared_stores(cfg: Config, engine: Any, url: str, tracking_uri: str) -> None:
    """Trials on a Spark cluster write to the study and the tracking store from the executors: a store in a
    local file works only when every task runs on this host (local masters, local-cluster, or a standalone
    cluster or Connect server whose executors all run here)."""
    if cfg.engine.type != "spark":
        return
    import socket

    from lakenet.engines.spark_tasks import Cluster

    cluster = Cluster(engine.spark)
    master = cluster.master
    stores = (("study", url, "tune.storage"), ("MLflow tracking", tracking_uri, "tracking.uri"))
    files = [(w, u, k) for w, u, k in stores if u.startswith(("sqlite:", "file:")) or "://" not in u]
    if not files or (master.startswith("local") and not cluster.connect):
        return
    hosts = cluster.executor_hosts()
    if hosts == {socket.gethostname()}:
        return
    what, uri, key = files[0]
    raise ConfigError(
        f"tune on Spark master {master}: the {what} store {uri} is a local file, and the trials run on other "
        f"hosts ({', '.join(sorted(hosts - {socket.gethostname()}))}) that cannot share it; set {key} to a "
        "database every executor can reach (e.g. postgresql://host/db)"
    )


def _best_trial(study: Any) -> Any:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        return study.best_trial
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


def _write_tune_report(summary: TuneSummary, out: Path) -> Path:
    from lakenet.reports import tune_html

    write_json(out / "tune.json", summary.to_dict())
    atomic_write(out / "tune.html", tune_html(summary))
    return out / "tune.html"


def _best_config(base: Config, best: Any, summary: TuneSummary, path: Path) -> Path:
    raw = base.with_overrides({"tune": None, **best.params}).to_yaml_dict()  # validated on the way
    header = (
        f"# Best configuration of study {summary.study}: trial {best.number}, "
        f"{summary.metric} {best.value:.6g} ({summary.direction}).\n"
        f"# Tuned values: {json.dumps(dict(best.params))}\n"
        "# data.version is pinned to the table version the study searched on.\n"
    )
    atomic_write(path, header + yaml.safe_dump(raw, sort_keys=False))
    return path
