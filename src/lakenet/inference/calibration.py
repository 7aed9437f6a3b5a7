"""An anomaly model's calibration: a raw score (reconstruction error) → the share of validation rows that score
lower, in (0, 1), strictly increasing (see `lakenet.evaluation.anomaly` for how it is fitted)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration"]

_KNOTS = 200  # quantiles of the validation rows' log raw scores


@dataclass(frozen=True)
class Calibration:
    """Raw score → calibrated score: piecewise linear in log(raw) between the validation quantiles, with
    exponential tails beyond them, so the map is continuous and strictly increasing everywhere (rows beyond
    the most unusual validation row still rank among themselves)."""

    knots: np.ndarray  # (K,) strictly increasing log raw scores

    @property
    def probs(self) -> np.ndarray:
        k = len(self.knots)
        return (np.arange(k) + 0.5) / k

    @classmethod
    def fit(cls, raw: np.ndarray) -> Calibration:
        logs = np.log(np.maximum(np.asarray(raw, dtype=np.float64), 1e-12))
        logs = logs[np.isfinite(logs)]
        if len(logs) == 0:
            logs = np.zeros(1)
        knots = np.quantile(logs, (np.arange(_KNOTS) + 0.5) / _KNOTS)
        # strictly increasing (ties among many equal scores would make the map flat there)
        step = max(1e-9, 1e-6 * float(np.ptp(knots) or 1.0))
        knots = np.maximum.accumulate(knots + np.arange(_KNOTS) * step)
        return cls(knots)

    @classmethod
    def from_list(cls, values: list[float]) -> Calibration:
        return cls(np.asarray(values, dtype=np.float64))

    def to_list(self) -> list[float]:
        return [float(v) for v in self.knots]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """(N,) calibrated scores in (0, 1)."""
        x = np.log(np.maximum(np.asarray(raw, dtype=np.float64), 1e-12))
        k, p = self.knots, self.probs
        out = np.interp(x, k, p)
        # The tails decay over the width of the outer decile, at least 0.1 in log units (so that ties do not
        # make them underflow to exactly 0 or 1).
        tail = max(float(k[-1] - k[max(0, len(k) - 1 - len(k) // 10)]), 0.1)
        low = max(float(k[min(len(k) - 1, len(k) // 10)] - k[0]), 0.1)
        hi, lo = x > k[-1], x < k[0]
        out[hi] = 1.0 - (1.0 - p[-1]) * np.exp(-(x[hi] - k[-1]) / tail)
        out[lo] = p[0] * np.exp((x[lo] - k[0]) / low)
        return out
