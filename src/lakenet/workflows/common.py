"""What every workflow needs: the working directory and its folders, atomic file writes, and one way to turn a
model reference (models:/…, runs:/…, a bundle directory, an .onnx file) into a local bundle."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakenet.config.loader import load_config
from lakenet.config.schema import Config
from lakenet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from lakenet.config.schema import EngineConfig, TrackingConfig
    from lakenet.inference.predictor import Predictor
    from lakenet.tracking.store import ResolvedModel

__all__ = [
    "ConfigLike",
    "atomic_write",
    "backbone_resolver",
    "bundle_digest",
    "check_runtime",
    "load_predictor",
    "reports_dir",
    "resolve",
    "score_engine",
    "scratch_dir",
    "table_uri",
    "trusted",
    "workdir",
    "write_json",
]

ConfigLike = str | Path | Config | dict[str, Any]


def workdir(path: str | Path | None) -> Path:
    """The folder that holds mlflow.db, .lakenet/ and reports/ (default: the current directory)."""
    return Path(path).resolve() if path is not None else Path.cwd()


def reports_dir(cfg: Config, wd: Path) -> Path:
    d = wd / "reports" / cfg.registry.name
    d.mkdir(parents=True, exist_ok=True)
    return d


def scratch_dir(wd: Path) -> Path:
    d = wd / ".lakenet" / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, value: Any) -> Path:
    atomic_write(path, json.dumps(value, indent=2, default=str))
    return path


def table_uri(table: str) -> str:
    """A local path made absolute (outputs and lineage must not depend on the current directory); URIs as given."""
    return str(Path(table).resolve()) if "://" not in table else table


def resolve(model: str, wd: Path, tracking: TrackingConfig | None = None) -> ResolvedModel:
    """The one way to resolve a model reference: registry references need the tracking store set up first (the
    config's `tracking:` when there is one); registered bundles are downloaded once into the working directory's
    cache and checked against their digest."""
    from lakenet.tracking.store import resolve_model, setup_tracking

    if model.startswith(("models:/", "runs:/")):
        setup_tracking(tracking, workdir=wd)
    return resolve_model(model, cache_dir=wd / ".lakenet" / "models")


def backbone_resolver(wd: Path, tracking: TrackingConfig | None = None) -> Callable[[str], tuple[Path, str | None]]:
    """For training plans: a registered backbone (models:/…) → its local bundle directory and version."""

    def resolve_ref(ref: str) -> tuple[Path, str | None]:
        r = resolve(ref, wd, tracking)
        return r.bundle_dir, r.version

    return resolve_ref


def load_predictor(
    model: str, wd: Path, *, device: str = "cpu", runtime: str = "torch", trust: tuple[str, ...] = ()
) -> Predictor:
    from lakenet.inference.predictor import Predictor

    resolved = resolve(model, wd)
    return Predictor(
        resolved.bundle_dir,
        device=device,
        model_name=resolved.name,
        model_version=resolved.version,
        runtime=runtime,
        trust_modules=trust,
    )


def trusted(trust_modules: Sequence[str], config: ConfigLike | None) -> tuple[str, ...]:
    """Custom architectures the loading user trusts: the ones named, plus the config's own `model.module`."""
    from lakenet.models.registry import config_trust

    return (*trust_modules, *(config_trust(load_config(config)) if config is not None else ()))


def score_engine(config: ConfigLike | None, engine: str | None, master: str | None) -> EngineConfig:
    """Where scoring runs: the config's engine, else `engine`/`master`, else the local engine."""
    from lakenet.config.schema import LocalEngineConfig, SparkEngineConfig

    if config is not None:
        return load_config(config).engine
    if engine in (None, "local") and master is None:
        return LocalEngineConfig()
    if engine in (None, "spark"):
        return SparkEngineConfig(master=master)
    raise DataError(f"--engine must be local or spark, not {engine!r}")


def check_runtime(runtime: str) -> None:
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"--runtime must be torch or onnx, not {runtime!r}")


def bundle_digest(path: Path) -> str:
    """A model's identity when it has no registry version: the bytes of its files."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
