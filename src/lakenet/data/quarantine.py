"""Bad rows go to a quarantine Delta table next to their source, once per table version, never silently."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.scan import ScanResult
from lakenet.errors import BadRowsError

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["enforce_bad_fraction", "quarantine_uri", "write_quarantine"]


def quarantine_uri(table_uri: str) -> str:
    """`data/pets` → `data/pets_quarantine`; `data/fraud.csv` → `data/fraud_quarantine`."""
    p = Path(table_uri[len("file://") :] if table_uri.startswith("file://") else table_uri)
    stem = p.stem if p.is_file() else p.name
    return str(p.with_name(f"{stem}_quarantine"))


_IDENTITY = ("table", "table_version", "key", "column", "reason")


def _identities(t: pa.Table) -> set[tuple[object, ...]]:
    cols = [t.column(c).to_pylist() for c in _IDENTITY]
    return set(zip(*cols, strict=True))


def write_quarantine(result: ScanResult, *, job: str) -> str | None:
    """Append the bad rows (key, reason, column, split, source) that the quarantine does not hold yet: a bad
    value is recorded once per (table, version, key, column, reason), whichever command or config found it.
    None if there are no bad rows."""
    bad: pa.Table = result.bad_rows
    if bad.num_rows == 0:
        return None
    table = result.profile.table
    uri = quarantine_uri(table.uri)
    found = _identities(bad)

    def new_rows(dt: DeltaTable | None) -> pa.Table | None:
        rows = bad
        if dt is not None:
            version = table.version
            held = dt.to_pyarrow_dataset().to_table(
                columns=list(_IDENTITY),
                filter=(pc.field("table") == table.uri)
                & (pc.field("table_version").is_null() if version is None else pc.field("table_version") == version),
            )
            seen = _identities(held) & found
            if seen:
                keep = [
                    ident not in seen for ident in zip(*[bad.column(c).to_pylist() for c in _IDENTITY], strict=True)
                ]
                rows = bad.filter(pa.array(keep))
        return rows if rows.num_rows else None

    txn = app_id("quarantine", table.uri, table.version, sorted(found, key=str))
    commit_once(uri, new_rows, txn=txn, mode="append", metadata={"lakenet.job": job})
    return uri


def enforce_bad_fraction(result: ScanResult, max_fraction: float, quarantine: str | None) -> None:
    """Stop before training when too many rows are bad, with the counts by reason and where they are."""
    frac = result.bad_fraction
    if frac <= max_fraction:
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in result.profile.bad_rows.by_reason.items())
    raise BadRowsError(
        f"{result.bad_rows.num_rows} of {result.profile.table.rows} rows ({frac:.2%}) are bad, more than "
        f"data.max_bad_fraction = {max_fraction:.2%} ({reasons}). They are listed in {quarantine}. "
        "Fix the source rows, or raise data.max_bad_fraction to train on the rest."
    )
