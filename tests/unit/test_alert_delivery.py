"""Alerts that cannot be delivered: retried with backoff, then logged, never raised (a scheduler must outlive its
alert channels). Real sockets on 127.0.0.1: a port nobody listens on, and an HTTP receiver that fails before it
accepts."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lakenet.jobs.alerts import Alert, deliver
from lakenet.jobs.config import Alerts

ALERT = Alert(
    event="failure",
    job="nightly-fraud",
    run_id=7,
    status="failed",
    command="predict",
    trigger="cron",
    started=time.time(),
    message="predict failed",
    error="DataError: column 'amount' is missing",
)


def _closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A webhook receiver that answers 503 to its first `fail` POSTs, then 200; it keeps what it accepted."""
    state: dict[str, Any] = {"fail": 0, "posts": 0, "accepted": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["posts"] += 1
            if state["posts"] <= state["fail"]:
                self.send_response(503)
                self.end_headers()
                return
            state["accepted"].append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_unreachable_channel_is_retried_then_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    alerts = Alerts.model_validate(
        {
            "email": {"to": ["ops@example.com"], "smtp": {"host": "127.0.0.1", "port": port, "timeout_s": 2}},
            "webhook": {"url": f"http://127.0.0.1:{port}/hook", "timeout_s": 2},
            "retries": 2,
        }
    )
    t0 = time.perf_counter()
    with caplog.at_level(logging.ERROR, logger="lakenet.jobs"):
        sent = deliver(alerts, ALERT)
    assert sent == {"email": False, "webhook": False}
    assert time.perf_counter() - t0 < 30  # bounded: two attempts per channel, short backoff
    failures = [r.getMessage() for r in caplog.records]
    assert any("e-mail alert for job nightly-fraud (run 7) after 2 attempts" in m for m in failures), failures
    assert any("webhook alert for job nightly-fraud (run 7) after 2 attempts" in m for m in failures), failures


def test_a_receiver_that_fails_at_first_gets_the_alert_on_a_retry(receiver: dict[str, Any]) -> None:
    receiver["fail"] = 2
    alerts = Alerts.model_validate({"webhook": {"url": receiver["url"], "timeout_s": 5}, "retries": 3})
    assert deliver(alerts, ALERT) == {"webhook": True}
    assert receiver["posts"] == 3
    (body,) = receiver["accepted"]
    assert body["job"] == "nightly-fraud" and body["error"].startswith("DataError")


def test_retries_stop_at_the_configured_number(receiver: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    receiver["fail"] = 10
    alerts = Alerts.model_validate({"webhook": {"url": receiver["url"], "timeout_s": 5}, "retries": 3})
    with caplog.at_level(logging.ERROR, logger="lakenet.jobs"):
        assert deliver(alerts, ALERT) == {"webhook": False}
    assert receiver["posts"] == 3 and not receiver["accepted"]
    assert any("503" in r.getMessage() for r in caplog.records)


def test_an_event_nobody_asked_for_is_not_sent(receiver: dict[str, Any]) -> None:
    alerts = Alerts.model_validate({"webhook": {"url": receiver["url"]}, "on": ["drift"]})
    assert deliver(alerts, ALERT) == {}
    assert receiver["posts"] == 0
