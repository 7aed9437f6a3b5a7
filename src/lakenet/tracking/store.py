"""MLflow runs, the model registry, aliases and lineage tags. The only module that talks to MLflow."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakenet._version import __version__
from lakenet.config.schema import TrackingConfig
from lakenet.errors import ModelError
from lakenet.training.callbacks import Callback

__all__ = [
    "MlflowMetrics",
    "ResolvedModel",
    "TrackedRun",
    "alias_version",
    "end_child_run",
    "fail_dead_runs",
    "git_commit",
    "list_models",
    "resolve_model",
    "set_alias",
    "setup_tracking",
    "start_child_run",
    "start_run",
]

DIGEST_TAG = "lakenet.bundle_sha256"
_CODE_FILE = str(Path(__file__).with_name("_mlflow_model_code.py"))
_PIP = ["torch>=2.4", "pyarrow", "deltalake", "safetensors", "pillow", "pandas<3", "pydantic>=2", "pyyaml"]


def setup_tracking(cfg: TrackingConfig | None = None, *, workdir: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then a sqlite file in the working directory."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    _quiet_mlflow()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (cfg.uri if cfg else None)
    if not uri:
        db = (workdir or Path.cwd()).resolve() / "mlflow.db"
        if not db.exists():
            _new_store(db)
        uri = f"sqlite:///{db}"
    # mlflow.set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI: a later call in this process (another
    # workdir) would take that for the user's choice, and so would every child process. Keep the environment as
    # the user set it; lakenet hands URIs to its own workers explicitly.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return uri


def _new_store(db: Path) -> None:
    """A new project's store from an empty, already migrated copy cached per MLflow version: MLflow takes ~1.5 s
    to create its tables (every migration since its first release) in each new directory. Best effort: on any
    problem MLflow creates the store itself, as it always did."""
    import shutil
    import sqlite3
    import tempfile

    import mlflow
    from filelock import FileLock
    from platformdirs import user_cache_dir

    try:
        cache = Path(user_cache_dir("lakenet")) / "mlflow-stores"
        cache.mkdir(parents=True, exist_ok=True)
        template = cache / f"empty-{mlflow.__version__}.db"
        with FileLock(str(template) + ".lock", timeout=120):
            if not template.exists():
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    fresh = Path(tmp) / "mlflow.db"
                    mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()
                    fresh.replace(template)
        staged = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, staged)
        with sqlite3.connect(staged) as conn:  # MLflow puts the default experiment's artifacts under ./mlruns
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                         (str(Path.cwd().resolve() / "mlruns" / "0"),))  # fmt: skip
        conn.close()
        try:
            os.link(staged, db)  # never over a store another process made meanwhile
        finally:
            staged.unlink(missing_ok=True)
    except (OSError, sqlite3.Error, ImportError, RuntimeError):
        return


def _quiet_mlflow() -> None:
    """lakenet prints its own progress and results: no artifact download bars, no INFO lines from MLflow and its
    database migrations on the console (warnings still show)."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logger = logging.getLogger(name)
        if logger.level in (logging.NOTSET, logging.INFO, logging.DEBUG):
            logger.setLevel(logging.WARNING)


def _experiment_id(name: str) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:///"):
        # Artifacts next to the store, explicitly: MLflow's default would be relative to whatever cwd the
        # server or a later process has.
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / name).resolve().as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


class MlflowMetrics(Callback):
    """Logs every epoch's figures to the run (from rank 0, wherever it runs)."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        self.run_id, self.tracking_uri = run_id, tracking_uri

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        step = int(logs["epoch"])
        import time

        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), ts, step) for k, v in logs.items() if k != "epoch" and isinstance(v, float)]
        client.log_batch(self.run_id, metrics=metrics)


@dataclass
class TrackedRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    alias_refused: str | None = None  # set by register_bundle when the alias was left where it was, and why

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        flat = {k: ("null" if v is None else str(v))[:6000] for k, v in _flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]), run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=self.run_id)

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        with _active(self.run_id):
            mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path, run_id=self.run_id)

    def log_text(self, text: str, name: str) -> None:
        import mlflow

        mlflow.log_text(text, name, run_id=self.run_id)

    def register_bundle(
        self,
        bundle_dir: Path,
        *,
        name: str,
        alias: str,
        signature: list[dict[str, str]],
        tags: dict[str, Any],
        requirements: list[str] | None = None,
        allow_incompatible: bool = False,
    ) -> str:
        """Log the bundle as a pyfunc model (model-from-code, no pickle), register it with its tags and the bundle's
        digest, then point `alias` at it."""
        import mlflow
        from mlflow.models.signature import ModelSignature
        from mlflow.tracking import MlflowClient
        from mlflow.types.schema import Array, ColSpec, Schema

        from lakenet.models.bundle import Bundle

        def col(c: dict[str, str]) -> ColSpec:
            return ColSpec(Array("float") if c["type"] == "vector" else c["type"], c["name"])

        client = MlflowClient()
        # Once per training run: a resumed run whose model was registered before it was killed completes that
        # version (tags, alias) instead of registering a second one.
        existing = client.search_model_versions(f"name='{name}' and run_id='{self.run_id}'")
        if existing:
            version = str(max(int(mv.version) for mv in existing))
            digest = _registered_digest(name, version)
            self._finish_registration(client, name, version, alias, {**tags, DIGEST_TAG: digest}, allow_incompatible)
            return version
        sig = ModelSignature(inputs=Schema([col(c) for c in signature]))
        # The version is created with its tags (lineage, digest), in one registry call: a version is never seen
        # without them, and 16 tag calls cost a tenth of a second.
        tags = {**tags, DIGEST_TAG: Bundle.digest(bundle_dir)}
        # MLflow prints "Successfully registered model …" straight to stderr; lakenet says what it registered itself.
        with _active(self.run_id), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            # MLflow nags about a missing input example; the signature is explicit and images make poor examples.
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_CODE_FILE,
                artifacts={"bundle": str(bundle_dir)},
                pip_requirements=[f"lakenet=={__version__}", *_PIP, *(requirements or [])],
                signature=sig,
                registered_model_name=name,
                await_registration_for=60,
                tags={k: str(v) for k, v in tags.items() if v is not None},
            )
        version = str(info.registered_model_version)
        self._finish_registration(client, name, version, alias, tags, allow_incompatible, tagged=True)
        return version

    def _finish_registration(
        self,
        client: Any,
        name: str,
        version: str,
        alias: str,
        tags: dict[str, Any],
        allow_incompatible: bool,
        *,
        tagged: bool = False,
    ) -> None:
        """Tag the version (unless it was created `tagged`), then move the alias, or say why not."""
        refused = None if allow_incompatible else _incompatible(client, name, alias, version, tags)
        todo = {} if tagged else dict(tags)
        if refused:
            todo["lakenet.alias_refused"] = refused
        for k, v in todo.items():
            if v is not None:
                client.set_model_version_tag(name, version, k, str(v))
        self.alias_refused = refused
        if not refused:
            client.set_registered_model_alias(name, alias, version)  # last: the alias moves to a complete version


def _incompatible(client: Any, name: str, alias: str, version: str, tags: dict[str, Any]) -> str | None:
    """Why `version` must not silently take `alias` from the version it points to now: another task, or another
    input signature (its clients would break). None when it may."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    if str(current.version) == version:
        return None
    old = dict(current.tags or {})
    new_task, old_task = str(tags.get("lakenet.task", "")), old.get("lakenet.task")
    fix = (
        f"Move it if you mean to: `lakenet models promote {name} {version} --alias {alias}`, or train with "
        "registry.allow_incompatible: true."
    )
    if old_task and new_task and old_task != new_task:
        return f"version {version} is {new_task}, but @{alias} (version {current.version}) is {old_task}. {fix}"
    old_sig, new_sig = old.get("lakenet.signature"), tags.get("lakenet.signature")
    if old_sig and new_sig:
        before = {c["name"]: c["type"] for c in json.loads(old_sig)}
        after = {c["name"]: c["type"] for c in json.loads(str(new_sig))}
        if before != after:
            added = sorted(set(after) - set(before))
            removed = sorted(set(before) - set(after))
            retyped = sorted(c for c in set(before) & set(after) if before[c] != after[c])
            parts = [
                f"{what} {cols}" for what, cols in (("adds", added), ("drops", removed), ("retypes", retyped)) if cols
            ]
            return f"version {version} {', '.join(parts)} compared with @{alias} (version {current.version}). {fix}"
    return None


def _registered_digest(name: str, version: str) -> str:
    """The digest of the bundle a model version holds in the artifact store (downloaded to a scratch folder)."""
    import mlflow

    from lakenet.models.bundle import Bundle

    with tempfile.TemporaryDirectory(prefix="lakenet-verify-") as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        found = _find_bundle(Path(tmp))
        if found is None:
            raise ModelError(f"Model {name} version {version} has no lakenet bundle in the artifact store")
        return Bundle.digest(found)


@contextmanager
def _active(run_id: str) -> Iterator[None]:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id):
        yield


_PROCESS_TAG = "lakenet.process"


def _process_token(pid: int | None = None) -> str | None:
    """host:pid:start-time of a process (Linux /proc), so a reused pid is not mistaken for the same process."""
    import socket

    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{socket.gethostname()}:{pid}:{start}"


def fail_dead_runs(experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of the experiment whose process (on this machine) is gone: a killed `train`
    or `tune` cannot end its own run. Returns their ids."""
    import socket

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    host = socket.gethostname()
    failed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        token = run.data.tags.get(_PROCESS_TAG)
        if not token or not token.startswith(f"{host}:"):
            continue
        try:
            pid = int(token.split(":")[-2])
        except ValueError:
            continue
        if _process_token(pid) == token:
            continue  # still running
        client.set_tag(run.info.run_id, "lakenet.failure", "its process died (killed, or the machine restarted)")
        client.set_terminated(run.info.run_id, status="FAILED")
        failed.append(run.info.run_id)
    return failed


@contextmanager
def start_run(
    experiment: str, run_name: str, tags: dict[str, Any] | None = None, *, run_id: str | None = None
) -> Iterator[TrackedRun]:
    """A run that ends FINISHED, or FAILED if the block raises; `run_id` continues an earlier run (a resumed
    tuning study keeps one parent run). Runs of this experiment whose process died are marked FAILED first."""
    import mlflow

    exp_id = _experiment_id(experiment)
    fail_dead_runs(exp_id)
    str_tags = {k: str(v) for k, v in (tags or {}).items()}
    token = _process_token()
    if token:
        str_tags[_PROCESS_TAG] = token
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(str_tags)
    else:
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=str_tags)
    try:
        yield TrackedRun(run.info.run_id, exp_id, mlflow.get_tracking_uri())
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def start_child_run(
    parent: TrackedRun, name: str, *, params: dict[str, Any], tags: dict[str, Any] | None = None
) -> str:
    """A nested run under `parent` (how the MLflow UI groups tuning trials), created from any process or Spark
    task that can reach the tracking store; returns its run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(parent.tracking_uri)
    run = client.create_run(
        parent.experiment_id,
        run_name=name,
        tags={"mlflow.parentRunId": parent.run_id, **{k: str(v) for k, v in (tags or {}).items() if v is not None}},
    )
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return str(run.info.run_id)


def end_child_run(
    tracking_uri: str, run_id: str, *, status: str, metrics: dict[str, float], tags: dict[str, Any]
) -> None:
    """Close a nested run: final metrics, tags (state, failure reason) and an MLflow status."""
    import time

    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ts = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None],
    )
    client.set_terminated(run_id, status=status)


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved to a local bundle directory."""

    uri: str
    bundle_dir: Path
    name: str | None
    version: str | None


def _find_bundle(root: Path) -> Path | None:
    hits = sorted(root.rglob("bundle.json"))
    return hits[0].parent if hits else None


def resolve_model(ref: str, *, cache_dir: Path | None = None) -> ResolvedModel:
    """`models:/name@alias`, `models:/name/3`, `runs:/id/model`, a local bundle directory, or an ONNX file
    written by `lakenet export`."""
    local = Path(ref)
    if "://" not in ref and ":/" not in ref and local.is_file() and local.suffix.lower() == ".onnx":
        return ResolvedModel(ref, local.resolve(), None, None)
    if "://" not in ref and ":/" not in ref:
        bundle = _find_bundle(local) if local.is_dir() else None
        if bundle is None:
            raise ModelError(
                f"Model {ref!r} is neither a registry URI (models:/name@alias, models:/name/<version>) nor a "
                "directory containing a lakenet bundle"
            )
        return ResolvedModel(ref, bundle, None, None)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name: str | None = None
    version: str | None = None
    expected: str | None = None  # the bundle digest recorded at registration
    if ref.startswith("models:/"):
        body = ref[len("models:/") :]
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                version = str(mv.version)
            else:
                name, _, version = body.partition("/")
                if not version:
                    raise ModelError(f"Model URI {ref!r} needs a version or an alias: models:/{name}@champion")
                mv = client.get_model_version(name, version)
            expected = (mv.tags or {}).get(DIGEST_TAG)
        except MlflowException as err:
            known = ", ".join(m.name for m in client.search_registered_models()) or "none"
            raise ModelError(
                f"Model {ref!r} not found in the registry at {mlflow.get_tracking_uri()} "
                f"({err.message.splitlines()[0]}). Registered models: {known}. Check the name/alias or "
                "MLFLOW_TRACKING_URI."
            ) from None
        artifact = f"models:/{name}/{version}"
        key = f"{name}/{version}"
    else:
        artifact, key = ref, ref.replace(":/", "_").replace("/", "_")
    cache = (cache_dir or Path.cwd() / ".lakenet" / "models") / key
    bundle = _find_bundle(cache) if cache.is_dir() else None
    if bundle is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(tmp))
        except MlflowException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"Cannot download model {ref!r}: {err.message.splitlines()[0]}") from None
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(tmp, cache)
        bundle = _find_bundle(cache)
        if bundle is None:
            raise ModelError(f"Model {ref!r} has no lakenet bundle; was it logged by lakenet?")
    if expected is not None:
        _verify_bundle(ref, bundle, expected, cache)
    elif name is not None:
        from lakenet.models.bundle import warn_unchecked

        warn_unchecked(
            f"models:/{name}/{version}",
            f"{ref} (version {version} of {name!r}) has no {DIGEST_TAG} tag in the registry (registered before "
            "lakenet recorded one, or its registration was interrupted)",
            "complete an interrupted registration with `lakenet train --resume`, or re-register the model (train it "
            "again)",
        )
    return ResolvedModel(ref, bundle, name, version)


def _verify_bundle(ref: str, bundle: Path, expected: str, cache: Path) -> None:
    """The bundle must be the one registered: bundle.json's SHA-256 against the model version's tag (and the
    weights against bundle.json, checked when the bundle is loaded)."""
    from lakenet.models.bundle import Bundle, sha256_file

    found = Bundle.digest(bundle)
    if found != expected:
        raise ModelError(
            f"{bundle / 'bundle.json'} of {ref} does not match the SHA-256 recorded in the registry at registration "
            f"({expected[:16]}…, found {found[:16]}…): the local copy or the artifact store was changed after the "
            f"model was registered. Delete {cache} to download it again; if the error stays, the stored model was "
            "tampered with: re-register it from a trusted copy."
        )
    weights = bundle / "weights.safetensors"
    recorded = (json.loads((bundle / "bundle.json").read_text()).get("files") or {}).get(weights.name)
    if recorded is not None and weights.is_file() and sha256_file(weights) != recorded:
        raise ModelError(
            f"{weights} of {ref} does not match the SHA-256 recorded at registration: the file was changed or "
            f"damaged. Delete {cache} to download it again; if the error stays, re-register the model from a "
            "trusted copy."
        )


def list_models() -> list[dict[str, Any]]:
    """Registered models with their versions, aliases, metrics and lineage tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    out = []
    for rm in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(alias)
        versions = []
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            tags = dict(mv.tags or {})
            versions.append(
                {
                    "version": str(mv.version),
                    "aliases": aliases.get(str(mv.version), []),
                    "created": mv.creation_timestamp,
                    "run_id": mv.run_id,
                    "metrics": json.loads(tags.get("lakenet.metrics", "{}")),
                    "lineage": {
                        k[len("lakenet.") :]: v
                        for k, v in tags.items()
                        if k.startswith("lakenet.") and k != "lakenet.metrics"
                    },
                }
            )
        versions.sort(key=lambda v: int(v["version"]), reverse=True)
        out.append({"name": rm.name, "versions": versions})
    return out


def _registry_error(name: str, err: Any) -> ModelError:
    import mlflow
    from mlflow.tracking import MlflowClient

    known = ", ".join(m.name for m in MlflowClient().search_registered_models()) or "none"
    return ModelError(
        f"Model {name!r}: {err.message.splitlines()[0]} (registry at {mlflow.get_tracking_uri()}; registered "
        f"models: {known}). Check the name and version with `lakenet models`."
    )


def alias_version(name: str, alias: str) -> str:
    """The version `name@alias` points to now (one registry query, nothing downloaded)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        raise _registry_error(name, err) from None


def set_alias(name: str, version: str, alias: str) -> str | None:
    """Point `name@alias` at `version`; returns the version it pointed to before (None if the alias is new)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException as err:
        raise _registry_error(name, err) from None
    try:
        previous: str | None = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, version)
    return previous
