"""Every engine honours the same contract: train leaves weights and a result on rank 0's output dir; score
yields batches in the output schema, one output row per input row, in fragment order."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from lakenet.config import parse_config
from lakenet.data.scan import scan_table
from lakenet.data.sources import open_table
from lakenet.engines import ScoreJob, get_engine
from lakenet.models.bundle import Bundle
from lakenet.models.registry import build_model, model_spec
from lakenet.training.loop import TrainJob
from tests.conftest import digits_config

ENGINES = ["local"]


@pytest.mark.parametrize("name", ENGINES)
def test_train_and_score(name: str, digits_table: Path, tmp_path: Path) -> None:
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
    engine = get_engine(name)
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
