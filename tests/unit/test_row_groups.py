"""Row groups sized by bytes: narrow tabular rows in groups of up to 65,536 rows (a pass over a table pays per
row group), wide rows (images) in groups of 512; the rows keep their order and count."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from lakenet.data.delta_io import commit_once, regroup
from lakenet.data.sources import open_table


def _groups(uri: Path) -> list[int]:
    sizes = []
    for f in DeltaTable(str(uri)).file_uris():
        meta = pq.ParquetFile(f.removeprefix("file://")).metadata
        sizes += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return sizes


def test_narrow_rows_are_written_in_big_groups_in_order(tmp_path: Path) -> None:
    n = 150_000
    batches = [
        pa.record_batch({"key": pa.array(range(i, min(i + 1000, n))), "x": pa.array([0.5] * (min(i + 1000, n) - i))})
        for i in range(0, n, 1000)
    ]  # a stream of small batches, as a CSV reader or a scorer yields them
    uri = tmp_path / "narrow"
    commit_once(str(uri), pa.RecordBatchReader.from_batches(batches[0].schema, iter(batches)), txn="t1")
    assert _groups(uri) == [65_536, 65_536, n - 2 * 65_536]
    snap = open_table(str(uri))
    keys = [k for f in snap.fragments for k in snap.read(f, ["key"]).column("key").to_pylist()]
    assert keys == list(range(n))


def test_wide_rows_keep_small_groups(tmp_path: Path) -> None:
    blob = b"\x89PNG" + bytes(20_000)
    table = pa.table({"key": pa.array(range(1200)), "image": pa.array([blob] * 1200, pa.binary())})
    uri = tmp_path / "wide"
    commit_once(str(uri), table, txn="t1")
    assert _groups(uri) == [512, 512, 176]


def test_regroup_is_exact_for_any_batch_sizes() -> None:
    sizes = [0, 3, 700, 1, 0, 1299, 64]
    start, batches = 0, []
    for s in sizes:
        batches.append(pa.record_batch({"v": pa.array(range(start, start + s), pa.int64())}))
        start += s
    groups = list(regroup(iter(batches), 512))
    assert [g.num_rows for g in groups] == [512, 512, 512, 512, 19]
    assert pa.concat_tables(groups).column("v").to_pylist() == list(range(start))
    assert list(regroup(iter([]), 512)) == []
