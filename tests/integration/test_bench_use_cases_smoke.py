"""bench/use_cases runs end to end in --quick mode (anomaly against IsolationForest, recommendation against
popularity with /v1/recommend latency, spoken digits) and writes its JSON result; its figures are not asserted
here (bench/results/use_cases.json holds a full run's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_runner import run_quick_bench

pytestmark = pytest.mark.integration


def test_use_cases_quick_run_writes_result(tmp_path: Path) -> None:
    doc, stdout = run_quick_bench("use_cases", tmp_path / "use_cases.json", timeout=600)
    assert doc["benchmark"] == "use_cases" and doc["quick"] is True
    figures = doc["figures"]
    for table in ("breast_cancer", "sensors"):
        for key in ("lakenet_labelled", "lakenet_unlabelled", "iforest_normals", "iforest_all", "ratio_labelled"):
            assert {"median", "min", "max"} <= figures["anomaly"][table][key].keys(), (table, key)
            assert 0.0 <= figures["anomaly"][table][key]["median"] <= 10.0
    assert {"recall_at_10", "popularity_recall_at_10", "ratio_ndcg"} <= figures["recommendation"].keys()
    assert figures["recommend_latency"]["items"] > 1000 and figures["recommend_latency"]["served_p99_ms"] > 0
    assert "test_accuracy" in figures["voice"] or "skipped" in figures["voice"]
    assert {"anomaly", "recommendation", "latency", "voice"} <= doc["target"]["met"].keys()
    assert "ratio" in stdout
