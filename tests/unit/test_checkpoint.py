"""Checkpoints are atomic: a half-written one is never picked; non-finite weights are never written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lakenet.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def weights(v: float = 1.0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 2), v), "n": torch.tensor(3)}


def test_save_load_round_trip(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 5, model=weights(2.0), best=weights(1.0), state={"epoch": 1, "t": torch.ones(2)})
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step-000000005"
    model, best, state = load_checkpoint(ckpt)
    assert torch.equal(model["w"], weights(2.0)["w"]) and best is not None and state["epoch"] == 1


def test_interrupted_write_is_never_picked(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 4, model=weights(), best=None, state={"epoch": 0})
    # A crash mid-write leaves a temporary directory...
    partial = tmp_path / ".tmp-step-000000008-abc"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    # ...and a non-atomic filesystem could leave a final-looking directory without the completion marker.
    no_marker = tmp_path / "step-000000009"
    no_marker.mkdir()
    (no_marker / "model.safetensors").write_bytes(b"x")
    (no_marker / "state.pt").write_bytes(b"x")
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step-000000004"
    load_checkpoint(ckpt)


def test_keeps_the_last_two_and_refuses_non_finite(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=weights(), best=None, state={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002", "step-000000003"]
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(tmp_path, 4, model=weights(float("nan")), best=None, state={})
    assert latest_checkpoint(tmp_path).name == "step-000000003"  # type: ignore[union-attr]
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_empty_or_missing_directory(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "nope") is None
    assert latest_checkpoint(tmp_path) is None
