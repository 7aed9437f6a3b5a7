"""The embedded scheduler (`lakenet jobs start`): APScheduler with its jobs persisted in the jobs store, so runs
missed while it was down are coalesced into one within each job's grace. One scheduler per store holds a lease
(a second one started by mistake stands by and takes over when the first dies); each run is a child process."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lakenet.jobs.config import (
    CronTrigger,
    EveryTrigger,
    FolderTrigger,
    Job,
    JobsFile,
    TableUpdateTrigger,
    crontab,
    load_jobs,
)
from lakenet.jobs.runner import JobBusy, alert_dead_runs, run_job
from lakenet.jobs.store import Store, default_store_url
from lakenet.jobs.triggers import new_files, new_version, saw_files, saw_version

__all__ = ["SCHEDULER_LEASE", "Scheduler", "fire", "store_for"]

log = logging.getLogger("lakenet.jobs")

SCHEDULER_LEASE = "scheduler"
_LEASE_TTL = 30.0
_RENEW_EVERY = 5.0
_TABLE = "lakenet_apscheduler_jobs"
_ACTIVE: dict[str, Scheduler] = {}  # jobs file -> the scheduler running it in this process (fire() finds it here)


def store_for(jobs: JobsFile) -> Store:
    assert jobs.workdir is not None
    return Store(jobs.store or default_store_url(Path(jobs.workdir)))


def _fingerprint(job: Job) -> str:
    return hashlib.sha256(job.model_dump_json().encode()).hexdigest()[:16]


def aps_trigger(job: Job, *, now: datetime | None = None) -> Any:
    """The APScheduler trigger of a job (data triggers poll at their interval); intervals count from `now`."""
    from apscheduler.triggers.interval import IntervalTrigger

    t = job.trigger
    if isinstance(t, CronTrigger):
        return crontab(t.cron, t.timezone)
    seconds = t.every if isinstance(t, EveryTrigger) else t.poll  # type: ignore[union-attr]
    start = now + timedelta(seconds=seconds) if now is not None else None
    return IntervalTrigger(seconds=seconds, start_date=start, timezone="UTC")


def fire(jobs_path: str, name: str, fingerprint: str) -> None:
    """What APScheduler calls (by reference, from its persisted store): run the job if its trigger says so.
    Never raises: a failed run is in the history and alerted, and the scheduler goes on."""
    sched = _ACTIVE.get(jobs_path)
    if sched is None:
        log.warning("job %s fired with no scheduler for %s in this process; skipped", name, jobs_path)
        return
    try:
        sched.fire(name)
    except JobBusy as err:
        log.info("%s", err)
    except Exception:
        log.exception("job %s: the trigger failed; the scheduler goes on", name)


class Scheduler:
    """Runs a jobs file's triggers until stopped. `run()` blocks (the CLI); `start()`/`stop()` run it on a thread."""

    def __init__(self, jobs_path: str | Path, *, store: Store | None = None) -> None:
        self.path = str(Path(jobs_path).resolve())
        self.jobs = load_jobs(self.path)
        self.store = store or store_for(self.jobs)
        self.stopping = threading.Event()  # set by stop(): no new runs, and running ones get the shutdown grace
        self.leading = threading.Event()  # set while this process holds the scheduler lease
        self._thread: threading.Thread | None = None

    # ---- the triggers ----------------------------------------------------------------------------------------
    def fire(self, name: str) -> None:
        if self.stopping.is_set():
            return
        job = self.jobs.job(name)
        t = job.trigger
        if isinstance(t, TableUpdateTrigger):
            found = new_version(self.store, name, t)
            if found is not None:
                label = f"table_update v{found.since}→v{found.version} (+{found.rows} rows)"
                run_job(self.jobs, name, self.store, trigger=label, stop=self.stopping)
                saw_version(self.store, name, t, found.version)
        elif isinstance(t, FolderTrigger):
            for f in new_files(self.store, name, t).files:
                if self.stopping.is_set():
                    return
                run_job(self.jobs, name, self.store, trigger=f"folder {f.name}", extra_args={"source": str(f)},
                        stop=self.stopping)  # fmt: skip
                saw_files(self.store, name, t, (f,))
        elif isinstance(t, CronTrigger):
            run_job(self.jobs, name, self.store, trigger=f"cron {t.cron}", stop=self.stopping)
        elif isinstance(t, EveryTrigger):
            run_job(self.jobs, name, self.store, trigger=f"every {t.every:g}s", stop=self.stopping)

    # ---- APScheduler -----------------------------------------------------------------------------------------
    def _aps(self) -> Any:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.schedulers.base import STATE_RUNNING

        class Aps(BackgroundScheduler):
            def _process_jobs(self) -> float | None:
                # APScheduler 3 processes the due jobs once more after shutdown() stopped its executors: their
                # submission fails, and their stored next run time moves on, so a missed run would be lost.
                return super()._process_jobs() if self.state == STATE_RUNNING else None

        return Aps(
            jobstores={"default": SQLAlchemyJobStore(engine=self.store.engine, tablename=_TABLE)},
            executors={"default": ThreadPoolExecutor(max(2, len(self.jobs.jobs)))},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )

    def _sync(self, aps: Any) -> None:
        """The file's triggered jobs into the persisted store. A job whose definition is unchanged keeps its
        stored next run time, so a run missed while no scheduler ran fires once now (within its grace)."""
        wanted = {n: j for n, j in self.jobs.jobs.items() if j.trigger is not None}
        for stored in aps.get_jobs():
            if stored.id not in wanted or stored.args != (self.path, stored.id, _fingerprint(wanted[stored.id])):
                aps.remove_job(stored.id)
        for name, job in wanted.items():
            if isinstance(job.trigger, TableUpdateTrigger):
                new_version(self.store, name, job.trigger)  # the version it starts watching from, if none yet
            if aps.get_job(name) is None:
                aps.add_job(fire, aps_trigger(job), id=name, name=name, args=[self.path, name, _fingerprint(job)],
                            misfire_grace_time=int(job.grace), coalesce=True, max_instances=1)  # fmt: skip

    def _lead(self) -> None:
        """While holding the scheduler lease: mark dead runs, run the triggers, renew the lease."""
        alert_dead_runs(self.jobs, self.store)
        aps = self._aps()
        aps.start(paused=True)
        try:
            self._sync(aps)
            aps.resume()
            log.info("scheduler started: %d triggered job(s) from %s, store %s",
                     len(aps.get_jobs()), self.path, self.store.url)  # fmt: skip
            while not self.stopping.wait(_RENEW_EVERY):
                if not self.lease.renew(_LEASE_TTL):
                    log.error("lost the scheduler lease (another scheduler took over); standing by")
                    break
        finally:
            aps.shutdown(wait=True)  # running jobs see `stopping` and get jobs.shutdown_timeout to finish

    def run(self) -> None:
        """Lead when this process gets the store's scheduler lease; stand by while another scheduler has it."""
        _ACTIVE[self.path] = self
        told = False
        try:
            while not self.stopping.is_set():
                lease = self.store.acquire(SCHEDULER_LEASE, _LEASE_TTL)
                if lease is None:
                    if not told:
                        held = self.store.holder(SCHEDULER_LEASE) or {}
                        log.warning("another scheduler (pid %s on %s) runs this store; standing by",
                                    held.get("pid"), held.get("host"))  # fmt: skip
                        told = True
                    self.stopping.wait(_RENEW_EVERY)
                    continue
                self.lease, told = lease, False
                self.leading.set()
                try:
                    self._lead()
                finally:
                    self.leading.clear()
                    lease.release()
        finally:
            _ACTIVE.pop(self.path, None)
            log.info("scheduler stopped")

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self.run, name="lakenet-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_leading(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self.leading.wait(max(0.0, deadline - time.monotonic()))
