"""Custom nn.Modules for tests of `model.module` (trusted user code) and of scoring-process failures."""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

from lakenet.models.mlp import MLP
from lakenet.models.spec import ModelSpec


class TinyCustomNet(MLP):
    """A user's own architecture: the built-in MLP under another name, with one option of its own."""

    def __init__(self, spec: ModelSpec, scale: float = 1.0) -> None:
        super().__init__(spec)
        self.scale = scale


class BreaksInWorkers(MLP):
    """Builds in the main process and fails in any other: a bundle a scoring process cannot build."""

    def __init__(self, spec: ModelSpec, **_: Any) -> None:
        if multiprocessing.current_process().name != "MainProcess":
            raise RuntimeError("BreaksInWorkers cannot be built in a worker process")
        super().__init__(spec)


class DiesInWorkers(MLP):
    """Scores in the main process; in any other, its forward pass kills its own process with SIGKILL, as the
    OOM killer would."""

    def forward(self, inputs: dict[str, Any]) -> Any:
        if multiprocessing.current_process().name != "MainProcess":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(inputs)


def fraud_config(table: str) -> dict[str, Any]:
    """A small fraud model on a transactions table (see lakenet.examples): what the growing-table tests train."""
    return {
        "data": {"table": table, "key": "transaction_id"},
        "features": {"label": "is_fraud", "include": "auto", "exclude": ["customer_id", "key"]},
        "model": {"width": 16},
        "trainer": {"epochs": 2, "baseline": "none"},
        "registry": {"name": "fraud"},
    }
