"""Delta writes that commit exactly once: an application transaction id makes a rerun or a retry a no-op."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pyarrow as pa

__all__ = ["already_committed", "app_id", "commit_once"]

_ROW_GROUP_ROWS = 512


def app_id(*parts: object) -> str:
    """A transaction id derived from what the write is a function of (job, inputs+versions, model, output)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return "lakenet-" + hashlib.sha256(blob).hexdigest()[:32]


def already_committed(uri: str, txn: str) -> bool:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        return False
    return DeltaTable(uri).transaction_version(txn) is not None


def commit_once(
    uri: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    txn: str,
    mode: Literal["append", "overwrite", "error"] = "append",
    metadata: Mapping[str, str] | None = None,
    row_group_rows: int = _ROW_GROUP_ROWS,
) -> bool:
    """Write `data` as one Delta commit tagged with `txn`; returns False (and writes nothing) if already there.

    Row groups are kept small so that training and scoring workers can split a table between them.
    """
    from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

    if already_committed(uri, txn):
        return False
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(
        uri,
        data,
        mode=mode,
        schema_mode="merge" if mode == "append" else None,
        writer_properties=WriterProperties(max_row_group_size=row_group_rows, compression="ZSTD"),
        commit_properties=CommitProperties(
            app_transactions=[Transaction(txn, 1)],
            custom_metadata={"lakenet.txn": txn, **(metadata or {})},
        ),
    )
    return True
