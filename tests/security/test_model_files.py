"""A model file is data: tampered bundles run no code, damaged weights are refused by name, and every such case
is one clean error line (exit 2) from the CLI, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from deltalake import DeltaTable

import lakenet
from lakenet import api
from lakenet.errors import LakenetError, ModelError, TrainingError

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "lakenet.cli"]


def wine_config(csv: Path, **model: Any) -> dict[str, Any]:
    return {
        "data": {"table": str(csv)},
        "features": {
            "label": {"column": "cultivar"},
            "alcohol": {"type": "numeric"},
            "proline": {"type": "numeric"},
            "region": {"type": "category"},
        },
        "model": {"architecture": "mlp", "width": 8, **model},
        "trainer": {"epochs": 2, "batch_size": 32, "checkpoint_every_steps": 0},
        "registry": {"name": "wine"},
    }


@pytest.fixture(scope="module")
def trained(wine_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    wd = tmp_path_factory.mktemp("model-files")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    table = lakenet.ingest(wine_csv, wd / "data" / "wine").table
    fit = lakenet.fit(wine_config(Path(table)), progress=False, workdir=wd)
    return {"wd": wd, "table": table, "fit": fit, "bundle": fit.bundle_dir}


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def _edit_meta(bundle: Path, edit: Any) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    edit(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _flip(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _every_loader(model: str, trained: dict[str, Any], tmp: Path) -> list[str]:
    """Run the model through predict, featurize, export, evaluate and serve; the messages of the refusals."""
    wd = trained["wd"]
    messages = []
    calls = [
        lambda: api.predict(model, trained["table"], str(tmp / "scored"), workdir=wd),
        lambda: api.featurize(model, trained["table"], str(tmp / "emb"), workdir=wd),
        lambda: api.export(model, out=tmp / "m.onnx", workdir=wd),
        lambda: api.evaluate(wine_config(Path(trained["table"])), model=model, workdir=wd),
        lambda: api.serve(model, port=18931, background=True, workdir=wd),
    ]
    for call in calls:
        with pytest.raises(LakenetError) as err:
            call()
        messages.append(str(err.value))
    assert not (tmp / "scored").exists() and not (tmp / "emb").exists() and not (tmp / "m.onnx").exists()
    return messages


# ---- no code from a model file ---------------------------------------------------------------------------------
def _planted(bundle: Path, marker: Path) -> None:
    """Code an attacker puts next to the weights: a module and a torch.hub entry point that leave a marker."""
    payload = f"open({str(marker)!r}, 'w').write('pwned')\n"
    (bundle / "evil.py").write_text(payload + "import torch\nclass Net(torch.nn.Module):\n    pass\n")
    (bundle / "hubconf.py").write_text("dependencies = []\n" + payload + "def model(**kw):\n    pass\n")


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("this:nothing", {}),  # importing a module runs its top-level code
        ("torch.hub:load", {"repo_or_dir": "<bundle>", "model": "model", "source": "local"}),
        ("evil:Net", {}),  # a module shipped inside the bundle directory
        ("os:system", {"command": "touch <marker>"}),  # any callable
        ("builtins:eval", {}),
    ],
)
def test_a_tampered_architecture_runs_no_code(
    trained: dict[str, Any], tmp_path: Path, architecture: str, options: dict[str, str]
) -> None:
    bundle = _copy(trained["bundle"], tmp_path / "bundle")
    marker = tmp_path / "marker"
    _planted(bundle, marker)
    opts = {k: v.replace("<bundle>", str(bundle)).replace("<marker>", str(marker)) for k, v in options.items()}

    def edit(meta: dict[str, Any]) -> None:
        meta["spec"]["architecture"] = architecture
        meta["spec"]["options"] = opts

    _edit_meta(bundle, edit)
    before = set(sys.modules)
    cwd = Path.cwd()
    os.chdir(bundle)  # even from inside the bundle folder (on sys.path as '' for `python -m`)
    try:
        messages = _every_loader(str(bundle), trained, tmp_path)
    finally:
        os.chdir(cwd)
    assert not marker.exists()
    assert not {"this", "evil", "hubconf"} & (set(sys.modules) - before)
    for msg in messages:
        assert architecture in msg and ("trust" in msg or "unknown architecture" in msg), msg


def test_a_tampered_registered_model_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    """The artifact store's copy changed after registration: the registry's digest no longer matches."""
    wd = trained["wd"]
    store = next((wd / "mlartifacts").rglob("bundle.json")).parent
    original = (store / "bundle.json").read_text()
    marker = tmp_path / "marker"
    try:
        _planted(store, marker)
        _edit_meta(store, lambda m: m["spec"].update(architecture="evil:Net"))
        shutil.rmtree(wd / ".lakenet" / "models", ignore_errors=True)  # no cached copy: download the store's
        with pytest.raises(ModelError, match="SHA-256 recorded in the registry"):
            api.predict("models:/wine@champion", trained["table"], str(tmp_path / "out"), workdir=wd)
        assert not marker.exists()
    finally:
        (store / "bundle.json").write_text(original)
        for f in ("evil.py", "hubconf.py"):
            (store / f).unlink(missing_ok=True)
        shutil.rmtree(wd / ".lakenet" / "models", ignore_errors=True)


def test_options_are_checked_against_the_architecture(trained: dict[str, Any], tmp_path: Path) -> None:
    cases: list[tuple[Any, str]] = [
        (lambda m: m["spec"].update(options={"evil": 1}), "takes no option 'evil'"),
        (lambda m: m["spec"].update(architecture="resnet", options={"blocks": 10_000}), "'blocks'"),
        (lambda m: m["spec"].update(width=10**9), "width"),  # refused before any allocation
        (lambda m: m["spec"].update(extra_key=1), "unknown model spec keys"),
        (lambda m: m["spec"].update(num_outputs="3"), "num_outputs"),
    ]
    for i, (edit, expected) in enumerate(cases):
        bundle = _copy(trained["bundle"], tmp_path / f"b{i}")
        _edit_meta(bundle, edit)
        with pytest.raises(ModelError, match=expected):
            api.predict(str(bundle), trained["table"], str(tmp_path / f"out{i}"), workdir=trained["wd"])


def test_a_custom_module_needs_the_loading_users_trust(
    wine_csv: Path, trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wd = trained["wd"]
    arch = "tests.model_helpers:TinyCustomNet"
    cfg = wine_config(Path(trained["table"]), architecture="auto", module=arch, options={"scale": 2.0})
    cfg["registry"] = {"name": "custom"}
    fit = lakenet.fit(cfg, progress=False, workdir=wd)  # the config that names it trusts it for training
    with pytest.raises(ModelError, match=r"--trust-module tests.model_helpers:TinyCustomNet"):
        api.predict(fit.model_uri, trained["table"], str(tmp_path / "a"), workdir=wd)
    assert not (tmp_path / "a").exists()
    ok = api.predict(fit.model_uri, trained["table"], str(tmp_path / "a"), trust_modules=[arch], workdir=wd)
    assert ok.rows == 178
    monkeypatch.setenv("LAKENET_TRUSTED_MODULES", f"other.mod:Thing, {arch}")
    assert api.predict(fit.model_uri, trained["table"], str(tmp_path / "b"), workdir=wd).rows == 178
    monkeypatch.delenv("LAKENET_TRUSTED_MODULES")
    # the CLI: refused with one line, then accepted with --trust-module
    base = [*CLI, "predict", "--model", fit.model_uri, "--table", trained["table"], "--workdir", str(wd)]
    refused = subprocess.run([*base, "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("error:") and "--trust-module" in refused.stderr
    accepted = subprocess.run(
        [*base, "--out", str(tmp_path / "c"), "--trust-module", arch], capture_output=True, text=True, timeout=120
    )
    assert accepted.returncode == 0, accepted.stderr
    # a trusted name must still be an nn.Module class: a trusted function is not called
    bundle = _copy(fit.bundle_dir, tmp_path / "fn")
    _edit_meta(bundle, lambda m: m["spec"].update(architecture="os.path:join", options={}))
    with pytest.raises(ModelError, match=r"not a torch nn\.Module class"):
        api.predict(str(bundle), trained["table"], str(tmp_path / "d"), trust_modules=["os.path:join"], workdir=wd)


# ---- integrity --------------------------------------------------------------------------------------------------
def test_flipped_weight_bytes_are_refused_by_name(trained: dict[str, Any], tmp_path: Path) -> None:
    bundle = _copy(trained["bundle"], tmp_path / "bundle")
    _flip(bundle / "weights.safetensors")
    for msg in _every_loader(str(bundle), trained, tmp_path):
        assert "weights.safetensors" in msg and "SHA-256" in msg, msg


def test_flipped_bytes_in_the_registry_cache_are_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    wd = trained["wd"]
    model = trained["fit"].model_uri
    api.predict(model, trained["table"], str(tmp_path / "first"), workdir=wd)  # fills the cache
    cached = next((wd / ".lakenet" / "models" / "wine").rglob("weights.safetensors"))
    try:
        _flip(cached)
        with pytest.raises(ModelError, match=r"weights.safetensors.*SHA-256.*Delete"):
            api.predict(model, trained["table"], str(tmp_path / "second"), workdir=wd)
        _flip(cached)  # back
        _edit_meta(cached.parent, lambda m: m["preprocessor"]["label"].update(classes=["a", "b", "c"]))
        with pytest.raises(ModelError, match=r"bundle.json.*SHA-256 recorded in the registry"):
            api.predict(model, trained["table"], str(tmp_path / "third"), workdir=wd)
    finally:
        shutil.rmtree(wd / ".lakenet" / "models")
    assert not (tmp_path / "second").exists() and not (tmp_path / "third").exists()
    version = lakenet.models(workdir=wd)[0]["versions"][0]
    assert len(version["lineage"]["bundle_sha256"]) == 64  # recorded at registration


def test_damaged_weights_are_one_clean_error(trained: dict[str, Any], tmp_path: Path) -> None:
    cases = {}
    truncated = _copy(trained["bundle"], tmp_path / "truncated")
    w = truncated / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _edit_meta(truncated, lambda m: m.pop("files"))  # a bundle from before digests were recorded
    cases["truncated"] = (truncated, "not a readable safetensors file")
    wider = _copy(trained["bundle"], tmp_path / "wider")
    _edit_meta(wider, lambda m: m["spec"].update(width=16))
    cases["shape"] = (wider, "does not fit")
    pickled = _copy(trained["bundle"], tmp_path / "pickled")
    torch.save({"w": torch.zeros(2)}, pickled / "weights.safetensors")
    _edit_meta(pickled, lambda m: m.pop("files"))
    cases["pickle"] = (pickled, "not a readable safetensors file")
    for name, (bundle, expected) in cases.items():
        with pytest.raises(ModelError, match=expected):
            api.predict(str(bundle), trained["table"], str(tmp_path / f"out-{name}"), workdir=trained["wd"])
        res = subprocess.run(
            [*CLI, "predict", "--model", str(bundle), "--table", trained["table"], "--out", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=trained["wd"],
        )
        assert res.returncode == 2, (name, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert str(bundle) in res.stderr


def test_a_pickled_checkpoint_is_refused_without_running_it(wine_csv: Path, tmp_path: Path) -> None:
    """A checkpoint's loop state whose pickle names a callable: refused by the restricted unpickler, cleanly."""
    wd = tmp_path
    table = lakenet.ingest(wine_csv, wd / "wine").table
    cfg = wine_config(Path(table))
    cfg["trainer"].update(epochs=3, checkpoint_every_steps=2)
    lakenet.fit(cfg, progress=False, workdir=wd)
    ckpt = max((wd / ".lakenet" / "checkpoints" / "wine").glob("step-*"))
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    torch.save({"step": 1, "evil": Evil()}, ckpt / "state.pt")
    job = json.loads((ckpt.parent / "job.json").read_text())
    (ckpt.parent / "job.json").write_text(json.dumps({**job, "state": "running"}))  # as if interrupted
    with pytest.raises(TrainingError, match=r"state.pt cannot be loaded safely"):
        lakenet.fit(cfg, resume=True, progress=False, workdir=wd)
    assert not marker.exists()
    res = subprocess.run(
        [*CLI, "train", "--resume", "--workdir", str(wd), str(_yaml(cfg, tmp_path))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr and "state.pt" in res.stderr
    assert not marker.exists()
    assert DeltaTable(table).version() == 0


def _yaml(cfg: dict[str, Any], where: Path) -> Path:
    import yaml

    path = where / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_onnx_export_cache_is_private(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exported graphs are cached in the user's own cache folder (0700), not a shared temporary path where
    another local user could plant a graph under the name the next export looks for."""
    from lakenet.models.bundle import Bundle
    from lakenet.models.export import bundle_onnx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = Bundle.load(trained["bundle"])
    graph = bundle_onnx(bundle, trained["bundle"])
    cache = tmp_path / "cache" / "lakenet" / "onnx"
    (cached,) = cache.glob("*.onnx")
    assert cache.stat().st_mode & 0o077 == 0 and cached.read_bytes() == graph
    cache.chmod(0o777)  # now others could write there: it is not trusted any more
    cached.write_bytes(b"planted")
    assert bundle_onnx(bundle, trained["bundle"]) == graph


def _unchecked(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "cannot be integrity-checked" in r.getMessage()]


def test_a_bundle_without_digests_loads_with_a_warning(
    trained: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bundle saved before bundle.json recorded its weights' SHA-256 still loads (old bundles must), but says
    that nothing vouches for its weights, naming the bundle and the fix."""
    bundle = _copy(trained["bundle"], tmp_path / "öld bündle")
    _edit_meta(bundle, lambda m: m.pop("files"))
    with caplog.at_level(logging.WARNING, logger="lakenet.models"):
        res = api.predict(str(bundle), trained["table"], str(tmp_path / "scored"), workdir=trained["wd"])
    assert res.rows == 178
    (message,) = _unchecked(caplog.records)
    assert str(bundle.resolve() / "bundle.json") in message and "records no SHA-256" in message
    assert "save it again" in message
    cli = subprocess.run(
        [*CLI, "predict", "--model", str(bundle), "--table", trained["table"], "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=120, cwd=trained["wd"],
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "cannot be integrity-checked" in cli.stderr and "öld bündle" in cli.stderr  # on the console
    assert "Traceback" not in cli.stderr
    assert DeltaTable(str(tmp_path / "cli")).to_pyarrow_table().num_rows == 178


def test_a_registered_version_without_its_digest_loads_with_a_warning(
    trained: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version registered before lakenet tagged it with its bundle's SHA-256 (or whose registration was killed
    before the tags): it loads, with a warning naming the model and the fix."""
    from mlflow.tracking import MlflowClient

    from lakenet.tracking.store import DIGEST_TAG

    wd = trained["wd"]
    store = f"sqlite:///{wd / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)  # not the registry another test's workdir left as mlflow's
    version = trained["fit"].version
    digest = client.get_model_version("wine", version).tags[DIGEST_TAG]
    client.delete_model_version_tag("wine", version, DIGEST_TAG)
    try:
        with caplog.at_level(logging.WARNING, logger="lakenet.models"):
            res = api.predict("models:/wine@champion", trained["table"], str(tmp_path / "scored"), workdir=wd)
        assert res.rows == 178
        (message,) = _unchecked(caplog.records)
        assert "models:/wine@champion" in message and f"version {version} of 'wine'" in message
        assert DIGEST_TAG in message and "--resume" in message and "re-register" in message
    finally:
        client.set_model_version_tag("wine", version, DIGEST_TAG, digest)
