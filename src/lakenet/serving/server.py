"""Running the app on uvicorn: process-level settings (model threads, open files), signals, graceful shutdown,
and what the server adds to uvicorn's HTTP/1.1 protocols (deadlines on reading a request, a bound on connections,
half-closed connections, a drain that resets no request)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import functools
import gc
import http
import importlib.util
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal

import h11
import torch
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from lakenet.errors import ConfigError
from lakenet.inference.predictor import Predictor
from lakenet.serving.app import Refresh, create_app, warm_up
from lakenet.serving.metrics import ServeMetrics
from lakenet.serving.settings import ServeSettings

__all__ = ["ServerHandle", "default_threads", "run", "server_for", "start_background"]

log = logging.getLogger("lakenet.serve")

HttpImpl = Literal["auto", "httptools", "h11"]


def default_threads() -> int:
    """Intra-op threads for the model: the usable cores but one, which the event loop needs (HTTP parsing,
    validation, encoding requests). With every core given to torch, its threads wait at each barrier for one
    the event loop has preempted: on 2 cores a 0.7 ms forward was seen to take 16 ms."""
    from lakenet.host import cpu_count

    return max(1, cpu_count() - 1)


# ---- the HTTP protocol ---------------------------------------------------------------------------------------
_CLOSE = (b"connection", b"close")


def _raw_response(status: int, detail: str) -> bytes:
    """A whole response written straight to the transport, where no request (and so no app) is there to answer."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Guard(asyncio.Protocol):
    """What the server adds to uvicorn's HTTP/1.1 protocols (mixed into both, httptools' and h11's):

    - Deadlines on reading. uvicorn has none: a client sending a byte a second holds its connection for ever. A
      connection must send a complete request head within `read_timeout_s` of opening (or of the head's first
      byte), else it is closed (after a 408 if it had begun one). The app answers 408 when a body is not complete
      `read_timeout_s` after its head; a body still arriving a second later closes the connection, also when the
      app answered without reading it.
    - A bound on connections: one opened beyond `max_connections` is answered 503 and closed, so slow clients
      cannot take every file descriptor.
    - Half-close: a client that shuts down its sending side after a complete request (netcat, scripts, some
      proxies) still gets its response. uvicorn closes the connection on EOF and the response is lost.
    - A drain that resets nothing: on shutdown, uvicorn closes every idle keep-alive connection at once, and a
      request already on its way on one is reset. Here such a connection stays open: its next request is
      answered with Connection: close, or its idle timer closes it.
    """

    read_timeout_s: float = 5.0
    max_connections: int = 1_000_000
    metrics: ServeMetrics | None = None

    # set by uvicorn's protocols
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: int
    timeout_keep_alive_task: asyncio.TimerHandle | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._draining = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refused = True
            self._shed("connections")
            self.transport.write(_raw_response(503, "Overloaded: too many open connections; retry later"))
            # A moment for the client to read the answer before the close: closing with its request unread
            # would reset the connection, and the client could lose the answer.
            self._watch("refused", 1.0)
            return
        self._watch("idle", self.read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        cycle = self.cycle
        if not self._refused and cycle is not None and not cycle.response_complete and not cycle.more_body:
            # The client sent a whole request and then shut down its side: the answer can still be written.
            self._close_after(cycle)
            return True  # keep the transport open for writing
        return None

    def shutdown(self) -> None:
        """Called by uvicorn on every connection when the server begins to shut down."""
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._close_after(cycle)
        elif self._timer is None and self.timeout_keep_alive_task is None:
            self._watch("idle", self.read_timeout_s)
        # else: idle, and a timer will close it; closing now would reset a request the client may have sent

    # ---- hooks for the parsers -------------------------------------------------------------------------------
    def _head_started(self) -> None:
        self._watch("head", self.read_timeout_s)

    def _head_complete(self) -> None:
        # The app times the body out at read_timeout_s with a 408; this only closes connections it did not.
        self._watch("body", self.read_timeout_s + 1.0)
        if self._draining and self.cycle is not None:
            self._close_after(self.cycle)

    def _message_complete(self) -> None:
        self._unwatch()
        cycle = self.cycle
        # Answered before its body was in (413, 401, ...): uvicorn's keep-alive timer, armed with the answer, was
        # cancelled by the body's bytes and nothing re-arms it.
        if (
            cycle is not None
            and cycle.response_complete
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            self._watch("idle", self.timeout_keep_alive)

    def _close_after(self, cycle: Any) -> None:
        """Close the connection once `cycle`'s response is written (and say so in it)."""
        cycle.keep_alive = False

    # ---- timers -------------------------------------------------------------------------------------------------
    def _watch(self, kind: str, seconds: float) -> None:
        if self._timer is not None and self._timer_kind == kind:
            return  # the deadline runs from the first time
        self._unwatch()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._expired, kind)

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_kind = ""

    def _expired(self, kind: str) -> None:
        self._timer = None
        self._timer_kind = ""
        if self.transport.is_closing():
            return
        if kind == "head":
            self._shed("head_timeout")
            detail = (
                f"The request head was not complete {self.read_timeout_s:g} s after its first byte; send the "
                "whole request at once (the server's read timeout)"
            )
            self.transport.write(_raw_response(408, detail))
        self.transport.close()

    def _shed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.shed.inc(reason)


@functools.cache
def _httptools_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _HttpTools(_Guard, HttpToolsProtocol):  # type: ignore[misc]  # eof_received may keep the transport
        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._head_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._message_complete()

    return _HttpTools


class _H11(_Guard, H11Protocol):  # type: ignore[misc]  # eof_received may keep the transport open
    """h11 has no parser callbacks: the connection's state is looked at after each read and each response."""

    _seen: Any = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next request, already read
        self._track()

    def _track(self) -> None:
        if self.cycle is not None and self.cycle is not self._seen:
            self._seen = self.cycle
            self._head_complete()
        state = self.conn.their_state
        if state is h11.IDLE:
            if self.conn.trailing_data[0]:
                self._head_started()
        elif state is not h11.SEND_BODY:
            self._message_complete()

    def _close_after(self, cycle: Any) -> None:
        super()._close_after(cycle)
        # uvicorn's h11 cycle closes after the response when keep_alive is off, but says so in the response only
        # if the request did: tell the client, so that it does not send its next request on this connection.
        headers = cycle.scope["headers"]
        if not cycle.response_started and _CLOSE not in headers:
            headers.append(_CLOSE)


def _protocol_class(settings: ServeSettings, metrics: ServeMetrics | None, impl: HttpImpl) -> type[asyncio.Protocol]:
    if impl == "auto":
        impl = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    base = _httptools_protocol() if impl == "httptools" else _H11
    limits = {"read_timeout_s": settings.body_timeout_s, "max_connections": settings.max_connections}
    return type(base.__name__, (base,), {**limits, "metrics": metrics})


# ---- shutdown ---------------------------------------------------------------------------------------------------
# Classic BPF over the TCP header: drop a segment with SYN set and ACK clear (a new connection attempt), keep the
# rest. ldb [13] (the flags); and #0x12 (SYN|ACK); jeq #0x02 → drop; ret #-1 (keep); drop: ret #0.
_DROP_SYN = [(0x30, 0, 0, 13), (0x54, 0, 0, 0x12), (0x15, 0, 1, 0x02), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]
_SO_ATTACH_FILTER = 26
_HANDSHAKE_GRACE_S = 0.1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _refuse_handshakes(listeners: list[socket.socket]) -> bool:
    """Make each listening socket drop new connection attempts while the connections already under way complete
    (Linux; elsewhere False). A dropped client retries its SYN after about a second, finds the port closed and
    gets "connection refused" before it has sent anything."""
    if not sys.platform.startswith("linux"):
        return False
    code = (_SockFilter * len(_DROP_SYN))(*(_SockFilter(*op) for op in _DROP_SYN))
    prog = bytes(_SockFprog(len(_DROP_SYN), ctypes.cast(code, ctypes.POINTER(_SockFilter))))
    attached = False
    for listener in listeners:
        try:
            with socket.socket(fileno=os.dup(listener.fileno())) as sock:
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
            attached = True
        except OSError as err:
            log.debug("could not stop new connections on %s before closing it: %s", listener, err)
    return attached


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises SIGINT/SIGTERM after shutting down; after a graceful drain we exit normally
            # instead (status 0, and no KeyboardInterrupt for the CLI to misreport).
            self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Closing a listening socket resets every connection the kernel completed but nobody accepted yet: a
        # client that connected and sent its request would see a reset. So first stop new handshakes, let those
        # under way complete, accept everything queued, and only then close it.
        listeners = [sock for server in self.servers for sock in (server.sockets or ())]
        if _refuse_handshakes(listeners):
            await asyncio.sleep(_HANDSHAKE_GRACE_S)
            await self._accept_queued(listeners)
        await super().shutdown(sockets)

    async def _accept_queued(self, listeners: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        for listener in listeners:
            with socket.socket(fileno=os.dup(listener.fileno())) as sock:
                sock.setblocking(False)
                while True:
                    try:
                        conn, _ = sock.accept()
                    except OSError:  # BlockingIOError: none left
                        break
                    await loop.connect_accepted_socket(protocol, conn)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the server's own `lakenet.serve` logger on the same handler."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["lakenet.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def server_for(
    predictor: Predictor, settings: ServeSettings, *, refresh: Refresh | None = None, http: HttpImpl = "auto"
) -> uvicorn.Server:
    """A uvicorn.Server for the app, not started: `.run()` blocks (signals handled); start_background runs it on
    a thread. `http`: the HTTP/1.1 parser (auto: httptools when installed, else h11)."""
    warm_up(predictor)
    app = create_app(predictor, settings, refresh=refresh)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=_protocol_class(settings, app.state.metrics, http),
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
    _raise_open_files_limit(settings.max_connections)
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


_SPARE_FILES = 256  # the model, logs, the registry, torch's threads


def _raise_open_files_limit(connections: int) -> None:
    """Raise the soft limit on open files to fit `connections` (as far as the hard limit allows): at the common
    default of 1024, accept() would fail well before max_connections."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    want = connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < want:
        log.warning(
            "the process may open %d files (hard limit %s), fewer than max_connections (%d) + %d: connections beyond "
            "~%d will fail. Raise the limit (ulimit -n) or lower --max-connections.",
            soft, hard, connections, _SPARE_FILES, max(0, soft - _SPARE_FILES),
        )  # fmt: skip


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
    predictor: Predictor,
    settings: ServeSettings,
    *,
    refresh: Refresh | None = None,
    startup_timeout_s: float = 60.0,
    http: HttpImpl = "auto",
) -> ServerHandle:
    """Start serving on a daemon thread and return once it accepts connections. The process's torch threads are
    left alone (this process has other work: a notebook, tests) unless `settings.torch_threads` is set."""
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    server = server_for(predictor, settings, refresh=refresh, http=http)
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
