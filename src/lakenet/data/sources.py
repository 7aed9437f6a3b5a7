"""Open a table (Delta, Parquet, CSV) as a snapshot: a fixed list of fragments that workers read as Arrow."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakenet.data.delta_io import local_path
from lakenet.errors import DataError

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [
    "Fragment",
    "Snapshot",
    "open_table",
    "read_csv_file",
    "row_keys",
    "sniff_delimiter",
    "source_id",
    "table_format",
]

# CSV has no row groups; rows are cut into slices of this size so that workers can still share the work.
_CSV_SLICE_ROWS = 8192
# Whole-table passes read a fragment in consecutive pieces of at most this many rows, so a table written in big
# row groups (a million rows is common) is never held whole: memory does not grow with the row group.
PIECE_ROWS = 65_536
_READ_BUFFER = 1 << 20  # bytes: how much of a column chunk is read at a time

Format = Literal["delta", "parquet", "csv"]


@dataclass(frozen=True)
class Fragment:
    """The unit of parallel work: one row group of one Parquet file (or a row range of it), or a CSV slice."""

    path: str
    index: int  # row-group index (Parquet) or slice index (CSV)
    num_rows: int
    offset: int = 0  # first row within the row group, when a large row group is shared out in pieces


@dataclass(frozen=True)
class Snapshot:
    """A table pinned to one version: everything a worker needs to read its share without a driver."""

    uri: str
    format: Format
    version: int | None
    fragments: tuple[Fragment, ...]
    schema: pa.Schema
    fingerprint: str = field(default="")

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.fragments)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def read(self, frag: Fragment, columns: Sequence[str] | None = None) -> pa.Table:
        """Read one fragment (only the requested columns)."""
        cols = list(columns) if columns is not None else None
        if self.format == "csv":
            table = _read_csv(frag.path)
            table = table.slice(frag.offset, frag.num_rows)
            return table.select(cols) if cols is not None else table
        pf = _parquet_file(frag.path)
        missing = [c for c in cols if c not in pf.schema_arrow.names] if cols is not None else []
        table = pf.read_row_group(frag.index, columns=[c for c in cols if c not in missing] if cols else cols)
        if frag.offset or frag.num_rows != table.num_rows:
            table = table.slice(frag.offset, frag.num_rows)
        return self._with_missing(table, missing, cols)

    def _with_missing(self, table: pa.Table, missing: list[str], cols: list[str] | None) -> pa.Table:
        if missing:
            # A column added to the table after this file was written: null in its rows.
            for c in missing:
                table = table.append_column(self.schema.field(c), pa.nulls(table.num_rows, self.schema.field(c).type))
            table = table.select(cols)
        return table

    def read_pieces(
        self, frag: Fragment, columns: Sequence[str] | None = None, max_rows: int = PIECE_ROWS
    ) -> Iterator[tuple[Fragment, pa.Table]]:
        """One fragment as consecutive pieces of at most `max_rows` rows, each with the row range it holds (a
        Fragment of its own), decoded one after another: a big row group is never held whole. Rows of the row
        group before the fragment's offset are decoded and dropped."""
        cols = list(columns) if columns is not None else None
        if self.format == "csv" or frag.num_rows <= max_rows:
            yield frag, self.read(frag, cols)
            return
        pf = _parquet_file(frag.path)
        missing = [c for c in cols if c not in pf.schema_arrow.names] if cols is not None else []
        present = [c for c in cols if c not in missing] if cols is not None else None
        if present == []:
            yield frag, self.read(frag, cols)
            return
        at, end = 0, frag.offset + frag.num_rows  # positions within the row group
        for batch in pf.iter_batches(batch_size=max_rows, row_groups=[frag.index], columns=present):
            lo, hi = at, at + batch.num_rows
            at = hi
            if hi <= frag.offset:
                continue
            start, stop = max(lo, frag.offset), min(hi, end)
            piece = pa.Table.from_batches([batch]).slice(start - lo, stop - start)
            yield Fragment(frag.path, frag.index, stop - start, start), self._with_missing(piece, missing, cols)
            if hi >= end:
                break

    def iter_pieces(
        self, columns: Sequence[str] | None = None, max_rows: int = PIECE_ROWS
    ) -> Iterator[tuple[int, Fragment, pa.Table]]:
        """(fragment index, the piece's row range, the piece) over the whole table, in order (`read_pieces`)."""
        for fi, frag in enumerate(self.fragments):
            for piece, table in self.read_pieces(frag, columns, max_rows):
                yield fi, piece, table

    def subdivided(self, min_fragments: int) -> Snapshot:
        """Cut the largest fragments into row ranges until there are at least `min_fragments` (so that N
        workers can share a table written as one big row group)."""
        frags = list(self.fragments)
        while 0 < len(frags) < min_fragments:
            big = max(range(len(frags)), key=lambda i: frags[i].num_rows)
            f = frags[big]
            if f.num_rows < 2:
                break
            half = f.num_rows // 2
            frags[big : big + 1] = [
                Fragment(f.path, f.index, half, f.offset),
                Fragment(f.path, f.index, f.num_rows - half, f.offset + half),
            ]
        return Snapshot(self.uri, self.format, self.version, tuple(frags), self.schema, self.fingerprint)

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Fragment, pa.Table]]:
        for frag in self.fragments:
            yield frag, self.read(frag, columns)

    def require_columns(self, wanted: dict[str, str]) -> None:
        """Fail with a message naming the missing column, the columns there are and the key to change."""
        names = set(self.schema.names)
        for col, key in wanted.items():
            if col not in names:
                raise DataError(
                    f"Column {col!r} not in table {self.uri} (columns: {', '.join(self.schema.names)}). "
                    f"Set {key} or rename the column."
                )


def source_id(table: pa.Table) -> str:
    """A short fingerprint of a file's contents for the keys of its rows: its columns and first rows. Two files
    with the same name in different folders get different keys; the same file ingested twice gets the same keys;
    a file that grew keeps the keys of the rows it had (once it has `_ID_ROWS` rows)."""
    head = table.slice(0, _ID_ROWS)
    blob = json.dumps([table.column_names, head.to_pylist()], default=str, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


_ID_ROWS = 64


def row_keys(file_name: str, table: pa.Table) -> pa.Array:
    """Keys for rows that have none: `<file name>#<contents fingerprint>:<row number>` — unique per source file,
    stable, and rows of files added later get new keys. `lakenet ingest` and direct CSV reads use the same
    scheme, so a row keeps its split."""
    prefix = f"{file_name}#{source_id(table)}:"
    return pa.array([f"{prefix}{i}" for i in range(table.num_rows)], pa.string())


def _local(uri: str) -> str:
    return local_path(uri)


_csv_cache: dict[str, pa.Table] = {}


_csv_lock = threading.Lock()


def _parquet_file(path: str) -> pq.ParquetFile:
    """Open a Parquet file with its footer parsed once per process: a table of many row groups is read one
    group at a time, and parsing the footer (11 ms for 2,000 groups) would otherwise cost more than the read."""
    local = _local(path)
    st = os.stat(local)
    # Column chunks are streamed through a small buffer (buffer_size, no pre_buffer). Pre-buffered, as pyarrow
    # opens a file by default, reading any batch of a row group loaded its whole column chunks: Arrow's peak for a
    # 590,000-row group of 25 columns read in pieces was 179 MiB, now 103 (82 for a 100,000-row group).
    return pq.ParquetFile(
        local, metadata=_parquet_footer(local, st.st_size, st.st_mtime_ns), buffer_size=_READ_BUFFER, pre_buffer=False
    )


@functools.lru_cache(maxsize=64)
def _parquet_footer(path: str, size: int, mtime_ns: int) -> pq.FileMetaData:
    # Keyed by size and mtime too: a plain Parquet folder's file may be rewritten in place (Delta's never are).
    return pq.read_metadata(path)


def _read_csv(path: str) -> pa.Table:
    # Read once per process: each slice of a CSV would otherwise re-parse the whole file.
    with _csv_lock:
        return _read_csv_locked(path)


def sniff_delimiter(path: str | Path) -> str:
    """The field delimiter of a CSV file: `,` `;` tab or `|`, from its first lines (`.tsv`: tab)."""
    import csv

    if str(path).lower().endswith(".tsv"):
        return "\t"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        sample = f.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_csv_file(path: str | Path, delimiter: str | None = None) -> pa.Table:
    """Parse a CSV file (delimiter sniffed unless given); a DataError naming the file on failure."""
    delim = delimiter or sniff_delimiter(path)
    try:
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(
            f"Cannot parse CSV {path} (delimiter {delim!r}): {err}. Pass --delimiter if it is another."
        ) from None
    if table.num_columns == 1 and delimiter is None and table.num_rows:
        raise DataError(
            f"CSV {path} parsed as a single column {table.column_names[0]!r}: its delimiter could not be detected. "
            "Pass --delimiter (e.g. --delimiter ';')."
        )
    return table


def _read_csv_locked(path: str) -> pa.Table:
    st = os.stat(path)
    ident = f"{path}:{st.st_size}:{st.st_mtime_ns}"  # a file rewritten in place is read again
    if ident not in _csv_cache:
        _csv_cache.clear()
        table = read_csv_file(path)
        if "key" not in table.column_names:
            # The same keys `lakenet ingest` would give these rows, so a CSV can be trained and scored
            # directly, and its rows keep their split if it is ingested later.
            table = table.add_column(0, "key", row_keys(Path(path).name, table))
        _csv_cache[ident] = table
    return _csv_cache[ident]


def _visible_parquet(root: Path) -> list[Path]:
    """Parquet files under `root`, skipping `_`/`.` folders and files (Delta logs, lakenet's staging, Spark's
    `_temporary`), as Parquet readers do."""
    return sorted(
        f for f in root.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in f.relative_to(root).parts)
    )


def table_format(uri: str) -> Format:
    p = Path(_local(uri))
    if (p / "_delta_log").is_dir():
        return "delta"
    if p.is_file() and p.suffix.lower() in {".csv", ".tsv", ".txt"}:
        return "csv"
    if p.is_file() and p.suffix.lower() in {".parquet", ".pq"}:
        return "parquet"
    if p.is_dir() and _visible_parquet(p):
        return "parquet"
    if not p.exists():
        raise DataError(
            f"Table {uri} does not exist. Check data.table, or create it with `lakenet ingest <source> --table {uri}`."
        )
    if p.is_dir():
        raise DataError(
            f"{uri} is a directory without a Delta log or Parquet files. If it is a folder of images, ingest it "
            f"first: `lakenet ingest {uri} --table <table>`."
        )
    raise DataError(f"{uri}: unsupported file type {p.suffix!r}; expected a Delta table, Parquet or CSV.")


def _parquet_fragments(files: Sequence[str]) -> tuple[list[Fragment], pa.Schema]:
    frags: list[Fragment] = []
    schema: pa.Schema | None = None
    for f in files:
        try:
            meta = _parquet_file(f)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"Cannot read Parquet file {f}: {err}") from None
        if schema is None:
            schema = meta.schema_arrow
        for i in range(meta.metadata.num_row_groups):
            frags.append(Fragment(f, i, meta.metadata.row_group(i).num_rows))
    return frags, schema if schema is not None else pa.schema([])


def _delta_files(dt: DeltaTable) -> list[str]:
    """The data files of exactly this version (a raw directory listing would include files that later commits
    removed), oldest first: by the time each was written, then by name. Names hold random UUIDs, so ordering by
    name alone would order the rows of successive appends differently each time a table is rebuilt (and so the
    batches a model is trained on)."""
    adds = pa.table(dt.get_add_actions(flatten=True)).select(["path", "modification_time"]).to_pylist()
    written = {unquote(a["path"]).rsplit("/", 1)[-1]: a["modification_time"] for a in adds}
    # delta-rs percent-encodes the paths it lists (`t%C3%A2ble%20%C3%BC`): decode them for the filesystem.
    files = [local_path(f) if f.startswith("file://") else unquote(f) for f in dt.file_uris()]
    return sorted(files, key=lambda f: (written.get(f.rsplit("/", 1)[-1], 0), f))


def open_table(uri: str, version: int | None = None) -> Snapshot:
    """Pin a table (at `version` for Delta) and list its fragments; reads only metadata."""
    fmt = table_format(uri)
    if fmt == "delta":
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            dt = DeltaTable(_local(uri), version=version)
        except DeltaError as err:
            raise DataError(f"Cannot open Delta table {uri} at version {version}: {err}") from None
        files = _delta_files(dt)
        frags, schema = _parquet_fragments(files)
        table_schema = pa.schema(dt.schema().to_arrow())
        if not files:
            schema = table_schema
        else:  # columns added after the first file was written
            for f in table_schema:
                if f.name not in schema.names:
                    schema = schema.append(f)
        v = dt.version()
        return Snapshot(uri, fmt, v, tuple(frags), schema, fingerprint=f"delta:{v}")
    if fmt == "parquet":
        p = Path(_local(uri))
        files = [str(p)] if p.is_file() else [str(f) for f in _visible_parquet(p)]
        frags, schema = _parquet_fragments(files)
        return Snapshot(uri, fmt, None, tuple(frags), schema, fingerprint=_files_fingerprint(files))
    table = _read_csv(_local(uri))
    n = table.num_rows
    frags = [
        Fragment(_local(uri), i, min(_CSV_SLICE_ROWS, n - i * _CSV_SLICE_ROWS), i * _CSV_SLICE_ROWS)
        for i in range((n + _CSV_SLICE_ROWS - 1) // _CSV_SLICE_ROWS)
    ]
    return Snapshot(uri, "csv", None, tuple(frags), table.schema, fingerprint=_files_fingerprint([_local(uri)]))


def _files_fingerprint(files: Sequence[str]) -> str:
    """Non-Delta sources have no version: record size and mtime of every file instead."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(_local(f))
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return "files:" + h.hexdigest()[:16]
