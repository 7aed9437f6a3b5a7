"""The trial runner: one copy runs in each local process or Spark task, asking the shared study for trials
until the study has enough of them or the time budget is spent. Each trial is the spine's training loop with
the sampled values, reporting its metric every epoch to the pruner and tracked as a nested MLflow run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.trial import Trial, TrialState

from lakenet.config.loader import config_hash
from lakenet.config.schema import Config
from lakenet.errors import LakenetError, TrainingError
from lakenet.training.callbacks import Callback
from lakenet.training.checkpoint import latest_checkpoint
from lakenet.training.loop import WorkerContext, train_worker
from lakenet.training.plan import TrainPlan, plan_training
from lakenet.tuning.study import (
    ask,
    fail_stale,
    finished,
    open_study,
    requeue,
    retried_trial_number,
    snapshot_trials,
    suggest,
    target_trials,
)

__all__ = ["TuneJob", "kept_value", "run_trials"]


@dataclass(frozen=True)
class TuneJob:
    """What every trial runner needs; picklable, so a local process or a Spark task can run it unchanged."""

    config: Config  # validated, with tune:, data.version pinned to the study's version
    study: str
    storage: str
    trials_dir: str  # one directory per configuration: checkpoints, and the weights of completed trials
    device: str = "cpu"
    threads: int | None = None  # torch threads per runner (trials × threads ≤ cores)
    time_budget: float | None = None  # seconds from the runner's start; then no trial starts or continues
    seed: int = 0  # sampler seed of runner 0 in this session; runner i uses seed + i
    parent_run: Any = None  # lakenet.tracking.store.TrackedRun of the tuning run, or None (no MLflow)
    quiet: bool = False


class _OutOfTime(Exception):
    pass


class _Reporter(Callback):
    """Reports the watched metric after every epoch; raises to stop a trial the pruner gives up on."""

    def __init__(self, trial: Trial, metric: str, max_epochs: int, deadline: float | None) -> None:
        self.trial, self.metric, self.max_epochs, self.deadline = trial, metric, max_epochs, deadline
        self.reported = set(trial.study._storage.get_trial(trial._trial_id).intermediate_values)
        self.epochs = 0

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        self.epochs += 1
        if self.metric not in logs:
            available = ", ".join(k for k in logs if k.startswith("val_"))
            raise TrainingError(f"tune.metric {self.metric!r} is not reported; available: {available}")
        epoch = int(logs["epoch"])
        value = float(logs[self.metric])
        if epoch not in self.reported and math.isfinite(value):
            self.trial.report(value, epoch)
            self.reported.add(epoch)
        # A trial that has trained its whole budget (or stopped early on its own) is complete, not pruned.
        last = epoch >= self.max_epochs or bool(getattr(state, "stopped_early", False))
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.metric} {value:.4g})")
        if self.deadline is not None and time.time() >= self.deadline and epoch < self.max_epochs:
            raise _OutOfTime(f"stopped by tune.time_budget after epoch {epoch}")


class _Heartbeat:
    """Tells the study this trial's process is alive, from a thread, every heartbeat interval."""

    def __init__(self, study: optuna.Study, trial: Trial, interval: float) -> None:
        self._stop = threading.Event()
        storage = study._storage

        def beat() -> None:
            while True:
                # A missed beat is retried at the next interval; the trial must not die of it.
                with contextlib.suppress(Exception):
                    storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
                if self._stop.wait(interval):
                    return

        self._thread = threading.Thread(target=beat, name="lakenet-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def kept_value(outcome: dict[str, Any], metric: str) -> float | None:
    """The metric of the weights a trial keeps: the early-stopping best epoch, else the last epoch."""
    history = outcome.get("history") or []
    if not history:
        return None
    best = outcome.get("best_epoch", -1)
    entry = history[best] if isinstance(best, int) and 0 <= best < len(history) else history[-1]
    value = entry.get(metric)
    return float(value) if value is not None else None


def _config_dir(root: Path, params: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return root / f"config-{digest}"


def _reason(err: BaseException) -> str:
    if isinstance(err, LakenetError):
        return str(err).strip()
    text = f"{type(err).__name__}: {err}".strip()
    if "out of memory" in text.lower():
        return f"out of memory ({text[:300]}); lower trainer.batch_size or model.width"
    return text[:1000]


def _say(job: TuneJob, text: str) -> None:
    if not job.quiet:
        print(text, file=sys.stderr, flush=True)


def _ask_lock(storage: str) -> contextlib.AbstractContextManager[Any]:
    """Runners count the trials and ask for the next one under one lock, so two of them cannot both see room
    for the last trial and both start one. A sqlite study lives on one machine (file stores are refused on a
    cluster), where a file lock next to it serialises every process; other databases go without (at worst
    `parallel - 1` trials more than tune.trials)."""
    if not storage.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return FileLock(storage.removeprefix("sqlite:///") + ".lock")


class _Runner:
    def __init__(self, job: TuneJob, index: int) -> None:
        self.job, self.index = job, index
        self.base = job.config
        assert self.base.tune is not None
        self.tune = self.base.tune
        self.study = open_study(
            self.tune,
            job.study,
            job.storage,
            max_epochs=self.base.trainer.epochs,
            seed=job.seed + index,
            create=False,
        )
        self.plans: dict[str, TrainPlan] = {}  # one scan per distinct (data, features) in this process
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        self.target = target_trials(self.tune)
        # The clock starts with the runner (not with set-up, imports or a Spark task's scheduling delay).
        self.deadline = time.time() + job.time_budget if job.time_budget else None

    def _plan(self, cfg: Config) -> TrainPlan:
        key = json.dumps(
            {
                "data": cfg.data.model_dump(mode="json"),
                "features": cfg.features.model_dump(mode="json"),
                "backbone": cfg.model.backbone.model_dump(mode="json") if cfg.model.backbone else None,
            }
        )
        if key not in self.plans:
            self.plans[key] = plan_training(cfg)
        return self.plans[key]

    def run(self) -> dict[str, int]:
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                break
            with _ask_lock(self.job.storage):
                fail_stale(self.study)
                trials = snapshot_trials(self.study)
                done = len(finished(trials))
                running = sum(t.state == TrialState.RUNNING for t in trials)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                if done >= self.target:
                    break
                trial = ask(self.study) if done + running < self.target or waiting else None
            if trial is None:
                # The last trials run elsewhere (another runner, or a dead process whose heartbeat will expire).
                time.sleep(min(self.tune.heartbeat_seconds, 2.0))
                continue
            self._trial(trial)
        return self.counts

    def _trial(self, trial: Trial) -> None:
        job, tune = self.job, self.tune
        params = suggest(trial, tune)
        retry_of = retried_trial_number(self.study._storage.get_trial(trial._trial_id))
        cdir = _config_dir(Path(job.trials_dir), params)
        trial.set_user_attr("config_dir", str(cdir))
        trial.set_user_attr("runner", f"{socket.gethostname()}:{os.getpid()}:{self.index}")
        heartbeat = _Heartbeat(self.study, trial, tune.heartbeat_seconds)
        child = self._child_run(trial, params, retry_of)
        t0 = time.perf_counter()
        reporter: _Reporter | None = None
        try:
            try:
                cfg = self.base.with_overrides({"tune": None, **params})
            except LakenetError as err:
                raise _BadCombination(str(err)) from None
            plan = self._plan(cfg)
            ckpt = cdir / "checkpoints"
            resume = latest_checkpoint(ckpt) is not None and _same_job(cdir, cfg)
            if not resume:
                shutil.rmtree(cdir, ignore_errors=True)
                cdir.mkdir(parents=True)
                (cdir / "job.json").write_text(json.dumps({"config_hash": config_hash(cfg)}))
            train_job = plan.job(output_dir=cdir / "out", checkpoint_dir=ckpt, resume=resume, config=cfg)
            reporter = _Reporter(trial, tune.metric, cfg.trainer.epochs, self.deadline)
            callbacks: list[Callback] = [reporter]
            if child is not None:
                from lakenet.tracking.store import MlflowMetrics

                callbacks.append(MlflowMetrics(child, job.parent_run.tracking_uri))
            train_worker(train_job, WorkerContext(0, 1, job.device), callbacks)
            outcome = json.loads((cdir / "out" / "result.json").read_text())
            value = kept_value(outcome, tune.metric)
            if value is None or not math.isfinite(value):
                raise TrainingError(f"tune.metric {tune.metric} is {value} for the kept weights")
            for k in ("best_epoch", "stopped_early"):
                trial.set_user_attr(k, outcome[k])
            trial.set_user_attr("epochs", len(outcome["history"]))
            trial.set_user_attr("trained_epochs", reporter.epochs)
            if outcome.get("resumed_from_step") is not None:
                trial.set_user_attr("resumed_from_step", outcome["resumed_from_step"])
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            self.study.tell(trial, value)
            shutil.rmtree(ckpt, ignore_errors=True)  # the weights in out/ stay, for registration
            self.counts["complete"] += 1
            self._end(child, trial, "FINISHED", "complete", f"{tune.metric} {value:.4g}", value=value)
        except (optuna.TrialPruned, _OutOfTime) as err:
            trial.set_user_attr("state_reason", str(err))
            self._tell_stopped(trial, reporter, t0, TrialState.PRUNED)
            shutil.rmtree(cdir, ignore_errors=True)
            self.counts["pruned"] += 1
            self._end(child, trial, "KILLED", "pruned", str(err))
        except KeyboardInterrupt:
            # Ctrl-C: the configuration is queued again and will continue from its checkpoint next time. Queued
            # first: the retry copies the trial's user attributes, and must not inherit its fail_reason.
            requeue(self.study, self.study._storage.get_trial(trial._trial_id))
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); queued to run again")
            self._tell_stopped(trial, reporter, t0, TrialState.FAIL)
            self._end(child, trial, "KILLED", "interrupted", "interrupted")
            raise
        except Exception as err:
            reason = _reason(err)
            trial.set_user_attr("fail_reason", reason)
            self._tell_stopped(trial, reporter, t0, TrialState.FAIL)
            shutil.rmtree(cdir, ignore_errors=True)
            self.counts["failed"] += 1
            self._end(child, trial, "FAILED", "failed", reason)
        finally:
            heartbeat.stop()

    def _tell_stopped(self, trial: Trial, reporter: _Reporter | None, t0: float, state: TrialState) -> None:
        if self.study._storage.get_trial(trial._trial_id).state.is_finished():
            return  # told already (something failed after the result was recorded)
        trial.set_user_attr("trained_epochs", reporter.epochs if reporter else 0)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        self.study.tell(trial, state=state)

    def _child_run(self, trial: Trial, params: dict[str, Any], retry_of: int | None) -> str | None:
        parent = self.job.parent_run
        if parent is None:
            return None
        from lakenet.tracking.store import start_child_run

        return start_child_run(
            parent,
            f"trial-{trial.number}",
            params=params,
            tags={
                "lakenet.tune.study": self.job.study,
                "lakenet.tune.trial": trial.number,
                "lakenet.tune.retry_of": retry_of,
            },
        )

    def _end(
        self, child: str | None, trial: Trial, status: str, state: str, detail: str, value: float | None = None
    ) -> None:
        frozen = self.study._storage.get_trial(trial._trial_id)
        epochs = frozen.user_attrs.get("trained_epochs", 0)
        secs = frozen.user_attrs.get("seconds", 0.0)
        _say(self.job, f"trial {trial.number}: {state}, {detail} ({epochs} epochs, {secs:.1f} s)")
        if child is None:
            return
        from lakenet.tracking.store import end_child_run

        metrics = {"trained_epochs": float(epochs), "seconds": float(secs)}
        if value is not None:
            metrics[self.tune.metric] = value
        end_child_run(
            self.job.parent_run.tracking_uri,
            child,
            status=status,
            metrics=metrics,
            tags={"lakenet.tune.state": state, "lakenet.tune.reason": None if state == "complete" else detail},
        )


class _BadCombination(Exception):
    def __str__(self) -> str:
        return f"invalid combination of sampled values: {self.args[0]}"


def _same_job(cdir: Path, cfg: Config) -> bool:
    try:
        return bool(json.loads((cdir / "job.json").read_text())["config_hash"] == config_hash(cfg))
    except (OSError, ValueError, KeyError):
        return False


def run_trials(job: TuneJob, index: int = 0) -> dict[str, int]:
    """Run trials of the study until it has tune.trials of them or the deadline passes; returns this runner's
    counts of complete, pruned and failed trials. Runs in a local process or a Spark task."""
    if job.threads is not None:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(job.threads)
        torch.set_num_threads(job.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _Runner(job, index).run()
