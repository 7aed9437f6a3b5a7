"""`lakenet serve` under abuse, on real uvicorn on 127.0.0.1 with real sockets: slow clients cannot take the server,
huge images are refused from their headers before anything is decoded, half-closed clients get their answer, a
SIGTERM under load resets no request, the open probes reveal nothing, and a request none of whose rows can be
scored is an error."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import lakenet
from lakenet.demo import write_digits_folder
from lakenet.inference.predictor import Predictor
from lakenet.serving.server import HttpImpl, ServerHandle, start_background
from lakenet.serving.settings import make_settings
from tests.conftest import digits_config

pytestmark = pytest.mark.integration

TOKEN = "abuse-test-token-0123456789"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small digits CNN (8×8 grey images), trained for one epoch in this module's own MLflow store."""
    wd = tmp_path_factory.mktemp("abuse")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_digits_folder(wd / "images", limit=60, corrupt=0)
    table = Path(lakenet.ingest(wd / "images", wd / "digits").table)
    yield Path(lakenet.fit(digits_config(table, trainer__epochs=1), progress=False).bundle_dir)
    mp.undo()


def serve(bundle: Path, http: HttpImpl = "auto", **settings: Any) -> ServerHandle:
    predictor = Predictor(bundle, model_name="digits", model_version="1")
    return start_background(predictor, make_settings(port=0, log_level="warning", **settings), http=http)


def png(width: int, height: int) -> bytes:
    """One grey colour: a 12000×12000 image is ~140 KB of PNG, 144 Mpx decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 200).save(buf, format="PNG")
    return buf.getvalue()


GOOD = png(8, 8)


def json_body(*images: bytes) -> bytes:
    return json.dumps({"rows": [{"image": base64.b64encode(im).decode()} for im in images]}).encode()


def raw_request(body: bytes, *, path: str = "/v1/predict", extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length; EOFError when the connection ends before it is whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("empty reply" if not data else "the connection closed inside the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the connection closed inside the response body")
        body += chunk
    return int(status_line.split()[1]), headers, body


def post(client: httpx.Client | str, body: bytes) -> httpx.Response:
    """POST /v1/predict with a JSON body, on `client` or to the server at that URL."""
    headers = {"content-type": "application/json"}
    if isinstance(client, str):
        return httpx.post(client + "/v1/predict", content=body, headers=headers, timeout=10)
    return client.post("/v1/predict", content=body, headers=headers)


def shed(srv: ServerHandle, reason: str) -> float:
    return srv.app.state.metrics.shed.get(reason)


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# ---- 1. slow clients ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_slow_bodies_do_not_take_the_in_flight_slots(bundle: Path) -> None:
    """More clients than max_inflight_requests, each sending a declared 20-byte body at 1 byte/s: a normal
    request is still answered at once (they used to hold every slot, and everyone else got 503)."""
    slots = 4
    with serve(bundle, max_inflight_requests=slots, body_timeout_s=20) as srv:
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(slots + 1)]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(1.0):
                for s in slow:
                    s.send(b" ")

        sender = threading.Thread(target=trickle)
        try:
            for s in slow:
                s.sendall(raw_request(b" " * 20)[:-19])  # the head and one byte of the body
            sender.start()
            # (before the fix the last one was refused at once: only `slots` would ever be inside)
            wait_for(lambda: srv.app.state.metrics.inflight.get() >= slots)
            t0 = time.perf_counter()
            r = post(srv.url, json_body(GOOD))
            assert r.status_code == 200, r.text
            assert time.perf_counter() - t0 < 2.0
            assert shed(srv, "busy") == 0
            for s in slow:  # and they are all still being read, none refused
                s.setblocking(False)
                with pytest.raises(BlockingIOError):
                    s.recv(1)
        finally:
            stop.set()
            if sender.is_alive():
                sender.join()
            for s in slow:
                s.close()


@pytest.mark.timeout(30)
def test_a_request_not_sent_in_time_gets_408_and_its_connection_closed(bundle: Path) -> None:
    with serve(bundle, body_timeout_s=1) as srv:
        # a body that stops coming: 408 from the app, with a JSON detail, and the connection closed
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(raw_request(b" " * 20)[:-19])
            t0 = time.perf_counter()
            status, headers, body = read_response(s)
            assert status == 408 and headers["connection"] == "close"
            assert "body" in json.loads(body)["detail"]
            assert 0.9 <= time.perf_counter() - t0 < 3.0
            assert s.recv(1) == b""  # closed: the rest of the body would not be read as a next request
        # a head that stops coming: 408 from the protocol, and closed
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            status, headers, body = read_response(s)
            assert status == 408 and "head" in json.loads(body)["detail"]
            assert s.recv(1) == b""
        # a connection that sends nothing is closed
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            t0 = time.perf_counter()
            assert s.recv(1) == b""
            assert time.perf_counter() - t0 < 3.0
        assert shed(srv, "body_timeout") == 1 and shed(srv, "head_timeout") == 1
        r = post(srv.url, json_body(GOOD))
        assert r.status_code == 200  # and it keeps serving


@pytest.mark.timeout(30)
def test_connections_beyond_the_limit_are_refused(bundle: Path) -> None:
    with serve(bundle, max_connections=3) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(raw_request(json_body(GOOD)))
                status, _, body = read_response(s)
                assert status == 503 and "connections" in json.loads(body)["detail"]
        finally:
            for s in idle:
                s.close()
        assert shed(srv, "connections") == 1
        wait_for(lambda: len(srv.server.server_state.connections) == 0)
        r = post(srv.url, json_body(GOOD))
        assert r.status_code == 200


@pytest.mark.timeout(30)
def test_request_bodies_held_at_once_are_bounded(bundle: Path) -> None:
    """Slow clients no longer count against max_inflight_requests; the memory their bodies hold is bounded by
    max_inflight_requests × max_body_bytes in all instead."""
    with serve(bundle, max_inflight_requests=1, max_body_bytes=1024) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as holder:
            holder.sendall(raw_request(b" " * 1000)[:-100])  # 900 bytes held, 100 to come
            wait_for(lambda: srv.app.state.metrics.inflight.get() >= 1)
            body = json_body(GOOD)
            assert 124 < len(body) < 1024
            r = post(srv.url, body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert shed(srv, "body_bytes") == 1
        wait_for(lambda: srv.app.state.metrics.inflight.get() == 0)
        r = post(srv.url, body)
        assert r.status_code == 200


# ---- 2. huge images ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def huge() -> bytes:
    return png(12000, 12000)


@pytest.mark.timeout(60)
def test_huge_images_are_refused_from_their_headers(bundle: Path, huge: bytes) -> None:
    with (
        serve(bundle, max_image_pixels=4_000_000, max_request_pixels=8_000_000) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        # over the per-image limit: 422 naming each row, in JSON and in a form
        t0 = time.perf_counter()
        r = post(c, json_body(GOOD, huge, huge))
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "rows", 1, "image"], ["body", "rows", 2, "image"]]
        assert {e["type"] for e in r.json()["detail"]} == {"image_too_large"}
        assert "144000000 pixels" in r.json()["detail"][0]["msg"]
        assert time.perf_counter() - t0 < 1.0
        files = [("image", ("a.png", GOOD, "image/png")), ("image", ("b.png", huge, "image/png"))]
        r = c.post("/v1/predict", files=files)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image", 1]
        # each within the limit, too many pixels together: 413
        big = png(2000, 2000)
        t0 = time.perf_counter()
        r = post(c, json_body(big, big, big))
        assert r.status_code == 413 and "12000000 pixels" in r.json()["detail"]
        assert time.perf_counter() - t0 < 1.0
        # nothing was decoded: the model is free at once
        t0 = time.perf_counter()
        r = post(c, json_body(GOOD))
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        assert post(c, json_body(big, big)).status_code == 200


# ---- 3. half-close -------------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_half_closed_client_still_gets_its_response(bundle: Path, http: HttpImpl) -> None:
    with serve(bundle, http=http) as srv, socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(raw_request(json_body(GOOD, GOOD)))
        s.shutdown(socket.SHUT_WR)  # as `curl -T -`, netcat and some proxies do once the request is sent
        status, headers, body = read_response(s)
        assert status == 200, body
        assert len(json.loads(body)["predictions"]) == 2
        assert headers["connection"] == "close" and s.recv(1) == b""


# ---- 4. SIGTERM under load -----------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.platform != "linux", reason="new connections are held off during the drain on Linux only")
def test_sigterm_under_load_resets_no_request(bundle: Path, tmp_path: Path) -> None:
    """Clients on keep-alive connections and on a new connection per request, sending all the time; SIGTERM.
    Every request sent gets a whole response (200, or 503 with Connection: close); a client may only find the
    port closed before it sends. Before, a few requests a run were reset: connections the kernel had accepted
    but uvicorn had not when it closed the listening socket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakenet.cli", "serve", str(bundle), "--port", str(port), "--workdir", str(tmp_path)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    request = raw_request(json_body(GOOD))

    def record(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    def client(keep_alive: bool) -> None:
        sock: socket.socket | None = None
        while not stop.is_set():
            if sock is None:
                sock = socket.socket()
                sock.settimeout(15)
                try:
                    sock.connect(("127.0.0.1", port))
                except ConnectionRefusedError:  # the port is closed: nothing was sent
                    record("refused")
                    sock.close()
                    sock = None
                    time.sleep(0.01)
                    continue
            try:
                sock.sendall(request)
                status, headers, _ = read_response(sock)
            except (OSError, EOFError) as err:
                record(f"sent, then {type(err).__name__}: {err}")
                sock.close()
                sock = None
                continue
            closing = headers.get("connection", "").lower() == "close"
            record(str(status) if status == 200 or (status == 503 and closing) else f"{status} (close: {closing})")
            if closing or not keep_alive:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    clients = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(32)]
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=40)
        for t in clients:
            t.start()
        wait_for(lambda: outcomes["200"] >= 300, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        stop.set()
        for t in clients:
            if t.is_alive():
                t.join()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "drained" in out and "Traceback" not in out
    bad = {k: n for k, n in outcomes.items() if k not in ("200", "503", "refused")}
    assert not bad, f"requests that got no whole response: {bad} (all: {dict(outcomes)})"
    assert outcomes["refused"] > 0  # the clients went on until the port closed


# ---- 5. the open probes --------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_open_probes_do_not_reveal_the_model_when_a_token_is_set(bundle: Path) -> None:
    with serve(bundle, token=TOKEN) as srv, httpx.Client(base_url=srv.url) as c:
        for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
            r = c.get(path)
            assert r.status_code == 200 and r.json() == {"status": status}, path
            assert "digits" not in r.text
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert c.get("/v1/model", headers=auth).json()["name"] == "digits"  # those with the token may know
    with serve(bundle) as srv:  # loopback without a token: nothing to hide from
        assert httpx.get(srv.url + "/readyz").json()["model"] == {"name": "digits", "version": "1"}


# ---- 6. nothing scored -----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_a_request_none_of_whose_rows_can_be_scored_gets_422(bundle: Path) -> None:
    with serve(bundle) as srv, httpx.Client(base_url=srv.url) as c:
        r = post(c, json_body(b"not an image", b""))
        assert r.status_code == 422, r.text
        errors = r.json()["detail"]
        assert [e["loc"] for e in errors] == [["body", "rows", 0, "image"], ["body", "rows", 1, "image"]]
        assert [e["type"] for e in errors] == ["undecodable_image", "empty_image"]
        assert all(e["msg"] for e in errors)
        files = [("image", ("a.png", b"GIF89a", "image/gif")), ("image", ("b.png", GOOD[:40], "image/png"))]
        r = c.post("/v1/predict", files=files)
        assert r.status_code == 422
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "image", 0], ["body", "image", 1]]
        # some rows scored: 200, the others with their error
        r = post(c, json_body(GOOD, b"not an image"))
        assert r.status_code == 200
        predictions = r.json()["predictions"]
        assert predictions[0]["error"] is None and predictions[1]["error"] == "undecodable_image"
        text = c.get("/metrics").text
        assert 'lakenet_predict_rows_total{outcome="error"} 5' in text
