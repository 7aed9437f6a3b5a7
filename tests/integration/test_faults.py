"""Nothing lost, nothing doubled: concurrent runs, killed runs, odd paths, same-named files, dying scoring
processes, interrupted registrations. Real processes, real signals, real Delta tables and MLflow stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import yaml
from deltalake import DeltaTable, WriterProperties, write_deltalake

import lakenet
import lakenet.jobs
from lakenet.data.delta_io import STAGING
from lakenet.errors import BadRowsError, DataError, ScoringError, TrainingError

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "lakenet.cli"]
HARNESS = [sys.executable, "-m", "tests.fault_harness"]
ROOT = Path(__file__).resolve().parents[2]


def wine_config(table: str | Path, name: str = "wine", **model: Any) -> dict[str, Any]:
    return {
        "data": {"table": str(table)},
        "features": {
            "label": {"column": "cultivar"},
            "alcohol": {"type": "numeric"},
            "proline": {"type": "numeric"},
            "region": {"type": "category"},
        },
        "model": {"architecture": "mlp", "width": 8, **model},
        "trainer": {"epochs": 2, "batch_size": 32, "checkpoint_every_steps": 0},
        "registry": {"name": name},
    }


@pytest.fixture(scope="module")
def env(wine_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wd = tmp_path_factory.mktemp("faults")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    table = lakenet.ingest(wine_csv, wd / "data" / "wine").table
    fit = lakenet.fit(wine_config(table), progress=False, workdir=wd)
    return {"wd": wd, "table": table, "fit": fit, "csv": wine_csv}


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _race(command: list[str], cwd: Path, gate: Path, n: int = 2) -> list[subprocess.CompletedProcess[str]]:
    """Start `n` copies of a CLI command that meet at their Delta commit, and wait for all."""
    procs = [
        subprocess.Popen(
            [*HARNESS, str(gate), str(n), "go", "--", *command],
            cwd=cwd,
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def _data_files(table: Path) -> set[str]:
    """Parquet files a raw (non-Delta) reader of the folder would see."""
    return {f.name for f in table.glob("*.parquet")}


def _logged_files(table: Path) -> set[str]:
    dt = DeltaTable(str(table))
    return {Path(f).name for f in dt.file_uris()}


# ---- exactly once under concurrency --------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["predict", "featurize", "explain"])
@pytest.mark.parametrize("into", ["new", "existing"])
def test_two_runs_at_once_commit_once(env: dict[str, Any], tmp_path: Path, command: str, into: str) -> None:
    wd, table = env["wd"], env["table"]
    out = tmp_path / "out"
    if into == "existing":  # the output exists already, from another input version
        lakenet.ingest(env["csv"], tmp_path / "older")
        older = str(tmp_path / "older")
        getattr(lakenet, command)(env["fit"].model_uri, older, str(out), workdir=wd)
    before = DeltaTable(str(out)).to_pyarrow_table().num_rows if into == "existing" else 0
    args = [command, "--model", env["fit"].model_uri, "--table", table, "--out", str(out), "--workdir", str(wd)]
    results = _race(args, wd, tmp_path / "gate")
    for r in results:
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    said = sorted("already" in r.stdout for r in results)
    assert said == [False, True], [r.stdout for r in results]  # one wrote, the other saw it had been done
    rows = DeltaTable(str(out)).to_pyarrow_table()
    assert rows.num_rows == before + 178
    assert pc.count_distinct(rows.filter(pc.field("key").is_valid()).column("key")).as_py() == 178
    assert _data_files(out) == _logged_files(out)  # the loser left no orphan file
    assert not (out / STAGING).exists()
    rerun = _run([*CLI, *args], wd)
    assert rerun.returncode == 0 and "already" in rerun.stdout


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_run_killed_before_its_commit_leaves_nothing(env: dict[str, Any], tmp_path: Path, command: str) -> None:
    wd, table = env["wd"], env["table"]
    out = tmp_path / "out"
    args = [command, "--model", env["fit"].model_uri, "--table", table, "--out", str(out), "--workdir", str(wd)]
    killed = subprocess.run([*HARNESS, str(tmp_path / "gate"), "1", "kill", "--", *args], cwd=wd, env=_env(),
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "_delta_log").exists()
    if out.exists():  # a Parquet reader of the folder sees no rows: they are in the hidden staging folder
        assert ds.dataset(str(out), format="parquet").count_rows() == 0
    rerun = _run([*CLI, *args], wd)
    assert rerun.returncode == 0, rerun.stderr
    assert DeltaTable(str(out)).to_pyarrow_table().num_rows == 178
    assert not (out / STAGING).exists() and not list(out.glob("*#*"))
    assert _data_files(out) == _logged_files(out)


def test_a_killed_writer_into_an_existing_table_is_cleaned_up(env: dict[str, Any], tmp_path: Path) -> None:
    wd = env["wd"]
    out = tmp_path / "out"
    lakenet.ingest(env["csv"], tmp_path / "older")
    lakenet.predict(env["fit"].model_uri, str(tmp_path / "older"), str(out), workdir=wd)
    args = ["predict", "--model", env["fit"].model_uri, "--table", env["table"], "--out", str(out)]
    killed = subprocess.run(  # killed after its files moved into the table, before the commit
        [*HARNESS, str(tmp_path / "gate"), "1", "kill-at-commit", "--", *args, "--workdir", str(wd)],
        cwd=wd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (out / STAGING).exists()  # the dead writer's manifest: which files it moved
    assert DeltaTable(str(out)).to_pyarrow_table().num_rows == 178
    (out / "part-00000-1234.zstd.parquet#1").write_bytes(b"partial upload of an older writer")
    assert lakenet.predict(env["fit"].model_uri, env["table"], str(out), workdir=wd).committed
    assert DeltaTable(str(out)).to_pyarrow_table().num_rows == 2 * 178
    assert not (out / STAGING).exists() and not list(out.glob("*#*"))
    assert _data_files(out) == _logged_files(out)


# ---- scoring processes that die ---------------------------------------------------------------------------------
def _multi_fragment_table(env: dict[str, Any], where: Path) -> str:
    rows = DeltaTable(env["table"]).to_pyarrow_table()
    write_deltalake(str(where), rows, writer_properties=WriterProperties(max_row_group_size=16))
    return str(where)


@pytest.mark.parametrize("module", ["DiesInWorkers", "BreaksInWorkers"])
def test_a_dying_scoring_process_fails_the_job_promptly(env: dict[str, Any], tmp_path: Path, module: str) -> None:
    """A worker killed by a signal (as by the OOM killer), or one that cannot build the model, ends the job with a
    clear message and nothing committed, instead of a pool waiting forever."""
    wd = env["wd"]
    arch = f"tests.model_helpers:{module}"
    cfg = wine_config(env["table"], name=module.lower(), architecture="auto", module=arch)
    fit = lakenet.fit(cfg, progress=False, workdir=wd)
    table = _multi_fragment_table(env, tmp_path / "fragments")
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = _run([*CLI, "predict", "--model", fit.model_uri, "--table", table, "--out", str(out), "--workers", "2",
                "--trust-module", arch, "--workdir", str(wd)], wd, timeout=120)  # fmt: skip
    assert time.monotonic() - t0 < 60
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    expected = "scoring process died" if module == "DiesInWorkers" else "cannot be built in a worker"
    assert expected in res.stderr
    assert not (out / "_delta_log").exists()
    if module == "DiesInWorkers":
        with pytest.raises(ScoringError, match="nothing was committed"):
            lakenet.predict(fit.model_uri, table, str(out), workers=2, trust_modules=[arch], workdir=wd)
        assert not (out / "_delta_log").exists()


# ---- odd paths ---------------------------------------------------------------------------------------------------
def test_every_command_works_on_a_path_with_spaces_and_accents(env: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "dàta lake ü"
    table = str(home / "wîne tâble")
    assert lakenet.ingest(env["csv"], table).rows_written == 178
    raw = yaml.safe_load(lakenet.init_config(table, label="cultivar", name="odd", config_dir=home))
    raw["trainer"].update(epochs=2)
    cfg = home / "cönfig.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    wd = home / "wörk"
    wd.mkdir()
    assert lakenet.profile(cfg, workdir=wd).profile.table.rows == 178
    fit = lakenet.fit(cfg, progress=False, workdir=wd)
    assert lakenet.evaluate(cfg, model=fit.model_uri, workdir=wd)["rows"] > 0
    scored = lakenet.predict(fit.model_uri, table, str(home / "scöred"), workdir=wd)
    assert scored.rows == 178 and scored.bad_rows == 0
    assert lakenet.featurize(fit.model_uri, table, str(home / "émb"), workdir=wd).rows == 178
    why = lakenet.explain(fit.model_uri, table, str(home / "wĥy ü"), workdir=wd)
    assert why.committed and why.rows == 178 and DeltaTable(why.table).to_pyarrow_table().num_rows == 178
    assert lakenet.export(fit.model_uri, out=home / "mödel.onnx", workdir=wd).path.is_file()
    onnx_scored = lakenet.predict(str(home / "mödel.onnx"), table, str(home / "scöred onnx"), workdir=wd)
    assert onnx_scored.rows == 178
    res = _run([*CLI, "predict", "--model", fit.model_uri, "--table", table, "--out", str(home / "clî"),
                "--workdir", str(wd)], wd)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert DeltaTable(str(home / "clî")).to_pyarrow_table().num_rows == 178
    with lakenet.serve(fit.model_uri, port=0, background=True, workdir=wd) as server:
        import httpx

        row = DeltaTable(table).to_pyarrow_table().slice(0, 1).drop_columns(["key", "cultivar"]).to_pylist()
        answer = httpx.post(f"{server.url}/v1/predict", json={"rows": row})
        assert answer.status_code == 200, answer.text


def test_tune_update_drift_jobs_and_models_work_on_a_path_with_spaces_and_accents(
    env: dict[str, Any], tmp_path: Path
) -> None:
    """The growing-table commands, through the CLI, with the table, config, workdir and jobs file all under a
    folder with spaces and accents: tune registers, drift reads the new rows and writes its monitoring table,
    update trains a challenger on them, a one-job jobs file scores them, and models shows the chain."""
    import pandas as pd

    home = tmp_path / "dàta lake ü"
    home.mkdir()
    rows = pd.read_csv(env["csv"])
    jan, feb = home / "jän.csv", home / "fëb 2.csv"
    rows.iloc[:120].to_csv(jan, index=False)
    rows.iloc[120:].to_csv(feb, index=False)
    table = str(home / "wîne tâble")
    assert lakenet.ingest(jan, table).rows_written == 120
    raw = wine_config(table, name="odd")
    raw["trainer"].update(epochs=1)
    raw["update"] = {"epochs": 1}
    raw["tune"] = {"trials": 5, "parallel": 1, "sampler": "random", "pruner": "none",
                   "space": {"model.width": {"choice": [4, 8]}}}  # fmt: skip
    cfg = home / "cönfig ü.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    wd = home / "wörk dir"
    wd.mkdir()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([*CLI, *args], wd)

    tuned = cli("tune", "--trials", "2", "--workdir", str(wd), str(cfg))
    assert tuned.returncode == 0, tuned.stderr
    assert (wd / "reports" / "odd" / "tune" / "best.yaml").is_file()
    (first,) = _versions(wd, "odd")
    assert first["aliases"] == ["champion"] and first["lineage"]["tune.study"]
    assert len(first["lineage"]["bundle_sha256"]) == 64

    assert lakenet.ingest(feb, table).rows_written == 58  # the table moves to version 1
    drift = cli("drift", "--model", "models:/odd@champion", "--workdir", str(wd))
    assert drift.returncode in (0, 3), drift.stderr  # 3: the verdict "drifted", not a failure
    report = json.loads((wd / "reports" / "odd" / "drift" / "drift.json").read_text())
    assert report["current"]["rows"] == 58 and report["reference"]["rows"] > 0 and report["checks"]
    assert report["current"]["from_version"] == 0 and report["current"]["to_version"] == 1
    assert DeltaTable(f"{table}_monitoring").to_pyarrow_table().num_rows >= 1

    updated = cli("update", "--workdir", str(wd), str(cfg))
    assert updated.returncode in (0, 4), updated.stderr  # 4: trained and registered, kept back by the gate
    second = next(v for v in _versions(wd, "odd") if v["version"] != first["version"])
    assert second["lineage"]["parent_version"] == first["version"] and second["lineage"]["table_version"] == "1"
    assert second["aliases"] == (["champion"] if updated.returncode == 0 else ["challenger"])

    jobs = home / "jöbs ü.yaml"  # paths relative to the jobs file, itself under the odd folder
    jobs.write_text(yaml.safe_dump({
        "workdir": wd.name,
        "jobs": {"score": {"run": "predict", "args": {"model": "models:/odd@champion", "table": Path(table).name,
                                                       "out": "jöb scöred", "incremental": True}}},
    }, allow_unicode=True))  # fmt: skip
    ran = cli("jobs", "run", str(jobs), "score")  # job names are ASCII by design
    assert ran.returncode == 0, ran.stderr
    assert DeltaTable(str(home / "jöb scöred")).to_pyarrow_table().num_rows == 178
    (run,) = lakenet.jobs.history(path=jobs)
    assert run.status == "ok" and run.rows == 178

    listed = cli("models", "--json", "--workdir", str(wd))
    assert listed.returncode == 0, listed.stderr
    (odd,) = [m for m in json.loads(listed.stdout) if m["name"] == "odd"]
    assert {v["version"] for v in odd["versions"]} == {first["version"], second["version"]}
    shown = cli("models", "--workdir", str(wd))
    assert shown.returncode == 0 and "odd" in shown.stdout and "tâble" in shown.stdout, shown.stderr


# ---- ingest: generated keys, delimiters, symlinks -------------------------------------------------------------------
def test_same_named_files_from_two_folders_keep_all_their_rows(tmp_path: Path) -> None:
    for month, offset in (("jan", 0), ("feb", 1000)):
        (tmp_path / month).mkdir()
        lines = ["amount,store"] + [f"{offset + i}.5,s{i % 3}" for i in range(100)]
        (tmp_path / month / "sales.csv").write_text("\n".join(lines) + "\n")
    table = tmp_path / "sales"
    assert lakenet.ingest(tmp_path / "jan" / "sales.csv", table).rows_written == 100
    feb = lakenet.ingest(tmp_path / "feb" / "sales.csv", table)
    assert feb.rows_written == 100 and feb.warning is None
    rows = DeltaTable(str(table)).to_pyarrow_table()
    assert rows.num_rows == 200 and pc.count_distinct(rows.column("key")).as_py() == 200
    again = lakenet.ingest(tmp_path / "jan" / "sales.csv", table)
    assert again.rows_written == 0 and again.rows_skipped == 100 and "nothing was written" in (again.warning or "")
    res = _run([*CLI, "ingest", str(tmp_path / "feb" / "sales.csv"), "--table", str(table)], tmp_path)
    assert res.returncode == 0 and "warning" in res.stderr and "nothing was written" in res.stderr


def test_an_overwrite_is_judged_by_its_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b" / "a.csv"
    b.parent.mkdir()
    a.write_text("x,y\n1,one\n2,two\n")
    b.write_text("x,y\n7,seven\n8,eight\n")  # same name, same row count, other contents
    table = tmp_path / "t"
    for src in (a, b, a):
        lakenet.ingest(src, table, mode="overwrite")
        got = DeltaTable(str(table)).to_pyarrow_table().column("x").to_pylist()
        assert sorted(got) == ([1, 2] if src == a else [7, 8])
    version = DeltaTable(str(table)).version()
    lakenet.ingest(a, table, mode="overwrite")  # the very same overwrite again: nothing new
    assert DeltaTable(str(table)).version() == version


def test_semicolon_csv_is_read_by_its_delimiter(tmp_path: Path) -> None:
    src = tmp_path / "eu.csv"
    src.write_text("amount;country;label\n" + "".join(f"{i},5;DE;{i % 2}\n" for i in range(20)))
    res = lakenet.ingest(src, tmp_path / "eu")
    cols = DeltaTable(str(tmp_path / "eu")).schema().to_arrow()
    assert res.rows_written == 20 and {"amount", "country", "label"} <= set(pa.schema(cols).names)
    odd = tmp_path / "odd.csv"
    odd.write_text("a#b\n" + "".join(f"{i}#{i}\n" for i in range(5)))
    with pytest.raises(DataError, match="--delimiter"):
        lakenet.ingest(odd, tmp_path / "odd")
    assert lakenet.ingest(odd, tmp_path / "odd", delimiter="#").rows_written == 5


def test_image_folder_symlinks_outside_it_are_skipped(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    secret = tmp_path / "private" / "passport.png"
    secret.parent.mkdir()
    for p in (tmp_path / "imgs" / "cat" / "1.png", secret):
        Image.new("L", (8, 8), 3).save(p)
    (tmp_path / "imgs" / "cat" / "2.png").symlink_to(secret)
    (tmp_path / "imgs" / "cat" / "3.png").symlink_to(tmp_path / "imgs" / "cat" / "1.png")  # inside: fine
    res = lakenet.ingest(tmp_path / "imgs", tmp_path / "t")
    assert res.rows_written == 2
    assert len(res.files_skipped) == 1 and "cat/2.png" in res.files_skipped[0] and "outside" in res.files_skipped[0]
    paths = DeltaTable(str(tmp_path / "t")).to_pyarrow_table().column("path").to_pylist()
    assert not any("passport" in p for p in paths)


def test_an_image_over_the_pixel_limit_is_image_too_large(tmp_path: Path) -> None:
    from PIL import Image

    from lakenet.data.encoders import MAX_IMAGE_PIXELS

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(20):
            Image.new("L", (8, 8), i if cls == "a" else 200 + i).save(tmp_path / "imgs" / cls / f"{i}.png")
    side = int(MAX_IMAGE_PIXELS**0.5) + 64  # one colour: a few hundred KB of PNG, >64 Mpx decoded
    Image.new("L", (side, side), 0).save(tmp_path / "imgs" / "a" / "huge.png")
    table = tmp_path / "t"
    lakenet.ingest(tmp_path / "imgs", table)
    cfg = {
        "data": {"table": str(table), "max_bad_fraction": 0.0},
        "features": {"label": {"column": "label"}, "image": {"type": "image", "size": 8}},
        "trainer": {"epochs": 1},
        "registry": {"name": "huge"},
    }
    with pytest.raises(BadRowsError, match="image_too_large: 1"):
        lakenet.fit(cfg, progress=False, workdir=tmp_path)


# ---- quarantine written once ---------------------------------------------------------------------------------------
def test_quarantine_rows_are_written_once_whatever_the_config(digits_table: Path, tmp_path: Path) -> None:
    from tests.conftest import digits_config

    q = Path(str(digits_table) + "_quarantine")
    version = DeltaTable(str(digits_table)).version()

    def count() -> int:
        if not DeltaTable.is_deltatable(str(q)):
            return 0
        rows = DeltaTable(str(q)).to_pyarrow_table()
        return rows.filter(pc.field("table_version") == version).num_rows

    for overrides in (
        {},
        {"trainer__epochs": 3},
        {"model__dropout": 0.3},
        {"data__split": {"train": 0.7, "val": 0.15, "test": 0.15}},
    ):
        lakenet.profile(digits_config(digits_table, **overrides), workdir=tmp_path)
    assert count() == 3


# ---- registrations --------------------------------------------------------------------------------------------------
def _yaml(cfg: dict[str, Any], where: Path) -> Path:
    path = where / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _versions(wd: Path, name: str) -> list[dict[str, Any]]:
    return next((m["versions"] for m in lakenet.models(workdir=wd) if m["name"] == name), [])


def test_resume_after_success_registers_nothing(env: dict[str, Any], tmp_path: Path) -> None:
    wd = tmp_path
    cfg = wine_config(env["table"], name="once")
    cfg["trainer"]["checkpoint_every_steps"] = 2
    first = lakenet.fit(cfg, progress=False, workdir=wd)
    again = lakenet.fit(cfg, resume=True, progress=False, workdir=wd)
    assert again.already_registered and again.version == first.version
    (only,) = _versions(wd, "once")
    assert only["aliases"] == ["champion"]
    res = _run([*CLI, "train", "--resume", "--workdir", str(wd), str(_yaml(cfg, tmp_path))], wd)
    assert res.returncode == 0 and "already done" in res.stdout
    assert len(_versions(wd, "once")) == 1


def test_a_kill_right_after_registration_is_completed_by_resume(env: dict[str, Any], tmp_path: Path) -> None:
    wd = tmp_path
    cfg = wine_config(env["table"], name="killed")
    cfg["trainer"]["checkpoint_every_steps"] = 2
    path = _yaml(cfg, tmp_path)
    killed = subprocess.run(
        [*HARNESS, str(tmp_path / "gate"), "1", "kill-after-register", "--", "train", "--workdir", str(wd), str(path)],
        cwd=wd, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    (version,) = _versions(wd, "killed")
    # the version was created with its lineage and digest (one registry call), but holds no alias yet
    assert version["aliases"] == [] and len(version["lineage"]["bundle_sha256"]) == 64
    run_id = version["run_id"]
    assert mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}").get_run(run_id).info.status == "RUNNING"
    # a plain `train` does not silently throw the checkpoint away
    refused = _run([*CLI, "train", "--workdir", str(wd), str(path)], wd)
    assert refused.returncode == 2 and "--resume" in refused.stderr and "--restart" in refused.stderr
    resumed = _run([*CLI, "train", "--resume", "--workdir", str(wd), str(path)], wd)
    assert resumed.returncode == 0, resumed.stderr
    (version,) = _versions(wd, "killed")  # the same version, now complete
    assert version["aliases"] == ["champion"] and len(version["lineage"]["bundle_sha256"]) == 64
    assert version["run_id"] == run_id
    assert mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"
    assert lakenet.predict("models:/killed@champion", env["table"], str(tmp_path / "out"), workdir=wd).rows == 178


def test_a_killed_run_is_marked_failed_and_restart_discards_its_checkpoint(env: dict[str, Any], tmp_path: Path) -> None:
    wd = tmp_path
    cfg = wine_config(env["table"], name="dead")
    cfg["trainer"].update(epochs=200, checkpoint_every_steps=2)
    path = _yaml(cfg, tmp_path)
    proc = subprocess.Popen([*CLI, "train", "--workdir", str(wd), str(path)], cwd=wd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpts = wd / ".lakenet" / "checkpoints" / "dead"
    deadline = time.monotonic() + 120
    while not list(ckpts.glob("step-*/COMPLETE")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    state = json.loads((ckpts / "job.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    assert client.get_run(state["run_id"]).info.status == "RUNNING"
    with pytest.raises(TrainingError, match=r"left a checkpoint at step \d+.*--resume.*--restart"):
        lakenet.fit(cfg, progress=False, workdir=wd)
    cfg["trainer"]["epochs"] = 2
    fit = lakenet.fit(cfg, restart=True, progress=False, workdir=wd)
    assert client.get_run(state["run_id"]).info.status == "FAILED"
    assert "died" in client.get_run(state["run_id"]).data.tags["lakenet.failure"]
    assert fit.version == "1"
