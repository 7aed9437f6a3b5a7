"""lakenet over Spark Connect: a `SparkSession.builder.remote(...)` session (no SparkContext, no RDDs), as many
managed Spark platforms offer. pyspark starts a Connect server for `remote("local[2]")` in a JVM of its own; the
client talks to it over gRPC only. Training (a barrier stage), evaluation, scoring exactly once, featurize,
explain, tuning's task stage and the SQL function all run over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

import lakenet
from tests.conftest import digits_config

pytestmark = [pytest.mark.spark, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
ENGINE = {"type": "spark", "workers": 2, "remote": "local[2]"}


@pytest.fixture(scope="module")
def connect() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    pytest.importorskip("grpc")
    import lakenet.spark

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    session = lakenet.spark.session(remote="local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("connect")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def trained(connect: Any, wd: Path, digits_table: Path) -> dict[str, Any]:
    over = {"trainer__epochs": 2, "trainer__early_stopping": None}
    on_connect = lakenet.fit(digits_config(digits_table, engine=ENGINE, registry={"name": "on_connect"}, **over))
    local = lakenet.fit(digits_config(digits_table, engine={"type": "local", "workers": 2}, registry={"name": "here"},
                                      **over))  # fmt: skip
    return {"connect": on_connect, "local": local}


def test_the_session_is_a_connect_session(connect: Any) -> None:
    from lakenet.engines.spark import get_or_create_session
    from lakenet.engines.spark_tasks import Cluster, is_connect

    assert is_connect(connect) and type(connect).__module__.startswith("pyspark.sql.connect")
    with pytest.raises(Exception, match="not supported in Spark Connect"):
        _ = connect.sparkContext
    cluster = Cluster(connect)
    assert cluster.slots == 2 and cluster.master == "local[2]" and cluster.own_executor_jvms
    from lakenet.config.schema import SparkEngineConfig

    assert get_or_create_session(SparkEngineConfig(remote="local[2]")) is connect  # the engine reuses it


def test_training_over_connect_matches_the_local_engine(trained: dict[str, Any]) -> None:
    c, loc = trained["connect"], trained["local"]
    assert c.version == "1" and len(c.history) == len(loc.history) == 2
    # same seed, same 2 workers, same shards: the same run (the barrier stage ran as mapInArrow(barrier=True))
    assert c.metrics["test_accuracy"] == pytest.approx(loc.metrics["test_accuracy"], abs=0.02)
    assert c.metrics["test_accuracy"] > 0.3  # 2 short epochs of 240 rows


def test_predict_featurize_and_explain_over_connect_commit_once(
    connect: Any, trained: dict[str, Any], wd: Path, digits_table: Path
) -> None:
    uri = trained["connect"].model_uri
    out = wd / "scored"
    res = lakenet.predict(uri, str(digits_table), str(out), engine="spark")  # finds the active Connect session
    assert res.committed and res.rows == 243 and res.bad_rows == 3
    again = lakenet.predict(uri, str(digits_table), str(out), engine="spark")
    assert not again.committed and DeltaTable(str(out)).version() == 0
    local = lakenet.predict(uri, str(digits_table), str(wd / "scored_local"))
    a = {r["key"]: r["prediction"] for r in DeltaTable(str(out)).to_pyarrow_table().to_pylist()}
    b = {r["key"]: r["prediction"] for r in DeltaTable(local.table).to_pyarrow_table().to_pylist()}
    assert a == b and len(a) == 243

    emb = lakenet.featurize(uri, str(digits_table), str(wd / "emb"), spark=connect)
    assert emb.committed and emb.rows == 243
    local_emb = lakenet.featurize(uri, str(digits_table), str(wd / "emb_local"))
    x = {r["key"]: r["embedding"] for r in DeltaTable(emb.table).to_pyarrow_table().to_pylist()}
    y = {r["key"]: r["embedding"] for r in DeltaTable(local_emb.table).to_pyarrow_table().to_pylist()}
    assert x.keys() == y.keys()
    assert all((v is None and y[k] is None) or v == pytest.approx(y[k], abs=1e-5) for k, v in x.items())

    why = lakenet.explain(uri, str(digits_table), str(wd / "why"), n_steps=8, spark=connect)
    assert why.committed and why.rows == 243
    rows = DeltaTable(why.table).to_pyarrow_table().to_pylist()
    assert len({r["key"] for r in rows}) == 243 and sum(r["prediction"] == a[r["key"]] for r in rows) == 243


def test_the_model_as_a_sql_function_over_connect(connect: Any, trained: dict[str, Any], digits_table: Path) -> None:
    import lakenet.spark

    uri = trained["connect"].model_uri
    lakenet.spark.register_udf(connect, "digit", uri)  # the bundle travels as an archive artifact
    lakenet.spark.register_udf(connect, "digit", uri)  # and again: the same artifact, no error
    connect.read.parquet(*DeltaTable(str(digits_table)).file_uris()).createOrReplaceTempView("digits")
    rows = connect.sql("SELECT key, digit(image) AS pred FROM digits").collect()
    batch = lakenet.Predictor(trained["connect"].bundle_dir)
    scored = batch(DeltaTable(str(digits_table)).to_pyarrow_table())
    want = dict(zip(scored.column("key").to_pylist(), scored.column("prediction").to_pylist(), strict=True))
    assert len(rows) == 243 and all(r["pred"] == want[r["key"]] for r in rows)


def test_task_errors_and_unshared_paths_are_clear_over_connect(connect: Any, tmp_path: Path) -> None:
    from lakenet.engines.spark import require_shared
    from lakenet.engines.spark_tasks import run_spark_tasks
    from lakenet.errors import ConfigError, DataError

    assert run_spark_tasks(connect, lambda i: i * i, 5) == [0, 1, 4, 9, 16]  # tuning's stage: results in order

    def bad(i: int) -> int:
        from lakenet.errors import DataError

        raise DataError(f"row {i} is unreadable")

    with pytest.raises(DataError, match=r"^row \d is unreadable$"):  # itself, not a gRPC stack trace
        run_spark_tasks(connect, bad, 2)
    # Over Connect the client cannot know whether the server's executors share its disk: it always checks.
    require_shared(connect, {"model bundle": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"model bundle .*nowhere is not visible on executor host"):
        require_shared(connect, {"model bundle": str(tmp_path / "nowhere")})


def test_the_cli_scores_through_a_separate_connect_server(
    trained: dict[str, Any], wd: Path, digits_table: Path, tmp_path: Path
) -> None:
    """`lakenet predict --master sc://...` from a fresh process with no JVM of its own, against a Connect server
    started apart (its own JVM, its own master): exactly once, the same rows as the local engine."""
    import subprocess
    import sys

    from tests.spark.standalone import connect_server

    # This module's own local Connect server exported its session's settings; its token would make the CLI speak
    # TLS to the plaintext server below (the session's reachability probe now says so instead of hanging).
    own = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE", "SPARK_CONNECT_AUTHENTICATE_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in own}
    out = tmp_path / "scored via cli"
    with connect_server(tmp_path / "server") as url:
        cmd = [sys.executable, "-m", "lakenet", "predict", "--model", trained["connect"].bundle_dir,
               "--table", str(digits_table), "--out", str(out), "--master", url]  # fmt: skip
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        tls = {**env, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "not-this-servers", "LAKENET_CONNECT_TIMEOUT_S": "5"}
        elsewhere = [*cmd[: cmd.index("--out") + 1], str(tmp_path / "never written"), *cmd[cmd.index("--out") + 2 :]]
        refused = subprocess.run(elsewhere, env=tls, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 5 and "SPARK_CONNECT_AUTHENTICATE_TOKEN" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and not (tmp_path / "never written").exists()
    assert first.returncode == 0, first.stderr[-2000:]
    assert second.returncode == 0 and "already" in (second.stdout + second.stderr).lower(), second.stderr[-2000:]
    table = DeltaTable(str(out)).to_pyarrow_table()
    local = DeltaTable(str(wd / "scored_local")).to_pyarrow_table()
    got = dict(zip(table.column("key").to_pylist(), table.column("prediction").to_pylist(), strict=True))
    want = dict(zip(local.column("key").to_pylist(), local.column("prediction").to_pylist(), strict=True))
    assert got == want and len(got) == 243 and DeltaTable(str(out)).version() == 0
