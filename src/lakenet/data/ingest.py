"""Turn an image folder, a CSV or a Parquet source into a Delta table, streaming, with a stable row key."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.sources import read_csv_file, row_keys
from lakenet.errors import DataError

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["AUDIO_EXTENSIONS", "AUDIO_SCHEMA", "IMAGE_EXTENSIONS", "IMAGE_SCHEMA", "IngestResult", "ingest"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"})
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
AUDIO_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("audio", pa.binary()),
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
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
    files_skipped: tuple[str, ...] = ()  # image-folder entries left out, with the reason

    @property
    def warning(self) -> str | None:
        """What a user must not miss: every row of the source was already in the table."""
        if self.rows_written == 0 and self.rows_skipped > 0:
            return (
                f"nothing was written: all {self.rows_skipped} rows of the source are already in {self.table} "
                "(same keys). If this is new data, its rows need keys of their own: a key column (--key), or a "
                "file whose contents differ."
            )
        return None


def _existing(dt: DeltaTable | None, key: str, table: str, extra: Sequence[str] = ()) -> pa.Table:
    """The key column (and `extra` columns, where the table has them) of the table as it is now."""
    if dt is None:
        return pa.table({key: pa.array([], pa.string())})
    names = pa.schema(dt.schema().to_arrow()).names
    if key not in names:
        raise DataError(f"Table {table} has no key column {key!r}; cannot append to it by key.")
    cols = [key, *[c for c in extra if c in names]]
    return dt.to_pyarrow_dataset().to_table(columns=cols)


def _image_size(blob: bytes) -> tuple[int | None, int | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:  # reads the header only
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, None  # kept as-is: profiling and training quarantine it with a reason


def _audio_facts(blob: bytes) -> tuple[float | None, int | None, int | None]:
    from lakenet.data.codecs.audio import audio_info

    info = audio_info(blob)  # reads the header only
    return info if info is not None else (None, None, None)  # kept as-is: training quarantines it with a reason


def _media_files(root: Path, extensions: frozenset[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """(relative path, file) of the media files under `root`, and the entries left out with the reason. A symlink
    is followed only when it stays inside the folder: one pointing elsewhere would pull in files the folder's
    owner never put there."""
    real_root = root.resolve()
    files, skipped = [], []
    other = (IMAGE_EXTENSIONS | AUDIO_EXTENSIONS) - extensions
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in other and p.parent != root and p.is_file():
            kind = "an image" if p.suffix.lower() in IMAGE_EXTENSIONS else "an audio file"
            skipped.append(f"{p.relative_to(root).as_posix()}: {kind} in a folder of the other kind")
            continue
        if p.suffix.lower() not in extensions or p.parent == root or not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or any(parent.is_symlink() for parent in p.relative_to(root).parents if str(parent) != "."):
            target = p.resolve()
            if not target.is_relative_to(real_root):
                skipped.append(f"{rel}: a symlink to {target}, outside {root}")
                continue
        files.append((rel, p))
    return files, skipped


def _media_rows(files: list[tuple[str, Path]], present: set[str], legacy: dict[str, int]) -> tuple[list, int]:
    """The files not in the table yet, keyed `<relative path>#<content hash>`, and how many were."""
    todo, skipped = [], 0
    for rel, f in files:
        blob = f.read_bytes()
        key = f"{rel}#{hashlib.sha256(blob).hexdigest()[:12]}"
        # Tables ingested before keys carried a content hash used the bare path: the same path and size is the
        # same file.
        if key in present or legacy.get(rel) == len(blob):
            skipped += 1
            continue
        todo.append((key, rel, f, len(blob)))
    return todo, skipped


def _media_batches(todo: list, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The rows of `schema` (IMAGE_SCHEMA or AUDIO_SCHEMA) for the files to add, in batches."""
    audio = schema is AUDIO_SCHEMA
    rows: dict[str, list[object]] = {n: [] for n in schema.names}
    for key, rel, f, _ in todo:
        blob = f.read_bytes()
        facts = _audio_facts(blob) if audio else _image_size(blob)
        label = rel.split("/", 1)[0]
        for name, value in zip(schema.names, (key, str(f.resolve()), label, blob, len(blob), *facts), strict=True):
            rows[name].append(value)
        if len(rows["key"]) >= _BATCH_ROWS:
            yield pa.RecordBatch.from_pydict(rows, schema=schema)
            rows = {n: [] for n in schema.names}
    if rows["key"]:
        yield pa.RecordBatch.from_pydict(rows, schema=schema)


def _tabular_table(src: Path, key: str, delimiter: str | None) -> pa.Table:
    if src.is_dir():
        try:
            table = pq.read_table(src)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"Cannot read Parquet directory {src}: {err}") from None
        if key not in table.column_names:
            raise DataError(f"Parquet directory {src} has no key column {key!r}; pass --key COLUMN.")
        return table
    if src.suffix.lower() in {".csv", ".tsv", ".txt"}:
        table = read_csv_file(src, delimiter)
    else:
        try:
            table = pq.read_table(src)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"Cannot read Parquet {src}: {err}") from None
    if key not in table.column_names:
        table = table.add_column(0, key, row_keys(src.name, table))
    return table


def _content_hash(src: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(src.rglob("*")) if src.is_dir() else [src]:
        if f.is_file():
            h.update(f.relative_to(src).as_posix().encode() if src.is_dir() else b"")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _last(dt: DeltaTable | None, key: str) -> str | None:
    """A custom metadata value of the table's latest commit."""
    if dt is None:
        return None
    last = dt.history(1)
    return str(last[0].get(key)) if last else None


def ingest(
    source: str | Path,
    table: str | Path,
    *,
    mode: Literal["append", "overwrite"] = "append",
    key: str = "key",
    delimiter: str | None = None,
) -> IngestResult:
    """`lakenet.api.ingest`: an image folder, CSV or Parquet source into a Delta table, one conditional commit."""
    from deltalake import DeltaTable

    src = Path(source)
    dest = str(Path(table).resolve())
    if not src.exists():
        raise DataError(f"Source {src} does not exist; pass an image folder, a CSV or a Parquet file.")
    counts = {"written": 0, "skipped": 0}
    skipped_files: list[str] = []
    if src.is_dir() and not any(src.rglob("*.parquet")):
        kind, prepare, txn, skipped_files = _folder_source(src, dest, mode, counts)
    else:
        kind = "parquet" if src.is_dir() or src.suffix.lower() in {".parquet", ".pq"} else "csv"
        prepare, txn = _table_source(src, dest, mode, key, delimiter, counts)
    _commit(src, dest, mode, prepare, txn, counts)
    version = DeltaTable(dest).version() if DeltaTable.is_deltatable(dest) else None
    return IngestResult(dest, counts["written"], counts["skipped"], version, kind, tuple(skipped_files))


_Prepare = Callable[[Any], "pa.RecordBatchReader | None"]  # the table as it is at commit time -> the rows to add


def _folder_kind(src: Path) -> str:
    """images or audio: the kind of file the class sub-folders hold most of."""
    images = audio = 0
    for p in src.rglob("*"):
        suffix = p.suffix.lower()
        images += suffix in IMAGE_EXTENSIONS
        audio += suffix in AUDIO_EXTENSIONS
    return "audio" if audio > images else "images"


def _folder_source(src: Path, dest: str, mode: str, counts: dict[str, int]) -> tuple[str, _Prepare, str, list[str]]:
    """A folder of images or audio files, one sub-folder per class: (its kind; the rows to add, given the table at
    commit time; the ingest's txn id; skipped files)."""
    kind = _folder_kind(src)
    extensions, schema = (AUDIO_EXTENSIONS, AUDIO_SCHEMA) if kind == "audio" else (IMAGE_EXTENSIONS, IMAGE_SCHEMA)
    noun, example = ("audio files", "yes/1.wav") if kind == "audio" else ("images", "cat/1.png")
    if not any(d.is_dir() for d in src.iterdir()):
        raise DataError(
            f"Folder {src} has no sub-folders; put each class's {noun} in a sub-folder named after the class "
            f"(e.g. {src}/{example})."
        )
    listed, skipped_files = _media_files(src, extensions)
    if not listed:
        raise DataError(
            f"Folder {src} has no image or audio files ({', '.join(sorted(IMAGE_EXTENSIONS | AUDIO_EXTENSIONS))})."
        )

    def prepare(dt: Any) -> pa.RecordBatchReader | None:
        existing = _existing(dt, "key", dest, ["size_bytes"]) if mode == "append" else pa.table({"key": []})
        keys = existing.column("key").cast(pa.string()).to_pylist()
        sizes = existing.column("size_bytes").to_pylist() if "size_bytes" in existing.column_names else []
        legacy = {k: s for k, s in zip(keys, sizes, strict=False) if "#" not in k}
        todo, counts["skipped"] = _media_rows(listed, set(keys), legacy)
        counts["written"] = len(todo)
        if not todo and mode == "append":
            return None
        # Batches stream straight into the Delta writer: the folder is never held in memory.
        return pa.RecordBatchReader.from_batches(schema, _media_batches(todo, schema))

    stats = [(rel, f.stat().st_size, f.stat().st_mtime_ns) for rel, f in listed]
    return kind, prepare, app_id("ingest", src.resolve(), dest, mode, stats), skipped_files


def _table_source(
    src: Path, dest: str, mode: str, key: str, delimiter: str | None, counts: dict[str, int]
) -> tuple[_Prepare, str]:
    """A CSV or Parquet source: (the rows to add, given the table at commit time; the ingest's txn id)."""
    tab = _tabular_table(src, key, delimiter)
    if mode == "append":
        _check_unique_keys(tab, key, src)

    def prepare(dt: Any) -> pa.RecordBatchReader | None:
        data = tab
        if mode == "append":
            existing = _existing(dt, key, dest).column(key).cast(pa.string())
            mask = pc.invert(pc.is_in(tab.column(key).cast(pa.string()), existing.combine_chunks()))
            data = tab.filter(mask)
            if data.num_rows == 0:
                counts["written"], counts["skipped"] = 0, tab.num_rows
                return None
        counts["written"], counts["skipped"] = data.num_rows, tab.num_rows - data.num_rows
        return pa.RecordBatchReader.from_batches(data.schema, data.to_batches())

    # The whole source's contents: an overwrite with other data is another write, whatever its row count.
    return prepare, app_id("ingest", src.resolve(), dest, mode, key, _content_hash(src))


def _commit(src: Path, dest: str, mode: str, prepare: _Prepare, txn: str, counts: dict[str, int]) -> None:
    from deltalake import DeltaTable

    existing_dt = DeltaTable(dest) if DeltaTable.is_deltatable(dest) else None
    if mode == "overwrite" and _last(existing_dt, "lakenet.ingest_content") == txn:
        counts["skipped"] = existing_dt.to_pyarrow_dataset().count_rows() if existing_dt is not None else 0
    elif mode == "append" and existing_dt is not None and existing_dt.transaction_version(txn) is not None:
        prepare(existing_dt)  # this very ingest was committed before: count what is there, write nothing
    else:
        # An overwrite is judged against the latest commit only: overwriting with A, then B, then A again must
        # end with A.
        commit_txn = (
            app_id(txn, existing_dt.version() if existing_dt is not None else -1) if mode == "overwrite" else txn
        )
        commit_once(
            dest,
            prepare,
            txn=commit_txn,
            mode="overwrite" if mode == "overwrite" else "append",
            metadata={"lakenet.source": str(src.resolve()), "lakenet.ingest_content": txn},
        )


def _check_unique_keys(tab: pa.Table, key: str, src: Path) -> None:
    keys = tab.column(key)
    if keys.null_count:
        raise DataError(
            f"{src}: {keys.null_count} rows have no {key!r}; every row needs a key. Fill them or pass --key."
        )
    dup = tab.num_rows - pc.count_distinct(keys).as_py()
    if dup:
        raise DataError(
            f"{src}: {dup} rows repeat a {key!r} value of another row, so in append mode they would be skipped. "
            f"Pass a unique --key column, or drop the {key!r} column to have keys generated."
        )
