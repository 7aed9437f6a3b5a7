"""Watching a model after it ships: drift of the rows it is asked about against the rows it learned from."""

from lakenet.monitoring.drift import Check, DriftReport, compare, psi, sample_rows

__all__ = ["Check", "DriftReport", "compare", "psi", "sample_rows"]
