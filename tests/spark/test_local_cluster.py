"""lakenet on a cluster's shape: `local-cluster[2,1,2048]`, two executors in their own JVMs, each with its own
working directory and its own Python workers (nothing shared with the driver's process but the file system).
Training across both executors with a task killed mid-epoch and resumed, exactly-once scoring, featurize and the
SQL function."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from lakenet.training.callbacks import Callback
from tests.conftest import digits_config

pytestmark = [pytest.mark.spark, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("pyspark")
    import lakenet.spark

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    session = lakenet.spark.session("local-cluster[2,1,2048]", **{"spark.task.maxFailures": "4"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("cluster")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield d
    mp.undo()


class KillOnce(Callback):
    """Kills the rank-0 training task's Python worker (callbacks run on rank 0) at `step`, once (a marker file
    remembers): an executor's task lost mid-epoch."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_step_end(self, state: Any, logs: Any) -> None:
        if state.step == self.step and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(9)


def test_executors_are_separate_processes_with_their_own_working_directories(cluster: Any) -> None:
    sc = cluster.sparkContext
    seen = sc.parallelize(range(8), 8).map(lambda _: (os.getpid(), os.getcwd())).collect()
    assert len({cwd for _, cwd in seen}) == 2 and os.getcwd() not in {cwd for _, cwd in seen}
    assert os.getpid() not in {pid for pid, _ in seen}


def test_train_with_a_killed_task_then_score_featurize_and_query(cluster: Any, wd: Path, digits_table: Path) -> None:
    import cloudpickle

    import lakenet.spark

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = wd / "killed"
    cfg = digits_config(
        digits_table,
        engine={"type": "spark", "workers": 2},
        registry={"name": "on_cluster"},
        trainer__epochs=2,
        trainer__early_stopping=None,
        trainer__checkpoint_every_steps=2,
    )
    fit = lakenet.fit(cfg, progress=False, callbacks=[KillOnce(5, str(marker))])
    assert marker.exists()  # a training task's worker really died, on an executor
    training = lakenet.Predictor(fit.bundle_dir).bundle.training
    assert training["resumed_from_step"] == 4 and training["step"] > 5  # resumed from the last checkpoint
    assert fit.metrics["test_accuracy"] > 0.3

    out = wd / "scored"
    res = lakenet.predict(fit.model_uri, str(digits_table), str(out), engine="spark")
    assert res.committed and res.rows == 243 and res.bad_rows == 3
    again = lakenet.predict(fit.model_uri, str(digits_table), str(out), engine="spark")
    assert not again.committed and DeltaTable(str(out)).version() == 0
    keys = DeltaTable(str(out)).to_pyarrow_table().column("key")
    assert len(keys) == 243 and len(keys.unique()) == 243

    emb = lakenet.featurize(fit.model_uri, str(digits_table), str(wd / "emb"), engine="spark")
    assert emb.committed and emb.rows == 243
    local = lakenet.featurize(fit.model_uri, str(digits_table), str(wd / "emb_local"))
    a = {r["key"]: r["embedding"] for r in DeltaTable(emb.table).to_pyarrow_table().to_pylist()}
    b = {r["key"]: r["embedding"] for r in DeltaTable(local.table).to_pyarrow_table().to_pylist()}
    assert a.keys() == b.keys()
    for k, x in a.items():  # the same embeddings as the local engine's (none for the 3 corrupt images)
        assert (x is None and b[k] is None) or x == pytest.approx(b[k], abs=1e-5)

    lakenet.spark.register_udf(cluster, "digit", fit.model_uri)
    cluster.read.parquet(*DeltaTable(str(digits_table)).file_uris()).createOrReplaceTempView("digits")
    rows = cluster.sql("SELECT key, digit(image) AS pred FROM digits").collect()
    scored = {r["key"]: r["prediction"] for r in DeltaTable(str(out)).to_pyarrow_table().to_pylist()}
    assert len(rows) == 243 and all(r["pred"] == scored[r["key"]] for r in rows)


def test_a_path_the_executors_cannot_see_is_a_clear_error_up_front(cluster: Any, tmp_path: Path) -> None:
    """The executors check the paths their tasks will open before the real job (here a path that exists on no
    machine stands in for one that only the driver has)."""
    from lakenet.engines.spark import require_shared
    from lakenet.errors import ConfigError

    require_shared(cluster, {"model bundle": str(tmp_path)})  # visible everywhere on this machine: fine
    gone = tmp_path / "only-on-the-driver"
    with pytest.raises(ConfigError, match=r"model bundle .*only-on-the-driver is not visible on executor host"):
        require_shared(cluster, {"model bundle": str(gone), "table file": "s3://bucket/x.parquet"})
