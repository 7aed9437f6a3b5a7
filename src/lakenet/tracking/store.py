"""MLflow runs, the model registry, aliases and lineage tags. The only module that talks to MLflow."""

from __future__ import annotations

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
    "git_commit",
    "list_models",
    "resolve_model",
    "set_alias",
    "setup_tracking",
    "start_child_run",
    "start_run",
]

_CODE_FILE = str(Path(__file__).with_name("_mlflow_model_code.py"))
_PIP = ["torch>=2.4", "pyarrow", "deltalake", "safetensors", "pillow", "pandas<3", "pydantic>=2", "pyyaml"]


def setup_tracking(cfg: TrackingConfig | None = None, *, workdir: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI wins, then tracking.uri, then a sqlite file in the working directory."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (cfg.uri if cfg else None)
    if not uri:
        uri = f"sqlite:///{(workdir or Path.cwd()).resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


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
    ) -> str:
        """Log the bundle as a pyfunc model (model-from-code, no pickle), register it, point `alias` at it."""
        import mlflow
        from mlflow.models.signature import ModelSignature
        from mlflow.tracking import MlflowClient
        from mlflow.types.schema import Array, ColSpec, Schema

        def col(c: dict[str, str]) -> ColSpec:
            return ColSpec(Array("float") if c["type"] == "vector" else c["type"], c["name"])

        sig = ModelSignature(inputs=Schema([col(c) for c in signature]))
        with _active(self.run_id), warnings.catch_warnings():
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
            )
        client = MlflowClient()
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, alias, version)
        for k, v in tags.items():
            if v is not None:
                client.set_model_version_tag(name, version, k, str(v))
        return version


@contextmanager
def _active(run_id: str) -> Iterator[None]:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id):
        yield


@contextmanager
def start_run(
    experiment: str, run_name: str, tags: dict[str, Any] | None = None, *, run_id: str | None = None
) -> Iterator[TrackedRun]:
    """A run that ends FINISHED, or FAILED if the block raises; `run_id` continues an earlier run (a resumed
    tuning study keeps one parent run)."""
    import mlflow

    exp_id = _experiment_id(experiment)
    str_tags = {k: str(v) for k, v in (tags or {}).items()}
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
    if ref.startswith("models:/"):
        body = ref[len("models:/") :]
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                version = str(client.get_model_version_by_alias(name, alias).version)
            else:
                name, _, version = body.partition("/")
                if not version:
                    raise ModelError(f"Model URI {ref!r} needs a version or an alias: models:/{name}@champion")
                client.get_model_version(name, version)
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
    return ResolvedModel(ref, bundle, name, version)


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
