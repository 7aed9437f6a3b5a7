"""What crosses the seam between a workflow and the training loop, both ways: the job a worker runs (validated
config, fitted preprocessor, model spec) and the outcome rank 0 leaves behind. Imports no torch, so engines and
workflows can build and pass jobs without loading it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.data.sources import Snapshot
from lakenet.errors import TrainingError
from lakenet.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch

__all__ = ["OUTCOME_FILE", "WEIGHTS_FILE", "TrainJob", "TrainOutcome", "WorkerContext"]

OUTCOME_FILE = "result.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, picklable, so a local process or a Spark task can run it unchanged."""

    config: Config
    snapshot: Snapshot
    preprocessor: Preprocessor
    spec: ModelSpec
    fragment_counts: np.ndarray  # (fragments, 3) usable rows per split
    output_dir: str  # rank 0 writes the TrainOutcome and the kept weights here
    checkpoint_dir: str
    resume: bool = False
    # Train on train+validation with no validation pass (a tuned configuration's final fit); the config's
    # epochs are the budget and early stopping must be off.
    refit: bool = False
    # Transfer learning: pretrained tensors to start from (a safetensors file), parameters kept frozen, and
    # parameters with their own learning rate.
    init_weights: str | None = None
    frozen: tuple[str, ...] = ()
    param_lrs: dict[str, float] = field(default_factory=dict)
    # Decided on the driver from the training split (see training.plan): the early-stopping metric (auto
    # resolved), the epochs always trained, and the classes' weights in the loss (None: unweighted).
    watch: str | None = None
    min_epochs: int = 1
    class_weights: tuple[float, ...] | None = None
    # A split that is not the config's key hash (a recommender's per-user holdout); None: cfg.data.split.
    split: Any = None


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"


@dataclass(frozen=True)
class TrainOutcome:
    """What a finished training run reports: the loop's final state plus its timings. Rank 0 writes it next to
    the kept weights (the best epoch's when early stopping restored them)."""

    epoch: int
    step: int
    history: list[dict[str, float]]
    best_epoch: int = -1
    best_metric: float | None = None
    stopped_early: bool = False
    nonfinite_steps: int = 0
    resumed_from_step: int | None = None
    train_seconds: float = 0.0
    rows_seen: int = 0
    steps_per_epoch: int = 0

    def kept_entry(self, early_stopping: bool) -> dict[str, float]:
        """The history entry of the weights that were kept: the best epoch's under early stopping, else the last."""
        h = self.history
        if early_stopping and 0 <= self.best_epoch < len(h):
            return h[self.best_epoch]
        return h[-1] if h else {}

    def kept_value(self, metric: str, early_stopping: bool) -> float | None:
        value = self.kept_entry(early_stopping).get(metric)
        return None if value is None else float(value)

    def summary(self) -> dict[str, Any]:
        """The part a bundle keeps (bundle.json's `training`)."""
        keys = ("history", "best_epoch", "stopped_early", "nonfinite_steps", "step", "resumed_from_step")
        return {k: getattr(self, k) for k in keys}

    def save(self, out_dir: Path) -> None:
        (out_dir / OUTCOME_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, out_dir: str | Path) -> TrainOutcome:
        path = Path(out_dir) / OUTCOME_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise TrainingError(f"The training run left no readable outcome in {path} ({err})") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @staticmethod
    def weights(out_dir: str | Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(Path(out_dir) / WEIGHTS_FILE))
