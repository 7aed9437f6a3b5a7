"""Drift statistics on synthetic samples: PSI, the numeric rule (PSI and KS together), categories with unseen
values, and the two-sample test in an embedding space."""

from __future__ import annotations

import numpy as np
import pytest

from lakenet.config.schema import MonitorConfig
from lakenet.monitoring.drift import _category_check, _embedding_check, _numeric_check, psi


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    a = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(a, a) == pytest.approx(0.0)
    small, large = np.array([0.3, 0.25, 0.25, 0.2]), np.array([0.7, 0.1, 0.1, 0.1])
    assert 0 < psi(a, small) < 0.1 < psi(a, large)


def test_a_numeric_shift_needs_both_psi_and_ks() -> None:
    rng = np.random.default_rng(0)
    cfg = MonitorConfig()
    ref = rng.normal(0, 1, 5000)
    same = _numeric_check("x", ref, rng.normal(0, 1, 2000), cfg, tests=5)
    moved = _numeric_check("x", ref, rng.normal(1.0, 1, 2000), cfg, tests=5)
    assert not same.drifted and moved.drifted and moved.pvalue is not None and moved.pvalue < 1e-6
    missing = rng.normal(0, 1, 2000)
    missing[:1000] = np.nan  # half the values went missing: the missing bin moves the PSI
    assert _numeric_check("x", ref, missing, cfg, tests=5).value > cfg.psi


def test_unseen_category_values_raise_drift() -> None:
    cfg = MonitorConfig()
    ref = ["a"] * 50 + ["b"] * 50
    ok = _category_check("c", ref, ["a"] * 48 + ["b"] * 52, {"a", "b"}, cfg)
    new = _category_check("c", ref, ["a"] * 45 + ["b"] * 45 + ["z"] * 10, {"a", "b"}, cfg)
    assert not ok.drifted and new.drifted and new.detail["unseen_rate"] == pytest.approx(0.1)


def test_embedding_drift_in_the_model_space() -> None:
    rng = np.random.default_rng(1)
    cfg = MonitorConfig()
    ref = rng.normal(size=(800, 16))
    assert not _embedding_check("e", ref, rng.normal(size=(500, 16)), cfg).drifted
    shifted = rng.normal(size=(500, 16))
    shifted[:, 0] += 1.5  # one direction of the representation moved
    assert _embedding_check("e", ref, shifted, cfg).drifted
