"""The scoring benchmarks run end to end in --quick mode (local pool, Spark local[2], MLflow spark_udf,
predict_batch_udf) and write their JSON result; speed is not asserted here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.bench_runner import run_quick_bench

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="no Java"),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scoring-cache")


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        ("score_throughput", {"local_vs_torch_steady", "spark_vs_torch_steady", "rows_per_s_torch"}),
        ("score_vs_peers", {"lakenet_vs_mlflow_spark_udf", "lakenet_vs_predict_batch_udf"}),
    ],
)
def test_quick_run_writes_result(name: str, figures: set[str], cache_dir: Path, tmp_path: Path) -> None:
    doc, stdout = run_quick_bench(name, tmp_path / f"{name}.json", cache_dir=cache_dir, cwd=tmp_path, timeout=300)
    assert doc["benchmark"] == name and doc["quick"] is True
    assert {"nproc", "cpu_model"} <= doc["machine"].keys()
    assert figures <= doc["figures"].keys()
    for key in figures:
        assert {"median", "min", "max"} <= doc["figures"][key].keys(), key
    assert len(doc["pairs"]) == 3 and "met" in doc["target"]
    assert "ratio" in stdout


def test_incremental_score_quick_with_spark(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKENET_BENCH_SPARK", "1")  # --quick leaves the Spark part out unless asked for
    out = tmp_path / "incremental_score.json"
    doc, stdout = run_quick_bench("incremental_score", out, cache_dir=cache_dir, cwd=tmp_path, timeout=300)
    assert doc["benchmark"] == "incremental_score" and doc["quick"] is True
    assert doc["settings"]["engines"] == ["local", "spark"]
    for key in ("local_ratio", "spark_ratio", "spark_cpu_ratio", "spark_full_rows_per_s"):
        assert {"median", "min", "max"} <= doc["figures"][key].keys(), key
    assert len([q for q in doc["pairs"] if q["engine"] == "spark"]) == 3 and "spark_met" in doc["target"]
    assert "spark_session_start_s" in doc["fixed_costs"]
    assert "ratio" in stdout
