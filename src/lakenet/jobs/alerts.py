"""Alerts about job runs: e-mail over SMTP (STARTTLS / SSL, login from the environment) and JSON webhooks. A
delivery is retried a few times with backoff (tenacity); one that still fails is logged, never raised: an alert
must not take the scheduler down."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import time
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any

from lakenet.jobs.config import Alerts, EmailAlert, WebhookAlert

__all__ = ["Alert", "deliver", "events_for"]

log = logging.getLogger("lakenet.jobs")


@dataclass(frozen=True)
class Alert:
    """What happened to which run; the body of the e-mail and the webhook's JSON."""

    event: str  # failure, drift, promoted, not_promoted, slow
    job: str
    run_id: int
    status: str
    command: str
    trigger: str
    started: float
    message: str  # one line: what happened
    error: str | None = None
    report: str | None = None  # the HTML report to open (drift, update, evaluation)
    log: str | None = None
    mlflow_run: str | None = None
    duration_s: float | None = None
    host: str | None = None

    @property
    def subject(self) -> str:
        return f"[lakenet] {self.job}: {self.message}"

    def text(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        lines = [
            self.message,
            "",
            f"job:      {self.job} (lakenet {self.command}, run {self.run_id}, {self.trigger})",
            f"status:   {self.status}",
            f"started:  {started} on {self.host}",
        ]
        if self.duration_s is not None:
            lines.append(f"duration: {self.duration_s:.1f} s")
        if self.error:
            lines += ["", "error:", f"  {self.error}"]
        if self.report:
            lines += ["", f"report:   {_link(self.report)}"]
        if self.log:
            lines.append(f"log:      {self.log}")
        if self.mlflow_run:
            lines.append(f"mlflow:   run {self.mlflow_run}")
        lines += ["", "History: lakenet jobs history --job " + self.job]
        return "\n".join(lines)


def _link(path: str) -> str:
    return path if "://" in path else f"file://{path}"


def events_for(status: str, figures: dict[str, Any]) -> list[str]:
    """Which alert events a finished run raises (the alerts' `on:` list filters them)."""
    events = []
    if status in ("failed", "timed_out", "cancelled"):
        events.append("failure")
    if figures.get("drift") == "drift":
        events.append("drift")
    promotion = figures.get("promotion")
    if promotion:
        events.append("promoted" if promotion.startswith("promoted") else "not_promoted")
    return events


def deliver(alerts: Alerts | None, alert: Alert) -> dict[str, bool]:
    """Send `alert` on every configured channel that wants its event; {channel: delivered}."""
    # slow alerts exist only when a slower_than bound is configured
    if alerts is None or not (alert.event == "slow" or alerts.wants(alert.event)):
        return {}
    sent = {}
    if alerts.email is not None:
        sent["email"] = _retrying(alerts.retries, "e-mail", _send_email, alerts.email, alert)
    if alerts.webhook is not None:
        sent["webhook"] = _retrying(alerts.retries, "webhook", _post_webhook, alerts.webhook, alert)
    return sent


def _retrying(attempts: int, channel: str, send: Any, target: Any, alert: Alert) -> bool:
    from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=10), reraise=False
        ):
            with attempt:
                send(target, alert)
        return True
    except RetryError as err:
        cause = err.last_attempt.exception()
        log.error("could not deliver the %s alert for job %s (run %s) after %d attempts: %s: %s",
                  channel, alert.job, alert.run_id, attempts, type(cause).__name__, cause)  # fmt: skip
    except Exception as err:  # an alert must never take the scheduler down
        log.error("could not deliver the %s alert for job %s: %s: %s", channel, alert.job, type(err).__name__, err)
    return False


def _send_email(cfg: EmailAlert, alert: Alert) -> None:
    msg = EmailMessage()
    msg["Subject"] = alert.subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg.set_content(alert.text())
    smtp = cfg.smtp
    context = ssl.create_default_context(cafile=smtp.ca_file)
    cls = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
    kwargs: dict[str, Any] = {"context": context} if smtp.ssl else {}
    with cls(smtp.host, smtp.port, timeout=smtp.timeout_s, **kwargs) as server:
        if smtp.starttls:
            server.starttls(context=context)
        if smtp.user_env:
            user, password = os.environ.get(smtp.user_env), os.environ.get(smtp.password_env)
            if not user or password is None:
                raise RuntimeError(f"set {smtp.user_env} and {smtp.password_env} in the scheduler's environment")
            server.login(user, password)
        server.send_message(msg)


def _post_webhook(cfg: WebhookAlert, alert: Alert) -> None:
    import httpx

    body = {**asdict(alert), "subject": alert.subject, "text": alert.text()}
    r = httpx.post(cfg.url, json=body, timeout=cfg.timeout_s)
    r.raise_for_status()
