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


def test_explain_cost_quick_run_writes_result(tmp_path: Path) -> None:
    """explain_cost: batch (local engine, in-process) and online (/v1/explain, /v1/predict under explain load)."""
    doc, stdout = run_quick_bench("explain_cost", tmp_path / "explain_cost.json", timeout=240)
    assert doc.keys() >= COMMON_KEYS
    assert doc["benchmark"] == "explain_cost" and doc["quick"] is True
    assert {"nproc", "cpu_model"} <= doc["machine"].keys()
    figures = {"ratio", "engine_predict_cpu_s_per_row", "engine_explain_cpu_s_per_row", "inprocess_ratio",
               "inprocess_explain_cpu_s_per_row", "explain_server_p50_ms", "explain_server_p99_ms",
               "predict_p99_ratio", "unloaded_p99_ms", "loaded_p99_ms"}  # fmt: skip
    assert figures <= doc["figures"].keys()
    for key in figures:
        assert {"median", "min", "max"} <= doc["figures"][key].keys(), key
    parts = {p["part"] for p in doc["pairs"]}
    assert parts == {"engine", "inprocess", "explain_latency", "predict_under_explain"}
    assert all(sum(p["part"] == part for p in doc["pairs"]) >= 3 for part in parts)
    assert {"throughput_ratio", "predict_p99_ratio", "met"} <= doc["target"].keys()
    assert doc["figures"]["loaded_explain_rows_per_s"]["median"] > 0  # the explain load did run
    assert "median (min–max)" in stdout  # the printed table
