"""The jobs store (one SQLAlchemy database, sqlite by default): the run history, leases (one scheduler per store,
one run per job at a time, across processes and machines) and what the triggers have already seen."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = ["Lease", "Run", "Store", "default_store_url", "process_alive"]

_META = sa.MetaData()
RUNS = sa.Table(
    "lakenet_job_runs",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(200), nullable=False, index=True),
    sa.Column("command", sa.String(40), nullable=False),
    sa.Column("trigger", sa.String(400), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("finished", sa.Float),
    sa.Column("status", sa.String(20), nullable=False),  # running ok failed drift not_promoted timed_out cancelled
    sa.Column("exit_code", sa.Integer),
    sa.Column("rows", sa.Integer),
    sa.Column("versions", sa.String(100)),
    sa.Column("model", sa.String(400)),
    sa.Column("drift", sa.String(40)),
    sa.Column("promotion", sa.String(400)),
    sa.Column("mlflow_run", sa.String(64)),
    sa.Column("report", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("log", sa.Text),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),  # the process that owns the run (scheduler or `jobs run`)
    sa.Column("pid_started", sa.Float),  # its start time: a reused pid is not mistaken for it
    sa.Column("child_pid", sa.Integer),
    sa.Column("summary", sa.Text),  # the command's result, as JSON
)
LEASES = sa.Table(
    "lakenet_job_leases",
    _META,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("pid_started", sa.Float),
    sa.Column("expires", sa.Float, nullable=False),
)
STATE = sa.Table(
    "lakenet_job_state",
    _META,
    sa.Column("key", sa.String(600), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def default_store_url(workdir: Path) -> str:
    """jobs.db next to the MLflow store: the tracking URI's sqlite file when it is one, else the working directory."""
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking.removeprefix('sqlite:///')).parent / 'jobs.db'}"
    return f"sqlite:///{workdir / 'jobs.db'}"


def _started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether process `pid` on this host still runs, and is the one that started at `started`."""
    if not pid:
        return False
    now = _started(pid)
    return now is not None and (started is None or abs(now - started) < 1.0)


@dataclass
class Run:
    """One row of the run history."""

    id: int
    job: str
    command: str
    trigger: str
    started: float
    status: str
    finished: float | None = None
    exit_code: int | None = None
    rows: int | None = None
    versions: str | None = None
    model: str | None = None
    drift: str | None = None
    promotion: str | None = None
    mlflow_run: str | None = None
    report: str | None = None
    error: str | None = None
    log: str | None = None
    host: str = ""
    pid: int = 0
    pid_started: float | None = None
    child_pid: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


@dataclass(frozen=True)
class Lease:
    """A named lease held by this process until `release` (or until it expires: a holder must renew it)."""

    store: Store
    name: str
    owner: str

    def renew(self, ttl: float) -> bool:
        with self.store.engine.begin() as c:
            res = c.execute(
                sa.update(LEASES)
                .where(LEASES.c.name == self.name, LEASES.c.owner == self.owner)
                .values(expires=time.time() + ttl)
            )
        return res.rowcount == 1

    def release(self) -> None:
        with self.store.engine.begin() as c:
            c.execute(sa.delete(LEASES).where(LEASES.c.name == self.name, LEASES.c.owner == self.owner))


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # sqlite: writers from several processes wait for each other instead of failing at once
        args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, connect_args=args, future=True)
        _META.create_all(self.engine)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.pid_started = _started(self.pid)

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- leases ----------------------------------------------------------------------------------------------
    def acquire(self, name: str, ttl: float) -> Lease | None:
        """The lease `name`, if nobody live holds it: a holder whose lease expired, or whose process on this host
        is gone, loses it. None when someone else holds it."""
        owner = uuid.uuid4().hex
        row = {"name": name, "owner": owner, "host": self.host, "pid": self.pid, "pid_started": self.pid_started}
        with self.engine.begin() as c:
            held = c.execute(sa.select(LEASES).where(LEASES.c.name == name)).mappings().first()
            if held is None:
                try:
                    c.execute(sa.insert(LEASES).values(**row, expires=time.time() + ttl))
                except sa.exc.IntegrityError:
                    return None
                return Lease(self, name, owner)
            dead = held["host"] == self.host and not process_alive(held["pid"], held["pid_started"])
            if held["expires"] > time.time() and not dead:
                return None
            took = c.execute(
                sa.update(LEASES)
                .where(LEASES.c.name == name, LEASES.c.owner == held["owner"])
                .values(**row, expires=time.time() + ttl)
            )
        return Lease(self, name, owner) if took.rowcount == 1 else None

    def holder(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(LEASES).where(LEASES.c.name == name)).mappings().first()
        return dict(row) if row is not None else None

    # ---- runs ------------------------------------------------------------------------------------------------
    def start_run(self, job: str, command: str, trigger: str, log: str) -> int:
        values = {
            "job": job, "command": command, "trigger": trigger, "started": time.time(), "status": "running",
            "log": log, "host": self.host, "pid": self.pid, "pid_started": self.pid_started,
        }  # fmt: skip
        with self.engine.begin() as c:
            key = c.execute(sa.insert(RUNS).values(**values)).inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_run(self, run_id: int, **values: Any) -> None:
        if "summary" in values:
            values["summary"] = json.dumps(values["summary"], default=str)
        with self.engine.begin() as c:
            c.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(**values))

    def runs(self, *, job: str | None = None, limit: int = 50, status: str | None = None) -> list[Run]:
        q = sa.select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
        if job is not None:
            q = q.where(RUNS.c.job == job)
        if status is not None:
            q = q.where(RUNS.c.status == status)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [_run(r) for r in rows]

    def run(self, run_id: int) -> Run:
        with self.engine.connect() as c:
            row = c.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).mappings().one()
        return _run(row)

    def mark_dead_runs(self) -> list[Run]:
        """Runs left 'running' by a process that died (killed scheduler, crashed `jobs run`): failed, with why.
        On another host a run is dead once its job's lease expired. Returns the runs just marked."""
        dead = []
        for run in self.runs(status="running", limit=10_000):
            if run.host == self.host:
                gone = not process_alive(run.pid, run.pid_started) and not process_alive(run.child_pid, None)
            else:
                lease = self.holder(f"job:{run.job}")
                gone = lease is None or lease["expires"] < time.time()
            if gone:
                error = f"its process (pid {run.pid} on {run.host}) died while the run was going"
                self.update_run(run.id, status="failed", finished=time.time(), error=error)
                run.status, run.error, run.finished = "failed", error, time.time()
                dead.append(run)
        return dead

    # ---- trigger memory --------------------------------------------------------------------------------------
    def get_state(self, key: str) -> Any:
        with self.engine.connect() as c:
            row = c.execute(sa.select(STATE.c.value).where(STATE.c.key == key)).first()
        return json.loads(row[0]) if row is not None else None

    def set_state(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        with self.engine.begin() as c:
            done = c.execute(sa.update(STATE).where(STATE.c.key == key).values(value=text))
            if done.rowcount == 0:
                c.execute(sa.insert(STATE).values(key=key, value=text))

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as c:
            yield c


def _run(row: Any) -> Run:
    d = dict(row)
    d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
    return Run(**d)
