"""The benchmarks run end to end in --quick mode and write their JSON result (their speed is not asserted here:
figures live in bench/results/, produced by full runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_runner import run_quick_bench

pytestmark = pytest.mark.integration

COMMON_KEYS = {"benchmark", "quick", "machine", "versions", "settings", "target", "figures", "fixed_costs", "pairs"}
FIGURES = {
    "train_overhead": {"ratio_time", "ratio_loop_only", "ratio_cpu", "lakenet_cpu_s_per_sample",
                       "plain_cpu_s_per_sample"},
    "train_from_table": {"ratio_cold", "ratio_warm", "cold_cpu_s_per_sample", "warm_cpu_s_per_sample",
                         "plain_cpu_s_per_sample"},
    "ddp_local": {"ratio_loop_only", "ratio_epoch_clock", "ddp_cpu_s_per_sample", "single_cpu_s_per_sample"},
    "tune_asha": {"ratio", "ratio_total_epochs", "ratio_wall", "ratio_cpu"},
    "real_tables": {"transactions_deep", "transactions_baseline", "digits_time_ratio", "breast_cancer_config_lines"},
    "update_vs_retrain": {"time_ratio", "train_time_ratio", "cpu_ratio", "metric_gap", "warm_vs_champion",
                          "champion_current_roc_auc", "warm_current_roc_auc", "retrain_current_roc_auc"},
    "incremental_score": {"local_ratio", "local_cpu_ratio", "local_incremental_rows_per_s", "local_full_rows_per_s"},
}  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One digits table shared by the three benchmarks."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_quick_run_writes_result(name: str, cache_dir: Path, tmp_path: Path) -> None:
    doc, stdout = run_quick_bench(name, tmp_path / f"{name}.json", cache_dir=cache_dir, timeout=600)
    assert doc.keys() >= COMMON_KEYS
    assert doc["benchmark"] == name and doc["quick"] is True
    assert {"nproc", "cpu_model"} <= doc["machine"].keys()
    assert {"torch", "python", "lakenet"} <= doc["versions"].keys()
    assert FIGURES[name] <= doc["figures"].keys()
    for key in FIGURES[name]:
        assert {"median", "min", "max"} <= doc["figures"][key].keys(), key
    assert len(doc["pairs"]) >= 3
    assert "target" in doc and "met" in doc["target"]
    assert "ratio" in stdout  # the printed table


def test_scale_quick_run_writes_result(tmp_path: Path) -> None:
    """scale: profile, one epoch and predict at two sizes of each kind, each a fresh process with its tree's RSS."""
    doc, stdout = run_quick_bench("scale", tmp_path / "scale.json", cache_dir=tmp_path / "cache", timeout=600)
    assert doc["benchmark"] == "scale" and doc["quick"] is True and {"nproc", "cpu_model"} <= doc["machine"].keys()
    for kind, sizes in (("tabular", ["1000", "10000"]), ("images", ["120", "480"])):
        figures = doc["figures"][kind]
        assert list(figures) == sizes
        for n in sizes:
            for step in ("profile", "train", "predict"):
                assert figures[n][f"{step}_peak_rss_mb"]["median"] > 50, (kind, n, step)  # a real process tree
                assert figures[n][f"{step}_rows_per_s"]["median"] > 0
        goal = doc["target"][kind]
        assert {"profile", "train", "predict", "met", "reference_rows", "largest_rows"} <= goal.keys()
    assert "median (min–max)" in stdout
