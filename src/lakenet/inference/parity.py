"""Export parity: does an exported model (ONNX graph, reloaded safetensors) compute what the predictor does?"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lakenet.errors import ModelError
from lakenet.inference.predictor import Predictor
from lakenet.models.bundle import Bundle

__all__ = ["parity"]


def parity(
    bundle: Bundle,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    inputs: dict[str, np.ndarray],
    *,
    trusted: tuple[str, ...] = (),
) -> float:
    """Max absolute difference between the torch model's final outputs (the Predictor's) and `run(inputs)`'s."""
    expected = Predictor(bundle, trust_modules=trusted).forward(inputs)
    got = run(inputs)
    if expected.shape != got.shape:
        raise ModelError(f"export parity: output shapes differ (torch {expected.shape}, export {got.shape})")
    return float(np.max(np.abs(expected.astype(np.float64) - got.astype(np.float64)))) if expected.size else 0.0
