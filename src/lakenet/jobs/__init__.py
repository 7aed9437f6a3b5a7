"""Jobs: lakenet commands run on a schedule or when data arrives, with a run history and alerts.

    lakenet.jobs.check("jobs.yaml")                  # validate; each triggered job's next run times
    lakenet.jobs.run("jobs.yaml", "score_new_rows")  # one run now, recorded like a scheduled one
    lakenet.jobs.start("jobs.yaml")                  # the embedded scheduler, until SIGTERM / Ctrl-C
    lakenet.jobs.history(workdir=".")                # the runs, newest first

The same jobs run from cron or Airflow just as well: every command's exit status is stable (see
`lakenet.errors.ExitCode`), and `lakenet jobs run` records a run like the scheduler does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lakenet.jobs.config import JobsFile, load_jobs

if TYPE_CHECKING:
    from lakenet.jobs.store import Run

__all__ = ["JobsCheck", "check", "history", "run", "start"]


@dataclass(frozen=True)
class JobsCheck:
    jobs: JobsFile
    store: str
    next_runs: dict[str, list[datetime]]  # cron and interval jobs: their next fire times from now


def check(path: str | Path, *, now: datetime | None = None, count: int = 3) -> JobsCheck:
    """Validate a jobs file (unknown keys with the nearest valid one, bad cron expressions with the fix, each
    job's args against its command); the next `count` fire times of each scheduled job after `now`."""
    from lakenet.jobs.config import CronTrigger, EveryTrigger
    from lakenet.jobs.scheduler import aps_trigger
    from lakenet.jobs.store import default_store_url

    jobs = load_jobs(path)
    now = now or datetime.now(UTC)
    upcoming: dict[str, list[datetime]] = {}
    for name, job in jobs.jobs.items():
        if isinstance(job.trigger, CronTrigger | EveryTrigger):
            trigger, times = aps_trigger(job, now=now), list[datetime]()
            t = trigger.get_next_fire_time(None, now)
            while t is not None and len(times) < count:
                times.append(t)
                t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
            upcoming[name] = times
    assert jobs.workdir is not None
    return JobsCheck(jobs, jobs.store or default_store_url(Path(jobs.workdir)), upcoming)


def run(path: str | Path, name: str) -> Run:
    """Run job `name` now in a child process and wait for it; its history row (status, figures, log)."""
    from lakenet.jobs.runner import alert_dead_runs, run_job
    from lakenet.jobs.scheduler import store_for

    jobs = load_jobs(path)
    store = store_for(jobs)
    try:
        alert_dead_runs(jobs, store)
        return run_job(jobs, name, store, trigger="manual")
    finally:
        store.dispose()


def start(path: str | Path) -> None:
    """The embedded scheduler in the foreground until SIGTERM or Ctrl-C: then no new run starts, and a running
    one gets the file's shutdown_timeout to finish."""
    from lakenet.jobs.scheduler import Scheduler

    sched = Scheduler(path)

    def on_signal(signum: int, _frame: object) -> None:
        sched.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    sched.run()


def history(
    *,
    path: str | Path | None = None,
    store: str | None = None,
    workdir: str | Path | None = None,
    job: str | None = None,
    limit: int = 20,
) -> list[Run]:
    """The runs in a store, newest first: the jobs file's store, `store` (a SQLAlchemy URL), or the default store
    of `workdir` (jobs.db next to mlflow.db)."""
    from lakenet.jobs.store import Store, default_store_url

    if path is not None:
        jobs = load_jobs(path)
        url = jobs.store or default_store_url(Path(jobs.workdir or "."))
    else:
        url = store or default_store_url(Path(workdir).resolve() if workdir else Path.cwd())
    s = Store(url)
    try:
        return s.runs(job=job, limit=limit)
    finally:
        s.dispose()
