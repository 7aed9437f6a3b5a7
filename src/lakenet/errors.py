"""One exception hierarchy: every error a user can cause says what was expected, what was found and the fix.
Each error carries the process exit status the CLI ends with, so cron, Airflow or `lakenet jobs` can act on it."""

from __future__ import annotations

import enum

__all__ = [
    "BadRowsError",
    "ConfigError",
    "DataError",
    "ExitCode",
    "InfrastructureError",
    "LakenetError",
    "ModelError",
    "ScoringError",
    "TrainingError",
    "TuningError",
]


class ExitCode(enum.IntEnum):
    """The exit status of every `lakenet` command; stable, documented in the README."""

    OK = 0
    BUG = 1  # an unexpected error: a traceback, please report it
    BAD_INPUT = 2  # a config, table, model or argument is wrong, or the request was refused; the message says why
    DRIFT = 3  # `drift` (and jobs running it): the new rows drifted beyond the thresholds
    NOT_PROMOTED = 4  # `update`: the challenger did not pass the gate; the champion stays
    INFRASTRUCTURE = 5  # storage, database, network, SMTP or cluster failure: retrying later may succeed
    TIMED_OUT = 124  # `jobs run`: the run exceeded its timeout and was stopped (as timeout(1))
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; training resumes with --resume, tuning continues its study


class LakenetError(Exception):
    """Base class: the CLI prints these as a clean message (no traceback) and exits with `exit_code`."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


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


class InfrastructureError(LakenetError):
    """Something lakenet depends on failed (storage, a database, the network, an SMTP server, the cluster)."""

    exit_code = ExitCode.INFRASTRUCTURE
