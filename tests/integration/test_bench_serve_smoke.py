"""The serving benchmarks run end to end in --quick mode (real `lakenet serve` processes on 127.0.0.1) and write
their JSON result; their speed is not asserted here (full runs write bench/results/serve_*.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_runner import run_quick_bench

pytestmark = pytest.mark.integration

COMMON_KEYS = {"benchmark", "quick", "machine", "versions", "settings", "target", "figures", "fixed_costs", "pairs"}
FIGURES = {
    "serve_latency": {"tabular_mlp_json_overhead_p50_ms", "tabular_mlp_json_overhead_p99_ms",
                      "cnn_multipart_overhead_p50_ms", "cnn_multipart_overhead_p99_ms",
                      "tabular_mlp_json_server_cpu_ms_per_request"},
    "serve_batching": {"ratio_throughput", "ratio_p99", "batched_throughput", "unbatched_throughput",
                       "batched_server_cpu_ms_per_request"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_quick_run_writes_result(name: str, tmp_path: Path) -> None:
    doc, stdout = run_quick_bench(name, tmp_path / f"{name}.json")
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
