"""task: recommendation end to end on the generated interaction log (users and items with latent tastes): the
time-based holdout beats the popularity ranking by 2×, the top-k table is written once per input version (seen
items left out, a new user answered by popularity), /v1/recommend agrees with it, and featurize writes the
item vectors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable

import lakenet
from lakenet.examples.interactions import interactions_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    wd = tmp_path_factory.mktemp("recommend")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    log = interactions_frame(600, 300, seed=0)
    log.to_csv(wd / "log.csv", index=False)
    table = lakenet.ingest(wd / "log.csv", wd / "log", key="event_id").table
    raw = yaml.safe_load(lakenet.init_config(table, task="recommendation", name="shop"))
    raw["trainer"].update(epochs=15)
    fit = lakenet.fit(raw, progress=False)
    yield {"wd": wd, "table": table, "fit": fit, "config": raw, "log": log}
    mp.undo()


def test_init_finds_the_roles(trained: dict[str, Any]) -> None:
    rec = trained["config"]["recommend"]
    assert (rec["user"], rec["item"], rec["timestamp"]) == ("user_id", "item_id", "timestamp")
    assert rec["item_features"] == ["genre", "price"]  # one value per item
    assert "rating" not in trained["config"]["features"]  # an outcome of the interaction, not a feature


def test_the_holdout_is_ranked_twice_as_well_as_by_popularity(trained: dict[str, Any]) -> None:
    m = trained["fit"].metrics
    assert m["test_users"] >= 500
    assert m["test_recall_at_10"] >= 2 * m["baseline_recall_at_10"], m
    assert m["test_ndcg_at_10"] >= 2 * m["baseline_ndcg_at_10"], m


def test_top_k_per_user_once_per_input_version(trained: dict[str, Any]) -> None:
    wd, fit, table, log = trained["wd"], trained["fit"], trained["table"], trained["log"]
    first = lakenet.predict(fit.model_uri, table, str(wd / "recs"))
    again = lakenet.predict(fit.model_uri, table, str(wd / "recs"))
    assert first.committed and not again.committed and first.rows == 600
    recs = DeltaTable(str(wd / "recs")).to_pandas()
    assert len(recs) == 600 * 10 and (recs.groupby("user").size() == 10).all()
    assert all(sorted(r) == list(range(1, 11)) for r in recs.groupby("user")["rank"].apply(list))
    seen = set(zip(log.user_id, log.item_id, strict=True))
    assert not any((u, i) in seen for u, i in zip(recs.user, recs.item, strict=True))  # nothing they already had
    assert (recs.source == "model").all()
    # a new day: new interactions, among them a user the model never learned
    day2 = interactions_frame(5, 300, seed=1, start_user=9000).assign(event_id=lambda d: "day2-" + d.event_id)
    day2.to_csv(wd / "day2.csv", index=False)
    lakenet.ingest(wd / "day2.csv", wd / "log", key="event_id")
    lakenet.predict(fit.model_uri, table, str(wd / "recs"))
    dt = DeltaTable(str(wd / "recs"))
    assert dt.version() == 1  # the latest recommendations replace the old ones, in one commit
    recs = dt.to_pandas()
    assert recs.user.nunique() == 605 and set(recs[recs.user.str.startswith("U09")].source) == {"popularity"}


def test_served_recommendations_match_the_table(trained: dict[str, Any]) -> None:
    wd, fit, log = trained["wd"], trained["fit"], trained["log"]
    recs = DeltaTable(str(wd / "recs")).to_pandas()
    handle = lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning")
    assert handle is not None
    try:
        for user in ("U00003", "U00120"):
            mine = log[log.user_id == user]
            features = mine.iloc[-1][["country", "age"]].to_dict()
            body = {"user": user, "features": features, "exclude": sorted(set(mine.item_id))}
            r = httpx.post(f"{handle.url}/v1/recommend", json=body, timeout=30)
            assert r.status_code == 200, r.text
            got = [x["item"] for x in r.json()["items"]]
            assert got == recs[recs.user == user].sort_values("rank").item.tolist()
            assert r.json()["source"] == "model"
        cold = httpx.post(f"{handle.url}/v1/recommend", json={"user": "someone new", "k": 3}, timeout=30).json()
        assert cold["source"] == "popularity" and len(cold["items"]) == 3
        bad = httpx.post(f"{handle.url}/v1/recommend", json={"user": "U00003", "features": {"genre": "g01"}})
        assert bad.status_code == 422  # an item feature is not the user's to send
    finally:
        handle.stop()


def test_featurize_writes_the_item_vectors(trained: dict[str, Any]) -> None:
    wd, fit = trained["wd"], trained["fit"]
    res = lakenet.featurize(fit.model_uri, trained["table"], str(wd / "items"), key="event_id")
    items = DeltaTable(str(wd / "items")).to_pandas()
    assert res.rows == len(items) <= 300 and len(items.embedding[0]) == 32
    counts = pd.read_csv(wd / "log.csv").item_id.value_counts()
    top = items.sort_values("interactions", ascending=False).item.iloc[0]
    assert top in counts.index[:5].tolist()  # the most interacted-with item in training is among the top


def test_evaluate_repeats_the_holdout_and_row_wise_commands_say_why_not(trained: dict[str, Any]) -> None:
    from lakenet.errors import ConfigError, DataError

    fit = trained["fit"]
    again = lakenet.evaluate(trained["config"] | {"data": {**trained["config"]["data"], "version": 0}},
                             model=fit.model_uri)  # fmt: skip
    assert again["metrics"]["test_recall_at_10"] == pytest.approx(fit.metrics["test_recall_at_10"])
    with pytest.raises(DataError, match="is a recommender"):
        lakenet.drift(fit.model_uri)
    with pytest.raises(ConfigError, match="does not update recommendation models"):
        lakenet.update(trained["config"])


def test_a_misnamed_user_or_time_column_is_named_by_its_key(trained: dict[str, Any]) -> None:
    from lakenet.errors import DataError

    for key, wrong in (("user", "usr_id"), ("timestamp", "tstamp")):
        cfg = {**trained["config"], "recommend": {**trained["config"]["recommend"], key: wrong}}
        with pytest.raises(DataError, match=rf"Column '{wrong}' not in table .* Set recommend\.{key} "):
            lakenet.fit(cfg, progress=False)
