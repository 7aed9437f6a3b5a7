"""Drift: a planted shift is flagged (with its report, JSON, monitoring rows and exit status 3); independent
appends from the same distribution stay quiet (at most 1 false alarm in 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.config.schema import MonitorConfig
from lakenet.examples import transactions_frame
from lakenet.inference.predictor import Predictor
from lakenet.monitoring import compare
from tests.model_helpers import fraud_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wd = tmp_path_factory.mktemp("drift")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    csv = wd / "day1.csv"
    transactions_frame(3000, seed=1).to_csv(csv, index=False)
    table = lakenet.ingest(csv, wd / "data" / "fraud").table
    fit = lakenet.fit(fraud_config(table), progress=False, workdir=wd)
    return {"wd": wd, "table": table, "fit": fit}


def test_a_planted_shift_is_flagged_with_its_evidence(model: dict[str, Any]) -> None:
    wd, table = model["wd"], model["table"]
    same = wd / "same.csv"
    transactions_frame(1500, seed=2, start_id=10_000).to_csv(same, index=False)
    lakenet.ingest(same, table)
    quiet = lakenet.drift(model["fit"].model_uri, workdir=wd)
    assert quiet.verdict == "no drift" and quiet.current["rows"] == 1500
    shifted = wd / "shifted.csv"
    frame = transactions_frame(1500, seed=3, start_id=20_000, drift=True)
    frame["amount"] = frame["amount"] * 4  # and prices went up
    frame.to_csv(shifted, index=False)
    lakenet.ingest(shifted, table)
    loud = lakenet.drift(model["fit"].model_uri, since=1, workdir=wd)
    assert loud.verdict == "drift" and {"amount", "country"} <= set(loud.drifted)
    doc = json.loads(loud.json.read_text())
    assert doc["current"]["from_version"] == 1 and doc["reference"]["split"] == "train"
    html = loud.html.read_text()
    # a chart per drifted feature, inline SVG (with its title), and nothing that runs
    assert html.count("<svg") >= 2 and "<script" not in html
    assert all(f"{name}: PSI" in html for name in ("amount", "country"))
    rows = DeltaTable(loud.monitoring_table).to_pyarrow_table()
    assert set(rows.column("verdict").to_pylist()) == {"no drift", "drift"}
    again = lakenet.drift(model["fit"].model_uri, since=1, workdir=wd)  # the same check again: appended once
    assert DeltaTable(again.monitoring_table).to_pyarrow_table().num_rows == rows.num_rows
    cli = subprocess.run(
        [sys.executable, "-m", "lakenet.cli", "drift", "--model", model["fit"].model_uri, "--since", "1",
         "--workdir", str(wd)],
        capture_output=True, text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                          if k != "MLFLOW_TRACKING_URI"},
    )  # fmt: skip
    assert cli.returncode == 3, cli.stderr  # a scheduler can act on it
    assert "drift:" in cli.stdout


def test_independent_samples_from_the_same_distribution_stay_quiet(model: dict[str, Any]) -> None:
    predictor = Predictor(model["fit"].bundle_dir)
    reference = pa.Table.from_pandas(transactions_frame(3000, seed=100), preserve_index=False)
    cfg = MonitorConfig()
    alarms = []
    for trial in range(20):
        batch = pa.Table.from_pandas(transactions_frame(800, seed=200 + trial), preserve_index=False)
        report = compare(predictor, reference, batch, cfg, label="is_fraud")
        alarms.append([c.name for c in report.drifted if c.kind not in ("label", "prediction")])
    assert sum(bool(a) for a in alarms) <= 1, alarms
    shifted = transactions_frame(800, seed=999, drift=True)
    report = compare(predictor, reference, pa.Table.from_pandas(shifted, preserve_index=False), cfg, label="is_fraud")
    assert report.verdict == "drift"


def test_too_few_new_rows_give_no_verdict(model: dict[str, Any], tmp_path: Path) -> None:
    predictor = Predictor(model["fit"].bundle_dir)
    few = pa.Table.from_pandas(transactions_frame(20, seed=5), preserve_index=False)
    big = pa.Table.from_pandas(transactions_frame(500, seed=6), preserve_index=False)
    assert compare(predictor, big, few, MonitorConfig(), label=None).verdict == "too few rows"
