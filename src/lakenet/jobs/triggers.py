"""The data triggers: has a Delta table a new version with enough new rows, has a folder new files. What they
have seen is kept in the jobs store, so a restarted scheduler neither misses nor repeats work."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from lakenet.jobs.config import FolderTrigger, TableUpdateTrigger
from lakenet.jobs.store import Store

__all__ = ["NewFiles", "NewVersion", "new_files", "new_version", "saw_files", "saw_version"]


@dataclass(frozen=True)
class NewVersion:
    since: int
    version: int
    rows: int


def _latest_version(uri: str) -> int | None:
    from deltalake import DeltaTable

    try:
        return int(DeltaTable(uri).version()) if DeltaTable.is_deltatable(uri) else None
    except Exception:  # a table being created right now, or storage briefly unreachable: look again next poll
        return None


def _added_rows(uri: str, since: int, version: int) -> int:
    """Rows the commits after `since` up to `version` added: from the commits' metrics, else by counting."""
    from deltalake import DeltaTable

    dt = DeltaTable(uri)
    total = 0
    for entry in dt.history(version - since + 1):
        v = entry.get("version")
        if v is None or not since < v <= version:
            continue
        metrics = entry.get("operationMetrics") or {}
        added = metrics.get("num_added_rows", metrics.get("numOutputRows"))
        if added is None:
            now = DeltaTable(uri, version=version).to_pyarrow_dataset().count_rows()
            return max(0, now - DeltaTable(uri, version=since).to_pyarrow_dataset().count_rows())
        total += int(added)
    return total


def new_version(store: Store, job: str, trigger: TableUpdateTrigger) -> NewVersion | None:
    """The table's new versions since the job last ran for it, when they add at least min_new_rows. The version
    seen first is the baseline: the trigger fires for versions that arrive after it starts watching."""
    key = f"table_update:{job}:{trigger.table_update}"
    version = _latest_version(trigger.table_update)
    if version is None:
        return None
    since = store.get_state(key)
    if since is None:
        store.set_state(key, version)
        return None
    if version <= since:
        return None
    rows = _added_rows(trigger.table_update, since, version)
    if rows < trigger.min_new_rows:
        return None
    return NewVersion(since, version, rows)


def saw_version(store: Store, job: str, trigger: TableUpdateTrigger, version: int) -> None:
    """Called once a run for `version` ended (whatever its status): a killed run did not get here, so the
    restarted scheduler fires again for the same versions."""
    store.set_state(f"table_update:{job}:{trigger.table_update}", version)


@dataclass(frozen=True)
class NewFiles:
    files: tuple[Path, ...]


def _listing(trigger: FolderTrigger) -> dict[str, list[int]]:
    folder = Path(trigger.folder)
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and fnmatch.fnmatch(p.name, trigger.pattern) and not p.name.startswith("."):
            st = p.stat()
            out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


def new_files(store: Store, job: str, trigger: FolderTrigger) -> NewFiles:
    """Files not ingested yet, once they stopped changing: a file still being written (its size or time differs
    from the last poll's) waits for the next poll."""
    seen: dict[str, list[int]] = store.get_state(f"folder:{job}:seen") or {}
    last: dict[str, list[int]] = store.get_state(f"folder:{job}:last") or {}
    now = _listing(trigger)
    store.set_state(f"folder:{job}:last", now)
    ready = [Path(p) for p, stat in now.items() if seen.get(p) != stat and last.get(p) == stat]
    return NewFiles(tuple(ready))


def saw_files(store: Store, job: str, trigger: FolderTrigger, files: tuple[Path, ...]) -> None:
    seen: dict[str, list[int]] = store.get_state(f"folder:{job}:seen") or {}
    listing = _listing(trigger)
    for f in files:
        if str(f) in listing:
            seen[str(f)] = listing[str(f)]
    store.set_state(f"folder:{job}:seen", seen)
