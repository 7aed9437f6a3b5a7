"""Every engine honours the same contract: train leaves weights and a result on rank 0's output dir; score
yields batches in the output schema, one output row per input row, in fragment order; map_fragments gives
every fragment's partial result once; predict_to_table commits each row exactly once. Local and Spark
(local[2], its own session for this module)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from lakenet.config import parse_config
from lakenet.data.scan import scan_table
from lakenet.data.sources import open_table
from lakenet.engines import ScoreJob, get_engine
from lakenet.models.bundle import Bundle
from lakenet.models.registry import build_model, model_spec
from lakenet.training.loop import TrainJob
from tests.conftest import digits_config

ENGINES = ["local", pytest.param("spark", marks=pytest.mark.spark)]


@pytest.fixture(scope="module")
def session() -> Iterator[Any]:
    """The Spark session of this module, started only when a Spark case runs."""
    holder: list[Any] = []

    def get() -> Any:
        if not holder:
            pytest.importorskip("pyspark")
            import lakenet.spark

            # Python workers import this repo's tests (the partial results below) like the driver does.
            root = str(Path(__file__).resolve().parents[2])
            os.environ["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
            holder.append(lakenet.spark.session("local[2]"))
        return holder[0]

    yield get
    if holder:
        holder[0].stop()


def _engine(name: str, session: Any) -> Any:
    return get_engine(name, spark=session() if name == "spark" else None)


@pytest.mark.parametrize("name", ENGINES)
def test_train_and_score(name: str, digits_table: Path, tmp_path: Path, session: Any) -> None:
    cfg = parse_config(digits_config(digits_table, trainer__epochs=1))
    snap = open_table(str(digits_table))
    res = scan_table(cfg, snap)
    spec = model_spec(cfg, res.preprocessor)
    job = TrainJob(
        config=cfg,
        snapshot=snap,
        preprocessor=res.preprocessor,
        spec=spec,
        fragment_counts=res.fragment_counts,
        output_dir=str(tmp_path / "out"),
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    engine = _engine(name, session)
    engine.train(job, workers=1, device="cpu")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["epoch"] == 1 and len(result["history"]) == 1
    bundle_dir = Bundle(spec, res.preprocessor, build_model(spec).state_dict()).save(tmp_path / "bundle")
    sjob = ScoreJob(snap, str(bundle_dir), tuple(res.preprocessor.columns(with_label=False)), "m", "1")
    schema = engine.output_schema(sjob)
    batches = list(engine.score(sjob, workers=1))
    assert all(b.schema == schema for b in batches)
    out = pa.Table.from_batches(batches, schema)
    keys = pa.concat_tables([snap.read(f, ["key"]) for f in snap.fragments]).column("key")
    assert out.column("key").to_pylist() == keys.to_pylist()
    # one commit, each row once; a rerun with the same transaction commits nothing
    out_uri = str(tmp_path / "scored")
    rows, bad, committed = engine.predict_to_table(sjob, out_uri, txn="contract-1", metadata={})
    assert committed and rows == len(keys) and bad == len(keys) - out.column("error").null_count > 0
    assert engine.predict_to_table(sjob, out_uri, txn="contract-1", metadata={}) == (0, 0, False)
    written = DeltaTable(out_uri)
    assert written.version() == 0 and sorted(written.to_pyarrow_table().column("key").to_pylist()) == sorted(
        keys.to_pylist()
    )


class _Count:
    """A mergeable partial: fragments seen and their rows."""

    def __init__(self, fragments: tuple[int, ...], rows: int) -> None:
        self.fragments, self.rows = fragments, rows

    def merge(self, other: _Count) -> _Count:
        return _Count(self.fragments + other.fragments, self.rows + other.rows)


@pytest.mark.parametrize("name", ENGINES)
def test_map_fragments_sees_every_fragment_once(name: str, digits_table: Path, session: Any) -> None:
    snap = open_table(str(digits_table)).subdivided(6)
    parts = list(_engine(name, session).map_fragments(lambda fi, _f, t: _Count((fi,), t.num_rows), snap, ["key"]))
    total = parts[0]
    for p in parts[1:]:
        total = total.merge(p)
    assert sorted(total.fragments) == list(range(len(snap.fragments))) and total.rows == snap.num_rows


def test_a_small_job_is_scored_in_process_and_a_big_one_in_a_pool(
    digits_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --workers the local engine measures the first batch: a table too small to pay for a pool's start
    is scored here (no processes); one estimated above the bar gets the pool. Both give the same rows."""
    from lakenet.engines import local

    snap = open_table(str(digits_table)).subdivided(6)
    cfg = parse_config(digits_config(digits_table))
    res = scan_table(cfg, snap)
    spec = model_spec(cfg, res.preprocessor)
    bundle_dir = Bundle(spec, res.preprocessor, build_model(spec).state_dict()).save(tmp_path / "bundle")
    sjob = ScoreJob(snap, str(bundle_dir), tuple(res.preprocessor.columns(with_label=False)))
    started: list[int] = []
    real_pool = local.ProcessPoolExecutor

    def counting_pool(*args: Any, **kwargs: Any) -> Any:
        started.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(local, "ProcessPoolExecutor", counting_pool)
    # The bar is a time, and this job's measured first batch can cross 1.5 s on a loaded machine (seen with both
    # cores busy): a wide bar keeps the small branch about the rule, not the machine's load.
    monkeypatch.setattr(local, "_POOL_PAYS_S", 60.0)
    engine = get_engine("local")
    small = pa.Table.from_batches(list(engine.score(sjob)))
    assert not started and small.num_rows == snap.num_rows
    monkeypatch.setattr(local, "_POOL_PAYS_S", 0.0)  # every job "pays": the pool
    big = pa.Table.from_batches(list(engine.score(sjob)))
    assert started and big.column("key").to_pylist() == small.column("key").to_pylist()
    assert big.column("prediction").to_pylist() == small.column("prediction").to_pylist()
