"""Spark services on this machine, started from pyspark's own scripts (no download), all on 127.0.0.1: a
standalone cluster (`spark-class`: one master and `workers` workers, each a JVM of its own with its own work
directory), and a Spark Connect server (`sbin/start-connect-server.sh --wait`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no {text!r} in {log} after {timeout:.0f}s")


@contextmanager
def standalone_cluster(root: Path, *, workers: int = 2, cores: int = 1, memory: str = "2g") -> Iterator[str]:
    """The master URL (spark://127.0.0.1:port) while the cluster runs; every process is stopped afterwards."""
    import pyspark

    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(name: str, *args: str, ready: str) -> None:
        log = root / f"{name}.log"
        logs.append(log)
        with log.open("wb") as fh:
            proc = subprocess.Popen([str(spark_class), *args], env=env, stdout=fh, stderr=subprocess.STDOUT)
        procs.append(proc)
        _wait_for(log, ready, proc, 90)

    try:
        master_ui = str(_free_port())
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", master_ui, ready="I have been elected leader")  # fmt: skip
        for i in range(workers):
            work = root / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                  "--cores", str(cores), "--memory", memory, "--work-dir", str(work), "--webui-port", str(_free_port()),
                  ready="Successfully registered with master")  # fmt: skip
        yield url
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s; see {log}")


@contextmanager
def connect_server(root: Path, *, master: str = "local[2]") -> Iterator[str]:
    """A Spark Connect server in a JVM of its own (not this process's child JVM: a client with no JVM talks to
    it over gRPC only); yields its sc:// URL."""
    import pyspark

    home = Path(pyspark.__file__).parent
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(root), "SPARK_PID_DIR": str(root)}  # fmt: skip
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    # A local Connect session in the calling process exports its token: inherited, it would make this separate
    # server demand it from clients that were never given it.
    env.pop("SPARK_CONNECT_AUTHENTICATE_TOKEN", None)
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
    }
    args = [str(home / "sbin" / "start-connect-server.sh"), "--wait", "--master", master]
    for k, v in conf.items():
        args += ["--conf", f"{k}={v}"]
    log = root / "connect-server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, proc, log, 120)
        yield f"sc://127.0.0.1:{port}"
    finally:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
