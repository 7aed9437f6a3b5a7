"""Model updates: vocabulary and class growth keep the champion's predictions for old inputs; the gate promotes a
better challenger and refuses a worse one, with the chain (parent version, table versions, strategy, verdict) in
the registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

import lakenet
from lakenet.config import parse_config
from lakenet.data.encoders import StatsAccumulator
from lakenet.examples import transactions_frame
from lakenet.models.registry import build_model, model_spec
from lakenet.training.warm_start import grow_preprocessor, grow_weights, shrink_perturb

pytestmark = pytest.mark.integration


def test_growth_keeps_old_predictions_for_old_inputs() -> None:
    cfg = parse_config(
        {
            "data": {"table": "t"},
            "features": {"label": "y", "x": "numeric", "c": "category"},
            "model": {"architecture": "mlp", "width": 8},
            "registry": {"name": "m"},
        }
    )
    rng = np.random.default_rng(0)
    old_rows = pa.table({"x": rng.normal(size=200), "c": rng.choice(["a", "b", None], 200),
                         "y": rng.choice(["no", "yes"], 200)})  # fmt: skip
    acc = StatsAccumulator(cfg)  # type: ignore[arg-type]
    acc.update(old_rows)
    old = acc.finish()
    torch.manual_seed(0)
    model = build_model(model_spec(cfg, old)).eval()  # type: ignore[arg-type]
    champion = {k: v.detach().clone() for k, v in model.state_dict().items()}
    new_rows = pa.table({"x": [0.1, 0.2], "c": ["z", "a"], "y": ["maybe", "no"]})  # a new value, a new class
    grown, growth = grow_preprocessor(old, [new_rows])
    assert growth.values == {"c": ["z"]} and growth.classes == ["maybe"]
    assert grown.categories[0].vocab == ["a", "b", "z"] and grown.label.classes == ["no", "yes", "maybe"]
    bigger = build_model(model_spec(cfg, grown)).eval()  # type: ignore[arg-type]
    bigger.load_state_dict(grow_weights(champion, old, grown, bigger))
    probe = pa.table({"x": rng.normal(size=50), "c": rng.choice(["a", "b", None, "never"], 50)})
    with torch.no_grad():
        a = torch.softmax(
            model({k: torch.from_numpy(v) for k, v in old.encode(probe, with_label=False).inputs.items()}), 1
        )
        b = torch.softmax(
            bigger({k: torch.from_numpy(v) for k, v in grown.encode(probe, with_label=False).inputs.items()}), 1
        )
    assert torch.allclose(a, b[:, :2], atol=1e-3)  # the new class starts improbable
    assert (a.argmax(1) == b.argmax(1)).all()
    sp = shrink_perturb(champion, {k: torch.ones_like(v) for k, v in champion.items()}, shrink=0.5, perturb=0.1)
    k = next(n for n in champion if n.endswith("head.weight"))
    assert torch.allclose(sp[k], 0.5 * champion[k] + 0.1)


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wd = tmp_path_factory.mktemp("update")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    day1 = wd / "day1.csv"
    transactions_frame(2500, seed=11).to_csv(day1, index=False)
    table = lakenet.ingest(day1, wd / "data" / "fraud").table
    cfg = {
        "data": {"table": table, "key": "transaction_id"},
        "features": {"label": "is_fraud", "include": "auto", "exclude": ["customer_id", "key"]},
        "model": {"width": 16},
        "trainer": {"epochs": 1, "baseline": "none"},  # a weak champion
        "update": {"epochs": 4},
        "registry": {"name": "fraud"},
    }
    fit = lakenet.fit(cfg, progress=False, workdir=wd)
    day2 = wd / "day2.csv"
    transactions_frame(2500, seed=12, start_id=50_000).to_csv(day2, index=False)
    lakenet.ingest(day2, table)
    return {"wd": wd, "cfg": cfg, "fit": fit, "table": table}


def _versions(wd: Path) -> list[dict[str, Any]]:
    return lakenet.models(workdir=wd)[0]["versions"]


def test_the_gate_refuses_a_challenger_that_does_not_beat_the_champion_enough(champion: dict[str, Any]) -> None:
    wd, cfg = champion["wd"], champion["cfg"]
    strict = {**cfg, "update": {**cfg["update"], "min_improvement": 0.5}}  # no model gains 0.5 ROC-AUC
    res = lakenet.update(strict, progress=False, workdir=wd)
    assert not res.promoted and res.alias == "challenger" and "not promoted" in res.verdict
    assert res.table_versions == (0, 1) and res.champion_version == champion["fit"].version
    chal = next(v for v in _versions(wd) if v["version"] == res.version)
    assert chal["aliases"] == ["challenger"] and chal["lineage"]["update_verdict"] == res.verdict
    assert chal["lineage"]["parent_version"] == champion["fit"].version
    assert chal["lineage"]["update_strategy"] == "warm_start" and chal["lineage"]["table_version"] == "1"
    champ = next(v for v in _versions(wd) if "champion" in v["aliases"])
    assert champ["version"] == champion["fit"].version  # the champion stays
    assert res.report is not None and "not promoted" in res.report.read_text()
    report = res.report.read_text()
    assert report.count("<svg") == 1 and "champion val_loss" in report and "challenger val_loss" in report


def test_the_gate_promotes_a_better_challenger(champion: dict[str, Any]) -> None:
    wd, cfg = champion["wd"], champion["cfg"]
    retrain = {**cfg, "trainer": {**cfg["trainer"], "epochs": 8}}
    res = lakenet.update(retrain, strategy="retrain", progress=False, workdir=wd)
    scores = res.scores
    assert scores["challenger"]["current"] > scores["champion"]["current"], scores
    assert res.promoted and res.alias == "champion", res.verdict
    champ = next(v for v in _versions(wd) if "champion" in v["aliases"])
    assert champ["version"] == res.version and champ["lineage"]["update_strategy"] == "retrain"
    again = lakenet.update(retrain, progress=False, workdir=wd)  # the new champion learned from this version
    assert again.version is None and "up to date" in again.verdict
