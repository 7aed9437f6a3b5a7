"""Shared pieces of the tuning tests: a wine-data tuning config and a model that refuses one width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from lakenet.models.mlp import MLP
from lakenet.models.spec import ModelSpec


def wine_tune_config(csv: Path, **tune: Any) -> dict[str, Any]:
    """An MLP on the wine CSV (an epoch takes milliseconds) with a two-dimensional search space."""
    return {
        "data": {"table": str(csv), "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "features": {
            "label": {"column": "cultivar"},
            "alcohol": {"type": "numeric"},
            "proline": {"type": "numeric"},
            "flavanoids": {"type": "numeric"},
            "color_intensity": {"type": "numeric"},
            "region": {"type": "category"},
        },
        "model": {"architecture": "mlp", "width": 16},
        "trainer": {"epochs": 9, "batch_size": 16, "early_stopping": None, "checkpoint_every_steps": 0},
        "registry": {"name": "wine"},
        "tune": {
            "metric": "val_accuracy",
            "trials": 6,
            "sampler": "random",
            "pruner": "asha",
            "space": {
                "trainer.learning_rate": {"log_uniform": [1.0e-4, 3.0e-1]},
                "model.width": {"choice": [4, 16, 32]},
            },
            **tune,
        },
    }


def load_study(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")


class FragileMLP(MLP):
    """The built-in MLP, except that it cannot be built with width 13: a "bad combination" a search can sample."""

    def __init__(self, spec: ModelSpec, **_: Any) -> None:
        if spec.width == 13:
            raise ValueError("FragileMLP does not support width 13")
        super().__init__(spec)
