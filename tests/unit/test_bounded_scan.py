"""Whole-table passes hold bounded state: a big row group is read in pieces, and duplicates/leakage are counted on
a consistent sample of contents once a table has more distinct rows than the sample holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakenet.data import scan
from lakenet.data.sources import open_table


def test_a_big_row_group_is_read_in_pieces_that_add_up_to_it(tmp_path: Path) -> None:
    n = 10_000
    pq.write_table(pa.table({"k": [f"r{i}" for i in range(n)], "x": np.arange(n, dtype=np.float64)}),
                   tmp_path / "one.parquet", row_group_size=n)  # fmt: skip
    snap = open_table(str(tmp_path / "one.parquet")).subdivided(3)  # row ranges with offsets inside the group
    assert len(snap.fragments) == 3 and snap.fragments[1].offset > 0
    for frag in snap.fragments:
        whole = snap.read(frag, ["x", "k"])
        pieces = list(snap.read_pieces(frag, ["x", "k"], max_rows=1_000))
        assert all(t.num_rows <= 1_000 for _, t in pieces) and len(pieces) >= 3
        assert pa.concat_tables([t for _, t in pieces]).equals(whole)
        at = frag.offset
        for piece, table in pieces:  # each piece names its own row range, contiguous
            assert piece.offset == at and piece.num_rows == table.num_rows
            at += piece.num_rows
        assert at == frag.offset + frag.num_rows


def _sample(rows: list[tuple[int, str, int]]) -> scan._ContentSample:
    s = scan._ContentSample()
    for h, key, split in rows:
        s.add(h, key, split)
    return s


def test_duplicates_and_leakage_are_exact_below_the_sample_and_order_free() -> None:
    rows = [(11, "a", 0), (11, "b", 0), (11, "c", 2), (22, "d", 1), (33, "e", 0), (33, "f", 1)]
    whole = _sample(rows)
    dups, leak = whole.figures()
    assert (dups.rows, dups.groups, leak.rows, dups.sample_fraction) == (3, 2, 2, 1.0)
    assert dups.examples == [["a", "b"], ["e", "f"]] and leak.examples[0].keys == ["a", "c"]
    a, b = _sample(rows[:3]), _sample(rows[3:])  # two workers' partials, merged either way round
    a.merge(b)
    assert a.figures()[0].rows == 3 and a.figures()[1].rows == 2


def test_a_table_with_more_contents_than_the_sample_is_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "_CONTENT_SAMPLE", 500)
    rng = np.random.default_rng(0)
    contents = rng.integers(0, 2**63, 20_000, dtype=np.uint64) * np.uint64(2)  # 20,000 distinct contents
    copies = np.concatenate([contents, contents[:4_000]])  # 4,000 duplicated once each
    parts = [scan._ContentSample() for _ in range(4)]
    for i, h in enumerate(copies.tolist()):
        parts[i % 4].add(int(h), f"k{i}", i % 3)
    total = parts[0]
    for p in parts[1:]:
        total.merge(p)
    assert len(total.entries) <= 2 * 500
    dups, _ = total.figures()
    assert dups.sample_fraction < 0.1 and dups.rows == pytest.approx(4_000, rel=0.25)


def test_training_reads_a_big_row_group_in_pieces_and_sees_every_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader cuts a big row group into pieces read one after another (one decode of the group per epoch),
    its shuffle window holds pieces, not whole groups, and every training row comes once per epoch."""
    from lakenet.config import parse_config
    from lakenet.config.schema import SplitConfig
    from lakenet.data import loader
    from lakenet.data.encoders import StatsAccumulator
    from lakenet.data.split import TRAIN, assign_splits

    monkeypatch.setattr(loader, "PIECE_ROWS", 700)
    n = 5_000
    table = pa.table({"key": [f"r{i}" for i in range(n)], "x": np.arange(n, dtype=np.float64),
                      "y": ["a" if i % 2 else "b" for i in range(n)]})  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=n)
    snap = open_table(str(tmp_path / "t.parquet"))
    config = parse_config({"data": {"table": str(tmp_path / "t.parquet")}, "registry": {"name": "m"},
                           "features": {"label": {"column": "y"}, "x": "numeric"}})  # fmt: skip
    acc = StatsAccumulator(config)
    acc.update(table)
    pre = acc.finish()
    split = SplitConfig()
    sl = loader.SplitLoader(snap, pre, split=TRAIN, split_cfg=split, fragments=[0], batch_size=64, shuffle=True,
                            seed=1)  # fmt: skip
    units = sl._units(0)
    assert len(units) == 8 and all(u.num_rows <= 700 for _, u in units)
    reads: list[int] = []
    real = snap.read_pieces
    monkeypatch.setattr(type(snap), "read_pieces", lambda self, *a, **k: reads.append(1) or real(*a, **k))
    seen = np.concatenate([b.inputs["numeric"][:, 0].numpy() for b in sl.batches(0)])
    train = int((assign_splits(table.column("key"), split) == TRAIN).sum())
    assert len(seen) == train and len(np.unique(np.round(seen, 4))) == train  # each row once
    assert len(reads) == 1  # one pass over the row group for all eight pieces
