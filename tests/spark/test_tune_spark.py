"""Tuning trials as Spark tasks on a real local[2] session, sharing the study database."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

import lakenet
from tests.tune_helpers import load_study, wine_tune_config

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


def test_parallel_trials_as_spark_tasks(spark: Any, wine_csv: Path, workdir: Path) -> None:
    raw = wine_tune_config(wine_csv, trials=4, parallel=2, pruner="none")
    raw["trainer"]["epochs"] = 4
    raw["engine"] = {"type": "spark"}
    res = lakenet.tune(raw, spark=spark, quiet=True)
    study = load_study(workdir, res.study)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    # two runners, in Spark's Python workers (not this driver process), shared the one study
    runners = {t.user_attrs["runner"] for t in study.trials}
    assert {r.rsplit(":", 1)[1] for r in runners} == {"0", "1"}
    assert str(os.getpid()) not in {r.split(":")[1] for r in runners}
    assert res.fit is not None and res.fit.metrics["test_accuracy"] >= 0.6
