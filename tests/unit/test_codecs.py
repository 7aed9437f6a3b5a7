"""Feature codecs: missing values filled by learned rules, present-but-corrupt values quarantined, datetimes
deterministic and time-zone correct, booleans, hashed categories, mergeable statistics, old bundles unchanged."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lakenet.config import parse_config
from lakenet.data.encoders import Preprocessor, StatsAccumulator


def cfg(**features: object) -> object:
    return parse_config(
        {"data": {"table": "t"}, "features": {"label": {"column": "y"}, **features}, "registry": {"name": "m"}}
    )


def fit(config: object, table: pa.Table) -> Preprocessor:
    acc = StatsAccumulator(config)  # type: ignore[arg-type]
    acc.update(table)
    return acc.finish()


def test_missing_values_are_filled_by_the_rules_learned_in_training() -> None:
    train = pa.table(
        {
            "x": [1.0, 2.0, 10.0, None],
            "c": ["a", "a", "b", ""],  # a blank is missing, not a category
            "b": ["yes", "no", "yes", None],
            "t": ["2026-01-01T10:00:00Z", "2026-01-03T10:00:00Z", None, "2026-01-02T10:00:00Z"],
            "y": ["p", "q", "p", "q"],
        }
    )
    pre = fit(
        cfg(x="numeric", c="category", b="boolean", t="datetime", w={"type": "numeric", "missing": {"constant": -1}},
            column_w={"type": "numeric", "column": "x", "missing": "quarantine"}),
        train.append_column("w", pa.array([1.0, 2.0, 3.0, 4.0])),
    )  # fmt: skip
    (x, _, _) = pre.numeric
    assert x.fill == pytest.approx(2.0) and x.indicator  # the training median, flagged
    rows = pa.table(
        {
            "x": [None, 4.0],
            "c": [None, "zzz"],
            "b": [None, "TRUE"],
            "t": [None, "2026-01-02T10:00:00+00:00"],
            "w": [None, 5.0],
        }
    )
    enc = pre.encode(rows, with_label=False)
    # x is missing in row 0: the constant-quarantine copy of it sets that row aside, the others fill it
    assert [b.reason for b in enc.bad] == ["missing_numeric"] and enc.valid.tolist() == [False, True]
    pre_no_q = Preprocessor(key="key", label=pre.label, features=[c for c in pre.features if c.name != "column_w"])
    enc = pre_no_q.encode(rows, with_label=False)
    assert enc.bad == [] and enc.valid.all()
    num = enc.inputs["numeric"]
    # x: (median - mean) / std with the indicator set
    assert num[0, 0] == pytest.approx((2.0 - x.mean) / x.std) and num[0, 1] == 1.0 and num[1, 1] == 0.0
    cats = enc.inputs["category"][:, 0].tolist()
    assert cats == [pre.categories[0].size - 1, 0]  # the missing bucket; an unseen value is unknown (0)
    # numeric block: x (value, indicator), b (value, indicator), t (6 on circles, elapsed, indicator), then w
    w = pre.numeric[1]
    assert num.shape[1] == 2 + 2 + 8 + 1 and w.fill == -1.0
    assert num[0, 12] == pytest.approx((-1 - w.mean) / w.std) and num[1, 12] == pytest.approx((5 - w.mean) / w.std)
    assert num[0, 2] == pytest.approx(2 / 3) and num[0, 3] == 1.0  # boolean: the training share of yes, flagged


def test_present_but_corrupt_values_are_quarantined_with_their_reason() -> None:
    train = pa.table({"x": [1.0, 2.0, 3.0], "b": ["y", "n", "y"], "t": ["2026-01-01", "2026-01-02", None],
                      "y": ["p", "q", "p"]})  # fmt: skip
    pre = fit(cfg(x="numeric", b="boolean", t="datetime"), train)
    rows = pa.table(
        {
            "x": ["abc", "inf", "2", "3"],
            "b": ["y", "y", "maybe", "n"],
            "t": ["2026-01-01", "2026-01-01", "2026-01-01", "not a date"],
        }
    )
    enc = pre.encode(rows, with_label=False)
    assert [(b.index, b.reason, b.column) for b in enc.bad] == [
        (0, "not_numeric", "x"),
        (1, "non_finite_numeric", "x"),
        (2, "not_boolean", "b"),
        (3, "not_a_datetime", "t"),
    ]


def test_datetimes_are_deterministic_and_time_zone_correct() -> None:
    from lakenet.data.codecs.datetime import parse_datetimes

    # the same instant written three ways; a naive value is a local time in the feature's zone
    same = pa.array(["2026-03-01T13:30:00Z", "2026-03-01T14:30:00+01:00", "2026-03-01T14:30:00"])
    times, missing, bad = parse_datetimes(same, "Europe/Berlin")
    assert not missing.any() and not bad.any()
    assert times.dt.hour.tolist() == [14, 14, 14]
    assert len({t.value for t in times}) == 1
    # Arrow timestamps with a zone are converted; without one they are local times
    ts = pa.array([0], pa.timestamp("s", tz="UTC"))
    assert parse_datetimes(ts, "America/New_York")[0].dt.hour.tolist() == [19]  # 1969-12-31 19:00 in New York
    # a local time that does not exist (spring-forward gap) is shifted, not dropped
    gap, _, bad = parse_datetimes(pa.array(["2026-03-29T02:30:00"]), "Europe/Berlin")
    assert not bad.any() and gap.dt.hour.tolist() == [3]
    cfg_dt = cfg(t={"type": "datetime", "timezone": "Europe/Berlin"})
    train = pa.table({"t": ["2026-01-01T08:00:00Z", "2026-02-01T20:00:00Z", None], "y": ["a", "b", "a"]})
    pre = fit(cfg_dt, train)
    state = pre.features[0].state
    assert state.indicator and state.reference == state.fill
    rows = pa.table({"t": ["2026-01-01T08:00:00Z", "2026-01-01T09:00:00+01:00", None]})
    a = pre.encode(rows, with_label=False).inputs["numeric"]
    b = Preprocessor.from_dict(pre.to_dict()).encode(rows, with_label=False).inputs["numeric"]
    np.testing.assert_array_equal(a, b)  # the state round-trips: the same numbers in serving
    np.testing.assert_allclose(a[0, :7], a[1, :7])  # the same instant, whatever its notation
    # hour of day on the circle: 09:00 in Berlin
    angle = 2 * math.pi * 9 / 24
    assert a[0, 0] == pytest.approx(math.sin(angle), abs=1e-6) and a[0, 3] == pytest.approx(math.cos(angle), abs=1e-6)
    assert a[2, -1] == 1.0  # the missing value is flagged, and read as the training median
    with pytest.raises(Exception, match="Unknown time zone"):
        fit(cfg(t={"type": "datetime", "timezone": "Mars/Olympus"}), train)


def test_a_datetime_encodes_the_same_in_every_unit_and_as_an_iso_string() -> None:
    """A Delta table stores microseconds, a CSV read by pandas nanoseconds, a request ISO strings: one instant
    must encode to the same numbers (a model trained on a table once saw 1000× larger epochs when served)."""
    iso = ["2026-01-01T12:26:36+00:00", "2026-06-30T23:59:59Z", None]
    instants = [1767270396, 1782863999, None]
    pre = fit(cfg(t="datetime"), pa.table({"t": pa.array(instants, pa.timestamp("s", tz="UTC")), "y": ["a", "b", "a"]}))
    want = pre.encode(pa.table({"t": iso}), with_label=False).inputs["numeric"]
    for unit, scale in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        values = [v * scale if v is not None else None for v in instants]
        got = pre.encode(pa.table({"t": pa.array(values, pa.timestamp(unit, tz="UTC"))}), with_label=False)
        np.testing.assert_allclose(got.inputs["numeric"], want, rtol=1e-6, atol=1e-6, err_msg=unit)


def test_booleans_and_hashed_categories() -> None:
    pre = fit(
        cfg(b="boolean", h={"type": "category", "buckets": 16}),
        pa.table({"b": [True, False, None, True], "h": ["u1", "u2", "u3", "u4"], "y": ["a", "b", "a", "b"]}),
    )
    (b, h) = pre.features
    assert b.state.fill == pytest.approx(2 / 3) and b.state.indicator
    assert h.state.vocab == [] and h.state.size == 16 + 2
    enc = pre.encode(pa.table({"b": [1, 0], "h": ["never-seen", None]}), with_label=False)
    assert enc.inputs["numeric"][:, 0].tolist() == [1.0, 0.0]
    idx = enc.inputs["category"][:, 0].tolist()
    assert 1 <= idx[0] <= 16 and idx[1] == 17  # a new value still lands in a bucket; missing has its own


def test_statistics_merge_like_one_pass() -> None:
    """Partial statistics from several workers give the state one pass over all rows gives (scan on an engine)."""
    rng = np.random.default_rng(0)
    x = rng.normal(1e9, 3.0, 900)  # large values: sum-of-squares would lose every digit
    x[::50] = np.nan
    table = pa.table({"x": x, "c": rng.choice(["a", "b", "c"], 900), "y": rng.choice(["p", "q"], 900)})
    config = cfg(x="numeric", c="category")
    whole = StatsAccumulator(config)  # type: ignore[arg-type]
    hashes = np.arange(900, dtype=np.uint64)
    whole.update(table, hashes)
    parts = [StatsAccumulator(config) for _ in range(3)]  # type: ignore[arg-type]
    for i, part in enumerate(parts):
        part.update(table.slice(i * 300, 300), hashes[i * 300 : (i + 1) * 300])
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    a, b = whole.finish(), parts[0].finish()
    assert a.numeric[0].fill == b.numeric[0].fill and a.categories[0].vocab == b.categories[0].vocab
    assert a.numeric[0].mean == pytest.approx(b.numeric[0].mean, rel=1e-12)
    assert a.numeric[0].std == pytest.approx(b.numeric[0].std, rel=1e-9)
    assert a.numeric[0].std == pytest.approx(np.nanstd(x), rel=1e-6)
    assert a.numeric[0].mean == pytest.approx(np.nanmean(x), rel=1e-12)


def test_a_bundle_of_the_previous_format_loads_and_keeps_its_rules() -> None:
    """Format 1 (lists per type, no missing-value rules): missing numbers are still quarantined for it."""
    old = {
        "key": "key",
        "numeric": [{"name": "x", "column": "x", "mean": 1.0, "std": 2.0}],
        "categories": [{"name": "c", "column": "c", "vocab": ["a"], "embedding_dim": 2}],
        "image": None,
        "label": {"column": "y", "task": "classification", "classes": ["p", "q"], "mean": 0.0, "std": 1.0},
        "vectors": [],
        "texts": [],
    }
    pre = Preprocessor.from_dict(old)
    assert pre.numeric_width == 1 and pre.category_sizes == (2,)  # the same network inputs as before
    enc = pre.encode(pa.table({"x": [3.0, None], "c": [None, "a"]}), with_label=False)
    assert enc.inputs["numeric"][:, 0].tolist() == [1.0] and enc.inputs["category"][:, 0].tolist() == [0]
    assert [b.reason for b in enc.bad] == ["missing_numeric"]
    assert Preprocessor.from_dict(pre.to_dict()).to_dict() == pre.to_dict()


def test_an_old_config_still_loads() -> None:
    old = {
        "version": 1,
        "data": {"table": "t", "key": "id"},
        "features": {"label": {"column": "y"}, "x": {"type": "numeric"}, "c": {"type": "category"}},
        "trainer": {"early_stopping": {"metric": "val_loss", "patience": 3}},
        "registry": {"name": "m"},
    }
    c = parse_config(old)
    assert c.features.inputs["x"].missing == "impute" and c.trainer.early_stopping.metric == "val_loss"  # type: ignore[union-attr]


def test_the_utc_fast_path_encodes_exactly_as_the_pandas_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Datetimes read in UTC skip pandas (`utc_nanoseconds`): for strings with and without offsets, blanks, nulls
    and Arrow timestamps of every unit and zone, the numbers and the quarantine marks must be bit-identical to the
    pandas path's; what the fast path cannot read identically (dates only, mixed notations, bad values) it
    leaves to pandas."""
    from datetime import UTC, datetime, timedelta, timezone

    from lakenet.data.codecs import datetime as dt_codec

    rng = np.random.default_rng(7)
    n = 300
    secs = rng.integers(-2_000_000_000, 4_000_000_000, n).tolist()
    micro = rng.integers(0, 10**6, n).tolist()
    offsets = (rng.integers(-56, 57, n) * 15).tolist()  # minutes, -14:00 to +14:00

    def when(i: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=secs[i], microseconds=micro[i])

    aware = [when(i).astimezone(timezone(timedelta(minutes=offsets[i]))).isoformat() for i in range(n)]
    zulu = [when(i).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for i in range(n)]
    naive = [when(i).replace(tzinfo=None).isoformat(sep="T" if i % 2 else " ", timespec="seconds") for i in range(n)]
    gaps = [None if i % 7 == 0 else "  " if i % 11 == 0 else v for i, v in enumerate(aware)]
    columns = {
        "offsets": pa.array(aware),
        "zulu": pa.array(zulu),
        "naive": pa.array(naive),
        "nulls and blanks": pa.array(gaps),
        "all missing": pa.array([None, ""], pa.string()),
        "timestamps us UTC": pa.array([when(i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "timestamps ms naive": pa.array([when(i).replace(tzinfo=None) for i in range(n)], pa.timestamp("ms")),
        "timestamps s Berlin": pa.array(secs, pa.timestamp("s", tz="Europe/Berlin")),
        "mixed notations": pa.array([aware[0], naive[1]]),
        "a bad value": pa.array([aware[0], "2026-02-30T00:00:00Z"]),
        "dates only": pa.array(["2026-01-01", "1999-12-31"]),
    }
    fast_ok = {k for k in columns if k not in ("mixed notations", "a bad value", "dates only")}
    for rule in ("impute", "quarantine"):
        state = dt_codec.DatetimeState("t", "t", "UTC", reference=1.6e9, elapsed_mean=3.5, elapsed_std=900.0,
                                       missing=rule, fill=1.7e9, indicator=True)  # fmt: skip
        codec = dt_codec.DatetimeCodec(state)
        for name, col in columns.items():
            assert (dt_codec.utc_nanoseconds(col) is not None) == (name in fast_ok), name
            marks_fast: list[tuple[Any, ...]] = []
            fast = codec.encode(col, lambda m, r, c, out=marks_fast: out.append((m.tolist(), r, c)))
            with monkeypatch.context() as mp:
                mp.setattr(dt_codec, "utc_nanoseconds", lambda _: None)
                marks_slow: list[tuple[Any, ...]] = []
                slow = codec.encode(col, lambda m, r, c, out=marks_slow: out.append((m.tolist(), r, c)))
            np.testing.assert_array_equal(fast["numeric"], slow["numeric"], err_msg=f"{rule}: {name}")
            assert [m for m in marks_fast if any(m[0])] == [m for m in marks_slow if any(m[0])], (rule, name)
