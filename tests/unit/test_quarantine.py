"""Bad rows: counted by reason, quarantined once per table version next to the source, job stopped above the
threshold with the counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from lakenet.config import parse_config
from lakenet.data.quarantine import enforce_bad_fraction, quarantine_uri, write_quarantine
from lakenet.data.scan import scan_table
from lakenet.data.sources import open_table
from lakenet.errors import BadRowsError, DataError
from tests.conftest import digits_config


def test_scan_counts_bad_rows_by_reason(digits_table: Path) -> None:
    cfg = parse_config(digits_config(digits_table))
    result = scan_table(cfg, open_table(str(digits_table)))
    reasons = result.profile.bad_rows.by_reason
    assert sum(reasons.values()) == 3
    assert reasons.get("empty_image") == 1
    assert reasons.get("undecodable_image", 0) + reasons.get("truncated_image", 0) == 2
    assert result.profile.table.rows == 243
    assert sum(result.profile.splits.values()) == 240  # usable rows only
    assert int(result.fragment_counts.sum()) == 240
    assert set(result.bad_rows.column("source").to_pylist()) != {None}
    assert result.profile.images is not None
    assert result.profile.images.sizes == [[8, 8, 240]]
    assert len(result.profile.images.samples) == 10


def test_quarantine_written_once(digits_table: Path, tmp_path: Path) -> None:
    cfg = parse_config(digits_config(digits_table))
    result = scan_table(cfg, open_table(str(digits_table)))
    uri = write_quarantine(result, job="unit-test-job")
    assert uri == quarantine_uri(str(digits_table)) and uri.endswith("table_quarantine")
    rows = DeltaTable(uri).to_pyarrow_table().num_rows  # other jobs on the shared table may have written too
    assert rows >= 3
    write_quarantine(result, job="unit-test-job")  # rerun: nothing appended
    q = DeltaTable(uri).to_pyarrow_table()
    assert q.num_rows == rows
    assert set(q.column_names) >= {"key", "reason", "column", "source", "table_version"}
    assert sorted(set(q.column("reason").to_pylist())) == ["empty_image", "truncated_image", "undecodable_image"]


def test_threshold_stops_with_counts(digits_table: Path) -> None:
    cfg = parse_config(digits_config(digits_table))
    result = scan_table(cfg, open_table(str(digits_table)))
    enforce_bad_fraction(result, 0.05, "q")
    with pytest.raises(BadRowsError) as e:
        enforce_bad_fraction(result, 0.001, "somewhere_quarantine")
    msg = str(e.value)
    assert "3 of 243 rows" in msg and "data.max_bad_fraction" in msg and "somewhere_quarantine" in msg


def test_missing_column_and_wrong_type_refused(digits_table: Path) -> None:
    raw = digits_config(digits_table)
    raw["features"]["label"]["column"] = "target"
    with pytest.raises(DataError) as e:
        scan_table(parse_config(raw), open_table(str(digits_table)))
    assert "Column 'target' not in table" in str(e.value) and "features.label.column" in str(e.value)
    raw = digits_config(digits_table)
    raw["features"] = {"label": {"column": "label"}, "image": {"type": "image", "column": "size_bytes"}}
    with pytest.raises(DataError, match=r"'size_bytes'.*int64.*image feature needs encoded image bytes"):
        scan_table(parse_config(raw), open_table(str(digits_table)))
