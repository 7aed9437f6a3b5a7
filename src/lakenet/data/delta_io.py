"""Delta writes that commit exactly once, atomically, with nothing left behind by a killed or losing writer.

- Rows are written as Parquet files into a staging folder inside the table (`_lakenet_staging/<id>/`, a name
  Parquet and Delta readers skip), and moved next to the table's files only at commit time.
- The commit is conditional: it is made on the table version the writer read (`max_commit_retries=0`), and it
  carries an application transaction id derived from what the write is a function of. A writer that finds the
  table moved on re-reads it: if its id is there, another run did the same work and this one commits nothing;
  otherwise it tries again on the new version. Two runs into the same new table cannot both create it.
- Each staging folder is locked by its living writer; the next writer to the table removes the folders (and
  any files moved but never committed) of writers that died.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from lakenet.errors import DataError

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

__all__ = [
    "STAGING",
    "Staging",
    "already_committed",
    "app_id",
    "commit_once",
    "commit_staged",
    "group_rows",
    "is_local",
    "local_path",
    "regroup",
    "remove_stale_staging",
]

# Row groups of about _GROUP_BYTES of Arrow data, between _MIN_GROUP_ROWS and _MAX_GROUP_ROWS rows: every pass
# over a table pays a fixed cost per row group (a read call, a split hash, an encode call: ~3 ms on 2 cores), which
# 512-row groups of narrow tabular rows made most of a small table's scan and evaluation. Images keep groups of
# 512 rows (~50 MB). Workers still share a table of one row group: tasks are row ranges (`plan_tasks`,
# `Snapshot.subdivided`).
_GROUP_BYTES = 8 * 2**20
_MIN_GROUP_ROWS = 512
_MAX_GROUP_ROWS = 65_536
_FILE_ROWS = 1_000_000  # rows per data file: large writes are split so that a reader can spread them over tasks
STAGING = "_lakenet_staging"
_MAX_ATTEMPTS = 50

Mode = Literal["append", "overwrite"]


def app_id(*parts: object) -> str:
    """A transaction id derived from what the write is a function of (job, inputs+versions, model, output)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return "lakenet-" + hashlib.sha256(blob).hexdigest()[:32]


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """A filesystem path for a local table or file URI. delta-rs lists files as percent-encoded `file://` URIs
    (`t%C3%A2ble%20%C3%BC`); a path read from one must be decoded."""
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri


def _open(uri: str) -> DeltaTable | None:
    from deltalake import DeltaTable

    return DeltaTable(uri) if DeltaTable.is_deltatable(uri) else None


def already_committed(uri: str, txn: str) -> bool:
    dt = _open(uri)
    return dt is not None and dt.transaction_version(txn) is not None


# ---- staging ----------------------------------------------------------------------------------------------------
def delta_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type Delta stores for `t`: timestamps in microseconds (UTC or without zone), signed integers,
    32-bit dates, no half floats; nested types converted inside."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_unsigned_integer(t):
        return {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}.get(t.bit_width, pa.int64())
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(delta_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type), f.nullable) for f in t])
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type), delta_type(t.item_type))
    return t


def delta_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, delta_type(f.type), f.nullable, f.metadata) for f in schema])


def group_rows(batch: pa.RecordBatch | pa.Table) -> int:
    """Rows per row group for data like `batch`: about _GROUP_BYTES of it, within [_MIN_GROUP_ROWS,
    _MAX_GROUP_ROWS]."""
    per_row = max(1.0, batch.nbytes / max(batch.num_rows, 1))
    return int(min(_MAX_GROUP_ROWS, max(_MIN_GROUP_ROWS, _GROUP_BYTES // per_row)))


def regroup(batches: Iterable[pa.RecordBatch], rows: int | None = None) -> Iterator[pa.Table]:
    """The batches' rows, in order, as tables of `rows` rows each (the last one shorter), one per row group to
    write; `rows` None: `group_rows` of the first non-empty batch. Zero-copy: the tables are slices of the
    batches."""
    held: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if rows is None:
            rows = group_rows(batch)
        held.append(batch)
        n += batch.num_rows
        while n >= rows:
            table = pa.Table.from_batches(held)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            held, n = rest.to_batches(), rest.num_rows
    if n:
        yield pa.Table.from_batches(held)


class Staging:
    """The data files of one write, in `<table>/_lakenet_staging/<id>/` until `publish` moves them into the table.

    A lock file next to the folder is held for as long as this writer lives (released by the OS if it is
    killed), so `remove_stale_staging` can tell a dead writer's leftovers from a running writer's files.
    """

    def __init__(self, uri: str) -> None:
        from filelock import FileLock

        self.uri = uri
        self.table_dir = Path(local_path(uri))
        self.id = uuid.uuid4().hex
        self.dir = self.table_dir / STAGING / self.id
        # The lock before the folder: a folder is never seen without its living owner's lock. (A cleaner may
        # remove the empty staging root in between: then make it again.)
        self._lock = FileLock(str(self.dir) + ".lock", timeout=0)
        for attempt in range(5):
            try:
                self.dir.parent.mkdir(parents=True, exist_ok=True)
                self._lock.acquire()
                self.dir.mkdir()
                break
            except FileNotFoundError:
                if self._lock.is_locked:
                    self._lock.release()
                if attempt == 4:
                    raise
        self.files: list[tuple[str, int]] = []  # (file name, rows)
        self.published: list[str] = []

    def write(self, data: pa.Table | pa.RecordBatchReader, *, row_group_rows: int | None = None) -> int:
        """Write `data` (streamed) as Parquet files in the staging folder, in row groups of `row_group_rows`
        (default: `group_rows` of the first batch); returns the rows written."""
        schema = delta_schema(data.schema)
        batches: Iterable[pa.RecordBatch] = data.to_batches() if isinstance(data, pa.Table) else data
        if schema != data.schema:
            batches = (b.cast(schema) for b in batches)
        total = 0
        writer: pq.ParquetWriter | None = None
        rows_in_file = 0
        try:
            for group in regroup(batches, row_group_rows):
                if writer is None or rows_in_file >= _FILE_ROWS:
                    if writer is not None:
                        writer.close()
                        self.files[-1] = (self.files[-1][0], rows_in_file)
                    name = f"part-{len(self.files):05d}-{self.id}.zstd.parquet"
                    writer = pq.ParquetWriter(self.dir / name, schema, compression="zstd")
                    self.files.append((name, 0))
                    rows_in_file = 0
                writer.write_table(group, row_group_size=group.num_rows)
                rows_in_file += group.num_rows
                total += group.num_rows
        finally:
            if writer is not None:
                writer.close()
                self.files[-1] = (self.files[-1][0], rows_in_file)
        return total

    def adopt(self, name: str, rows: int) -> None:
        """A file written into `self.dir` by someone else (a Spark task) becomes part of this write."""
        self.files.append((name, rows))

    def publish(self, txn: str) -> list[AddAction]:
        """Move the files next to the table's (a manifest first, so a dead writer's moved files can be found) and
        return their Delta add actions. Idempotent: a retried commit publishes once."""
        from deltalake.transaction import AddAction

        if not self.published and self.files:
            manifest = {"txn": txn, "files": [name for name, _ in self.files]}
            (self.dir / "manifest.json").write_text(json.dumps(manifest))
            for name, _ in self.files:
                os.replace(self.dir / name, self.table_dir / name)
                self.published.append(name)
        adds = []
        for name, rows in self.files:
            st = os.stat(self.table_dir / name)
            adds.append(
                AddAction(name, st.st_size, {}, int(st.st_mtime * 1000), True, json.dumps({"numRecords": rows}))
            )
        return adds

    def done(self) -> None:
        """The commit holds the files: forget the staging folder."""
        self._remove_dir()

    def discard(self) -> None:
        """Nothing of this write may stay: remove staged and moved-but-uncommitted files."""
        for name in self.published:
            (self.table_dir / name).unlink(missing_ok=True)
        self.published.clear()
        self._remove_dir()

    def _remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._lock.release()
            Path(self._lock.lock_file).unlink(missing_ok=True)
        _remove_empty(self.table_dir)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dir.exists():  # neither committed nor discarded: an error on the way
            self.discard()


def _remove_empty(table_dir: Path) -> None:
    """Drop an empty staging root, and the table folder itself if a failed first write left it empty."""
    with contextlib.suppress(OSError):
        (table_dir / STAGING).rmdir()
    if not (table_dir / "_delta_log").exists():
        with contextlib.suppress(OSError):
            table_dir.rmdir()


def remove_stale_staging(uri: str) -> int:
    """Remove what writers that died left in the table: their staging folders, their moved-but-uncommitted files
    and object-store temporary files (`part-….parquet#1`). Returns the number of files removed."""
    if not is_local(uri):
        return 0
    table_dir = Path(local_path(uri))
    root = table_dir / STAGING
    removed = 0
    with contextlib.suppress(FileNotFoundError):  # another writer may be cleaning up at the same time
        removed += _remove_dead_writers(uri, table_dir, root)
    if table_dir.is_dir():
        for f in table_dir.glob("*.parquet#*"):
            f.unlink(missing_ok=True)
            removed += 1
    _remove_empty(table_dir)
    return removed


def _remove_dead_writers(uri: str, table_dir: Path, root: Path) -> int:
    from filelock import FileLock, Timeout

    removed = 0
    if root.is_dir():
        dt = _open(uri)
        live = {unquote(Path(urlparse(f).path).name) for f in dt.file_uris()} if dt is not None else set()
        for lock_path in sorted(root.glob("*.lock")):
            lock = FileLock(str(lock_path), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue  # a living writer
            try:
                folder = lock_path.with_suffix("")
                manifest = folder / "manifest.json"
                if manifest.is_file():
                    info = json.loads(manifest.read_text())
                    if dt is None or dt.transaction_version(info["txn"]) is None:
                        for name in info["files"]:
                            if name not in live and (table_dir / name).exists():
                                (table_dir / name).unlink()
                                removed += 1
                if folder.is_dir():
                    removed += sum(1 for _ in folder.iterdir())
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
                lock_path.unlink(missing_ok=True)
        # a folder without a lock: its writer died between creating the folder and taking the lock
        for folder in root.iterdir():
            if folder.is_dir() and not Path(str(folder) + ".lock").exists():
                shutil.rmtree(folder, ignore_errors=True)
    return removed


# ---- conditional commits ----------------------------------------------------------------------------------------
def _is_conflict(err: Exception) -> bool:
    from deltalake.exceptions import CommitFailedError, DeltaError

    if isinstance(err, CommitFailedError):
        return True
    text = str(err).lower()
    return isinstance(err, DeltaError) and ("already exists" in text or ("version" in text and "exist" in text))


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.01 * 2**attempt) * (0.5 + random.random()))


def _merged_schema(dt: DeltaTable, schema: pa.Schema, uri: str) -> pa.Schema | None:
    """New columns of an append (None if there are none); a column whose type changed is an error."""
    current = pa.schema(dt.schema().to_arrow())
    new = [f for f in schema if f.name not in current.names]
    for f in schema:
        if f.name in current.names and not _compatible(current.field(f.name).type, f.type):
            raise DataError(
                f"Cannot append to {uri}: column {f.name!r} is {current.field(f.name).type} in the table but "
                f"{f.type} in the new rows. Write to a new table, or cast the column."
            )
    return pa.schema(new) if new else None


def _compatible(a: pa.DataType, b: pa.DataType) -> bool:
    if a == b:
        return True
    same_kind = (
        (pa.types.is_string(a) or pa.types.is_large_string(a))
        and (pa.types.is_string(b) or pa.types.is_large_string(b))
    ) or (
        (pa.types.is_binary(a) or pa.types.is_large_binary(a))
        and (pa.types.is_binary(b) or pa.types.is_large_binary(b))
    )
    return same_kind or (pa.types.is_integer(a) and pa.types.is_integer(b))


Prepare = Callable[["DeltaTable | None"], "pa.Table | pa.RecordBatchReader | None"]


def commit_staged(
    uri: str,
    staging: Staging,
    schema: pa.Schema,
    *,
    txn: str,
    mode: Mode = "append",
    metadata: Mapping[str, str] | None = None,
    expect_version: int | None = None,
    removes: Sequence[str] = (),
) -> bool:
    """Commit the staged files as one Delta transaction tagged `txn`, on the table as it is now (or creating it).
    False, and nothing left behind, if `txn` is already in the table. `expect_version`: fail with a conflict
    (to be re-prepared by the caller) unless the table is still at that version. `removes`: data files (paths
    relative to the table) the same transaction removes (rows replaced or deleted: a merge)."""
    props = _props(txn, metadata)
    schema = delta_schema(schema)
    for attempt in range(_MAX_ATTEMPTS):
        dt = _open(uri)
        if dt is not None and dt.transaction_version(txn) is not None:
            staging.discard()
            return False
        if expect_version is not None and (dt.version() if dt is not None else -1) != expect_version:
            raise _Moved()
        adds = staging.publish(txn)
        now = int(time.time() * 1000)
        actions = [*adds, *(_remove_action(p, now) for p in removes)]
        try:
            _commit(uri, dt, actions, schema, mode, props)
        except Exception as err:
            if not _is_conflict(err):
                staging.discard()
                raise
            if expect_version is not None:
                raise _Moved() from None
            _backoff(attempt)
            continue
        staging.done()
        return True
    staging.discard()
    raise DataError(f"Could not commit to {uri}: other writers kept committing first ({_MAX_ATTEMPTS} attempts).")


class _Moved(Exception):
    """The table moved on since the write was prepared: prepare it again."""


Moved = _Moved  # for writers that prepare against a version themselves (an incremental merge)


def _remove_action(path: str, now_ms: int) -> Any:
    from deltalake.transaction import RemoveAction

    return RemoveAction(path, True, now_ms)


def _props(txn: str, metadata: Mapping[str, str] | None) -> Any:
    from deltalake import CommitProperties, Transaction

    return CommitProperties(
        app_transactions=[Transaction(txn, 1)],
        custom_metadata={"lakenet.txn": txn, **(metadata or {})},
        max_commit_retries=0,  # never blindly on top of a version this writer did not read: the caller re-checks
    )


def _commit(uri: str, dt: DeltaTable | None, adds: list[Any], schema: pa.Schema, mode: Mode, props: Any) -> None:
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    if dt is None:
        create_table_with_add_actions(uri, Schema.from_arrow(schema), adds, mode="error", commit_properties=props)
        return
    if mode == "append":
        extra = _merged_schema(dt, schema, uri)
        if extra is not None:
            # delta-rs keeps the table's schema on a raw commit: add the new (nullable) columns first.
            from deltalake.schema import Field

            dt.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in extra])
            dt = _open(uri)
            assert dt is not None
        table_schema = pa.schema(dt.schema().to_arrow())
        dt.create_write_transaction(adds, mode="append", schema=table_schema, commit_properties=props)
    else:
        dt.create_write_transaction(adds, mode="overwrite", schema=schema, commit_properties=props)


def commit_once(
    uri: str,
    data: pa.Table | pa.RecordBatchReader | Prepare,
    *,
    txn: str,
    mode: Mode = "append",
    metadata: Mapping[str, str] | None = None,
    row_group_rows: int | None = None,
) -> bool:
    """Write `data` as one Delta commit tagged `txn`; False (and nothing written) if `txn` is already there.

    `data` may be a function of the table as it is (None if it does not exist yet) returning the rows to write,
    or None for nothing: it is called again whenever another writer commits first, so a write that depends on
    the table's contents (append only the keys that are not there yet) stays right under concurrency.
    Row groups hold `row_group_rows` rows (default: about 8 MiB of Arrow data, 512 to 65,536 rows).
    """
    if not is_local(uri):
        return _commit_remote(uri, data, txn=txn, mode=mode, metadata=metadata, row_group_rows=row_group_rows)
    remove_stale_staging(uri)
    for attempt in range(_MAX_ATTEMPTS):
        dt = _open(uri)
        if dt is not None and dt.transaction_version(txn) is not None:
            return False
        rows = data(dt) if callable(data) else data
        if rows is None:
            return False
        with Staging(uri) as staging:
            staging.write(rows, row_group_rows=row_group_rows)
            try:
                return commit_staged(
                    uri,
                    staging,
                    rows.schema,
                    txn=txn,
                    mode=mode,
                    metadata=metadata,
                    expect_version=(dt.version() if dt is not None else -1) if callable(data) else None,
                )
            except _Moved:
                staging.discard()
        _backoff(attempt)
    raise DataError(f"Could not commit to {uri}: other writers kept committing first ({_MAX_ATTEMPTS} attempts).")


def _peek(rows: pa.Table | pa.RecordBatchReader) -> tuple[pa.RecordBatch | pa.Table | None, Any]:
    """(the first non-empty batch or the table itself, the same rows to write, none consumed)."""
    if isinstance(rows, pa.Table):
        return rows, rows
    seen: list[pa.RecordBatch] = []
    for batch in rows:
        seen.append(batch)
        if batch.num_rows:
            break
    rest = itertools.chain(seen, rows)
    return (seen[-1] if seen and seen[-1].num_rows else None), pa.RecordBatchReader.from_batches(rows.schema, rest)


def _commit_remote(
    uri: str,
    data: pa.Table | pa.RecordBatchReader | Prepare,
    *,
    txn: str,
    mode: Mode,
    metadata: Mapping[str, str] | None,
    row_group_rows: int | None,
) -> bool:
    """Object stores: uploads are invisible until committed, so delta-rs's own writer is used, with the same
    conditional commit (a losing writer's files are unreferenced; `vacuum` removes them)."""
    from deltalake import WriterProperties, write_deltalake

    for attempt in range(_MAX_ATTEMPTS):
        dt = _open(uri)
        if dt is not None and dt.transaction_version(txn) is not None:
            return False
        rows = data(dt) if callable(data) else data
        if rows is None:
            return False
        group = row_group_rows
        if group is None:
            head, rows = _peek(rows)
            group = group_rows(head) if head is not None else _MAX_GROUP_ROWS
        try:
            write_deltalake(
                uri,
                rows,
                mode=mode,
                schema_mode="merge" if mode == "append" else "overwrite",
                writer_properties=WriterProperties(max_row_group_size=group, compression="ZSTD"),
                commit_properties=_props(txn, metadata),
            )
            return True
        except Exception as err:
            if not _is_conflict(err):
                raise
            if isinstance(rows, pa.RecordBatchReader):  # consumed: it cannot be written again
                raise DataError(f"Another writer committed to {uri} first; run again to continue.") from None
        _backoff(attempt)
    raise DataError(f"Could not commit to {uri}: other writers kept committing first ({_MAX_ATTEMPTS} attempts).")
