"""Real, messy tables with the config `lakenet init` writes, unedited: missing values, identifiers, timestamps, a
rare label. Missing values are filled the same way in training, batch scoring and serving; the decision threshold
chosen on validation is the one predict and serve use; the deep model is compared with a gradient-boosting
baseline on the same split."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.examples import write_transactions_csv

pytestmark = pytest.mark.integration


def _blank(df: pd.DataFrame, share: float, seed: int, skip: tuple[str, ...]) -> pd.DataFrame:
    """Blank `share` of the numeric cells (not the label), as CSV exports have them."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for col in out.columns:
        if col not in skip and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].astype("Float64").mask(rng.random(len(out)) < share)
    return out


def _init_train(csv: Path, wd: Path, label: str, name: str) -> tuple[lakenet.FitResult, str]:
    table = lakenet.ingest(csv, wd / "data" / name).table
    config = wd / f"{name}.yaml"
    config.write_text(lakenet.init_config(table, label=label, name=name, config_dir=wd))
    return lakenet.fit(config, progress=False, workdir=wd), table


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wd = tmp_path_factory.mktemp("fraud")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    csv = write_transactions_csv(wd / "transactions.csv", rows=20_000, seed=0)
    fit, table = _init_train(csv, wd, "is_fraud", "fraud")
    return {"wd": wd, "fit": fit, "table": table}


def test_transactions_from_the_init_config_match_the_baseline(fraud: dict[str, Any]) -> None:
    m = fraud["fit"].metrics
    assert m["test_roc_auc"] >= m["baseline_roc_auc"] - 0.02, m
    assert m["test_macro_f1"] > 0.6, m  # with the threshold chosen on validation
    assert 0.0 < m["threshold"] < 1.0
    assert fraud["fit"].baseline and "HistGradientBoosting" in fraud["fit"].baseline
    version = lakenet.models(workdir=fraud["wd"])[0]["versions"][0]
    resolved = version["lineage"]["features"]
    assert "timestamp:datetime" in resolved and "amount:numeric" in resolved
    assert "customer_id" not in resolved and "transaction_id" not in resolved  # identifiers are not features
    profile = json.loads(fraud["fit"].reports["profile"].with_suffix(".json").read_text())
    assert profile["missing"]["amount"]["rate"] == pytest.approx(0.02, abs=0.005)
    assert profile["missing"]["amount"]["rule"] == "impute" and profile["bad_rows"]["total"] == 0


def test_missing_values_and_the_threshold_are_the_same_in_predict_and_serve(fraud: dict[str, Any]) -> None:
    wd, fit = fraud["wd"], fraud["fit"]
    rows = pa.table(
        {
            "transaction_id": ["n1", "n2", "n3", "n4"],
            "timestamp": ["2026-02-01T03:10:00Z", None, "2026-02-01T14:00:00+01:00", "2026-02-02T02:00:00Z"],
            "amount": [1500.0, None, 12.0, None],
            "merchant_category": ["electronics", None, "  ", "online"],
            "country": ["DE", None, "FR", "US"],
        }
    )
    src = wd / "new_rows.parquet"
    import pyarrow.parquet as pq

    pq.write_table(rows, src)
    scored = lakenet.predict(fit.model_uri, str(src), str(wd / "new_scored"), workdir=wd)
    assert scored.rows == 4 and scored.bad_rows == 0  # missing is data: every row is scored
    batch = DeltaTable(scored.table).to_pyarrow_table().sort_by("transaction_id").to_pylist()
    threshold = fit.metrics["threshold"]
    for r in batch:
        p1 = dict(r["probabilities"])["1"]
        assert (r["prediction"] == "1") == (p1 >= threshold)
    body = {"rows": [{k: v for k, v in r.items() if k != "transaction_id" and v is not None} for r in rows.to_pylist()]}
    with lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning", workdir=wd) as server:
        answer = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    for served, stored in zip(answer.json()["predictions"], batch, strict=True):
        assert served["prediction"] == stored["prediction"]
        assert served["probabilities"]["1"] == pytest.approx(dict(stored["probabilities"])["1"], abs=1e-6)


def test_class_weights_change_the_loss(fraud: dict[str, Any], tmp_path: Path) -> None:
    from lakenet.config import load_config
    from lakenet.training.plan import plan_training, training_policy

    cfg = load_config(fraud["wd"] / "fraud.yaml")
    plan = plan_training(cfg)
    policy = training_policy(plan.config, plan.scan)
    assert policy.class_weights is not None and policy.class_weights[1] > 10 * policy.class_weights[0]
    assert policy.watch == "val_pr_auc"
    raw = cfg.to_yaml_dict()
    raw["trainer"].update(epochs=1, class_weights="none", threshold="none", baseline="none")
    raw["registry"]["name"] = "fraud_unweighted"
    unweighted = lakenet.fit(raw, progress=False, workdir=tmp_path)
    raw["trainer"]["class_weights"] = "auto"
    raw["registry"]["name"] = "fraud_weighted"
    weighted = lakenet.fit(raw, progress=False, workdir=tmp_path)
    assert unweighted.history[0]["train_loss"] != pytest.approx(weighted.history[0]["train_loss"], rel=0.05)
    # without weights a rare class is hardly ever predicted; with them its recall rises
    assert weighted.metrics["test_balanced_accuracy"] > unweighted.metrics["test_balanced_accuracy"]


def test_a_model_of_another_task_does_not_take_the_alias(fraud: dict[str, Any]) -> None:
    from lakenet.config import load_config

    raw = load_config(fraud["wd"] / "fraud.yaml").to_yaml_dict()
    raw["features"]["label"]["task"] = "regression"
    raw["trainer"].update(epochs=1, baseline="none")
    fit = lakenet.fit(raw, progress=False, workdir=fraud["wd"])
    assert fit.alias_refused and "regression" in fit.alias_refused and "classification" in fit.alias_refused
    versions = lakenet.models(workdir=fraud["wd"])[0]["versions"]
    champion = next(v for v in versions if "champion" in v["aliases"])
    assert champion["version"] == fraud["fit"].version and fit.model_uri.endswith(f"/{fit.version}")


@pytest.mark.parametrize(
    ("dataset", "label"), [("wine", "target"), ("diabetes", "target"), ("breast_cancer", "diagnosis")]
)
def test_sklearn_tables_with_blank_cells_train_from_init(dataset: str, label: str, tmp_path: Path) -> None:
    from sklearn import datasets

    frame = getattr(datasets, f"load_{dataset}")(as_frame=True).frame
    if dataset == "breast_cancer":  # with an identifier and a country, as a CRM export has them
        frame = frame.rename(columns={"target": "diagnosis"})
        frame.insert(0, "customer_id", [f"CU{i:06d}" for i in range(len(frame))])
        frame["country"] = np.random.default_rng(1).choice(["DE", "FR", "IT"], len(frame))
    frame = _blank(frame, 0.05, seed=3, skip=(label,))
    csv = tmp_path / f"{dataset}.csv"
    frame.to_csv(csv, index=False)
    fit, table = _init_train(csv, tmp_path, label, dataset)
    task = "regression" if dataset == "diabetes" else "classification"
    metric = "test_r2" if task == "regression" else "test_accuracy"
    floor = {"wine": 0.85, "diabetes": 0.2, "breast_cancer": 0.9}[dataset]
    assert fit.metrics[metric] >= floor, fit.metrics
    scored = lakenet.predict(fit.model_uri, table, str(tmp_path / "scored"), workdir=tmp_path)
    assert scored.bad_rows == 0 and scored.rows == len(frame)
