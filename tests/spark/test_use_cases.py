"""The use cases beyond classification and regression on a real Spark local[2] session, against the local engine:
an anomaly model, a spoken-digit model and a recommender trained and scored on Spark give the local results."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.examples.spoken_digits import VOICE_PATTERN, espeak, write_spoken_digits

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="no Java"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark() -> Any:
    pytest.importorskip("pyspark")
    import lakenet.spark

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    session = lakenet.spark.session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("use_cases_spark")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield d
    mp.undo()


def test_anomaly_on_spark_equals_local(spark: Any, wd: Path) -> None:
    from lakenet.examples.sensors import write_sensors_csv

    table = lakenet.ingest(write_sensors_csv(wd / "sensors.csv", rows=3000, seed=2), wd / "sensors", key="reading_id")
    cfg = {
        "data": {"table": table.table, "key": "reading_id"},
        "features": {"label": {"column": "fault", "task": "anomaly"}, "include": "auto"},
        "trainer": {"epochs": 4, "batch_size": 128, "early_stopping": None},
    }
    on_spark = lakenet.fit({**cfg, "engine": {"type": "spark"}, "registry": {"name": "sensors_spark"}}, progress=False)
    local = lakenet.fit({**cfg, "registry": {"name": "sensors_local"}}, progress=False)
    for k in ("threshold", "test_flagged_rate", "test_roc_auc"):
        assert on_spark.metrics[k] == pytest.approx(local.metrics[k], abs=1e-4), k
    lakenet.predict(local.model_uri, table.table, str(wd / "by_spark"), engine="spark")
    lakenet.predict(local.model_uri, table.table, str(wd / "by_local"))
    a = DeltaTable(str(wd / "by_spark")).to_pandas().set_index("reading_id").sort_index()
    b = DeltaTable(str(wd / "by_local")).to_pandas().set_index("reading_id").sort_index()
    assert len(a) == len(b) == 3000
    assert np.allclose(a.score, b.score, atol=1e-9) and (a.is_anomaly == b.is_anomaly).all()
    lakenet.spark.register_udf(spark, "sensor_score", local.model_uri)
    spark.read.parquet(*DeltaTable(table.table).file_uris()).createOrReplaceTempView("readings")
    cols = ", ".join(f"`{c}`" for c in ("machine", "timestamp", "mode", "rpm", "power_kw", "temperature_c",
                                         "vibration_mm_s", "pressure_bar"))  # fmt: skip
    rows = spark.sql(f"SELECT reading_id, sensor_score({cols}) AS s FROM readings LIMIT 50").collect()
    for r in rows:
        assert r["s"] == pytest.approx(b.loc[r["reading_id"], "score"], abs=1e-9)


@pytest.mark.skipif(espeak() is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_voice_on_spark_equals_local(spark: Any, wd: Path) -> None:
    """Spoken digits trained on Spark (the audio decoded in the executors) and locally: the same run; scored by
    Spark, the local predictions."""
    folder = write_spoken_digits(wd / "wav", voice_count=8, speeds=(150,), pitches=(50,))
    table = lakenet.ingest(folder, wd / "spoken").table
    cfg = {
        "data": {"table": table, "split": {"train": 0.6, "val": 0.2, "test": 0.2, "group": "path",
                                           "group_pattern": VOICE_PATTERN}},
        "features": {"label": "label", "audio": {"type": "audio", "n_mels": 32}},
        "model": {"width": 8, "depth": 2},
        "trainer": {"epochs": 3, "batch_size": 16, "early_stopping": None},
    }  # fmt: skip
    on_spark = lakenet.fit({**cfg, "engine": {"type": "spark"}, "registry": {"name": "voice_spark"}}, progress=False)
    local = lakenet.fit({**cfg, "registry": {"name": "voice_local"}}, progress=False)
    assert on_spark.history[-1]["train_loss"] == pytest.approx(local.history[-1]["train_loss"], rel=1e-4)
    assert on_spark.metrics["test_accuracy"] == pytest.approx(local.metrics["test_accuracy"], abs=1e-9)
    lakenet.predict(local.model_uri, table, str(wd / "voice_by_spark"), engine="spark")
    lakenet.predict(local.model_uri, table, str(wd / "voice_by_local"))
    a = DeltaTable(str(wd / "voice_by_spark")).to_pandas().set_index("key").sort_index()
    b = DeltaTable(str(wd / "voice_by_local")).to_pandas().set_index("key").sort_index()
    assert len(a) == len(b) == 80
    assert (a.prediction == b.prediction).all() and np.allclose(a.confidence, b.confidence, atol=1e-6)


def test_recommendation_on_spark_equals_local(spark: Any, wd: Path) -> None:
    """The holdout, the catalogue and the evaluation passes run on the executors; the top-k table written from
    Spark equals the local one."""
    from lakenet.examples.interactions import interactions_frame

    interactions_frame(200, 100, seed=3).to_csv(wd / "log.csv", index=False)
    table = lakenet.ingest(wd / "log.csv", wd / "log", key="event_id").table
    cfg = {
        "data": {"table": table, "key": "event_id"},
        "features": {"label": {"task": "recommendation"}, "genre": "category", "price": "numeric",
                     "country": "category"},
        "recommend": {"user": "user_id", "item": "item_id", "timestamp": "timestamp",
                      "item_features": ["genre", "price"]},
        "trainer": {"epochs": 3, "batch_size": 128, "early_stopping": None},
    }  # fmt: skip
    on_spark = lakenet.fit({**cfg, "engine": {"type": "spark"}, "registry": {"name": "shop_spark"}}, progress=False)
    local = lakenet.fit({**cfg, "registry": {"name": "shop_local"}}, progress=False)
    for k in ("test_recall_at_10", "test_ndcg_at_10", "baseline_recall_at_10", "test_users"):
        assert on_spark.metrics[k] == pytest.approx(local.metrics[k], abs=1e-9), k
    lakenet.predict(local.model_uri, table, str(wd / "recs_spark"), engine="spark")
    lakenet.predict(local.model_uri, table, str(wd / "recs_local"))
    a = DeltaTable(str(wd / "recs_spark")).to_pandas().sort_values(["user", "rank"]).reset_index(drop=True)
    b = DeltaTable(str(wd / "recs_local")).to_pandas().sort_values(["user", "rank"]).reset_index(drop=True)
    assert len(a) == 2000 and a[["user", "rank", "item"]].equals(b[["user", "rank", "item"]])
