"""The warm start's early-stopping patience: scaled to its shorter schedule, never below 2, overridable."""

from __future__ import annotations

from typing import Any

from lakenet.config import parse_config
from lakenet.workflows.update import _warm_patience


def _cfg(trainer: dict[str, Any], update: dict[str, Any] | None = None) -> Any:
    return parse_config(
        {
            "data": {"table": "t", "key": "id"},
            "features": {"label": "y", "x": {"type": "numeric"}},
            "trainer": trainer,
            "update": update or {},
            "registry": {"name": "m"},
        }
    )


def test_patience_follows_the_warm_schedule_share() -> None:
    cfg = _cfg({"epochs": 20, "early_stopping": {"patience": 5}})
    assert _warm_patience(cfg, cfg, 10) == 2  # 5 × 10 / 20 = 2.5, rounded down
    assert _warm_patience(cfg, cfg, 16) == 4
    assert _warm_patience(cfg, cfg, 20) == 5  # a warm start as long as the full schedule waits as long
    assert _warm_patience(cfg, cfg, 40) == 5  # never longer than the champion's own patience
    assert _warm_patience(cfg, cfg, 1) == 2  # never below 2: one noisy epoch must not end it


def test_update_patience_wins_and_no_early_stopping_stays_off() -> None:
    cfg = _cfg({"epochs": 20, "early_stopping": {"patience": 5}}, {"patience": 7})
    assert _warm_patience(cfg, cfg, 10) == 7
    off = _cfg({"epochs": 20, "early_stopping": None}, {"patience": 7})
    assert _warm_patience(off, off, 10) is None
