"""Plumbing for the serving benchmarks: model bundles built in place (no training: speed does not depend on the
weights), a `lakenet serve` process, minimal raw HTTP/1.1 clients (so the load generator costs as little CPU as
possible), request bodies, percentiles, and a process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lakenet.data.encoders import CategoryState, ImageState, LabelState, NumericState, Preprocessor
from lakenet.models.bundle import Bundle
from lakenet.models.registry import build_model
from lakenet.models.spec import ModelSpec

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
BOUNDARY = "lakenet-bench-boundary"


# ---- models ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCase:
    """A bundle to serve and one request row for it."""

    name: str
    bundle_dir: Path
    row: dict[str, Any]  # column -> value (bytes for images)
    description: str
    spec: dict[str, Any] = field(default_factory=dict)


def tabular_case(root: Path, *, features: int = 13, width: int = 64, depth: int = 2) -> ModelCase:
    """A wine-shaped classification MLP: `features` numeric columns and one category."""
    pre = Preprocessor(
        key="key",
        numeric=[NumericState(f"x{i}", f"x{i}", 1.0 * i, 1.0 + i) for i in range(features)],
        categories=[CategoryState("region", "region", ["north", "south"], 4)],
        image=None,
        label=LabelState("label", "classification", classes=["barbera", "barolo", "grignolino"]),
    )
    spec = ModelSpec("mlp", 3, numeric_dim=features, category_sizes=(3,), category_dims=(4,), width=width, depth=depth)
    torch.manual_seed(0)
    bundle_dir = Bundle(spec, pre, build_model(spec).state_dict()).save(root / "tabular")
    row: dict[str, Any] = {f"x{i}": 1.0 * i + 0.5 for i in range(features)}
    row["region"] = "north"
    return ModelCase("tabular_mlp", bundle_dir, row, f"MLP {features}+1 inputs, width {width}, depth {depth}",
                     spec.to_dict())  # fmt: skip


def cnn_case(root: Path, *, size: int = 32, width: int = 16, depth: int = 3) -> ModelCase:
    """A digits-style residual CNN on `size`² grey images; the request image is a real digit PNG."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pre = Preprocessor(
        key="key",
        numeric=[],
        categories=[],
        image=ImageState("image", "image", size, 1, [0.3], [0.4]),
        label=LabelState("label", "classification", classes=[str(d) for d in range(10)]),
    )
    spec = ModelSpec("resnet", 10, image_channels=1, image_size=size, width=width, depth=depth)
    torch.manual_seed(0)
    bundle_dir = Bundle(spec, pre, build_model(spec).state_dict()).save(root / "cnn")
    digit = (load_digits().images[7] * (255.0 / 16.0)).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(digit, mode="L").resize((size, size), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return ModelCase("cnn", bundle_dir, {"image": buf.getvalue()}, f"ResNet {size}² grey, width {width}, depth {depth}",
                     spec.to_dict())  # fmt: skip


# ---- requests ----------------------------------------------------------------------------------------------------
def json_body(row: dict[str, Any]) -> tuple[bytes, str]:
    enc = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in row.items()}
    return json.dumps({"rows": [enc]}).encode(), "application/json"


def multipart_body(row: dict[str, Any]) -> tuple[bytes, str]:
    parts = []
    for k, v in row.items():
        if isinstance(v, bytes):
            head = f'Content-Disposition: form-data; name="{k}"; filename="{k}.png"\r\nContent-Type: image/png'
            data = v
        else:
            head, data = f'Content-Disposition: form-data; name="{k}"', str(v).encode()
        parts.append(f"--{BOUNDARY}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def http_request(path: str, body: bytes, content_type: str, host: str = "127.0.0.1") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# ---- clients -----------------------------------------------------------------------------------------------------
class RawClient:
    """One keep-alive HTTP/1.1 connection: send prepared bytes, read one response (content-length framed)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        m = _LENGTH.search(head)
        length = int(m.group(1)) if m else 0
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.buf = rest[length:]
        return int(head[9:12]), rest[:length]

    def close(self) -> None:
        self.sock.close()


class AsyncRawClient:
    """The same over asyncio streams, for many concurrent connections from one process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> AsyncRawClient:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        m = _LENGTH.search(head)
        body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return int(head[9:12]), head, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# ---- the server process --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    startup_s: float  # spawn → /readyz answers 200 (imports, model load, warm-up, bind)
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> tuple[int, bytes]:
        c = RawClient(self.port)
        try:
            return c.request(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        finally:
            c.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return int(self.proc.wait())


def start_server(bundle_dir: Path, *, threads: int, log_dir: Path, extra: Sequence[str] = ()) -> ServerProcess:
    """`python -m lakenet.cli serve <bundle>` with its torch threads pinned; returns once /readyz is 200."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_path = log_dir / f"server-{port}.log"
    cmd = [sys.executable, "-m", "lakenet.cli", "serve", str(bundle_dir), "--port", str(port),
           "--threads", str(threads), *extra]  # fmt: skip
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(proc, port, 0.0, log_path)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if server.get("/readyz")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not become ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.02)
    server.startup_s = time.perf_counter() - t0
    return server


# ---- statistics --------------------------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ms(seconds: float) -> float:
    return seconds * 1000.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The client is the measuring instrument: no cyclic-GC pause of its own (~0.1 s with torch loaded) inside
    a timed block. Collected before, re-enabled after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
