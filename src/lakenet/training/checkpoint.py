"""Atomic checkpoints: written to a temporary directory, completed with a marker, then renamed into place.

A crash mid-write leaves only a `.tmp-*` directory, which `latest_checkpoint` never picks.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lakenet.errors import TrainingError

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^step-(\d{9})$")
_COMPLETE = "COMPLETE"
_KEEP = 2


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(
    directory: str | Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
) -> Path:
    """Write weights (safetensors) and optimizer/scheduler/loop state (torch, tensors and primitives only)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for name, weights in (("model", model), ("best", best)):
        if weights is not None and not all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point()):
            raise ValueError(f"refusing to checkpoint non-finite {name} weights at step {step}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:09d}-", dir=root))
    save_file(_tensors(model), str(tmp / "model.safetensors"))
    if best is not None:
        save_file(_tensors(best), str(tmp / "best.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / _COMPLETE).write_text(str(step))
    final = root / f"step-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # atomic on one filesystem
    for old in sorted(p for p in root.iterdir() if _NAME.match(p.name))[:-_KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    root = Path(directory)
    if not root.is_dir():
        return None
    done = [
        p
        for p in root.iterdir()
        if _NAME.match(p.name)
        and (p / _COMPLETE).is_file()
        and (p / "model.safetensors").is_file()
        and (p / "state.pt").is_file()
    ]
    return max(done, key=lambda p: int(_NAME.match(p.name).group(1)), default=None)  # type: ignore[union-attr]


def load_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict[str, Any]]:
    from safetensors import SafetensorError

    p = Path(path)
    fix = "The checkpoint is damaged or was not written by lakenet; delete it (or train with --restart) to start over."
    try:
        model = load_file(str(p / "model.safetensors"))
        best = load_file(str(p / "best.safetensors")) if (p / "best.safetensors").is_file() else None
    except (SafetensorError, OSError, ValueError) as err:
        raise TrainingError(f"Checkpoint {p}: weights unreadable ({str(err).splitlines()[0][:200]}). {fix}") from None
    try:
        # weights_only: the state file can only hold tensors and primitives, so loading it runs no code (a
        # pickle naming anything else is refused by torch's restricted unpickler).
        state = torch.load(p / "state.pt", weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise TrainingError(f"Checkpoint {p / 'state.pt'} cannot be loaded safely ({first}). {fix}") from None
    if not isinstance(state, dict):
        raise TrainingError(f"Checkpoint {p / 'state.pt'} holds a {type(state).__name__}, not loop state. {fix}")
    return model, best, state
