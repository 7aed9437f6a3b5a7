"""lakenet on a Spark standalone cluster started from pyspark's own `spark-class`: a master and two workers,
each a JVM of its own, whose executors run in their own work directories (as on a real cluster, only the file
system is shared with the driver). Training across both executors, exactly-once scoring, featurize, tuning
trials as tasks and the SQL function."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable
from optuna.trial import TrialState

import lakenet
from tests.conftest import digits_config
from tests.spark.standalone import standalone_cluster
from tests.tune_helpers import load_study, wine_tune_config

pytestmark = [
    pytest.mark.spark,
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="no Java"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    import lakenet.spark

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    with standalone_cluster(tmp_path_factory.mktemp("standalone"), workers=2, cores=1, memory="2g") as url:
        session = lakenet.spark.session(
            url,
            **{
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false",
                "spark.executor.cores": "1",
                "spark.executor.memory": "1g",
                "spark.cores.max": "2",
                "spark.task.maxFailures": "4",
            },
        )
        yield session
        session.stop()


@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("on_standalone")
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield d
    mp.undo()


def test_two_executors_in_their_own_jvms_and_work_directories(cluster: Any) -> None:
    from lakenet.engines.spark_tasks import Cluster

    c = Cluster(cluster)
    assert c.master.startswith("spark://127.0.0.1:") and c.slots == 2 and c.own_executor_jvms

    def where(_: Iterator[int]) -> Iterator[tuple[int, str]]:
        yield os.getpid(), os.getcwd()

    seen = c.collect([[i] for i in range(8)], where)
    cwds = {cwd for _, cwd in seen}
    assert len(cwds) == 2 and all("/worker-" in cwd for cwd in cwds)  # each executor in its worker's dir
    assert os.getpid() not in {pid for pid, _ in seen}


def test_train_score_featurize_and_query_on_standalone(cluster: Any, wd: Path, digits_table: Path) -> None:
    import lakenet.spark

    cfg = digits_config(
        digits_table,
        engine={"type": "spark", "workers": 2},
        registry={"name": "on_standalone"},
        trainer__epochs=2,
        trainer__early_stopping=None,
    )
    fit = lakenet.fit(cfg, progress=False)
    assert fit.metrics["test_accuracy"] > 0.3

    out = wd / "scored"
    res = lakenet.predict(fit.model_uri, str(digits_table), str(out), spark=cluster)
    assert res.committed and res.rows == 243 and res.bad_rows == 3
    assert not lakenet.predict(fit.model_uri, str(digits_table), str(out), spark=cluster).committed
    keys = DeltaTable(str(out)).to_pyarrow_table().column("key")
    assert len(keys) == 243 and len(keys.unique()) == 243 and DeltaTable(str(out)).version() == 0

    emb = lakenet.featurize(fit.model_uri, str(digits_table), str(wd / "emb"), spark=cluster)
    assert emb.committed and emb.rows == 243

    lakenet.spark.register_udf(cluster, "digit", fit.model_uri)  # the bundle shipped as an archive
    cluster.read.parquet(*DeltaTable(str(digits_table)).file_uris()).createOrReplaceTempView("digits")
    rows = cluster.sql("SELECT key, digit(image) AS pred FROM digits").collect()
    scored = {r["key"]: r["prediction"] for r in DeltaTable(str(out)).to_pyarrow_table().to_pylist()}
    assert len(rows) == 243 and all(r["pred"] == scored[r["key"]] for r in rows)


def test_tuning_trials_run_as_tasks_on_standalone(cluster: Any, wine_csv: Path, workdir: Path) -> None:
    """The study is a SQLite file: allowed because every executor runs on this host (checked, not assumed)."""
    raw = wine_tune_config(wine_csv, trials=2, parallel=2, pruner="none")
    raw["trainer"]["epochs"] = 2
    raw["engine"] = {"type": "spark"}
    res = lakenet.tune(raw, spark=cluster, quiet=True)
    study = load_study(workdir, res.study)
    assert len(study.trials) == 2 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert str(os.getpid()) not in {t.user_attrs["runner"].split(":")[1] for t in study.trials}
