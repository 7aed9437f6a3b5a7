"""Run one job once: hold the job's lease (one run of a job at a time, across processes), record the run, start
the command as a child process with its own log file, watch it (timeout, slow-run alert, shutdown), then record
its figures and send the alerts its outcome calls for."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lakenet.errors import ConfigError, ExitCode
from lakenet.jobs.alerts import Alert, deliver, events_for
from lakenet.jobs.config import JobsFile
from lakenet.jobs.store import Run, Store

__all__ = ["LEASE_TTL", "JobBusy", "alert_dead_runs", "logs_dir", "run_job"]

log = logging.getLogger("lakenet.jobs")

LEASE_TTL = 60.0  # seconds a job's lease outlives its holder's last renewal (another host may take it then)
_POLL = 0.5
_KILL_AFTER = 10.0  # seconds between SIGTERM and SIGKILL when a run is stopped

_STATUS = {
    ExitCode.OK: "ok",
    ExitCode.DRIFT: "drift",
    ExitCode.NOT_PROMOTED: "not_promoted",
    ExitCode.TIMED_OUT: "timed_out",
}


class JobBusy(ConfigError):
    """The job is already running (one run of a job at a time)."""


def logs_dir(jobs: JobsFile) -> Path:
    assert jobs.workdir is not None
    return Path(jobs.logs) if jobs.logs else Path(jobs.workdir) / ".lakenet" / "jobs" / "logs"


def _alert(jobs: JobsFile, run: Run, event: str, message: str) -> None:
    alert = Alert(
        event=event, job=run.job, run_id=run.id, status=run.status, command=run.command, trigger=run.trigger,
        started=run.started, message=message, error=run.error, report=run.report, log=run.log,
        mlflow_run=run.mlflow_run, duration_s=run.duration, host=run.host,
    )  # fmt: skip
    deliver(jobs.alerts, alert)


def alert_dead_runs(jobs: JobsFile, store: Store) -> list[Run]:
    """Mark the runs whose process died as failed, and alert about each."""
    dead = store.mark_dead_runs()
    for run in dead:
        _alert(jobs, run, "failure", f"run {run.id} failed: {run.error}")
    return dead


def run_job(
    jobs: JobsFile,
    name: str,
    store: Store,
    *,
    trigger: str = "manual",
    extra_args: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> Run:
    """Run job `name` now and wait for it; the finished Run. Raises JobBusy when it is already running."""
    job = jobs.job(name)
    lease = store.acquire(f"job:{name}", LEASE_TTL)
    if lease is None:
        holder = store.holder(f"job:{name}") or {}
        raise JobBusy(
            f"Job {name!r} is already running (pid {holder.get('pid')} on {holder.get('host')}); one run of a job at "
            "a time. Wait for it, or see `lakenet jobs history`."
        )
    try:
        folder = logs_dir(jobs) / name
        folder.mkdir(parents=True, exist_ok=True)
        run_id = store.start_run(name, job.run, trigger, log="")
        stem = folder / f"{run_id:06d}-{time.strftime('%Y%m%d-%H%M%S')}"
        log_path = stem.with_suffix(".log")
        store.update_run(run_id, log=str(log_path))
        spec = {
            "command": job.run, "args": {**job.args, **(extra_args or {})}, "workdir": jobs.workdir,
            "result": str(stem.with_suffix(".result.json")), "parent_pid": os.getpid(),
        }  # fmt: skip
        stem.with_suffix(".spec.json").write_text(json.dumps(spec, default=str))
        code = _watch(jobs, store, run_id, stem, log_path, timeout=job.timeout, lease=lease, stop=stop)
        return _finish(jobs, store, run_id, code, Path(spec["result"]))
    finally:
        lease.release()


def _watch(
    jobs: JobsFile,
    store: Store,
    run_id: int,
    stem: Path,
    log_path: Path,
    *,
    timeout: float | None,
    lease: Any,
    stop: threading.Event | None,
) -> int:
    """Start the child and wait: renew the lease, stop it past its timeout or the shutdown grace, alert once
    when it runs longer than the slow bound. Its exit status."""
    with open(log_path, "ab") as out:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            [sys.executable, "-m", "lakenet.jobs.child", str(stem.with_suffix(".spec.json"))],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=jobs.workdir, env=env,
            start_new_session=True,  # Ctrl-C at the scheduler's terminal reaches the scheduler, which stops runs
        )  # fmt: skip
    store.update_run(run_id, child_pid=child.pid)
    started = time.monotonic()
    slow = jobs.alerts.slower_than if jobs.alerts is not None else None
    renewed, slow_sent, stop_at, reason = started, False, None, None
    while (code := _wait(child, _POLL)) is None:
        now = time.monotonic()
        if now - renewed > LEASE_TTL / 4:
            lease.renew(LEASE_TTL)
            renewed = now
        if slow is not None and not slow_sent and now - started > slow:
            slow_sent = True
            _alert(jobs, store.run(run_id), "slow", f"run {run_id} is still running after {now - started:.0f} s")
        if timeout is not None and now - started > timeout and reason is None:
            reason = ExitCode.TIMED_OUT
            _stop(child)
        if stop is not None and stop.is_set() and stop_at is None:
            stop_at = now + jobs.shutdown_timeout
        if stop_at is not None and now > stop_at and reason is None:
            reason = ExitCode.INTERRUPTED
            _stop(child)
    return int(reason) if reason is not None else code


def _wait(child: subprocess.Popen[bytes], seconds: float) -> int | None:
    try:
        return child.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the run's process group, SIGKILL if it is still there after a grace."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(_KILL_AFTER)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _finish(jobs: JobsFile, store: Store, run_id: int, code: int, result_path: Path) -> Run:
    """Record the outcome and the command's figures; alert on what the alerts' `on:` asks for."""
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {}
    status = _STATUS.get(ExitCode(code) if code in ExitCode._value2member_map_ else ExitCode.BUG, "failed")
    if code == ExitCode.INTERRUPTED:
        status = "cancelled"
    figures = result.get("figures", {})
    error = result.get("error")
    if status in ("failed", "timed_out", "cancelled") and not error:
        error = _tail_error(store.run(run_id).log, code)
    store.update_run(
        run_id, status=status, exit_code=code, finished=time.time(), error=error, summary=result,
        **{k: figures.get(k) for k in ("rows", "versions", "model", "drift", "promotion", "mlflow_run", "report")},
    )  # fmt: skip
    run = store.run(run_id)
    for event in events_for(status, figures):
        _alert(jobs, run, event, _message(run, event))
    return run


def _message(run: Run, event: str) -> str:
    return {
        "failure": f"run {run.id} {run.status.replace('_', ' ')} (exit status {run.exit_code})",
        "drift": f"drift on the new rows (run {run.id})",
        "promoted": f"the challenger was promoted: {run.model}",
        "not_promoted": f"the challenger was not promoted ({run.promotion})",
    }[event]


def _tail_error(log_path: str | None, code: int) -> str:
    if code == ExitCode.TIMED_OUT:
        return "stopped: the run exceeded its timeout"
    if code == ExitCode.INTERRUPTED:
        return "stopped: the scheduler shut down before the run finished"
    lines = []
    if log_path:
        with contextlib.suppress(OSError):
            lines = [ln for ln in Path(log_path).read_text(errors="replace").splitlines() if ln.strip()]
    if code < 0:
        return f"killed by signal {-code}" + (f"; last output: {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"exit status {code}"
