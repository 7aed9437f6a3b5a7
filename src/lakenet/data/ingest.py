"""Turn an image folder, a CSV or a Parquet source into a Delta table, streaming, with a stable row key."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.sources import row_keys
from lakenet.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_SCHEMA", "IngestResult", "ingest"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IMAGE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("image", pa.binary()),
        ("size_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)
_BATCH_ROWS = 512


@dataclass(frozen=True)
class IngestResult:
    table: str
    rows_written: int
    rows_skipped: int  # already in the table (same key)
    version: int | None
    kind: str


def _existing_keys(table: str, key: str) -> set[str]:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(table):
        return set()
    dt = DeltaTable(table)
    if key not in pa.schema(dt.schema().to_arrow()).names:
        raise DataError(f"Table {table} has no key column {key!r}; cannot append to it by key.")
    keys = dt.to_pyarrow_dataset().to_table(columns=[key]).column(key)
    return set(keys.cast(pa.string()).to_pylist())


def _image_size(blob: bytes) -> tuple[int | None, int | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:  # reads the header only
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, None  # kept as-is: profiling and training quarantine it with a reason


def _image_files(root: Path) -> list[tuple[str, Path]]:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.parent != root
    )
    return [(f.relative_to(root).as_posix(), f) for f in files]


def _image_batches(files: list[tuple[str, Path]]) -> Iterator[pa.RecordBatch]:
    rows: dict[str, list[object]] = {n: [] for n in IMAGE_SCHEMA.names}
    for rel, f in files:
        blob = f.read_bytes()
        w, h = _image_size(blob)
        label = rel.split("/", 1)[0]
        for name, value in zip(IMAGE_SCHEMA.names, (rel, str(f.resolve()), label, blob, len(blob), w, h), strict=True):
            rows[name].append(value)
        if len(rows["key"]) >= _BATCH_ROWS:
            yield pa.RecordBatch.from_pydict(rows, schema=IMAGE_SCHEMA)
            rows = {n: [] for n in IMAGE_SCHEMA.names}
    if rows["key"]:
        yield pa.RecordBatch.from_pydict(rows, schema=IMAGE_SCHEMA)


def _tabular_table(src: Path, key: str) -> pa.Table:
    if src.suffix.lower() in {".csv", ".tsv", ".txt"}:
        try:
            opts = pacsv.ParseOptions(delimiter="\t" if src.suffix.lower() == ".tsv" else ",")
            table = pacsv.read_csv(src, parse_options=opts)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"Cannot parse CSV {src}: {err}") from None
    else:
        try:
            table = pq.read_table(src)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"Cannot read Parquet {src}: {err}") from None
    if key not in table.column_names:
        table = table.add_column(0, key, row_keys(src.name, table.num_rows))
    return table


def ingest(
    source: str | Path,
    table: str | Path,
    *,
    mode: Literal["append", "overwrite"] = "append",
    key: str = "key",
) -> IngestResult:
    """Write `source` (image folder with one sub-folder per class, CSV or Parquet) to the Delta table `table`.

    In append mode rows whose key is already in the table are skipped, so ingesting a folder again only adds
    the new files, and a rerun adds nothing.
    """
    from deltalake import DeltaTable

    src = Path(source)
    dest = str(Path(table).resolve())
    if not src.exists():
        raise DataError(f"Source {src} does not exist; pass an image folder, a CSV or a Parquet file.")
    existing = _existing_keys(dest, key) if mode == "append" else set()
    if src.is_dir() and not any(src.rglob("*.parquet")):
        if not any(d.is_dir() for d in src.iterdir()):
            raise DataError(
                f"Image folder {src} has no sub-folders; put each class's images in a sub-folder "
                f"named after the class (e.g. {src}/cat/1.png)."
            )
        kind = "images"
        listed = _image_files(src)
        if not listed:
            raise DataError(f"Image folder {src} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
        todo = [(rel, f) for rel, f in listed if rel not in existing]
        skipped, written = len(listed) - len(todo), len(todo)
        # Batches stream straight into the Delta writer: the folder is never held in memory.
        data: pa.Table | pa.RecordBatchReader = pa.RecordBatchReader.from_batches(IMAGE_SCHEMA, _image_batches(todo))
        stats = [(rel, f.stat().st_size, f.stat().st_mtime_ns) for rel, f in todo]
        txn = app_id("ingest", src.resolve(), dest, mode, stats)
    else:
        kind = "parquet" if src.is_dir() or src.suffix.lower() in {".parquet", ".pq"} else "csv"
        tab = pq.read_table(src) if src.is_dir() else _tabular_table(src, key)
        if key not in tab.column_names:
            raise DataError(f"Parquet directory {src} has no key column {key!r}; pass --key COLUMN.")
        skipped = 0
        if existing:
            mask = pc.invert(pc.is_in(tab.column(key).cast(pa.string()), pa.array(sorted(existing))))
            skipped = tab.num_rows - int(pc.sum(mask).as_py() or 0)
            tab = tab.filter(mask)
        written = tab.num_rows
        data = tab
        txn = app_id("ingest", src.resolve(), dest, mode, written, tab.column(key).to_pylist()[:1])
    if written or mode == "overwrite":
        commit_once(
            dest,
            data,
            txn=txn,
            mode="overwrite" if mode == "overwrite" else "append",
            metadata={"lakenet.source": str(src.resolve())},
        )
    version = DeltaTable(dest).version() if DeltaTable.is_deltatable(dest) else None
    return IngestResult(dest, written, skipped, version, kind)
