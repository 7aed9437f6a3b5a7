"""From a validated config to a TrainJob: pin the table version, scan it once, size the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lakenet.config.schema import Config
from lakenet.data.scan import ScanResult, scan_table
from lakenet.data.sources import Snapshot, open_table
from lakenet.models.registry import model_spec
from lakenet.models.spec import ModelSpec
from lakenet.training.loop import TrainJob

__all__ = ["TrainPlan", "plan_training"]


@dataclass(frozen=True)
class TrainPlan:
    """One scan of one table version for one config: what every training job of that config needs."""

    config: Config
    snapshot: Snapshot
    scan: ScanResult
    spec: ModelSpec

    def job(
        self,
        *,
        output_dir: str | Path,
        checkpoint_dir: str | Path,
        resume: bool = False,
        refit: bool = False,
        config: Config | None = None,
    ) -> TrainJob:
        """A TrainJob; `config` may differ from the planned one in anything but data and features (a tuning
        trial's learning rate, a refit's epochs), which the scan does not depend on."""
        cfg = config or self.config
        return TrainJob(
            config=cfg.to_yaml_dict(),
            snapshot=self.snapshot,
            preprocessor=self.scan.preprocessor.to_dict(),
            spec=model_spec(cfg, self.scan.preprocessor).to_dict(),
            fragment_counts=self.scan.fragment_counts,
            output_dir=str(output_dir),
            checkpoint_dir=str(checkpoint_dir),
            resume=resume,
            refit=refit,
        )


def plan_training(cfg: Config, *, version: int | None = None, min_fragments: int | None = None) -> TrainPlan:
    """Open the table at `version` (default: the config's, else the latest), cut it into at least
    `min_fragments` pieces (default: 4 per training worker) and scan it: profile, bad rows, preprocessor."""
    snap = open_table(cfg.data.table, version if version is not None else cfg.data.version)
    # Enough fragments for every worker to get a share, even of a table stored as one big row group.
    snap = snap.subdivided(min_fragments if min_fragments is not None else 4 * cfg.engine.workers)
    result = scan_table(cfg, snap)
    return TrainPlan(cfg, snap, result, model_spec(cfg, result.preprocessor))
