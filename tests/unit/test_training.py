"""The training loop: seeded runs reproduce, an interrupted run resumes to the same weights, non-finite
steps are skipped and counted, and the loop stops after too many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lakenet.config import parse_config
from lakenet.data.scan import scan_table
from lakenet.data.sources import open_table
from lakenet.errors import TrainingError
from lakenet.models.registry import model_spec
from lakenet.training.callbacks import Callback
from lakenet.training.loop import TrainJob, WorkerContext, train_worker
from tests.conftest import digits_config


def make_job(raw: dict[str, Any], out: Path, *, resume: bool = False) -> TrainJob:
    cfg = parse_config(raw)
    snap = open_table(cfg.data.table)
    result = scan_table(cfg, snap)
    return TrainJob(
        config=cfg,
        snapshot=snap,
        preprocessor=result.preprocessor,
        spec=model_spec(cfg, result.preprocessor),
        fragment_counts=result.fragment_counts,
        output_dir=str(out / "out"),
        checkpoint_dir=str(out / "ckpt"),
        resume=resume,
    )


class Interrupt(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, state: Any, logs: dict[str, Any]) -> None:
        if state.step == self.at_step:
            raise KeyboardInterrupt


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "out" / "weights.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_seeded_runs_are_reproducible(digits_table: Path, tmp_path: Path) -> None:
    raw = digits_config(digits_table, trainer__early_stopping=None)
    train_worker(make_job(raw, tmp_path / "a"), WorkerContext())
    train_worker(make_job(raw, tmp_path / "b"), WorkerContext())
    assert_same(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))


def test_resume_after_interruption_matches_uninterrupted(digits_table: Path, tmp_path: Path) -> None:
    # checkpoint every 3 steps; interrupt at step 8 (mid epoch 2): resume replays steps 7-8 from step 6.
    raw = digits_config(digits_table, trainer__early_stopping={"metric": "val_accuracy", "patience": 5})
    full = train_worker(make_job(raw, tmp_path / "full"), WorkerContext())
    with pytest.raises(KeyboardInterrupt):
        train_worker(make_job(raw, tmp_path / "cut"), WorkerContext(), [Interrupt(at_step=8)])
    assert not (tmp_path / "cut" / "out" / "weights.safetensors").exists()
    resumed = train_worker(make_job(raw, tmp_path / "cut", resume=True), WorkerContext())
    assert resumed.step == full.step and resumed.epoch == full.epoch
    assert resumed.best_epoch == full.best_epoch
    assert_same(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]


def test_resume_without_checkpoint_is_a_clear_error(digits_table: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no complete checkpoint"):
        train_worker(make_job(digits_config(digits_table), tmp_path, resume=True), WorkerContext())


class NaNAfter(nn.Module):
    """A user module whose loss turns non-finite once its `fuse` buffer runs out."""

    def __init__(self, spec: Any, finite_steps: int = 2) -> None:
        super().__init__()
        self.lin = nn.Linear(spec.image_channels * spec.image_size**2, spec.num_outputs)
        self.register_buffer("calls", torch.zeros(()))
        self.finite_steps = finite_steps

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = self.lin(inputs["image"].flatten(1))
        return out * float("nan") if self.training and self.calls > self.finite_steps else out


def test_non_finite_steps_are_skipped_then_stop(digits_table: Path, tmp_path: Path) -> None:
    raw = digits_config(digits_table, model__module="tests.unit.test_training:NaNAfter", model__architecture="auto")
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss"):
        train_worker(make_job(raw, tmp_path), WorkerContext())
    # the checkpoint at step 3 was written from finite weights only (the NaN step was skipped)
    ckpts = sorted((tmp_path / "ckpt").glob("step-*"))
    assert ckpts and all(torch.isfinite(load_file(str(c / "model.safetensors"))["lin.weight"]).all() for c in ckpts)
