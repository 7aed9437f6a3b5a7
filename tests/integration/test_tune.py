"""`lakenet tune` on the local engine: a real Optuna study in sqlite, trials as real training runs, MLflow
child runs, pruning, failing trials, parallel trial processes, resume after a crash or Ctrl-C, refit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

import lakenet
from lakenet.config.loader import load_config
from tests.tune_helpers import load_study, wine_tune_config

pytestmark = pytest.mark.integration


def test_tune_registers_the_best_configuration(wine_csv: Path, workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    res = lakenet.tune(wine_tune_config(wine_csv, trials=8), quiet=True)
    assert sum(res.counts[k] for k in ("complete", "pruned", "failed")) == 8
    study = load_study(workdir, res.study)
    assert len(study.trials) == 8
    best = study.best_trial
    assert res.best_trial == best.number and res.best_value == best.value
    assert res.best_value >= 0.8  # wine is easy; the best of 8 configurations must have learned it

    # ASHA stopped some trials before their 9-epoch budget, and they trained only as far as they reported.
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "ASHA pruned nothing in 8 random trials"
    for t in pruned:
        assert t.user_attrs["trained_epochs"] == len(t.intermediate_values) < 9
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["trained_epochs"] == 9

    # The best configuration is a full YAML that validates, carries the best values and no tune section.
    best_cfg = load_config(res.best_config)
    assert best_cfg.tune is None
    assert best_cfg.model.width == best.params["model.width"]
    assert best_cfg.trainer.learning_rate == pytest.approx(best.params["trainer.learning_rate"])
    assert best_cfg.data.version is None or best_cfg.data.version >= 0

    # Registered with the tuning lineage, evaluated on the test split.
    assert res.fit is not None and res.fit.metrics["test_accuracy"] >= 0.7
    client = MlflowClient()
    mv = client.get_model_version("wine", res.fit.version)
    assert mv.tags["lakenet.tune.study"] == res.study
    assert mv.tags["lakenet.tune.best_trial"] == str(best.number)

    # One parent run, one child run per trial, each closed with the trial's state.
    parent = client.get_run(mv.tags["lakenet.tune.parent_run"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 8
    states = sorted(c.data.tags["lakenet.tune.state"] for c in children)
    assert states.count("pruned") == len(pruned)
    assert all(c.info.status in {"FINISHED", "KILLED"} for c in children)

    # The report has every part the issue asks for.
    html = res.report.read_text()
    for part in ("Optimisation history", "Parameter importances", "Parallel coordinates", "pruned"):
        assert part in html
    summary = json.loads((res.report.parent / "tune.json").read_text())
    assert summary["counts"]["pruned"] == len(pruned)


def test_a_failing_trial_does_not_stop_the_study(wine_csv: Path, workdir: Path) -> None:
    raw = wine_tune_config(wine_csv, trials=6, pruner="none")
    raw["model"] = {"module": "tests.tune_helpers:FragileMLP", "width": 16}
    raw["tune"]["space"] = {"model.width": {"choice": [13, 16]}, "trainer.learning_rate": {"choice": [0.01, 0.03]}}
    res = lakenet.tune(raw, quiet=True, register=False)
    study = load_study(workdir, res.study)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert failed and complete and len(study.trials) == 6
    assert {t.params["model.width"] for t in failed} == {13}
    assert all("width 13" in t.user_attrs["fail_reason"] for t in failed)
    assert res.counts["failed"] == len(failed) and res.fit is None


def test_no_complete_trial_is_a_clear_error(wine_csv: Path, workdir: Path) -> None:
    raw = wine_tune_config(wine_csv, trials=2, pruner="none")
    raw["model"] = {"module": "tests.tune_helpers:FragileMLP", "width": 16}
    raw["tune"]["space"] = {"model.width": {"choice": [13]}}
    with pytest.raises(lakenet.LakenetError, match=r"No trial .* completed[\s\S]*width 13"):
        lakenet.tune(raw, quiet=True)


def test_parallel_trials_run_in_separate_processes(wine_csv: Path, workdir: Path) -> None:
    res = lakenet.tune(wine_tune_config(wine_csv, trials=4, parallel=2, pruner="none"), quiet=True, register=False)
    study = load_study(workdir, res.study)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    runners = {t.user_attrs["runner"].rsplit(":", 1)[1] for t in study.trials}
    pids = {t.user_attrs["runner"].split(":")[1] for t in study.trials}
    assert runners == {"0", "1"} and len(pids) == 2 and str(os.getpid()) not in pids


def test_refit_trains_on_train_and_validation(wine_csv: Path, workdir: Path) -> None:
    raw = wine_tune_config(wine_csv, trials=3, pruner="none", refit=True)
    raw["trainer"]["early_stopping"] = {"metric": "val_accuracy", "patience": 3}
    res = lakenet.tune(raw, quiet=True)
    assert res.fit is not None
    best = load_study(workdir, res.study).best_trial
    # the refit trains for the best trial's best number of epochs, with no validation split to report on
    assert len(res.fit.history) == best.user_attrs["best_epoch"] + 1
    assert all(not any(k.startswith("val_") for k in h) for h in res.fit.history)
    assert res.fit.metrics["test_accuracy"] >= 0.7


def _start_tune(config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "lakenet.cli", "tune", str(config), "--no-register"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would reach it
    )


def _study_created(db: Path) -> bool:
    """A read-only look: a connection in mode=ro can neither create the file nor its tables."""
    import sqlite3

    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return con.execute("SELECT COUNT(*) FROM studies").fetchone()[0] > 0
    except sqlite3.Error:  # no studies table yet, or locked by the writer
        return False


def _wait_for_trials(workdir: Path, proc: subprocess.Popen[bytes], done: int, timeout: float = 120) -> str:
    import optuna

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.communicate()[0].decode()  # reads and closes the pipe
            raise AssertionError(f"lakenet tune exited with {proc.returncode}:\n{output}")
        # Only once the study exists: opening the storage while the tune process is still creating its tables
        # would race it to the schema (both write alembic_version).
        if _study_created(workdir / "optuna.db"):
            names = optuna.study.get_all_study_names(f"sqlite:///{workdir / 'optuna.db'}")
            if names:
                study = load_study(workdir, names[0])
                trials = study.get_trials(deepcopy=False)
                running = [t for t in trials if t.state == TrialState.RUNNING]
                # ... and the running trial has finished an epoch, so it has a checkpoint to continue from
                if sum(t.state.is_finished() for t in trials) >= done and running and running[0].intermediate_values:
                    return names[0]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {done} trials finished in {timeout} s")


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_an_interrupted_study_continues(wine_csv: Path, workdir: Path, how: str) -> None:
    raw = wine_tune_config(wine_csv, trials=5, pruner="none", heartbeat_seconds=1)
    raw["trainer"]["epochs"] = 60  # long enough trials to stop one in the middle
    config = workdir / "wine.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = _start_tune(config, workdir)
    name = _wait_for_trials(workdir, proc, done=2)
    os.killpg(proc.pid, signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    output = proc.communicate(timeout=60)[0].decode()
    before = load_study(workdir, name).trials
    finished_before = [t for t in before if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if how == "ctrl-c":
        assert proc.returncode == 130 and "continues its study" in output
        interrupted = [t for t in before if t.state == TrialState.FAIL]
        assert len(interrupted) == 1 and "interrupted" in interrupted[0].user_attrs["fail_reason"]
        assert [t.state for t in before].count(TrialState.WAITING) == 1  # queued to run again
    else:
        assert [t.state for t in before].count(TrialState.RUNNING) == 1  # nobody told the study

    res = lakenet.tune(config, quiet=True, register=False)  # the same file continues the same study
    assert res.study == name
    after = load_study(workdir, name).trials
    # earlier results are kept, the stopped configuration ran again, and the study has its 5 trials
    for t in finished_before:
        assert after[t.number].state == t.state and after[t.number].value == t.value
    retried = [t for t in after if t.system_attrs.get("failed_trial") is not None]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs["resumed_from_step"] > 0  # it continued from the stopped trial's checkpoint
    stopped = after[retried[0].system_attrs["failed_trial"]]
    assert stopped.params == retried[0].params and stopped.state == TrialState.FAIL
    assert res.counts["complete"] + res.counts["pruned"] + res.counts["failed"] == 5
    assert res.counts["retried"] == 1


def test_time_budget_stops_the_search(wine_csv: Path, workdir: Path) -> None:
    raw = wine_tune_config(wine_csv, trials=1000, pruner="none", time_budget="1s")
    raw["trainer"]["epochs"] = 1  # a trial on its last epoch is complete, whatever the clock says
    res = lakenet.tune(raw, quiet=True, register=False)
    assert 1 <= len(load_study(workdir, res.study).trials) < 1000  # the clock starts with the runner

    # a running trial stops at its next epoch once the budget is spent: here, the only one
    raw = wine_tune_config(wine_csv, trials=1000, pruner="none", time_budget="2s")
    raw["trainer"]["epochs"] = 100_000
    t0 = time.monotonic()
    with pytest.raises(lakenet.LakenetError, match=r"No trial .* completed .*'pruned': 1[\s\S]*time_budget"):
        lakenet.tune(raw, quiet=True, register=False)
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize(("sampler", "pruner"), [("grid", "hyperband"), ("tpe", "median")])
def test_samplers_and_pruners(wine_csv: Path, workdir: Path, sampler: str, pruner: str) -> None:
    raw = wine_tune_config(wine_csv, trials=4, sampler=sampler, pruner=pruner)
    raw["trainer"]["epochs"] = 3
    if sampler == "grid":
        raw["tune"]["space"] = {"model.width": {"choice": [4, 16]}, "trainer.learning_rate": {"choice": [0.01, 0.1]}}
    res = lakenet.tune(raw, quiet=True, register=False)
    study = load_study(workdir, res.study)
    assert len(study.trials) == 4 and res.counts["failed"] == 0
    if sampler == "grid":  # every grid point exactly once
        combos = {(t.params["model.width"], t.params["trainer.learning_rate"]) for t in study.trials}
        assert combos == {(4, 0.01), (4, 0.1), (16, 0.01), (16, 0.1)}
