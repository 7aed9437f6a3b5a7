"""Running the app on uvicorn: process-level settings (model threads), signals and graceful shutdown."""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI

from lakenet.errors import ConfigError
from lakenet.inference.predictor import Predictor
from lakenet.serving.app import Refresh, create_app, warm_up
from lakenet.serving.settings import ServeSettings

__all__ = ["ServerHandle", "default_threads", "run", "server_for", "start_background"]

log = logging.getLogger("lakenet.serve")


def default_threads() -> int:
    """Intra-op threads for the model: the usable cores but one, which the event loop needs (HTTP parsing,
    validation, encoding requests). With every core given to torch, its threads wait at each barrier for one
    the event loop has preempted: on 2 cores a 0.7 ms forward was seen to take 16 ms."""
    from lakenet.engines.local import cpu_count

    return max(1, cpu_count() - 1)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises SIGINT/SIGTERM after shutting down; after a graceful drain we exit normally
            # instead (status 0, and no KeyboardInterrupt for the CLI to misreport).
            self._captured_signals.clear()


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the server's own `lakenet.serve` logger on the same handler."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["lakenet.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def server_for(predictor: Predictor, settings: ServeSettings, *, refresh: Refresh | None = None) -> uvicorn.Server:
    """A uvicorn.Server for the app, not started: `.run()` blocks (signals handled); start_background runs it on
    a thread."""
    warm_up(predictor)
    app = create_app(predictor, settings, refresh=refresh)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=_log_config(settings.log_level),
        access_log=settings.access_log,
        lifespan="on",
        server_header=False,
        # after SIGINT/SIGTERM uvicorn stops accepting and waits this long for in-flight requests; the app's
        # lifespan then scores whatever is still queued
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s) or None,
    )
    return _Server(config)


def run(predictor: Predictor, settings: ServeSettings, *, refresh: Refresh | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting, answer every admitted request, and return."""
    torch.set_num_threads(settings.torch_threads or default_threads())
    server = server_for(predictor, settings, refresh=refresh)
    # Everything loaded so far (torch, the model, FastAPI: ~200k objects) lives as long as the process. Frozen,
    # the cyclic collector stops re-scanning it: a full collection otherwise stalls every request ~100 ms.
    gc.freeze()
    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
        raise ConfigError(
            f"Could not listen on {settings.host}:{settings.port} (the log above says why: port in use?). "
            "Pick another --port."
        ) from None


class ServerHandle:
    """A server running on a background thread (notebooks, tests): `url`, `stop()`, or use it as a context
    manager. Stopping is graceful: admitted requests are answered first."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.server, self.thread = server, thread
        sockets = [s for srv in server.servers for s in srv.sockets]
        host, port = sockets[0].getsockname()[:2]
        self.port = int(port)
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def app(self) -> FastAPI:
        app = self.server.config.app
        assert isinstance(app, FastAPI)
        return app

    def stop(self, timeout_s: float | None = None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<lakenet server {self.url}>"


def start_background(
    predictor: Predictor, settings: ServeSettings, *, refresh: Refresh | None = None, startup_timeout_s: float = 60.0
) -> ServerHandle:
    """Start serving on a daemon thread and return once it accepts connections. The process's torch threads are
    left alone (this process has other work: a notebook, tests) unless `settings.torch_threads` is set."""
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    server = server_for(predictor, settings, refresh=refresh)
    thread = threading.Thread(target=server.run, name="lakenet-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(
                f"The server did not start on {settings.host}:{settings.port} (the log says why: port in use?)."
            )
        time.sleep(0.005)
    return ServerHandle(server, thread)
