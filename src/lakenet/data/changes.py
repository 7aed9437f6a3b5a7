"""What changed in a Delta table since a version (for incremental scoring), and the merge that keeps an output
table at exactly one row per input key per model.

Changes come from the versions' file lists (delta-rs): files a later version added hold the new or rewritten
rows; files it removed held the rows that were deleted or rewritten. An append (the common case) removes no file,
so only the new files are read and no output row is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakenet.data.delta_io import Staging, local_path
from lakenet.data.sources import Snapshot, open_table
from lakenet.errors import DataError

__all__ = ["Changes", "OutputMerge", "last_consumed", "plan_output_merge", "table_changes"]


@dataclass(frozen=True)
class Changes:
    """The input's rows to score (`added`: a snapshot of the new files only) and the keys no longer there."""

    since: int | None  # the version consumed last (None: nothing consumed yet, score everything)
    version: int
    added: Snapshot
    deleted_keys: frozenset[str] = frozenset()
    rewritten: bool = False  # some files were removed: keys in `added` may replace rows already scored

    @property
    def empty(self) -> bool:
        return self.added.num_rows == 0 and not self.deleted_keys


def _files(uri: str, version: int) -> set[str]:
    from deltalake import DeltaTable

    return {
        local_path(f) if f.startswith("file://") else unquote(f) for f in DeltaTable(uri, version=version).file_uris()
    }


def _keys_of(files: set[str], key: str) -> set[str]:
    keys: set[str] = set()
    for f in sorted(files):
        try:
            col = pq.read_table(f, columns=[key]).column(key)
        except (OSError, pa.ArrowInvalid) as err:
            raise DataError(
                f"Incremental scoring needs the files of the versions it compares, and {f} is gone ({err}): the table "
                "was vacuumed since the last run. Score the table in full once (without --incremental)."
            ) from None
        keys.update(v for v in col.cast(pa.string()).to_pylist() if v is not None)
    return keys


def table_changes(uri: str, since: int | None, key: str, version: int | None = None) -> Changes:
    """The changes of Delta table `uri` from version `since` (exclusive) to `version` (default: the latest)."""
    snap = open_table(uri, version)
    if snap.format != "delta" or snap.version is None:
        raise DataError(f"Incremental scoring reads Delta versions; {uri} is {snap.format}. Ingest it first.")
    if since is None or since > snap.version:
        return Changes(None, snap.version, snap)
    now, then = _files(uri, snap.version), _files(uri, since)
    added, removed = now - then, then - now
    frags = tuple(f for f in snap.fragments if f.path in added)
    added_snap = dataclasses.replace(snap, fragments=frags)
    deleted: frozenset[str] = frozenset()
    if removed:
        deleted = frozenset(_keys_of(removed, key) - _keys_of(added, key))
    return Changes(since, snap.version, added_snap, deleted, bool(removed))


def last_consumed(out_uri: str, *, input_uri: str, model_version: str) -> int | None:
    """The latest input version whose rows the output holds for this model (from the output's commits)."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(out_uri):
        return None
    best: int | None = None
    for commit in DeltaTable(out_uri).history():
        if commit.get("lakenet.input") == input_uri and str(commit.get("lakenet.model_version")) == model_version:
            with contextlib.suppress(TypeError, ValueError):
                v = int(commit.get("lakenet.input_version"))  # type: ignore[arg-type]
                best = v if best is None else max(best, v)
    return best


@dataclass
class OutputMerge:
    """Output files holding rows to replace or delete: rewritten without them (staged) and removed, in the same
    commit as the new rows, on the output version they were read at."""

    version: int | None  # the output table's version this plan was made on (None: no table yet)
    removes: list[str] = field(default_factory=list)  # paths relative to the output table
    _rewrites: list[tuple[str, pa.Table]] = field(default_factory=list)
    replaced_rows: int = 0

    def stage(self, staging: Staging) -> None:
        for _, table in self._rewrites:
            if table.num_rows:
                staging.write(table)


def plan_output_merge(out_uri: str, *, key: str, model_column: str, model_version: str, keys: set[str]) -> OutputMerge:
    """The output files with a row of this model whose key is in `keys`, and their contents without those rows."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(out_uri):
        return OutputMerge(None)
    dt = DeltaTable(out_uri)
    plan = OutputMerge(dt.version())
    if not keys:
        return plan
    wanted = pa.array(sorted(keys), pa.string())
    root = Path(local_path(out_uri))
    for uri in dt.file_uris():
        path = local_path(uri) if uri.startswith("file://") else unquote(urlparse(uri).path)
        table = pq.read_table(path)
        if key not in table.column_names:
            continue
        hit = pc.is_in(table.column(key).cast(pa.string()), wanted)
        if model_column in table.column_names:
            hit = pc.and_(hit, pc.equal(table.column(model_column).cast(pa.string()), model_version))
        hits = int(pc.sum(pc.fill_null(hit, False)).as_py() or 0)
        if not hits:
            continue
        plan.replaced_rows += hits
        plan.removes.append(Path(path).relative_to(root).as_posix())
        plan._rewrites.append((path, table.filter(pc.invert(pc.fill_null(hit, False)))))
    return plan
