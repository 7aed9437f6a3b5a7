"""The spine end to end on real Delta tables and a real MLflow sqlite store: ingest → init → profile → train →
evaluate → register → predict (exactly once) → models, from Python and from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

import lakenet
from lakenet.cli import main
from lakenet.demo import write_digits_folder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    wd = tmp_path_factory.mktemp("spine")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_digits_folder(wd / "images", limit=400, corrupt=3)
    res = lakenet.ingest(wd / "images", wd / "data" / "digits")
    assert res.rows_written == 403
    raw = yaml.safe_load(lakenet.init_config(str(wd / "data" / "digits"), label="label", name="digits"))
    assert raw["features"]["image"] == {"type": "image", "size": 8, "channels": 1}
    assert raw["features"]["label"] == {"column": "label", "task": "classification"}
    raw["trainer"].update(epochs=4, learning_rate=0.01, batch_size=32)
    raw["model"].update(width=16, depth=2)
    cfg = wd / "digits.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    fit = lakenet.fit(cfg, progress=False)
    yield {"wd": wd, "cfg": cfg, "fit": fit}
    mp.undo()


def test_fit_registers_with_metrics_and_lineage(trained: dict) -> None:
    fit = trained["fit"]
    assert fit.model_uri == "models:/digits@champion" and fit.version == "1"
    assert fit.metrics["test_accuracy"] > 0.6  # 4 epochs on 320 training images of 8×8 pixels
    assert {"test_accuracy", "test_macro_f1", "val_accuracy", "val_loss"} <= fit.metrics.keys()
    for name in ("profile", "evaluation"):
        html = fit.reports[name].read_text()
        assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    listing = lakenet.models()
    (entry,) = listing
    (v,) = entry["versions"]
    assert v["aliases"] == ["champion"]
    assert v["lineage"]["table"].endswith("data/digits") and v["lineage"]["table_version"] == "0"
    assert len(v["lineage"]["config_hash"]) == 16
    assert v["metrics"]["test_accuracy"] == pytest.approx(fit.metrics["test_accuracy"])
    run = mlflow.get_run(fit.run_id)
    assert "val_loss" in run.data.metrics and "test_accuracy" in run.data.metrics
    assert run.data.params["trainer.epochs"] == "4"
    history = mlflow.MlflowClient().get_metric_history(fit.run_id, "val_accuracy")
    assert len(history) == 4


def test_quarantine_table_next_to_source(trained: dict) -> None:
    q = DeltaTable(str(trained["wd"] / "data" / "digits_quarantine")).to_pyarrow_table()
    assert q.num_rows == 3
    assert all(s.endswith(".png") for s in q.column("source").to_pylist())


def test_pyfunc_loads_without_pickle(trained: dict) -> None:
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    local = Path(mlflow.artifacts.download_artifacts("models:/digits@champion"))
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    images = sorted((trained["wd"] / "images" / "3").glob("0*.png"))[:4]
    df = pd.DataFrame({"image": [p.read_bytes() for p in images]})
    out = model.predict(df)
    assert list(out["prediction"]) and set(out.columns) >= {"prediction", "confidence", "probabilities"}


def test_predict_is_exactly_once(trained: dict) -> None:
    wd = trained["wd"]
    table, out = str(wd / "data" / "digits"), str(wd / "data" / "scored")
    first = lakenet.predict("models:/digits@champion", table, out, workers=1)
    assert first.committed and first.rows == 403 and first.bad_rows == 3
    second = lakenet.predict("models:/digits@champion", table, out, workers=1)
    assert not second.committed and second.rows == 0
    scored = DeltaTable(out).to_pyarrow_table()
    assert scored.num_rows == 403
    assert len(scored.column("key").unique()) == 403
    assert set(scored.column("model_version").to_pylist()) == {"1"}
    errors = [e for e in scored.column("error").to_pylist() if e]
    assert len(errors) == 3


def test_pool_scoring_matches_in_process(trained: dict) -> None:
    wd = trained["wd"]
    table = str(wd / "data" / "digits")
    a = lakenet.predict("models:/digits@champion", table, str(wd / "data" / "p1"), workers=1)
    b = lakenet.predict("models:/digits@champion", table, str(wd / "data" / "p2"), workers=2)
    assert a.rows == b.rows
    ta = DeltaTable(a.table).to_pyarrow_table().sort_by("key")
    tb = DeltaTable(b.table).to_pyarrow_table().sort_by("key")
    assert ta.column("prediction").equals(tb.column("prediction"))


def test_evaluate_and_cli(trained: dict, capsys: pytest.CaptureFixture[str]) -> None:
    res = lakenet.evaluate(trained["cfg"], model="models:/digits@champion")
    assert res["metrics"]["test_accuracy"] == pytest.approx(trained["fit"].metrics["test_accuracy"])
    main(["models", "--json"])
    listing = json.loads(capsys.readouterr().out)
    assert listing[0]["name"] == "digits"
    main(["config", "schema"])
    assert json.loads(capsys.readouterr().out)["title"] == "lakenet config"


def test_cli_errors_are_clean(trained: dict, capsys: pytest.CaptureFixture[str]) -> None:
    wd = trained["wd"]
    with pytest.raises(SystemExit) as e:
        main(
            [
                "predict",
                "--model",
                "models:/nope@champion",
                "--table",
                str(wd / "data" / "digits"),
                "--out",
                "x",
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Model 'models:/nope@champion' not found" in err and "Traceback" not in err
    bad = wd / "bad.yaml"
    bad.write_text(trained["cfg"].read_text().replace("learning_rate", "learnig_rate"))
    with pytest.raises(SystemExit):
        main(["train", str(bad)])
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["init", "--table", str(wd / "data" / "digits"), "--label", "target"])
    assert "Column 'target' not in table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ingest", str(wd / "nothing_here"), "--table", str(wd / "t")])
    assert "does not exist" in capsys.readouterr().err


def test_ingest_appends_only_new_files(trained: dict) -> None:
    wd = trained["wd"]
    again = lakenet.ingest(wd / "images", wd / "data" / "digits")
    assert again.rows_written == 0 and again.rows_skipped == 403 and again.version == 0
    (wd / "images" / "7" / "new.png").write_bytes((wd / "images" / "3").glob("0*.png").__next__().read_bytes())
    more = lakenet.ingest(wd / "images", wd / "data" / "digits")
    assert more.rows_written == 1 and more.version == 1
    keys = DeltaTable(str(wd / "data" / "digits")).to_pyarrow_table(columns=["key"]).column("key")
    assert pa.compute.count_distinct(keys).as_py() == 404
