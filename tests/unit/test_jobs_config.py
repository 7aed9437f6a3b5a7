"""The jobs file: strict schema with the config's quality of errors, args checked against the API, durations,
cron expressions named with the fix, next fire times from a given clock, and the alert event rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import lakenet.jobs
from lakenet.errors import ConfigError, ExitCode, InfrastructureError
from lakenet.jobs.alerts import Alert, events_for
from lakenet.jobs.child import exit_code_for, figures
from lakenet.jobs.config import load_jobs, parse_duration

GOOD = """
jobs:
  score_new_rows:
    run: predict
    args: {model: models:/fraud@champion, table: data/fraud, out: data/fraud_scored, incremental: true}
    trigger: {table_update: data/fraud, min_new_rows: 1}
  weekly_update:
    run: update
    args: {config: fraud.yaml}
    trigger: {cron: "0 3 * * 1"}
  drift_every_6h:
    run: drift
    args: {model: models:/fraud@champion}
    trigger: {every: 6h}
    timeout: 30m
  new_files:
    run: ingest
    args: {table: data/fraud}
    trigger: {folder: incoming, pattern: "*.csv"}
alerts:
  email: {to: [ml-team@example.com], smtp: {host: localhost, port: 25}}
  webhook: {url: http://127.0.0.1:9000/hooks/lakenet}
  on: [failure, drift, promoted, not_promoted, slower_than: 30m]
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "jobs.yaml"
    p.write_text(text)
    return p


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_jobs(_write(tmp_path, text))
    return str(info.value)


def test_the_issue_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    jobs = load_jobs(_write(tmp_path, GOOD))
    job = jobs.job("score_new_rows")
    assert job.args["table"] == str(tmp_path / "data" / "fraud") and job.args["incremental"] is True
    assert job.args["model"] == "models:/fraud@champion"  # a registry reference is not a path
    assert job.trigger is not None and job.trigger.table_update == str(tmp_path / "data" / "fraud")  # type: ignore[union-attr]
    assert jobs.job("weekly_update").args["config"] == str(tmp_path / "fraud.yaml")
    assert jobs.job("drift_every_6h").trigger.every == 6 * 3600  # type: ignore[union-attr]
    assert jobs.job("drift_every_6h").timeout == 1800
    assert jobs.alerts is not None and jobs.alerts.slower_than == 1800  # `on:` survives YAML 1.1's `on` = true
    assert jobs.alerts.wants("drift") and jobs.workdir == str(tmp_path)


def test_unknown_keys_are_named_with_the_nearest_valid_one(tmp_path: Path) -> None:
    msg = _error(tmp_path, "jobs:\n  a:\n    run: drift\n    args: {model: m}\n    trigerr: {every: 1h}\n")
    assert "jobs.a.trigerr: unknown key; did you mean 'trigger'?" in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: updat\n    args: {config: c.yaml}\n")
    assert "jobs.a.run:" in msg and "did you mean 'update'?" in msg
    msg = _error(tmp_path, "jobs: {}\nalert: {}\n")
    assert "alert: unknown key; did you mean 'alerts'?" in msg


def test_args_are_checked_against_the_command(tmp_path: Path) -> None:
    msg = _error(tmp_path, "jobs:\n  a:\n    run: predict\n    args: {model: m, tabel: t, out: o}\n")
    assert "jobs.a.args.tabel: unknown argument of predict; did you mean 'table'?" in msg
    assert "jobs.a.args.table: required argument of predict is missing" in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: predict\n    args: {model: m, table: t, out: o, workers: many}\n")
    assert "jobs.a.args.workers:" in msg and "'many'" in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: train\n    args: {config: c.yaml, spark: x}\n")
    assert "args.spark: unknown argument" in msg  # live objects cannot come from a file


def test_a_bad_cron_expression_is_named_with_the_fix(tmp_path: Path) -> None:
    msg = _error(tmp_path, "jobs:\n  a:\n    run: drift\n    args: {model: m}\n    trigger: {cron: '0 3 * *'}\n")
    assert "jobs.a.trigger: '0 3 * *' is not a valid cron expression" in msg
    assert "five fields" in msg and '"0 3 * * 1"' in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: drift\n    args: {model: m}\n    trigger: {cron: '61 * * * *'}\n")
    assert "is not a valid cron expression" in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: drift\n    args: {model: m}\n    trigger: {cron: x, every: 1h}\n")
    assert "exactly one of cron, every, table_update or folder" in msg


def test_durations_and_the_folder_rule(tmp_path: Path) -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration(90) == 90 and parse_duration("2d") == 172800
    for bad in ("soon", "-5m", 0, True, "5 parsecs"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    msg = _error(tmp_path, "jobs:\n  a:\n    run: drift\n    args: {model: m}\n    trigger: {every: often}\n")
    assert "jobs.a.trigger.every:" in msg and "30s, 5m, 6h" in msg
    msg = _error(tmp_path, "jobs:\n  a:\n    run: predict\n    args: {model: m, table: t, out: o}\n"
                           "    trigger: {folder: in}\n")  # fmt: skip
    assert "a folder trigger ingests new files: it needs run: ingest" in msg


def test_credentials_never_come_from_the_file(tmp_path: Path) -> None:
    text = "jobs: {}\nalerts:\n  email: {to: [a@b.c], smtp: {host: h, user: me, password: hunter2}}\n"
    msg = _error(tmp_path, text)
    assert "credentials never go in the jobs file" in msg and "password_env" in msg and "hunter2" not in msg


def test_next_fire_times_come_from_a_given_clock(tmp_path: Path) -> None:
    # Thursday 2026-12-03 12:00 UTC: the weekly job fires the next three Mondays at 03:00
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    res = lakenet.jobs.check(_write(tmp_path, GOOD), now=now)
    assert [d.isoformat() for d in res.next_runs["weekly_update"]] == [
        "2026-12-07T03:00:00+00:00",
        "2026-12-14T03:00:00+00:00",
        "2026-12-21T03:00:00+00:00",
    ]
    six = [d.isoformat() for d in res.next_runs["drift_every_6h"]]
    assert six == ["2026-12-03T18:00:00+00:00", "2026-12-04T00:00:00+00:00", "2026-12-04T06:00:00+00:00"]
    assert "score_new_rows" not in res.next_runs  # fires on data, not on the clock
    assert res.store == f"sqlite:///{tmp_path / 'jobs.db'}"


def test_exit_codes_are_distinct_and_stable() -> None:
    assert [int(c) for c in (ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.DRIFT, ExitCode.NOT_PROMOTED)] == [0, 2, 3, 4]
    assert ExitCode.INFRASTRUCTURE == 5 and ExitCode.TIMED_OUT == 124 and ExitCode.INTERRUPTED == 130
    assert exit_code_for(ConfigError("x")) == 2 and exit_code_for(InfrastructureError("x")) == 5
    assert exit_code_for(OSError(28, "No space left on device")) == 5 and exit_code_for(ValueError()) == 1
    assert exit_code_for(KeyboardInterrupt()) == 130


def test_alert_events_follow_the_outcome() -> None:
    assert events_for("failed", {}) == ["failure"] and events_for("ok", {}) == []
    assert events_for("drift", {"drift": "drift"}) == ["drift"]
    assert events_for("ok", {"drift": "no drift", "promotion": "promoted: test roc_auc 0.9"}) == ["promoted"]
    assert events_for("not_promoted", {"promotion": "not promoted: it loses 0.02"}) == ["not_promoted"]
    update = figures("update", {"version": None, "verdict": "up to date", "table_versions": [3, 3]})["figures"]
    assert "promotion" not in update  # nothing new to learn from: no gate, no promotion alert
    a = Alert("failure", "j", 7, "failed", "predict", "manual", 0.0, "run 7 failed", error="boom", report="/r.html")
    assert "boom" in a.text() and "file:///r.html" in a.text() and a.subject == "[lakenet] j: run 7 failed"
