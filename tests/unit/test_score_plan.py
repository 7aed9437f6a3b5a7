"""How both engines share a scoring job out over their slots (pure planning: no JVM needed)."""

from __future__ import annotations

import pytest

from lakenet.data.sources import Fragment
from lakenet.engines import base
from lakenet.engines.base import plan_tasks as _plan_tasks


@pytest.fixture
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks worth a second wave from 16 rows (not 16,384), so that the shapes can be checked row by row."""
    monkeypatch.setattr(base, "_MIN_TASK_ROWS", 16)


def _rows(groups: list[list[Fragment]]) -> list[int]:
    return [sum(f.num_rows for f in g) for g in groups]


def _covered(groups: list[list[Fragment]]) -> list[tuple[str, int, int]]:
    """Every (file, row group, row) scored, in task order."""
    return [(f.path, f.index, f.offset + i) for g in groups for f in g for i in range(f.num_rows)]


@pytest.mark.parametrize(("sizes", "slots", "expected"), [
    ([32] * 31 + [8], 2, [250, 250, 250, 250]),  # the bench table: 1000 rows in 32-row groups
    ([32] * 5, 2, [40, 40, 40, 40]),
    ([48], 2, [24, 24]),  # one row group, split into row ranges: every slot works
    ([20], 2, [10, 10]),  # too small for two tasks per slot
    ([3], 4, [1, 1, 1]),  # fewer rows than slots
    ([100, 1], 3, [16, 17, 17, 17, 17, 17]),
])  # fmt: skip
@pytest.mark.usefixtures("small_tasks")
def test_equal_shares_cover_every_row_once(sizes: list[int], slots: int, expected: list[int]) -> None:
    frags = [Fragment(f"f{i % 2}.parquet", i, n) for i, n in enumerate(sizes)]
    groups = _plan_tasks(frags, slots)
    assert _rows(groups) == expected
    whole = [(f.path, f.index, i) for f in frags for i in range(f.num_rows)]
    assert _covered(groups) == whole  # each row exactly once, in table order


def test_offsets_inside_a_shared_row_group_are_kept() -> None:
    frags = [Fragment("a.parquet", 0, 10, offset=5), Fragment("a.parquet", 0, 10, offset=15)]
    groups = _plan_tasks(frags, 1)
    assert _covered(groups) == [("a.parquet", 0, r) for r in range(5, 25)]


def test_empty_table_has_no_tasks() -> None:
    assert _plan_tasks([], 2) == []
    assert _plan_tasks([Fragment("a.parquet", 0, 0)], 2) == []


@pytest.mark.usefixtures("small_tasks")
def test_no_task_exceeds_max_rows_and_the_count_stays_a_multiple_of_the_slots() -> None:
    frags = [Fragment("a.parquet", i, 1000) for i in range(10)]
    groups = _plan_tasks(frags, 2, max_rows=900)
    assert len(groups) % 2 == 0 and max(_rows(groups)) <= 900 and sum(_rows(groups)) == 10_000
    assert _rows(_plan_tasks([Fragment("a.parquet", i, 32) for i in range(5)], 2, max_rows=65_536)) == [40] * 4


def test_a_second_wave_of_tasks_only_when_each_task_is_worth_its_fixed_cost() -> None:
    k = base._MIN_TASK_ROWS
    assert _rows(_plan_tasks([Fragment("a.parquet", 0, 50_000)], 2)) == [25_000, 25_000]  # a daily append
    assert len(_plan_tasks([Fragment("a.parquet", 0, 4 * k)], 2)) == 4
    assert len(_plan_tasks([Fragment("a.parquet", 0, 4 * k - 1)], 2)) == 2
