"""Incremental scoring of a growing table: exactly one row per input key per model across appends, upstream
rewrites of some keys and deletes; nothing committed without a new version; a killed run leaves nothing and the
next run completes the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.examples import transactions_frame
from tests.model_helpers import fraud_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _batch(wd: Path, n: int, start: int, seed: int) -> Path:
    path = wd / f"batch-{start}.csv"
    transactions_frame(n, seed=seed, start_id=start).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fraud model trained on the first batch of a table that then gets two more batches (three files)."""
    wd = tmp_path_factory.mktemp("incremental")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    table = str(wd / "data" / "fraud")
    lakenet.ingest(_batch(wd, 1200, 0, 1), table)
    fit = lakenet.fit(fraud_config(table), progress=False, workdir=wd)
    return {"wd": wd, "table": table, "model": fit.model_uri}


def _rows(out: Path) -> pa.Table:
    return DeltaTable(str(out)).to_pyarrow_table()


def _one_row_per_key(out: Path, input_table: str) -> None:
    rows = _rows(out)
    keys = DeltaTable(input_table).to_pyarrow_table(columns=["transaction_id"]).column("transaction_id")
    assert rows.num_rows == len(keys) == pc.count_distinct(rows.column("transaction_id")).as_py()
    assert set(rows.column("transaction_id").to_pylist()) == set(keys.to_pylist())


def test_appends_rewrites_and_deletes_keep_one_row_per_key(grown: dict[str, Any], tmp_path: Path) -> None:
    wd, table, model = grown["wd"], grown["table"], grown["model"]
    out = tmp_path / "scored"
    first = lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
    assert first.committed and first.rows == 1200 and first.since_version is None
    again = lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
    assert not again.committed and DeltaTable(str(out)).version() == 0  # no new version: nothing committed
    for start, seed in ((1200, 2), (1800, 3)):
        lakenet.ingest(_batch(wd, 600, start, seed), table)
        res = lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
        assert res.committed and res.rows == 600 and res.replaced == 0 and res.deleted == 0
    _one_row_per_key(out, table)
    # upstream: 30 rows of the first batch rewritten (amounts × 40), 20 rows of the second deleted
    dt = DeltaTable(table)
    rewritten = [f"TX{i:09d}" for i in range(0, 300, 10)]
    deleted = [f"TX{i:09d}" for i in range(1200, 1300, 5)]
    before = {r["transaction_id"]: r["confidence"] for r in _rows(out).to_pylist()}
    dt.update(predicate=f"transaction_id in ({', '.join(repr(k) for k in rewritten)})",
              updates={"amount": "amount * 40"})  # fmt: skip
    DeltaTable(table).delete(f"transaction_id in ({', '.join(repr(k) for k in deleted)})")
    res = lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
    assert res.committed and res.deleted == 20
    # the rewritten file's rows are scored again (30 changed, the rest of that file unchanged) and replace theirs
    assert res.rows >= 30 and res.replaced == res.rows
    _one_row_per_key(out, table)
    after = {r["transaction_id"]: r["confidence"] for r in _rows(out).to_pylist()}
    assert not set(deleted) & set(after)
    assert any(after[k] != before[k] for k in rewritten)  # new amounts, new scores
    # a full (non-incremental) scoring of the same version into another table agrees row for row
    full = lakenet.predict(model, table, str(tmp_path / "full"), workdir=wd)
    assert full.rows == len(after)
    expected = {r["transaction_id"]: r["confidence"] for r in _rows(tmp_path / "full").to_pylist()}
    assert after.keys() == expected.keys()
    assert all(after[k] == pytest.approx(expected[k], abs=1e-6) for k in expected)


def test_a_killed_incremental_run_leaves_nothing_and_the_next_completes(grown: dict[str, Any], tmp_path: Path) -> None:
    wd, table, model = grown["wd"], grown["table"], grown["model"]
    out = tmp_path / "scored"
    lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
    version = DeltaTable(str(out)).version()
    lakenet.ingest(_batch(wd, 300, 5000, 9), table)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["predict", "--model", model, "--table", table, "--out", str(out), "--incremental", "--workdir", str(wd)]
    killed = subprocess.run([sys.executable, "-m", "tests.fault_harness", str(tmp_path / "gate"), "1", "kill", "--",
                             *args], cwd=wd, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert DeltaTable(str(out)).version() == version  # no partial rows
    res = lakenet.predict(model, table, str(out), incremental=True, workdir=wd)
    assert res.committed and res.rows == 300
    _one_row_per_key(out, table)
    assert not (out / "_lakenet_staging").exists()


def test_a_new_model_version_scores_the_table_whole(grown: dict[str, Any], tmp_path: Path) -> None:
    """One row per key *per model*: another model version starts from nothing in the same output."""
    wd, table = grown["wd"], grown["table"]
    out = tmp_path / "scored"
    v1 = lakenet.predict("models:/fraud/1", table, str(out), incremental=True, workdir=wd)
    v1_bundle = lakenet.models(workdir=wd)[0]["versions"][-1]
    assert v1.committed and v1_bundle["version"] == "1"
    rows = _rows(out)
    assert set(rows.column("model_version").to_pylist()) == {"1"} and rows.num_rows == v1.rows
