"""The serving benchmarks run end to end in --quick mode (real `lakenet serve` processes on 127.0.0.1) and write
their JSON result; their speed is not asserted here (full runs write bench/results/serve_*.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMMON_KEYS = {"benchmark", "quick", "machine", "versions", "settings", "target", "figures", "fixed_costs", "pairs"}
FIGURES = {
    "serve_latency": {"tabular_mlp_json_overhead_p50_ms", "tabular_mlp_json_overhead_p99_ms",
                      "cnn_multipart_overhead_p50_ms", "cnn_multipart_overhead_p99_ms",
                      "tabular_mlp_json_server_cpu_ms_per_request"},
    "serve_batching": {"ratio_throughput", "ratio_p99", "batched_throughput", "unbatched_throughput",
                       "batched_server_cpu_ms_per_request"},
}  # fmt: skip


def run_quick(name: str, out: Path) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_quick_run_writes_result(name: str, tmp_path: Path) -> None:
    doc, stdout = run_quick(name, tmp_path / f"{name}.json")
    assert doc.keys() >= COMMON_KEYS
    assert doc["benchmark"] == name and doc["quick"] is True
    assert {"nproc", "cpu_model"} <= doc["machine"].keys()
    assert {"torch", "python", "lakenet"} <= doc["versions"].keys()
    assert FIGURES[name] <= doc["figures"].keys()
    for key in FIGURES[name]:
        assert {"median", "min", "max"} <= doc["figures"][key].keys(), key
    assert len(doc["pairs"]) >= 3
    assert "met" in doc["target"]
    assert "median (min–max)" in stdout  # the printed table
    if name == "serve_batching":
        over = doc["figures"]["overload"]
        assert over["other_5xx"] == 0 and over["server_alive_after"] and over["server_healthy_after"]
