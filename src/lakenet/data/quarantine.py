"""Bad rows go to a quarantine Delta table next to their source, once per table version, never silently."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.scan import ScanResult
from lakenet.errors import BadRowsError

__all__ = ["enforce_bad_fraction", "quarantine_uri", "write_quarantine"]


def quarantine_uri(table_uri: str) -> str:
    """`data/pets` → `data/pets_quarantine`; `data/fraud.csv` → `data/fraud_quarantine`."""
    p = Path(table_uri[len("file://") :] if table_uri.startswith("file://") else table_uri)
    stem = p.stem if p.is_file() else p.name
    return str(p.with_name(f"{stem}_quarantine"))


def write_quarantine(result: ScanResult, *, job: str) -> str | None:
    """Append the bad rows (key, reason, column, split, source) once per (table version, job); None if none."""
    bad: pa.Table = result.bad_rows
    if bad.num_rows == 0:
        return None
    table = result.profile["table"]
    uri = quarantine_uri(table["uri"])
    reasons = sorted(zip(bad.column("key").to_pylist(), bad.column("reason").to_pylist(), strict=True))
    txn = app_id("quarantine", table["uri"], table["version"], job, reasons)
    commit_once(uri, bad, txn=txn, mode="append", metadata={"lakenet.job": job})
    return uri


def enforce_bad_fraction(result: ScanResult, max_fraction: float, quarantine: str | None) -> None:
    """Stop before training when too many rows are bad, with the counts by reason and where they are."""
    frac = result.bad_fraction
    if frac <= max_fraction:
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in result.profile["bad_rows"]["by_reason"].items())
    raise BadRowsError(
        f"{result.bad_rows.num_rows} of {result.profile['table']['rows']} rows ({frac:.2%}) are bad, more than "
        f"data.max_bad_fraction = {max_fraction:.2%} ({reasons}). They are listed in {quarantine}. "
        "Fix the source rows, or raise data.max_bad_fraction to train on the rest."
    )
