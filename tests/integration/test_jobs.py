"""Jobs with real components on 127.0.0.1: an SMTP server (aiosmtpd, STARTTLS and login) and an HTTP receiver
get the alerts; a table-update trigger fires once per new version; a SIGKILLed scheduler restarts, marks the dead
run failed, alerts, and the next run completes the incremental work exactly once; two schedulers on one store
never run a job concurrently; missed runs are coalesced within their grace (the clock is the stored next run
time, not a sleep)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable

import lakenet
import lakenet.jobs
from lakenet.examples import transactions_frame
from lakenet.jobs.runner import JobBusy
from lakenet.jobs.scheduler import Scheduler
from tests.model_helpers import fraud_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "lakenet.cli"]
USER, PASSWORD = "alerts", "s3cret-for-tests"


# ---- real receivers ----------------------------------------------------------------------------------------------
class Mailbox:
    """aiosmtpd on 127.0.0.1 with STARTTLS (a test CA from trustme) and AUTH LOGIN/PLAIN required."""

    def __init__(self, tmp: Path) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        import ssl

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(tls)
        self.messages: list[Any] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = data.login.decode() == USER and data.password.decode() == PASSWORD
            return AuthResult(success=ok)

        with socket.socket() as probe:  # the controller checks it is up by connecting: it needs a real port
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
            authenticator=authenticator, auth_required=True, auth_require_tls=True,
        )  # fmt: skip
        self.controller.start()
        self.port = port

    def stop(self) -> None:
        self.controller.stop()


class Hooks:
    """A real HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it (at most 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(outer.bodies) < 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lakenet"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, job: str | None = None) -> list[str]:
        return [b["event"] for b in self.bodies if job is None or b["job"] == job]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _text(message: Any) -> str:
    return str(message.get_payload(decode=True).decode())


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or cond}")


# ---- a growing table with a model on it --------------------------------------------------------------------------
def _batch(wd: Path, n: int, start: int, seed: int, drift: bool = False) -> Path:
    path = wd / "batches" / f"batch-{start}.csv"
    path.parent.mkdir(exist_ok=True)
    transactions_frame(n, seed=seed, start_id=start, drift=drift).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    wd = tmp_path_factory.mktemp("jobs")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    table = str(wd / "data" / "fraud")
    lakenet.ingest(_batch(wd, 1200, 0, 1), table)
    fit = lakenet.fit(fraud_config(table), progress=False, workdir=wd)
    mail, hooks = Mailbox(wd), Hooks()
    yield {"wd": wd, "table": table, "model": fit.model_uri, "mail": mail, "hooks": hooks}
    mail.stop()
    hooks.stop()


def _jobs_file(env: dict[str, Any], folder: Path, jobs: dict[str, Any], on: list[Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "jobs": jobs,
        "workdir": str(env["wd"]),
        "store": f"sqlite:///{folder / 'jobs.db'}",
        "logs": str(folder / "logs"),
        "shutdown_timeout": "20s",
        "alerts": {
            "email": {
                "to": ["ml-team@example.com"],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": env["mail"].port,
                    "starttls": True,
                    "user_env": "TEST_SMTP_USER",
                    "password_env": "TEST_SMTP_PASSWORD",
                    "ca_file": str(env["mail"].ca_file),
                },
            },
            "webhook": {"url": env["hooks"].url},
            "on": on or ["failure", "drift"],
            "retries": 2,
        },
    }
    path = folder / "jobs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _smtp_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMTP_USER", USER)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", PASSWORD)


def _score_job(env: dict[str, Any], out: Path, trigger: dict[str, Any] | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {
        "run": "predict",
        "args": {"model": env["model"], "table": env["table"], "out": str(out), "incremental": True},
    }
    if trigger:
        job["trigger"] = trigger
    return job


def _one_row_per_key(out: Path, table: str) -> None:
    rows = DeltaTable(str(out)).to_pyarrow_table(columns=["transaction_id"]).column("transaction_id")
    keys = DeltaTable(table).to_pyarrow_table(columns=["transaction_id"]).column("transaction_id")
    assert len(rows) == len(keys) == pc.count_distinct(rows).as_py()


def _cli(args: list[str], env_wd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*CLI, *args], cwd=env_wd, env=env, capture_output=True, text=True, timeout=timeout)


# ---- tests -------------------------------------------------------------------------------------------------------
def test_manual_runs_record_history_exit_codes_and_alerts(fraud: dict[str, Any], tmp_path: Path) -> None:
    env, mail, hooks = fraud, fraud["mail"], fraud["hooks"]
    path = _jobs_file(env, tmp_path, {
        "broken": {"run": "predict", "args": {"model": env["model"], "table": str(tmp_path / "nope"),
                                              "out": str(tmp_path / "o")}},
        "watch": {"run": "drift", "args": {"model": env["model"]}},
        "score": _score_job(env, tmp_path / "scored"),
        "hasty": {**_score_job(env, tmp_path / "hasty"), "timeout": "1s"},
    }, on=["failure", "drift", {"slower_than": "1s"}])  # fmt: skip
    assert _cli(["jobs", "check", str(path)], env["wd"]).returncode == 0

    broken = _cli(["jobs", "run", str(path), "broken"], env["wd"])
    assert broken.returncode == 2 and "does not exist" in broken.stderr and "Traceback" not in broken.stderr
    mails = wait_for(lambda: [m for m in mail.messages if "broken: run" in m["Subject"] and "failed" in m["Subject"]],
                     30, "the failure e-mail")  # fmt: skip
    body = _text(mails[0])
    assert "job:      broken (lakenet predict" in body and "does not exist" in body and "log:" in body
    assert wait_for(lambda: "failure" in hooks.events("broken"), 30)
    hook = next(b for b in hooks.bodies if b["job"] == "broken" and b["event"] == "failure")
    assert hook["status"] == "failed" and "does not exist" in hook["error"] and hook["run_id"] >= 1

    lakenet.ingest(_batch(env["wd"], 900, 50_000, 7, drift=True), env["table"])  # the new rows drifted
    watched = _cli(["jobs", "run", str(path), "watch"], env["wd"])
    assert watched.returncode == 3, watched.stderr  # a drift verdict is its own exit status
    drift_mail = wait_for(lambda: [m for m in mail.messages if "drift on the new rows" in m["Subject"]], 30)
    assert "report:   file://" in _text(drift_mail[0]) and "drift.html" in _text(drift_mail[0])

    scored = _cli(["jobs", "run", str(path), "score"], env["wd"])
    assert scored.returncode == 0, scored.stderr
    _one_row_per_key(tmp_path / "scored", env["table"])
    assert wait_for(lambda: "slow" in hooks.events("score"), 30)  # it ran longer than slower_than: 1s

    hasty = _cli(["jobs", "run", str(path), "hasty"], env["wd"])
    assert hasty.returncode == 124 and not (tmp_path / "hasty" / "_delta_log").exists()

    listed = _cli(["jobs", "history", str(path), "--json"], env["wd"])
    runs = {r["job"]: r for r in json.loads(listed.stdout)}
    assert {k: runs[k]["status"] for k in runs} == {
        "broken": "failed", "watch": "drift", "score": "ok", "hasty": "timed_out"
    }  # fmt: skip
    assert runs["score"]["rows"] == 2100 and runs["score"]["versions"] == "1"
    assert runs["watch"]["drift"] == "drift" and runs["watch"]["report"].endswith("drift.html")
    assert runs["hasty"]["exit_code"] == 124 and "timeout" in runs["hasty"]["error"]
    assert Path(runs["score"]["log"]).is_file() and runs["score"]["finished"] > runs["score"]["started"]


def test_table_update_and_folder_triggers_fire_once_per_new_data(fraud: dict[str, Any], tmp_path: Path) -> None:
    env = fraud
    out, incoming = tmp_path / "scored", tmp_path / "incoming"
    incoming.mkdir()
    side = str(tmp_path / "side")
    path = _jobs_file(env, tmp_path / "jobs", {
        "score": _score_job(env, out, {"table_update": env["table"], "min_new_rows": 1, "poll": "1s"}),
        "files": {"run": "ingest", "args": {"table": side, "key": "transaction_id"},
                  "trigger": {"folder": str(incoming), "pattern": "*.csv", "poll": "1s"}},
    })  # fmt: skip
    lakenet.predict(env["model"], env["table"], str(out), incremental=True, workdir=env["wd"])  # up to date
    sched = Scheduler(path).start()
    try:
        assert sched.wait_leading(30)

        def runs(job: str) -> list[Any]:
            return lakenet.jobs.history(path=path, job=job, limit=50)

        def finished(job: str) -> list[Any]:
            return [r for r in runs(job) if r.status != "running"]

        time.sleep(3)  # a few polls of an unchanged table and an empty folder: nothing fires
        assert runs("score") == [] and runs("files") == []
        for i, start in enumerate((60_000, 61_000)):
            v = lakenet.ingest(_batch(env["wd"], 300, start, 10 + i), env["table"]).version
            wait_for(lambda n=i + 1: len(finished("score")) >= n, 90, f"run {i + 1}")  # type: ignore[misc]
            last = finished("score")[0]
            assert last.status == "ok" and last.rows == 300 and last.trigger.endswith(f"v{v} (+300 rows)"), last
        time.sleep(3)
        assert len(runs("score")) == 2  # exactly once per new version
        _one_row_per_key(out, env["table"])
        transactions_frame(50, seed=5, start_id=90_000).to_csv(incoming / "a.csv", index=False)
        wait_for(lambda: any(r.status == "ok" for r in runs("files")), 60, "the folder ingest")
        transactions_frame(40, seed=6, start_id=91_000).to_csv(incoming / "b.csv", index=False)
        wait_for(lambda: len([r for r in runs("files") if r.status == "ok"]) == 2, 60, "the second file")
        time.sleep(3)
        assert len(runs("files")) == 2 and DeltaTable(side).to_pyarrow_dataset().count_rows() == 90
    finally:
        sched.stop(60)


def _scheduler(path: Path, wd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as f:
        return subprocess.Popen([*CLI, "jobs", "start", str(path)], cwd=wd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_scheduler_restarts_and_completes_the_work_once(fraud: dict[str, Any], tmp_path: Path) -> None:
    env, hooks = fraud, fraud["hooks"]
    out = tmp_path / "scored"
    lakenet.predict(env["model"], env["table"], str(out), incremental=True, workdir=env["wd"])
    path = _jobs_file(env, tmp_path / "jobs", {
        "rescore": _score_job(env, out, {"table_update": env["table"], "poll": "1s"}),
    })  # fmt: skip
    log = tmp_path / "scheduler.log"
    first = _scheduler(path, env["wd"], log)
    runs = lambda: lakenet.jobs.history(path=path, job="rescore")  # noqa: E731
    try:
        wait_for(lambda: "scheduler started" in log.read_text(), 60, "the scheduler")
        lakenet.ingest(_batch(env["wd"], 400, 70_000, 21), env["table"])
        running = wait_for(lambda: [r for r in runs() if r.status == "running" and r.child_pid], 60, "a run")[0]
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        wait_for(lambda: not _alive(running.child_pid), 30, "the run to die with its scheduler")
        assert not DeltaTable(str(out)).version() > 0  # nothing half-committed
        second = _scheduler(path, env["wd"], log)
        try:
            dead = wait_for(lambda: [r for r in runs() if r.id == running.id and r.status == "failed"], 60)[0]
            assert "died" in dead.error
            wait_for(lambda: any(b["run_id"] == running.id and b["event"] == "failure" for b in hooks.bodies), 30)
            redone = wait_for(lambda: [r for r in runs() if r.id != running.id and r.status == "ok"], 90)[0]
            assert redone.rows == 400
            _one_row_per_key(out, env["table"])
            second.send_signal(signal.SIGTERM)  # a clean stop: the scheduler exits 0
            assert second.wait(60) == 0
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()


def test_two_schedulers_on_one_store_never_run_a_job_concurrently(fraud: dict[str, Any], tmp_path: Path) -> None:
    env = fraud
    out = tmp_path / "scored"
    path = _jobs_file(env, tmp_path / "jobs", {
        "tick": {"run": "predict", "args": {"model": env["model"], "table": env["table"], "out": str(out)},
                 "trigger": {"every": "1s"}},
    })  # fmt: skip
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_scheduler(path, env["wd"], logs[0])]
    try:
        wait_for(lambda: "scheduler started" in logs[0].read_text(), 60)
        procs.append(_scheduler(path, env["wd"], logs[1]))
        wait_for(lambda: "standing by" in logs[1].read_text(), 60, "the second scheduler to stand by")
        running = wait_for(lambda: [r for r in lakenet.jobs.history(path=path) if r.status == "running"], 60)
        with pytest.raises(JobBusy, match="already running"):
            lakenet.jobs.run(path, "tick")  # by hand, while the scheduler runs it
        assert running
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(60) == 0
        wait_for(lambda: "scheduler started" in logs[1].read_text(), 60, "the standby to take over")
        wait_for(lambda: {r.pid for r in lakenet.jobs.history(path=path, limit=200)} >= {p.pid for p in procs}, 60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    runs = sorted(lakenet.jobs.history(path=path, limit=500), key=lambda r: r.started)
    assert len(runs) >= 2 and all(r.finished is not None for r in runs)
    for a, b in itertools.pairwise(runs):
        assert a.finished <= b.started, (a, b)  # never two at once
    _one_row_per_key(out, env["table"])  # the table scored once, whoever ran it


def test_missed_runs_are_coalesced_within_their_grace(fraud: dict[str, Any], tmp_path: Path) -> None:
    """The scheduler was down for three days: the daily job with a 12 h grace runs once, the one with 1 h not."""
    env = fraud
    src = _batch(env["wd"], 10, 81_000, 4)
    hour = (datetime.now(UTC) - timedelta(hours=6)).hour  # its latest missed time was about 6 hours ago
    daily = {"run": "ingest", "trigger": {"cron": f"0 {hour} * * *"}}
    path = _jobs_file(env, tmp_path / "jobs", {
        "lenient": {**daily, "args": {"source": str(src), "table": str(tmp_path / "a")}, "grace": "12h"},
        "strict": {**daily, "args": {"source": str(src), "table": str(tmp_path / "b")}, "grace": "1h"},
    })  # fmt: skip
    sched = Scheduler(path)
    aps = sched._aps()
    aps.start(paused=True)
    sched._sync(aps)  # the jobs as a scheduler that then went down for three days left them
    for name in ("lenient", "strict"):
        aps.modify_job(name, next_run_time=datetime.now(UTC) - timedelta(days=3))
    aps.shutdown(wait=False)
    sched.start()
    try:
        assert sched.wait_leading(30)
        wait_for(lambda: [r for r in lakenet.jobs.history(path=path) if r.status == "ok"], 60, "the coalesced run")
        time.sleep(2)
        runs = lakenet.jobs.history(path=path)
        assert [(r.job, r.status) for r in runs] == [("lenient", "ok")]  # one run for three missed days
    finally:
        sched.stop(60)
