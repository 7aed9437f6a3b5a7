"""Explanations that can fail: the columns that carry the signal get the attribution, a corner patch gets the
image map's mass, a planted sentiment word leads its sentence, a model with re-initialised weights is explained
differently; attributions are complete; `lakenet explain` writes each row once and agrees with the Explainer."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from deltalake import DeltaTable
from PIL import Image

import lakenet
from lakenet.inference.explain import Explainer
from lakenet.models.bundle import Bundle

pytestmark = pytest.mark.integration


def _fit(wd: Path, table: str, label: str, name: str, **trainer: Any) -> Any:
    cfg = {
        "data": {"table": table},
        "features": {"label": label, "include": "auto", "exclude": ["key"]},
        "model": {"width": 32},
        "trainer": {"epochs": 20, "baseline": "none", **trainer},
        "registry": {"name": name},
    }
    return lakenet.fit(cfg, progress=False, workdir=wd)


def _rows(table: str, n: int) -> Any:
    return DeltaTable(table).to_pyarrow_table().slice(0, n)


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Eight columns, two of which decide the label (x0 and x1); the others are noise, two of them categories."""
    wd = tmp_path_factory.mktemp("explain")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rng = np.random.default_rng(0)
    n = 4000
    df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(6)})
    df["c0"], df["c1"] = rng.choice(list("abcd"), n), rng.choice(list("pqrs"), n)
    df["label"] = np.where(df.x0 + 2 * df.x1 > 0, "yes", "no")
    df.to_csv(wd / "t.csv", index=False)
    table = lakenet.ingest(wd / "t.csv", wd / "data" / "t").table
    return {"wd": wd, "table": table, "fit": _fit(wd, table, "label", "signal")}


def test_the_signal_columns_get_the_attribution_and_it_is_complete(tabular: dict[str, Any]) -> None:
    ex = Explainer(tabular["fit"].bundle_dir)
    rows = _rows(tabular["table"], 300)
    e = ex.explain(ex.pre.encode(rows, with_label=False).inputs)
    share = dict(zip(e.columns, e.share().mean(0), strict=True))
    assert share["x0"] + share["x1"] >= 0.8, share
    assert share["x1"] > share["x0"]  # its weight is twice x0's
    # completeness: the attributions of a row sum to its output minus the baseline's
    assert np.all(e.gap <= 0.02 * np.maximum(np.abs(e.output - e.baseline_output), 1.0)), e.gap.max()


def test_the_summed_gradient_step_gives_captums_own_attributions(
    tabular: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from captum.attr import LayerIntegratedGradients

    from lakenet.inference import explain

    assert explain.summed_layer_ig() is not LayerIntegratedGradients  # the faster step is the one in use
    ex = Explainer(tabular["fit"].bundle_dir, batch_size=128)
    inputs = ex.pre.encode(_rows(tabular["table"], 200), with_label=False).inputs
    fast = ex.explain(inputs)
    monkeypatch.setattr(explain, "_SUMMED_LIG", [LayerIntegratedGradients])  # Captum's step: one output at a time
    stock = ex.explain(inputs)
    np.testing.assert_allclose(fast.values, stock.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.gap, stock.gap, atol=1e-6)
    assert np.array_equal(fast.steps, stock.steps)


def test_a_model_with_reinitialised_weights_is_explained_differently(tabular: dict[str, Any]) -> None:
    trained = Bundle.load(tabular["fit"].bundle_dir)
    torch.manual_seed(123)
    fresh = {k: torch.randn_like(v) * 0.5 if v.is_floating_point() else v for k, v in trained.weights.items()}
    random = Bundle(trained.spec, trained.preprocessor, fresh)
    rows = _rows(tabular["table"], 200)
    a, b = Explainer(trained), Explainer(random)
    ea = a.explain(a.pre.encode(rows, with_label=False).inputs)
    eb = b.explain(b.pre.encode(rows, with_label=False).inputs)
    corr = np.corrcoef(ea.values.ravel(), eb.values.ravel())[0, 1]
    assert corr < 0.5, corr  # the model-randomisation check: the explanation depends on what was learned
    share = dict(zip(eb.columns, eb.share().mean(0), strict=True))
    assert share["x0"] + share["x1"] < 0.6


def test_lakenet_explain_writes_each_row_once_and_agrees_with_the_explainer(
    tabular: dict[str, Any], tmp_path: Path
) -> None:
    wd, table, fit = tabular["wd"], tabular["table"], tabular["fit"]
    out = tmp_path / "why"
    res = lakenet.explain(fit.model_uri, table, str(out), top_k=3, workdir=wd)
    assert res.committed and res.rows == 4000 and res.bad_rows == 0 and "x0" in res.columns
    again = lakenet.explain(fit.model_uri, table, str(out), top_k=3, workdir=wd)
    assert not again.committed and DeltaTable(str(out)).version() == 0
    got = DeltaTable(str(out)).to_pyarrow_table().to_pylist()
    assert len({r["key"] for r in got}) == 4000
    first = {r["key"]: r for r in got}
    ex = Explainer(Bundle.load(fit.bundle_dir))
    direct = ex(_rows(table, 64)).to_pylist()
    for d in direct:
        b = first[d["key"]]
        assert b["prediction"] == d["prediction"] and len(b["top"]) == 3
        assert dict(b["attributions"]).keys() == {"x0", "x1", "x2", "x3", "x4", "x5", "c0", "c1"}
        for k, v in dict(d["attributions"]).items():
            assert abs(dict(b["attributions"])[k] - v) <= 1e-5
    predicted = lakenet.predict(fit.model_uri, table, str(tmp_path / "pred"), workdir=wd)
    preds = {r["key"]: r for r in DeltaTable(predicted.table).to_pyarrow_table().to_pylist()}
    for k, r in first.items():  # the class explained is the one predicted, with predict's confidence
        assert preds[k]["prediction"] == r["prediction"] and abs(preds[k]["confidence"] - r["confidence"]) < 1e-5
        assert abs(np.log(r["confidence"]) - r["output"]) < 1e-4  # what is explained: its log-probability


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_a_corner_patch_gets_the_image_map(tmp_path: Path) -> None:
    """The class is decided by the brightness of a 4×4 patch in the top-left corner of a 12×12 image; the rest is
    noise. The attribution map's mass falls in that corner."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(600):
        img = rng.integers(60, 196, (12, 12))
        bright = i % 2 == 0
        img[:4, :4] = 240 if bright else 15
        rows.append({"key": f"k{i}", "image": _png(img), "label": "bright" if bright else "dark"})
    pd.DataFrame(rows).to_parquet(tmp_path / "img.parquet")
    table = lakenet.ingest(tmp_path / "img.parquet", tmp_path / "data" / "img").table
    cfg = {
        "data": {"table": table},
        "features": {"image": {"type": "image", "size": 12, "channels": 1}, "label": "label"},
        "model": {"architecture": "resnet", "width": 8, "depth": 2},
        "trainer": {"epochs": 10, "learning_rate": 0.003, "baseline": "none"},
        "registry": {"name": "corner"},
    }
    fit = lakenet.fit(cfg, progress=False, workdir=tmp_path)
    assert fit.metrics["test_accuracy"] > 0.9
    ex = Explainer(fit.bundle_dir)
    batch = _rows(table, 100)
    e = ex.explain(ex.pre.encode(batch, with_label=False).inputs)
    assert e.image_maps is not None and e.image_maps.shape == (100, 12, 12)
    mass = np.abs(e.image_maps)
    corner = mass[:, :6, :6].sum((1, 2)) / mass.sum((1, 2))
    assert corner.mean() >= 0.7, corner.mean()
    out = ex(batch).to_pylist()[0]
    assert out["image_map"][:8] == b"\x89PNG\r\n\x1a\n"
    regions = dict(out["regions"])
    assert max(regions, key=regions.get) == "top-left" and abs(sum(regions.values()) - 1) < 1e-6
    html = Path(fit.reports["evaluation"]).read_text()
    assert "Where the model looks" in html and html.count("data:image/png;base64,") >= 2  # one map per class


def test_a_planted_sentiment_word_leads_its_sentence(tmp_path: Path) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rng = np.random.default_rng(2)
    good, bad = ["great", "wonderful", "superb"], ["awful", "dreadful", "terrible"]
    dishes, fillers = ["soup", "pasta", "curry", "salad"], ["honestly", "today", "again", "with friends"]
    rows = []
    for i in range(1200):
        positive = i % 2 == 0
        word = rng.choice(good if positive else bad)
        text = f"the {rng.choice(dishes)} we had {rng.choice(fillers)} was {word} and we paid the bill"
        rows.append({"key": f"r{i}", "review": text, "label": "pos" if positive else "neg"})
    pd.DataFrame(rows).to_csv(tmp_path / "reviews.csv", index=False)
    table = lakenet.ingest(tmp_path / "reviews.csv", tmp_path / "data" / "reviews").table
    cfg = {
        "data": {"table": table},
        "features": {"review": {"type": "text", "encoder": "bag"}, "label": "label"},
        "trainer": {"epochs": 8, "learning_rate": 0.01, "baseline": "none"},
        "registry": {"name": "reviews"},
    }
    fit = lakenet.fit(cfg, progress=False, workdir=tmp_path)
    assert fit.metrics["test_accuracy"] > 0.95
    ex = Explainer(fit.bundle_dir)
    out = ex(_rows(table, 60)).to_pylist()
    led = 0
    for r in out:
        top = max(r["tokens"], key=lambda t: abs(t["attribution"]))
        led += any(w in top["token"].split() for w in good + bad)
    assert led == len(out), (led, len(out))


def test_online_explanations_equal_batch_ones_with_their_own_limits(tabular: dict[str, Any], tmp_path: Path) -> None:
    import concurrent.futures

    import httpx

    wd, table, fit = tabular["wd"], tabular["table"], tabular["fit"]
    rows = _rows(table, 8)
    body = {"rows": [{k: v for k, v in r.items() if k not in ("key", "label")} for r in rows.to_pylist()]}
    batch = {r["key"]: r for r in Explainer(Bundle.load(fit.bundle_dir))(rows).to_pylist()}
    handle = lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning", workdir=wd,
                           max_inflight_explain=1, explain_timeout_s=20.0)  # fmt: skip
    assert handle is not None
    with handle, httpx.Client(base_url=handle.url, timeout=60) as client:
        r = client.post("/v1/explain", json=body)
        assert r.status_code == 200, r.text
        online = r.json()["explanations"]
        assert len(online) == 8
        for key, o in zip((r["key"] for r in rows.to_pylist()), online, strict=True):
            b = batch[key]
            assert o["prediction"] == b["prediction"] and [t["column"] for t in o["top"]] == [
                t["column"] for t in b["top"]
            ]
            for col, v in dict(b["attributions"]).items():
                assert abs(o["attributions"][col] - v) <= 1e-5
        assert "/v1/explain" in client.get("/openapi.json").json()["paths"]
        big = {"rows": body["rows"] * 32}  # 256 rows: long enough to hold the one explanation slot
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client.post("/v1/explain", json=big).status_code, range(4)))
            assert client.post("/v1/predict", json=body).status_code == 200  # scoring is not held up
        assert 503 in answers and 200 in answers, answers
    slow = lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning", workdir=wd,
                         explain_timeout_s=0.05)  # fmt: skip
    assert slow is not None
    with slow, httpx.Client(base_url=slow.url, timeout=60) as client:
        assert client.post("/v1/explain", json={"rows": body["rows"] * 32}).status_code == 504


def test_the_evaluation_shows_permutation_importance_with_intervals(tabular: dict[str, Any]) -> None:
    import json

    fit = tabular["fit"]
    report = json.loads(Path(fit.reports["evaluation_json"]).read_text())
    imp = {c["column"]: c for c in report["importance"]}
    assert report["importance_metric"] == "test_roc_auc" and set(imp) == {f"x{i}" for i in range(6)} | {"c0", "c1"}
    assert [c["column"] for c in report["importance"][:2]] == ["x1", "x0"]  # the two that carry the signal
    assert imp["x1"]["low"] > 0.05 and imp["x0"]["low"] > 0.0
    for noise in ("x2", "x3", "x4", "x5", "c0", "c1"):
        assert imp[noise]["mean"] < 0.5 * imp["x0"]["mean"] and imp[noise]["low"] <= imp[noise]["mean"]
    html = Path(fit.reports["evaluation"]).read_text()
    assert "Global importance" in html and "drop in test_roc_auc" in html
