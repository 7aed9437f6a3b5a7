"""`lakenet train` and `lakenet evaluate`: scan, train on the engine, choose the threshold, evaluate on the test
split beside a baseline, and register the bundle, once per training run (a resumed run continues its MLflow run
and a finished one returns its version)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakenet._version import __version__
from lakenet.config.loader import config_hash, dump_config
from lakenet.config.schema import Config
from lakenet.data.quarantine import enforce_bad_fraction
from lakenet.data.sources import Snapshot, open_table
from lakenet.engines import get_engine
from lakenet.errors import TrainingError
from lakenet.evaluation.report import Baseline, Evaluation
from lakenet.training.callbacks import Callback, ConsoleProgress
from lakenet.workflows.common import atomic_write, reports_dir, resolve, scratch_dir, write_json
from lakenet.workflows.profile import scan, write_profile

if TYPE_CHECKING:
    import torch

    from lakenet.inference.predictor import Predictor
    from lakenet.models.bundle import Bundle
    from lakenet.tracking.store import TrackedRun
    from lakenet.training.job import TrainJob, TrainOutcome
    from lakenet.training.plan import TrainPlan

__all__ = ["FitResult", "Trained", "choose_threshold", "run_evaluate", "run_fit", "train_on_engine"]

_BUNDLE_PROFILE = ("table", "splits", "label", "bad_rows")  # the profile's sections a bundle keeps


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
class Trained:
    """Weights trained elsewhere (a tuning trial): register them instead of training again."""

    output_dir: Path
    table_version: int | None


def train_on_engine(
    cfg: Config, job: TrainJob, *, spark: Any = None, callbacks: Sequence[Callback] = (), progress: bool = True
) -> tuple[dict[str, torch.Tensor], TrainOutcome]:
    """Run the training loop on the config's engine; the kept weights and the outcome rank 0 left."""
    from lakenet.training.job import TrainOutcome
    from lakenet.training.loop import resolve_device

    cbs = [ConsoleProgress(job.watch), *callbacks] if progress else list(callbacks)
    engine = get_engine(cfg.engine, spark=spark)
    engine.train(job, workers=cfg.engine.workers, device=resolve_device(cfg.trainer.device), callbacks=cbs)
    return TrainOutcome.weights(job.output_dir), TrainOutcome.load(job.output_dir)


# ---- checkpoint bookkeeping: which run a checkpoint belongs to and how far it got ------------------------------
def _job_state(ckpt_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((ckpt_dir / "job.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_job_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(ckpt_dir / "job.json", json.dumps(state))


def _refuse_to_drop_checkpoint(cfg: Config, ckpt_dir: Path, job_state: dict[str, Any]) -> None:
    """A new run would delete an interrupted run's checkpoint: say so instead, and how to choose."""
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


def _resume_version(cfg: Config, ckpt_dir: Path) -> int | None:
    """A resumed run reads the table version the interrupted run read, and only with the same config."""
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


def _registered_fit(cfg: Config, wd: Path, job_state: dict[str, Any]) -> FitResult:
    """`--resume` of a run that already finished: its registration, not a second one."""
    from lakenet.tracking.store import list_models

    version = str(job_state.get("version"))
    info = next(
        (v for m in list_models() if m["name"] == cfg.registry.name for v in m["versions"] if v["version"] == version),
        None,
    )
    if info is None:
        raise TrainingError(
            f"--resume: the run of {cfg.registry.name!r} finished and registered version {version}, which is no "
            "longer in the registry. Train again with --restart."
        )
    reports = reports_dir(cfg, wd)
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


# ---- the steps of a fit ----------------------------------------------------------------------------------------
@dataclass
class _Fit:
    """One fit in progress: what the steps after training share."""

    cfg: Config
    wd: Path
    plan: TrainPlan
    ckpt_dir: Path
    job_state: dict[str, Any]
    lineage: dict[str, Any]
    trained: Trained | None
    refit: bool
    reports: dict[str, Path] = field(default_factory=dict)
    spark: Any = None  # the caller's SparkSession, if any: where the evaluation passes run too

    @property
    def snap(self) -> Snapshot:
        return self.plan.snapshot


def run_fit(
    cfg: Config,
    wd: Path,
    *,
    resume: bool = False,
    restart: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    spark: Any = None,
    refit: bool = False,
    trained: Trained | None = None,
    tags: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> FitResult:
    """Profile, train (or take `trained` weights), evaluate and register; see `lakenet.api.fit`."""
    from lakenet.tracking.store import setup_tracking

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
    fit = _plan_fit(cfg, wd, pinned, spark, ckpt_dir=ckpt_dir, trained=trained, refit=refit)
    if not resume and trained is None:
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True)
        fit.job_state = {"config_hash": config_hash(cfg), "table_version": fit.snap.version, "state": "running"}
        _write_job_state(ckpt_dir, fit.job_state)
    else:
        fit.job_state = job_state
    fit.lineage.update(tags or {})
    return _tracked_fit(fit, resume=resume, callbacks=callbacks, progress=progress, spark=spark, run_name=run_name)


def _plan_fit(
    cfg: Config, wd: Path, pinned: int | None, spark: Any, *, ckpt_dir: Path, trained: Trained | None, refit: bool
) -> _Fit:
    """Scan (bad rows quarantined, the profile written), check the model builds, gather the lineage."""
    from lakenet.models.registry import build_model, config_trust
    from lakenet.tracking.store import git_commit

    requested = config_hash(cfg)  # the config as written: what --resume compares
    plan, quarantine = scan(cfg, pinned, wd, spark=spark)
    enforce_bad_fraction(plan.scan, plan.config.data.max_bad_fraction, quarantine)
    build_model(plan.spec, trusted=config_trust(plan.config))  # fail fast (bad custom module) before any process
    from lakenet.training.loop import resolve_device

    resolve_device(cfg.trainer.device)  # and on a missing GPU, before the old checkpoint is discarded
    snap = plan.snapshot
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
    }
    fit = _Fit(plan.config, wd, plan, ckpt_dir, {}, lineage, trained, refit, spark=spark)  # features resolved
    profile_json, profile_html = write_profile(plan.scan, reports_dir(fit.cfg, wd))
    fit.reports = {"profile_json": profile_json, "profile": profile_html}
    return fit


def _tracked_fit(
    fit: _Fit, *, resume: bool, callbacks: Sequence[Callback], progress: bool, spark: Any, run_name: str | None
) -> FitResult:
    from lakenet.tracking.store import MlflowMetrics, start_run

    cfg, snap = fit.cfg, fit.snap
    experiment = cfg.tracking.experiment or cfg.registry.name
    # A resumed run continues the interrupted run's MLflow run: one training run, one registered version.
    continued = fit.job_state.get("run_id") if resume else None
    with start_run(experiment, run_name or f"train-{cfg.registry.name}", tags=fit.lineage, run_id=continued) as run:
        if fit.trained is None:
            _write_job_state(fit.ckpt_dir, {**fit.job_state, "run_id": run.run_id, "state": "running"})
        run.log_params(cfg.to_yaml_dict())
        run.log_text(dump_config(cfg), "config.yaml")
        run.log_artifact(fit.reports["profile_json"], "reports")
        run.log_artifact(fit.reports["profile"], "reports")
        run.log_metrics({"bad_rows": fit.plan.scan.bad_rows.num_rows, "rows": snap.num_rows})
        if fit.trained is None:
            out_dir = Path(tempfile.mkdtemp(prefix="train-", dir=scratch_dir(fit.wd)))
            try:
                job = fit.plan.job(output_dir=out_dir, checkpoint_dir=fit.ckpt_dir, resume=resume, refit=fit.refit)
                cbs = [MlflowMetrics(run.run_id, run.tracking_uri), *callbacks]
                weights, outcome = train_on_engine(cfg, job, spark=spark, callbacks=cbs, progress=progress)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
        else:
            from lakenet.training.job import TrainOutcome

            weights, outcome = TrainOutcome.weights(fit.trained.output_dir), TrainOutcome.load(fit.trained.output_dir)
        bundle = _bundle(fit, weights, outcome)
        result = _evaluate_and_register(fit, run, bundle, outcome)
    return result


def _bundle(fit: _Fit, weights: dict[str, torch.Tensor], outcome: TrainOutcome) -> Bundle:
    from lakenet.models.bundle import Bundle

    cfg, plan = fit.cfg, fit.plan
    return Bundle(
        spec=plan.spec,
        preprocessor=plan.scan.preprocessor,
        weights=weights,
        lineage={k[len("lakenet.") :]: v for k, v in fit.lineage.items()},
        profile={k: v for k, v in plan.scan.profile.to_dict().items() if k in _BUNDLE_PROFILE},
        training={
            **outcome.summary(),
            **({"pretrained": plan.pretrained.report} if plan.pretrained else {}),
            "split": cfg.data.split.model_dump(),  # drift and updates find the training rows again
            "config": cfg.to_yaml_dict(),  # the resolved config: what an update starts from
        },
    )


def _evaluate_and_register(fit: _Fit, run: TrackedRun, bundle: Bundle, outcome: TrainOutcome) -> FitResult:
    """Threshold on validation, test-split evaluation beside the baseline, reports, then the registration."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.evaluation.recommend import evaluate_recommendations
    from lakenet.inference.predictor import Predictor
    from lakenet.models.registry import config_trust

    cfg, snap, trust = fit.cfg, fit.snap, config_trust(fit.cfg)
    kept_val = {k: v for k, v in outcome.kept_entry(cfg.trainer.early_stopping is not None).items() if k[:4] == "val_"}
    engine = get_engine(cfg.engine, spark=fit.spark)  # the evaluation passes run where training ran
    bundle_dir = bundle.save(fit.wd / ".lakenet" / "bundles" / run.run_id)  # what the engine's workers load
    threshold = choose_threshold(cfg, snap, bundle, trust, engine=engine, bundle_dir=bundle_dir)
    if threshold:
        bundle.save(bundle_dir)
    predictor = Predictor(bundle, trust_modules=trust)
    if fit.plan.split is not None:  # a recommender: its own holdout, metrics and baseline
        report = evaluate_recommendations(snap, predictor, fit.plan.split, k=cfg.recommend.k,
                                          eval_users=cfg.recommend.eval_users, exclude_seen=cfg.recommend.exclude_seen,
                                          engine=engine, bundle_dir=str(bundle_dir))  # fmt: skip
        baseline = report.baseline or Baseline()
    else:
        tested = evaluate_split(snap, predictor, cfg.data.split, engine=engine, bundle_dir=str(bundle_dir))
        report = global_view(cfg, snap, predictor, tested)
    metrics = {**kept_val, **report.metrics, **threshold}
    if fit.plan.split is None:
        baseline = _baseline(cfg, fit.plan, report) if fit.trained is None or fit.refit else Baseline()
    report = replace(report, baseline=baseline)
    metrics.update({f"baseline_{k}": v for k, v in (baseline.metrics or {}).items()})
    bundle.metrics = metrics
    bundle.save(bundle_dir)
    run.log_metrics({k: v for k, v in metrics.items() if not k.startswith("val_")})
    if baseline.summary:
        run.set_tags({"lakenet.baseline": baseline.summary})
    eval_paths = write_evaluation(report, outcome.history, reports_dir(cfg, fit.wd), model={"name": cfg.registry.name})
    for p in eval_paths.values():
        run.log_artifact(p, "reports")
    run.log_metrics({"train_seconds": outcome.train_seconds, "nonfinite_steps": outcome.nonfinite_steps})
    version = run.register_bundle(
        bundle_dir,
        name=cfg.registry.name,
        alias=cfg.registry.alias,
        signature=bundle.signature(),
        requirements=bundle.requirements(),
        tags={
            **fit.lineage,
            "lakenet.metrics": json.dumps({k: v for k, v in metrics.items() if not k.startswith("val_")}),
            "lakenet.run_id": run.run_id,
            "lakenet.task": bundle.preprocessor.label.task,
            "lakenet.signature": json.dumps(bundle.signature()),
            **({"lakenet.baseline": baseline.summary} if baseline.summary else {}),
        },
        allow_incompatible=cfg.registry.allow_incompatible,
    )
    if fit.trained is None:
        _write_job_state(
            fit.ckpt_dir, {**fit.job_state, "run_id": run.run_id, "state": "registered", "version": version}
        )
    name, refused = cfg.registry.name, run.alias_refused
    return FitResult(
        model_uri=f"models:/{name}/{version}" if refused else f"models:/{name}@{cfg.registry.alias}",
        name=name,
        version=version,
        run_id=run.run_id,
        metrics=metrics,
        reports={"profile": fit.reports["profile"], **eval_paths},
        bundle_dir=bundle_dir,
        history=outcome.history,
        alias_refused=refused,
        baseline=baseline.summary or baseline.skipped,
    )


def choose_threshold(
    cfg: Config,
    snap: Snapshot,
    bundle: Bundle,
    trust: tuple[str, ...],
    *,
    engine: Any = None,
    bundle_dir: Path | None = None,
) -> dict[str, float]:
    """Two classes: the decision threshold on the rarer class's probability, chosen on the validation split to
    maximise its F1 (or as configured), stored in the bundle so predict and serve use it. Anomaly: the score's
    calibration and threshold. Its figures. `engine` and `bundle_dir` (the bundle saved): score the validation
    split there."""
    from lakenet.data.split import VAL
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor

    label = bundle.preprocessor.label
    if label.task == "anomaly":
        from lakenet.evaluation.anomaly import calibrate_anomaly

        where = str(bundle_dir) if bundle_dir is not None else None
        return calibrate_anomaly(cfg, snap, bundle, trust, engine=engine, bundle_dir=where)
    setting = cfg.trainer.threshold
    if label.task != "classification" or len(label.classes or []) != 2 or setting == "none":
        return {}
    if isinstance(setting, float):
        value, f1 = setting, None
    else:
        if cfg.data.split.val == 0:
            return {}
        predictor = Predictor(bundle, trust_modules=trust)
        where = str(bundle_dir) if bundle_dir is not None else None
        val = evaluate_split(snap, predictor, cfg.data.split, split=VAL, prefix="val", scores=True, engine=engine,
                             bundle_dir=where)  # fmt: skip
        found = val.scores.histogram.best_f1_threshold() if val.scores is not None else None
        if found is None:
            return {}
        value, f1 = found
    bundle.preprocessor.label = replace(label, threshold=float(value))
    return {"threshold": float(value), **({"val_f1_at_threshold": f1} if f1 is not None else {})}


def _baseline(cfg: Config, plan: TrainPlan, report: Evaluation) -> Baseline:
    """scikit-learn's HistGradientBoosting on the same split, compared with the deep model (trainer.baseline)."""
    if cfg.trainer.baseline == "none":
        return Baseline()
    from lakenet.evaluation.baseline import fit_baseline

    return fit_baseline(cfg, plan.snapshot, plan.scan.preprocessor, report.metrics)


def global_view(cfg: Config, snap: Snapshot, predictor: Predictor, report: Evaluation) -> Evaluation:
    """The evaluation with permutation importance per column (and, for images, the mean attribution map per class)
    on the first trainer.importance_rows test rows."""
    from lakenet.evaluation.baseline import headline_metric
    from lakenet.evaluation.importance import class_maps, permutation_importance, test_rows

    t = cfg.trainer
    if t.importance_repeats == 0 or not report.rows or predictor.anomaly:
        return report
    rows = test_rows(snap, predictor, cfg.data.split, t.importance_rows)
    if rows is None:
        return report
    metric = headline_metric(predictor.pre.label.task, len(predictor.classes))
    importance = permutation_importance(predictor, rows, metric, repeats=t.importance_repeats, seed=t.seed)
    maps = class_maps(predictor, rows) if predictor.pre.image is not None and predictor.classification else None
    return replace(report, importance=importance, importance_metric=f"test_{metric}", class_maps=maps or None)


def _evaluate_recommender(
    cfg: Config, snap: Snapshot, predictor: Predictor, engine: Any, bundle_dir: str
) -> Evaluation:
    """A recommender on the config's table as it is now: each user's last interactions held out again."""
    from lakenet.data.holdout import learn_holdout
    from lakenet.evaluation.recommend import evaluate_recommendations

    rec = cfg.recommend
    holdout = learn_holdout(snap, user=rec.user, time=rec.timestamp, key=cfg.data.key, holdout=rec.holdout,
                            map_fragments=engine.map_fragments)  # fmt: skip
    return evaluate_recommendations(snap, predictor, holdout, k=rec.k, eval_users=rec.eval_users,
                                    exclude_seen=rec.exclude_seen, engine=engine, bundle_dir=bundle_dir)  # fmt: skip


def write_evaluation(
    report: Evaluation, history: list[dict[str, float]], out: Path, *, model: dict[str, Any]
) -> dict[str, Path]:
    from lakenet.reports import evaluation_html

    full = replace(report, history=history, model=model)
    json_path, html_path = write_json(out / "evaluation.json", full.to_dict()), out / "evaluation.html"
    atomic_write(html_path, evaluation_html(full))
    return {"evaluation": html_path, "evaluation_json": json_path}


def run_evaluate(cfg: Config, wd: Path, *, model: str, trust: tuple[str, ...]) -> dict[str, Any]:
    """Score the config's test split with `model`; the evaluation report, logged as a run."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor
    from lakenet.tracking.store import setup_tracking, start_run

    setup_tracking(cfg.tracking, workdir=wd)
    resolved = resolve(model, wd, cfg.tracking)
    predictor = Predictor(
        resolved.bundle_dir, model_name=resolved.name, model_version=resolved.version, trust_modules=trust
    )
    snap = open_table(cfg.data.table, cfg.data.version)
    label = predictor.pre.label.column
    snap.require_columns({predictor.pre.key: "data.key", **({label: "features.label.column"} if label else {})})
    engine = get_engine(cfg.engine)
    if predictor.task == "recommendation":
        report = _evaluate_recommender(cfg, snap, predictor, engine, str(resolved.bundle_dir))
    else:
        tested = evaluate_split(snap, predictor, cfg.data.split, engine=engine, bundle_dir=str(resolved.bundle_dir))
        report = global_view(cfg, snap, predictor, tested)
    history = predictor.bundle.training.get("history", [])
    info = {"name": resolved.name, "version": resolved.version, "uri": model}
    paths = write_evaluation(report, history, reports_dir(cfg, wd), model=info)
    with start_run(
        cfg.tracking.experiment or cfg.registry.name,
        f"evaluate-{resolved.name or 'bundle'}",
        tags={"lakenet.model": model, "lakenet.table": snap.uri, "lakenet.table_version": snap.version},
    ) as run:
        run.log_metrics(report.metrics)
        for p in paths.values():
            run.log_artifact(p, "reports")
    return {**report.to_dict(), "reports": {k: str(v) for k, v in paths.items()}, "model": info}
