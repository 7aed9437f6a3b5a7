"""Hyperparameter search: an Optuna study over dotted config paths, trials run by the spine's training loop."""

from lakenet.tuning.runner import TuneJob, kept_value, run_trials
from lakenet.tuning.study import storage_url, study_name

__all__ = ["TuneJob", "kept_value", "run_trials", "storage_url", "study_name"]
