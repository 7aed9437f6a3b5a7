"""The server's settings: every knob with its default, constraint and description, validated once at the entry
point. Imports nothing heavy, so `lakenet.api` can validate before FastAPI, MLflow or the model load."""

from __future__ import annotations

import ipaddress
import logging
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from lakenet.errors import ConfigError
from lakenet.host import cpu_count

# Explanations keep their cores busy: one core stays free for /v1/predict (measured on 2 cores: /v1/predict p99
# under explain load 2.22x of unloaded with 2 explanation processes, 1.34x with 1).
_EXPLAIN_SLOTS = max(1, min(4, cpu_count() - 1))

__all__ = ["MIN_TOKEN_LENGTH", "ServeSettings", "is_loopback", "make_settings", "read_token_file"]

log = logging.getLogger("lakenet.serve")

MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; any other name may resolve to a public interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServeSettings(BaseModel):
    """How `lakenet serve` listens, batches, sheds load and follows the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="Interface to bind; non-loopback needs a token.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    token: SecretStr | None = Field(
        None,
        description=f"Bearer token every request but /healthz and /readyz must carry (≥ {MIN_TOKEN_LENGTH} chars).",
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most rows per micro-batch sent to the model.")
    max_batch_delay_ms: float = Field(
        0.0,
        ge=0.0,
        le=10_000.0,
        description="How long a batch may wait for more rows after its first request; 0: never wait (a lone "
        "request runs at once; under load, requests that arrive while the model is busy are batched anyway).",
    )
    max_queue_rows: int = Field(
        256,
        ge=1,
        description="Rows that may wait for the model; beyond that requests get 503 + Retry-After. Under overload "
        "an admitted request waits about max_queue_rows / throughput: size it to your latency budget.",
    )
    max_inflight_requests: int = Field(
        64,
        ge=1,
        description="Concurrent /v1/predict requests whose body has been read (being parsed, waiting or scored); "
        "more get 503 + Retry-After before they are parsed. Clients still sending their body do not count (a slow "
        "client cannot take a slot; body_timeout_s bounds them). At least the number of clients you expect at once; "
        "it bounds latency under overload. Request bodies held in memory, read or being read, are bounded by "
        "max_inflight_requests × max_body_bytes in all (beyond that: 503).",
    )
    max_request_rows: int = Field(256, ge=1, description="Most rows in one request (more: 422).")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="Largest request body (larger: 413).")
    body_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="Seconds a client may take to send a request's head, and then its body; slower: 408 and the "
        "connection is closed (a new connection that sends nothing is closed after it too). Bounds how long a slow "
        "or stalled client holds a connection; allow for your slowest clients' uploads (max_body_bytes / their "
        "bandwidth).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open client connections; one opened beyond them is answered 503 and closed. Bounds the file "
        "descriptors clients can hold (`lakenet serve` raises the process's open-file limit to max_connections + "
        "256 where the hard limit allows, else warns). Idle keep-alive connections count too.",
    )
    max_image_pixels: int = Field(
        16 * 2**20,
        ge=1,
        description="Most pixels (width × height, read from the image header) one input image may have; more: 422 "
        "naming the row, before anything is decoded.",
    )
    max_request_pixels: int = Field(
        64 * 2**20,
        ge=1,
        description="Most pixels all the images of one request may have together; more: 413, before anything is "
        "decoded. Bounds the decoding work (and memory) one request can cause.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0.0, description="Deadline per request from arrival to response (later: 504)."
    )
    drain_timeout_s: float = Field(
        30.0, ge=0.0, description="On shutdown, how long in-flight and queued requests may take to finish."
    )
    max_inflight_explain: int = Field(
        _EXPLAIN_SLOTS,
        ge=1,
        le=64,
        description="/v1/explain requests computed at once (each costs about explain_steps forward and backward "
        "passes); more get 503 + Retry-After. They run in as many lower-priority worker processes (started on the "
        "first explanation), so /v1/predict keeps its latency. Default: one less than the cores, 1 to 4.",
    )
    explain_timeout_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Deadline per /v1/explain request from arrival to response (later: 504)."
    )
    explain_steps: int = Field(50, ge=2, le=1000, description="Integrated Gradients steps per /v1/explain row.")
    follow_alias: bool = Field(False, description="Poll the registry and switch when the served alias moves.")
    poll_interval_s: float = Field(5.0, ge=0.05, description="How often --follow-alias asks the registry.")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Where the model runs: cpu, cuda or cuda:N.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads for the model (default: the usable cores but one, left to the event loop).",
    )
    access_log: bool = Field(False, description="Log every request (costs ~0.1 ms each).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="Log level.")

    @model_validator(mode="after")
    def _consistent(self) -> ServeSettings:
        if self.max_request_rows > self.max_queue_rows:
            raise ValueError(
                f"max_request_rows ({self.max_request_rows}) must not exceed max_queue_rows ({self.max_queue_rows}): "
                "such a request could never be admitted"
            )
        if self.max_image_pixels > self.max_request_pixels:
            raise ValueError(
                f"max_image_pixels ({self.max_image_pixels}) must not exceed max_request_pixels "
                f"({self.max_request_pixels}): such an image could never be sent; raise max_request_pixels"
            )
        token = self.token.get_secret_value() if self.token is not None else None
        if token is not None and (len(token) < MIN_TOKEN_LENGTH or token != token.strip()):
            raise ValueError(
                f"the token must be at least {MIN_TOKEN_LENGTH} characters without surrounding whitespace; "
                "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if token is None and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without a token: anyone who can reach it could use the model. "
                "Pass --token-file (a file holding a secret token), or bind 127.0.0.1"
            )
        return self


def make_settings(**values: object) -> ServeSettings:
    """ServeSettings from keyword values; a bad value raises ConfigError naming the setting and the fix."""
    try:
        return ServeSettings.model_validate(values)
    except ValidationError as err:
        msgs = []
        for e in err.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            msgs.append(f"{where}: {msg}" if where else msg)
        raise ConfigError("Invalid serve setting: " + "; ".join(msgs)) from None


def read_token_file(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace and the trailing newline stripped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"Cannot read the token file {p}: {reason}. Write the token into it as one line.") from None
    if not text:
        raise ConfigError(f"The token file {p} is empty. Write a secret token into it as one line.")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by other users; `chmod 600 %s`", p, p)
    return text
