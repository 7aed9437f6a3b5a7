"""One exception hierarchy: every error a user can cause says what was expected, what was found and the fix."""

from __future__ import annotations

__all__ = [
    "BadRowsError",
    "ConfigError",
    "DataError",
    "LakenetError",
    "ModelError",
    "ScoringError",
    "TrainingError",
    "TuningError",
]


class LakenetError(Exception):
    """Base class: the CLI prints these as a clean message (no traceback) and exits with status 2."""


class ConfigError(LakenetError):
    """The YAML file or a config value is invalid."""


class DataError(LakenetError):
    """A table, column or file is missing or has the wrong shape or type."""


class BadRowsError(DataError):
    """Too many rows were quarantined for the job to go on."""


class ModelError(LakenetError):
    """A model, bundle or registry entry cannot be built, found or loaded."""


class ScoringError(LakenetError):
    """Batch scoring could not go on (a scoring process died); nothing was committed."""


class TrainingError(LakenetError):
    """Training could not go on (non-finite loss, failed worker, no checkpoint to resume)."""


class TuningError(LakenetError):
    """A hyperparameter search could not produce a result (no trial completed, a study mismatch)."""
