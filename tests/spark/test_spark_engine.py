"""The Spark engine on a real local[2] session: the same YAML trains and scores on Spark, parity with the local
engine, resume after a killed task, exactly-once scoring under a killed task and a rerun, models as SQL
functions, clear start-up errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.training.callbacks import Callback
from tests.conftest import digits_config

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="no Java"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark() -> Any:
    pytest.importorskip("pyspark")
    import lakenet.spark

    # Python workers must import this repo's tests (user modules, kill switches) like the driver does.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    # local[2,4]: two slots, and a failed task is retried (plain local[2] gives up at the first failure)
    session = lakenet.spark.session("local[2,4]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("spark")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield d
    mp.undo()


def config(table: Path, engine: dict[str, Any], name: str, **over: Any) -> dict[str, Any]:
    return digits_config(
        table,
        engine=engine,
        registry={"name": name},
        trainer__epochs=3,
        trainer__early_stopping=None,
        trainer__checkpoint_every_steps=2,
        **over,
    )


@pytest.fixture(scope="module")
def trained(spark: Any, wd: Path, digits_table: Path) -> dict[str, Any]:
    on_spark = lakenet.fit(config(digits_table, {"type": "spark", "workers": 2}, "on_spark"), progress=False)
    local = lakenet.fit(config(digits_table, {"type": "local", "workers": 2}, "on_local"), progress=False)
    return {"spark": on_spark, "local": local}


def test_training_parity_with_local_engine(trained: dict[str, Any]) -> None:
    s, loc = trained["spark"], trained["local"]
    assert s.version == "1" and loc.version == "1"
    assert len(s.history) == len(loc.history) == 3
    # Same seed, same 2 workers, same shards and batches: the same run, whoever launched it.
    assert s.metrics["test_accuracy"] == pytest.approx(loc.metrics["test_accuracy"], abs=0.02)
    assert s.history[-1]["train_loss"] == pytest.approx(loc.history[-1]["train_loss"], rel=1e-3)
    listing = {m["name"]: m for m in lakenet.models()}
    assert listing["on_spark"]["versions"][0]["lineage"]["engine"] == "spark"


def test_same_model_scores_identically_on_both_engines(trained: dict[str, Any], wd: Path, digits_table: Path) -> None:
    uri = trained["spark"].model_uri
    a = lakenet.predict(uri, str(digits_table), str(wd / "scored_spark"), engine="spark")
    b = lakenet.predict(uri, str(digits_table), str(wd / "scored_local"), engine="local")
    assert a.committed and a.rows == b.rows == 243 and a.bad_rows == b.bad_rows == 3
    ta = DeltaTable(a.table).to_pyarrow_table().sort_by("key")
    tb = DeltaTable(b.table).to_pyarrow_table().sort_by("key")
    assert ta.column("key").equals(tb.column("key"))
    assert ta.column("prediction").equals(tb.column("prediction"))
    again = lakenet.predict(uri, str(digits_table), str(wd / "scored_spark"), engine="spark")
    assert not again.committed
    assert DeltaTable(a.table).to_pyarrow_table().num_rows == 243


class KillOnce(Callback):
    """Kills rank 0's Python worker at a step, once (a marker file remembers), to simulate a lost task."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_step_end(self, state: Any, logs: Any) -> None:
        if state.step == self.step and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(9)


def test_resume_after_killed_task(spark: Any, wd: Path, digits_table: Path, trained: dict[str, Any]) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = wd / "killed-train"
    cfg = config(digits_table, {"type": "spark", "workers": 2}, "killed")
    fit = lakenet.fit(cfg, progress=False, callbacks=[KillOnce(9, str(marker))])
    assert marker.exists()  # the task really died
    training = lakenet.Predictor(fit.bundle_dir).bundle.training
    uninterrupted = lakenet.Predictor(trained["spark"].bundle_dir).bundle.training
    assert training["step"] == uninterrupted["step"] > 9  # the run completed every step
    assert training["resumed_from_step"] == 8  # the last complete checkpoint before the kill at step 9
    # and it is the same run: the same weights as the uninterrupted one, so the same test score
    assert fit.metrics["test_accuracy"] == pytest.approx(trained["spark"].metrics["test_accuracy"])


def test_exactly_once_when_a_scoring_task_dies(trained: dict[str, Any], wd: Path, digits_table: Path) -> None:
    import dataclasses

    from lakenet.models.bundle import Bundle

    marker = wd / "killed-score"
    bundle = Bundle.load(trained["spark"].bundle_dir)
    bundle.spec = dataclasses.replace(
        bundle.spec, architecture="tests.spark.killer:KillOnFirstForward", options={"marker": str(marker)}
    )
    killer = bundle.save(wd / "killer_bundle")
    res = lakenet.predict(
        str(killer),
        str(digits_table),
        str(wd / "scored_kill"),
        engine="spark",
        workers=2,
        trust_modules=["tests.spark.killer:KillOnFirstForward"],
    )
    assert marker.exists() and res.committed  # a task died, was retried, and the job still committed once
    table = DeltaTable(res.table).to_pyarrow_table()
    assert table.num_rows == 243 and len(table.column("key").unique()) == 243
    assert len(DeltaTable(res.table).history()) == 1  # one commit creates the table with every row


def test_the_scan_runs_on_the_executors_and_equals_the_local_one(spark: Any, digits_table: Path) -> None:
    """The whole-table pass (profile, bad rows, preprocessing statistics) as Spark tasks whose partial results
    merge: the same outcome as one pass in this process."""
    from lakenet.config import parse_config
    from lakenet.data.scan import scan_table
    from lakenet.data.sources import open_table
    from lakenet.engines.spark import SparkEngine

    cfg = parse_config(digits_config(digits_table))
    snap = open_table(str(digits_table)).subdivided(8)
    local = scan_table(cfg, snap)
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    distributed = scan_table(cfg, snap, map_fragments=SparkEngine(spark=spark).map_fragments)
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup()) > jobs_before  # it ran as a Spark job
    assert distributed.profile.splits == local.profile.splits
    assert distributed.profile.bad_rows.by_reason == local.profile.bad_rows.by_reason
    assert (distributed.fragment_counts == local.fragment_counts).all()
    a, b = local.preprocessor.to_dict(), distributed.preprocessor.to_dict()
    assert a["label"] == b["label"]
    image_a, image_b = a["features"][0], b["features"][0]
    assert image_a["mean"] == pytest.approx(image_b["mean"], rel=1e-6) and image_a["std"] == pytest.approx(
        image_b["std"], rel=1e-6
    )


def test_the_evaluation_runs_on_the_executors_and_equals_the_local_one(
    spark: Any, trained: dict[str, Any], digits_table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test-split evaluation as Spark tasks returning bounded tallies: the same confusion matrix, metrics and
    most confident mistakes as one pass in this process; the driver never scores a fragment itself."""
    from lakenet.config.schema import SplitConfig
    from lakenet.data.sources import open_table
    from lakenet.engines.spark import SparkEngine
    from lakenet.evaluation import evaluate
    from lakenet.inference.predictor import Predictor

    fit = trained["spark"]
    predictor = Predictor(fit.bundle_dir)
    split = SplitConfig(**predictor.bundle.training["split"])
    snap = open_table(str(digits_table)).subdivided(8)
    local = evaluate.evaluate_split(snap, predictor, split)

    def not_here(*_: Any) -> None:
        raise AssertionError("a fragment was scored on the driver")

    monkeypatch.setattr(evaluate._EvalTask, "__call__", not_here)  # the executors import the real one
    distributed = evaluate.evaluate_split(snap, predictor, split, engine=SparkEngine(spark=spark),
                                          bundle_dir=str(fit.bundle_dir))  # fmt: skip
    assert distributed.rows == local.rows > 0 and distributed.confusion_matrix == local.confusion_matrix
    assert distributed.metrics == pytest.approx(local.metrics, abs=1e-9)
    assert distributed.worst == local.worst


def test_the_drift_sample_is_drawn_on_the_executors_and_equals_the_local_one(spark: Any, digits_table: Path) -> None:
    """Drift's bottom-k sample by key hash: each Spark task returns at most k rows, the samples merge, and the
    result is the local one, row for row, whatever the fragments."""
    from lakenet.config.schema import SplitConfig
    from lakenet.data.sources import open_table
    from lakenet.engines.spark import SparkEngine
    from lakenet.monitoring.drift import sample_rows

    snap = open_table(str(digits_table))
    for split in (None, SplitConfig()):
        local = sample_rows(snap, ["label"], "key", 40, split=split)
        distributed = sample_rows(snap.subdivided(8), ["label"], "key", 40, split=split,
                                  map_fragments=SparkEngine(spark=spark).map_fragments)  # fmt: skip
        assert local.num_rows == 40 and distributed.to_pylist() == local.to_pylist()


def test_incremental_scoring_on_spark_equals_local(trained: dict[str, Any], wd: Path, digits_table: Path) -> None:
    """Appends, then a delete upstream: both engines keep one row per key, with the same predictions."""
    table = wd / "growing_digits"
    rows = DeltaTable(str(digits_table)).to_pyarrow_table()
    from deltalake import write_deltalake

    write_deltalake(str(table), rows.slice(0, 150))
    uri = trained["spark"].model_uri
    outs = {e: wd / f"inc_{e}" for e in ("spark", "local")}
    for engine, out in outs.items():
        assert lakenet.predict(uri, str(table), str(out), engine=engine, incremental=True).rows == 150
    write_deltalake(str(table), rows.slice(150), mode="append")
    DeltaTable(str(table)).delete("key = '" + rows.column("key")[3].as_py() + "'")
    for engine, out in outs.items():
        res = lakenet.predict(uri, str(table), str(out), engine=engine, incremental=True)
        assert res.committed and res.deleted == 1
    a = DeltaTable(str(outs["spark"])).to_pyarrow_table().sort_by("key")
    b = DeltaTable(str(outs["local"])).to_pyarrow_table().sort_by("key")
    assert a.num_rows == b.num_rows == 242 and len(a.column("key").unique()) == 242
    assert a.column("key").equals(b.column("key")) and a.column("prediction").equals(b.column("prediction"))


def test_spark_scoring_on_a_path_with_spaces_and_accents(trained: dict[str, Any], wd: Path, digits_table: Path) -> None:
    odd = wd / "dàta lake" / "dïgits tâble"
    shutil.copytree(digits_table, odd)  # a Delta table's paths are relative: the copy is the same table
    res = lakenet.predict(trained["spark"].model_uri, str(odd), str(wd / "dàta lake" / "scöred"), engine="spark")
    assert res.committed and res.rows == 243 and res.bad_rows == 3


def test_a_spark_job_killed_before_its_commit_leaves_nothing_visible(
    trained: dict[str, Any], wd: Path, digits_table: Path
) -> None:
    """A driver killed (SIGKILL) once its tasks wrote their files, before the commit: no table, no rows a Parquet
    reader of the folder would see; the next run commits every row once and removes the dead run's files."""
    import signal

    import pyarrow.dataset as ds

    out = wd / "scored_killed_driver"
    args = ["predict", "--model", trained["spark"].model_uri, "--table", str(digits_table), "--out", str(out),
            "--engine", "spark", "--master", "local[2]", "--workdir", str(wd)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-m", "tests.fault_harness", str(wd / "gate-spark"), "1", "kill", "--",
                             *args], cwd=wd, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "_delta_log").exists()
    assert ds.dataset(str(out), format="parquet").count_rows() == 0  # its files are in the hidden staging folder
    res = lakenet.predict(trained["spark"].model_uri, str(digits_table), str(out), engine="spark")
    assert res.committed and DeltaTable(str(out)).to_pyarrow_table().num_rows == 243
    assert not (out / "_lakenet_staging").exists()
    assert {f.name for f in out.glob("*.parquet")} == {Path(f).name for f in DeltaTable(str(out)).file_uris()}


def test_model_as_sql_function(spark: Any, trained: dict[str, Any], digits_table: Path) -> None:
    import lakenet.spark

    lakenet.spark.register_udf(spark, "digit", trained["spark"].model_uri)
    spark.read.parquet(*DeltaTable(str(digits_table)).file_uris()).createOrReplaceTempView("digits")
    rows = spark.sql("SELECT key, label, digit(image) AS pred FROM digits WHERE key NOT LIKE '%corrupt%'").collect()
    assert len(rows) == 240
    accuracy = sum(r["pred"] == r["label"] for r in rows) / len(rows)
    assert accuracy > 0.5
    assert spark.sql("SELECT digit(image) AS p FROM digits WHERE key LIKE '%corrupt%'").collect()[0]["p"] is None


def test_barrier_needs_enough_slots(spark: Any, wd: Path, digits_table: Path) -> None:
    with pytest.raises(lakenet.LakenetError, match=r"engine.workers = 3 barrier tasks.*2 task slots"):
        lakenet.fit(config(digits_table, {"type": "spark", "workers": 3}, "toomany"), progress=False)


def test_gpus_requested_but_not_offered(spark: Any, wd: Path, digits_table: Path) -> None:
    cfg = config(digits_table, {"type": "spark", "workers": 1, "gpus_per_worker": 1}, "gpu")
    with pytest.raises(lakenet.LakenetError, match=r"gpus_per_worker = 1.*offers 0 GPU"):
        lakenet.fit(cfg, progress=False)


def test_missing_java_and_bad_master_are_clear(tmp_path: Path) -> None:
    from lakenet.engines.spark import _check_java

    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    code = "from lakenet.engines.spark import _check_java; _check_java()"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": str(tmp_path)}, capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode != 0 and "openjdk-17-jre-headless" in out.stderr
    _check_java()  # this machine has one
    code = "import lakenet.spark; lakenet.spark.session('bogus://nowhere:1')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Cannot start Spark with master 'bogus://nowhere:1'" in out.stderr
    assert "Check engine.master" in out.stderr


def test_featurize_on_spark_equals_local_and_commits_once(
    spark: Any, trained: dict[str, Any], wd: Path, digits_table: Path
) -> None:
    import numpy as np

    model = trained["spark"].model_uri
    on_spark = lakenet.featurize(model, str(digits_table), str(wd / "emb_spark"), engine="spark", spark=spark)
    again = lakenet.featurize(model, str(digits_table), str(wd / "emb_spark"), engine="spark", spark=spark)
    local = lakenet.featurize(model, str(digits_table), str(wd / "emb_local"))
    assert on_spark.committed and not again.committed and on_spark.rows == local.rows == 243
    a = DeltaTable(on_spark.table).to_pyarrow_table().sort_by("key")
    b = DeltaTable(local.table).to_pyarrow_table().sort_by("key")
    assert a.column("key").equals(b.column("key")) and a.column("error").equals(b.column("error"))
    va = np.array([v or [0.0] * on_spark.dim for v in a.column("embedding").to_pylist()])
    vb = np.array([v or [0.0] * local.dim for v in b.column("embedding").to_pylist()])
    assert np.abs(va - vb).max() < 1e-5
    assert len(DeltaTable(on_spark.table).history()) == 1


def test_featurize_text_with_a_sentence_encoder_on_spark(spark: Any, wd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import pandas as pd
    from deltalake import write_deltalake

    from lakenet.examples import write_reviews_csv

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the packaged all-MiniLM-L6-v2, nothing from the hub
    write_deltalake(str(wd / "reviews"), pd.read_csv(write_reviews_csv(wd / "reviews.csv", rows=60)))
    kw: dict[str, Any] = {"column": "review"}
    on_spark = lakenet.featurize("all-MiniLM-L6-v2", str(wd / "reviews"), str(wd / "rev_spark"), spark=spark,
                                 engine="spark", **kw)  # fmt: skip
    local = lakenet.featurize("all-MiniLM-L6-v2", str(wd / "reviews"), str(wd / "rev_local"), **kw)
    assert on_spark.rows == local.rows == 60 and on_spark.dim == 384
    a = DeltaTable(on_spark.table).to_pandas().sort_values("key")
    b = DeltaTable(local.table).to_pandas().sort_values("key")
    assert list(a.columns) == ["key", "product", "sentiment", "embedding", "error"]
    assert np.abs(np.stack(a.embedding.to_numpy()) - np.stack(b.embedding.to_numpy())).max() < 1e-5


def test_explain_on_spark_equals_local_and_commits_once(
    spark: Any, trained: dict[str, Any], wd: Path, digits_table: Path
) -> None:
    """An image model: per-row attributions and heat maps from Spark tasks equal the local engine's."""
    model = trained["spark"].model_uri
    kw = {"top_k": 3, "n_steps": 16}
    on_spark = lakenet.explain(model, str(digits_table), str(wd / "why_spark"), engine="spark", spark=spark, **kw)
    again = lakenet.explain(model, str(digits_table), str(wd / "why_spark"), engine="spark", spark=spark, **kw)
    local = lakenet.explain(model, str(digits_table), str(wd / "why_local"), **kw)
    assert on_spark.committed and not again.committed and on_spark.rows == local.rows == 243
    a = DeltaTable(on_spark.table).to_pyarrow_table().sort_by("key").to_pylist()
    b = DeltaTable(local.table).to_pyarrow_table().sort_by("key").to_pylist()
    assert [r["key"] for r in a] == [r["key"] for r in b]
    assert sum(r["error"] is not None for r in a) == 3  # the corrupt files: an error, no attribution
    for x, y in zip(a, b, strict=True):
        assert x["prediction"] == y["prediction"] and (x["image_map"] is None) == (y["image_map"] is None)
        if x["attributions"] is not None:
            assert abs(dict(x["attributions"])["image"] - dict(y["attributions"])["image"]) < 1e-5
