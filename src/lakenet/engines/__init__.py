"""Engines decide where work runs; resolved by name from the config, `local` being the explicit default."""

from __future__ import annotations

from lakenet.engines.base import Engine, ScoreJob
from lakenet.errors import ConfigError

__all__ = ["Engine", "ScoreJob", "get_engine"]


def get_engine(name: str) -> Engine:
    if name == "local":
        from lakenet.engines.local import LocalEngine

        return LocalEngine()
    raise ConfigError(f"engine.type {name!r} is not available; use 'local'")
