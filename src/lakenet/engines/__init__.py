"""Engines decide where work runs; resolved by name from the config, `local` being the explicit default."""

from __future__ import annotations

from typing import Any

from lakenet.config.schema import LocalEngineConfig, SparkEngineConfig
from lakenet.engines.base import Engine, ScoreJob
from lakenet.errors import ConfigError

__all__ = ["Engine", "ScoreJob", "get_engine"]


def get_engine(cfg: LocalEngineConfig | SparkEngineConfig | str, *, spark: Any = None) -> Engine:
    """The engine for an `engine:` section (or a bare name); pyspark is imported only for `spark`."""
    name = cfg if isinstance(cfg, str) else cfg.type
    if spark is not None and name == "local":
        name = "spark"  # a SparkSession handed in by the caller means: run there
    if name == "local":
        from lakenet.engines.local import LocalEngine

        return LocalEngine()
    if name == "spark":
        from lakenet.engines.spark import SparkEngine

        return SparkEngine(cfg if isinstance(cfg, SparkEngineConfig) else None, spark=spark)
    raise ConfigError(f"engine type {name!r} is not available; use 'local' or 'spark'")
