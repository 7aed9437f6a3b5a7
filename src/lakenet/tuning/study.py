"""The Optuna side of tuning: the search space as distributions, samplers, pruners, and the study in its
database (named after the config, so running the same file again continues it)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lakenet.config.schema import Config, SearchParam, TuneConfig
from lakenet.errors import ConfigError
from lakenet.evaluation.metrics import metric_mode

__all__ = [
    "ask",
    "direction",
    "distributions",
    "fail_stale",
    "finished",
    "make_pruner",
    "make_sampler",
    "open_study",
    "requeue",
    "retried_trial_number",
    "retry_callback",
    "snapshot_trials",
    "storage_url",
    "study_name",
    "suggest",
    "target_trials",
]

MAX_RETRIES = 2  # a configuration whose process died is tried again at most this many times


def _distribution(p: SearchParam) -> BaseDistribution:
    if p.uniform is not None:
        return FloatDistribution(p.uniform[0], p.uniform[1])
    if p.log_uniform is not None:
        return FloatDistribution(p.log_uniform[0], p.log_uniform[1], log=True)
    if p.int_uniform is not None:
        return IntDistribution(p.int_uniform[0], p.int_uniform[1])
    if p.log_int_uniform is not None:
        return IntDistribution(p.log_int_uniform[0], p.log_int_uniform[1], log=True)
    assert p.choice is not None
    return CategoricalDistribution(p.choice)


def distributions(tune: TuneConfig) -> dict[str, BaseDistribution]:
    return {path: _distribution(p) for path, p in tune.space.items()}


def suggest(trial: optuna.Trial, tune: TuneConfig) -> dict[str, Any]:
    """The trial's value for every dotted path (a queued trial returns its fixed values)."""
    values: dict[str, Any] = {}
    for path, p in tune.space.items():
        if p.uniform is not None or p.log_uniform is not None:
            lo, hi = p.uniform or p.log_uniform  # type: ignore[misc]
            values[path] = trial.suggest_float(path, lo, hi, log=p.log_uniform is not None)
        elif p.int_uniform is not None or p.log_int_uniform is not None:
            lo_i, hi_i = p.int_uniform or p.log_int_uniform  # type: ignore[misc]
            values[path] = trial.suggest_int(path, lo_i, hi_i, log=p.log_int_uniform is not None)
        else:
            assert p.choice is not None
            values[path] = trial.suggest_categorical(path, p.choice)
    return values


def direction(tune: TuneConfig) -> str:
    if tune.direction != "auto":
        return tune.direction
    return "minimize" if metric_mode(tune.metric) == "min" else "maximize"


def study_name(cfg: Config) -> str:
    """The registry name plus a hash of everything that defines the search: the config without the keys that
    only say how long or how wide to search (trials, parallel, time budget, refit), which may change between
    runs of the same study."""
    assert cfg.tune is not None
    if cfg.tune.study:
        return cfg.tune.study
    d = cfg.to_yaml_dict()
    for k in ("trials", "parallel", "time_budget", "refit", "heartbeat_seconds", "storage"):
        d["tune"].pop(k, None)
    d["data"].pop("version", None)  # the study pins its own table version when it is created
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.registry.name}-{digest}"


def storage_url(tune: TuneConfig, tracking_uri: str, workdir: Path) -> str:
    """tune.storage, else a sqlite file optuna.db next to the MLflow sqlite store, else in the working dir."""
    if tune.storage:
        return tune.storage
    base = Path(tracking_uri[len("sqlite:///") :]).parent if tracking_uri.startswith("sqlite:///") else workdir
    return f"sqlite:///{(base / 'optuna.db').resolve()}"


def make_sampler(tune: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "grid":
        return _Grid(grid_space(tune), seed=seed)
    # Random start-up trials long enough for the model of good regions to be worth something.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, tune.trials // 3)))


def grid_space(tune: TuneConfig) -> dict[str, list[Any]]:
    return {path: p.grid_values() or [] for path, p in tune.space.items()}


def target_trials(tune: TuneConfig) -> int:
    """tune.trials, or the number of grid points if a grid has fewer."""
    if tune.sampler != "grid":
        return tune.trials
    return min(tune.trials, math.prod(len(v) for v in grid_space(tune).values()))


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is done (which only works inside
    Study.optimize); the runner stops at `target_trials` instead."""

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


def make_pruner(tune: TuneConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=tune.min_epochs, reduction_factor=tune.reduction_factor
        )
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=tune.min_epochs, max_resource=max_epochs, reduction_factor=tune.reduction_factor
        )
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=tune.min_epochs - 1)
    return optuna.pruners.NopPruner()


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Optuna's retry of a trial whose process stopped: its configuration is queued again (params, user attrs
    and reported epochs; `failed_trial` and `retry_history` in the retry's system attrs), at most MAX_RETRIES
    times. The storage calls it for a trial whose heartbeat stopped; the runner calls it after Ctrl-C."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental since 2.8
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES, inherit_intermediate_values=True)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the configuration of a trial whose process is stopping (Ctrl-C) to run again. Optuna only retries
    heartbeat-stale trials by itself, so an interrupted trial goes through the same callback here. Called while
    the trial is still running, before it records why it stopped: the callback copies every user attribute."""
    retry_callback()(study, trial)


def retried_trial_number(trial: FrozenTrial) -> int | None:
    """The first trial of the retry series `trial` belongs to, or None if it is no retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def open_study(
    tune: TuneConfig,
    name: str,
    url: str,
    *,
    max_epochs: int,
    seed: int,
    create: bool,
    on_create: Callable[[optuna.Study], None] | None = None,
) -> optuna.Study:
    """Create (or load) the study in its database, with this process's sampler and the config's pruner."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are, since 2.9
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            heartbeat_interval=tune.heartbeat_seconds,
            grace_period=3 * tune.heartbeat_seconds,
            heartbeat_stale_trial_callback=retry_callback(),
        )
    sampler, pruner = make_sampler(tune, seed), make_pruner(tune, max_epochs)
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    existed = name in optuna.study.get_all_study_names(storage)
    study = optuna.create_study(
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        study_name=name,
        direction=direction(tune),  # type: ignore[arg-type]
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction(tune):
        raise ConfigError(
            f"tune: study {name!r} in {url} optimises in direction {study.direction.name.lower()}, but "
            f"tune.direction resolves to {direction(tune)}; set tune.study to a new name"
        )
    if not existed and on_create is not None:
        on_create(study)
    return study


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose process stopped sending heartbeats; the storage's retry_callback queues their
    configurations again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def ask(study: optuna.Study) -> optuna.Trial:
    """The next trial (a queued retry first). Optuna warns that heartbeats are meant for Study.optimize; the
    runner sends them itself, from a thread, for every trial it asks for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        return study.ask()


def finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that count towards tune.trials: complete, pruned, or failed for a reason of their own (a trial
    whose process died and that was queued again does not count; its retry does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    done = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    return [t for t in trials if t.state in done and t.number not in retried]


def snapshot_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [copy.copy(t) for t in study.get_trials(deepcopy=False)]
