"""Tabular jobs straight from CSV: a classification (wine) and a regression, plus 2-process DDP on CPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lakenet
from lakenet.data.sources import open_table
from lakenet.training.callbacks import Callback

pytestmark = pytest.mark.integration

REGRESSION_FEATURES = {
    "label": {"column": "y", "task": "regression"},
    "x1": {"type": "numeric"},
    "x2": {"type": "numeric"},
    "color": {"type": "category"},
}


def test_wine_classification_from_init_config(wine_csv: Path, workdir: Path) -> None:
    import yaml
    from deltalake import DeltaTable

    text = lakenet.init_config(str(wine_csv), label="cultivar")
    raw = yaml.safe_load(text)
    assert raw["features"] == {"label": {"column": "cultivar", "task": "classification"}, "include": "auto"}
    assert re.search(r"# region +category: 2 categories", text) and re.search(r"# proline +numeric", text)
    assert raw["data"]["key"] == "key"  # CSV rows are keyed file:row, as `lakenet ingest` keys them
    raw["trainer"].update(epochs=30, batch_size=16, learning_rate=0.01)
    raw["data"]["split"] = {"train": 0.7, "val": 0.15, "test": 0.15}
    fit = lakenet.fit(raw, progress=False)
    assert fit.metrics["test_accuracy"] >= 0.85
    assert fit.metrics["test_macro_f1"] >= 0.8
    resolved = lakenet.models()[0]["versions"][0]["lineage"]["features"]  # include: auto, as it was resolved
    assert "region:category" in resolved and "proline:numeric" in resolved
    # ingesting the CSV gives the same keys, so the rows keep their split once they live in Delta
    table = lakenet.ingest(wine_csv, workdir / "wine").table
    keys = DeltaTable(table).to_pyarrow_table(columns=["key"]).column("key").to_pylist()
    direct = open_table(str(wine_csv))
    assert keys == direct.read(direct.fragments[0], ["key"]).column("key").to_pylist()
    assert keys[0].startswith("wine.csv#") and keys[0].endswith(":0")  # file name, contents fingerprint, row
    scored = lakenet.predict(fit.model_uri, table, str(workdir / "wine_scored"))
    assert scored.rows == 178 and scored.bad_rows == 0


def test_regression_from_csv_directly(regression_csv: Path, workdir: Path) -> None:
    cfg = {
        "data": {"table": str(regression_csv), "key": "id"},
        "features": REGRESSION_FEATURES,
        "model": {"width": 32},
        "trainer": {"epochs": 40, "batch_size": 32, "learning_rate": 0.01,
                    "early_stopping": {"metric": "val_rmse", "patience": 10}},
        "registry": {"name": "houses"},
    }  # fmt: skip
    fit = lakenet.fit(cfg, progress=False)
    assert fit.metrics["test_r2"] > 0.95
    assert fit.metrics["test_rmse"] < 1.0
    out = lakenet.predict(fit.model_uri, str(regression_csv), str(workdir / "scored"))
    assert out.rows == 600 and out.bad_rows == 0


def test_ddp_two_workers_on_cpu(regression_csv: Path, workdir: Path) -> None:
    base = {
        "data": {"table": str(regression_csv), "key": "id"},
        "features": REGRESSION_FEATURES,
        "trainer": {"epochs": 15, "batch_size": 32, "learning_rate": 0.01, "early_stopping": None},
        "registry": {"name": "ddp"},
    }
    two = lakenet.fit({**base, "engine": {"type": "local", "workers": 2}}, progress=False)
    assert two.metrics["test_r2"] > 0.9
    assert len(two.history) == 15
    one = lakenet.fit(base, progress=False)
    # same global batch: two workers see the same data per step, so they should land close to one worker
    assert abs(two.metrics["test_r2"] - one.metrics["test_r2"]) < 0.05


class _StopAt(Callback):
    """A callback that simulates Ctrl-C at a given optimizer step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, logs) -> None:  # type: ignore[no-untyped-def]
        if state.step == self.step:
            raise KeyboardInterrupt


def test_fit_resume_after_interrupt(regression_csv: Path, workdir: Path) -> None:
    cfg = {
        "data": {"table": str(regression_csv), "key": "id"},
        "features": {"label": {"column": "y", "task": "regression"}, "x1": {"type": "numeric"}},
        "trainer": {"epochs": 3, "batch_size": 64, "checkpoint_every_steps": 4, "early_stopping": None},
        "registry": {"name": "resumable"},
    }
    with pytest.raises(KeyboardInterrupt):
        lakenet.fit(cfg, progress=False, callbacks=[_StopAt(10)])
    changed = {**cfg, "trainer": {**cfg["trainer"], "epochs": 4}}
    with pytest.raises(lakenet.LakenetError, match="config changed since the interrupted run"):
        lakenet.fit(changed, resume=True, progress=False)
    resumed = lakenet.fit(cfg, resume=True, progress=False)
    fresh = lakenet.fit({**cfg, "registry": {"name": "fresh"}}, progress=False)
    assert resumed.version == "1" and len(resumed.history) == 3
    assert resumed.metrics["test_rmse"] == pytest.approx(fresh.metrics["test_rmse"], rel=1e-9)


def test_ddp_worker_error_reaches_the_caller(digits_table: Path, workdir: Path) -> None:
    from tests.conftest import digits_config

    raw = digits_config(
        digits_table,
        model__module="tests.unit.test_training:NaNAfter",
        model__architecture="auto",
        engine={"type": "local", "workers": 2},
    )
    with pytest.raises(lakenet.LakenetError, match="consecutive steps had a non-finite loss"):
        lakenet.fit(raw, progress=False)
