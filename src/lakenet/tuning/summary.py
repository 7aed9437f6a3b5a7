"""A study summarised, typed: the counts per state, the best trial, parameter importances and one row per trial.
`TuneSummary.to_dict()` is tune.json; the tuning report (`lakenet.reports.tune_html`) reads the dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["TrialRow", "TuneSummary", "summarise_study"]


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete, pruned, failed, retried (failed, then run again as another trial), running, ...
    value: float | None
    params: dict[str, Any]
    intermediate: dict[int, float]  # the value reported after each epoch: what the pruner saw
    epochs: int | None  # epochs trained
    seconds: float | None
    reason: str | None  # why it failed, was pruned or was retried
    start: str | None  # ISO 8601


@dataclass(frozen=True)
class TuneSummary:
    study: str
    metric: str
    direction: str  # maximize or minimize
    counts: dict[str, int]  # trials per state, in this study so far (all sessions)
    best_value: float | None  # None until a trial completes
    best_trial: int | None
    best_params: dict[str, Any]
    importances: dict[str, float]  # fANOVA, with at least 3 complete trials
    importance_note: str | None  # why there are no importances
    space: dict[str, Any]  # the config's tune.space
    trials: list[TrialRow]

    def to_dict(self) -> dict[str, Any]:
        """tune.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuneSummary:
        """A tune.json read back: the inverse of `to_dict` (JSON keeps the epochs of `intermediate` as text)."""
        trials = [
            TrialRow(**{**t, "intermediate": {int(k): float(v) for k, v in t["intermediate"].items()}})
            for t in data["trials"]
        ]
        return cls(**{**data, "trials": trials})


def summarise_study(study: Any, metric: str) -> TuneSummary:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rows, counts = _trial_rows(trials)
    any_complete = any(t.state == TrialState.COMPLETE for t in trials)
    importances, importance_note = _importances(study, counts["complete"])
    return TuneSummary(
        study=study.study_name,
        metric=metric,
        direction=study.direction.name.lower(),
        counts=counts,
        best_value=study.best_value if any_complete else None,
        best_trial=study.best_trial.number if any_complete else None,
        best_params=dict(study.best_params) if any_complete else {},
        importances=importances,
        importance_note=importance_note,
        space=study.user_attrs.get("config", {}).get("tune", {}).get("space", {}),
        trials=rows,
    )


def _trial_rows(trials: list[Any]) -> tuple[list[TrialRow], dict[str, int]]:
    """One row per trial for the report, and the count per state (a dead trial that was retried: 'retried')."""
    from optuna.trial import TrialState

    from lakenet.tuning.study import finished

    counted = {t.number for t in finished(trials)}
    retried_as = {n: t.number for t in trials for n in t.system_attrs.get("retry_history", [])[-1:]}
    counts = {"complete": 0, "pruned": 0, "failed": 0, "retried": 0, "running": 0}
    rows = []
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    for t in trials:
        state = names.get(t.state, t.state.name.lower())
        if t.state == TrialState.FAIL and t.number not in counted:
            state = "retried"
        counts[state] = counts.get(state, 0) + 1
        rows.append(
            TrialRow(
                number=t.number,
                state=state,
                value=t.value,
                params=dict(t.params),
                intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                epochs=t.user_attrs.get("trained_epochs"),
                seconds=t.user_attrs.get("seconds"),
                reason=_trial_reason(t, retried_as.get(t.number)),
                start=t.datetime_start.isoformat() if t.datetime_start else None,
            )
        )
    return rows, counts


def _importances(study: Any, complete: int) -> tuple[dict[str, float], str | None]:
    """fANOVA parameter importances, or why there are none."""
    if complete < 3 or not study.best_params:
        return {}, "parameter importances need at least 3 complete trials"
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
        return {k: float(v) for k, v in found.items()}, None
    except (RuntimeError, ValueError) as err:
        return {}, f"parameter importances unavailable: {err}"


def _trial_reason(t: Any, retried_as: int | None) -> str | None:
    reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("state_reason")
    if retried_as is None:
        return reason
    return f"{reason or 'its process stopped'}; retried as trial {retried_as}"
