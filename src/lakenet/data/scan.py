"""One pass over a table: schema checks, the data profile, bad rows, and preprocessing state from training rows.

Training runs the same scan before it starts, so a profile and a training job can never disagree about which
rows are usable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.config.schema import Config, ImageFeature, VectorFeature
from lakenet.data.codecs import Moments, blank_to_null, codec_for
from lakenet.data.encoders import LabelState, Preprocessor, StatsAccumulator
from lakenet.data.profile import (
    BadRowExample,
    BadRows,
    ColumnProfile,
    Duplicates,
    ImagesProfile,
    LabelProfile,
    LabelStats,
    Leakage,
    LeakExample,
    MissingProfile,
    Profile,
    Scalar,
    TableInfo,
    Unlabelled,
)
from lakenet.data.sources import Fragment, Snapshot
from lakenet.data.split import SPLIT_NAMES, TRAIN, Split, split_columns, table_splits
from lakenet.errors import DataError

__all__ = [
    "QUARANTINE_SCHEMA",
    "ScanPartial",
    "ScanResult",
    "check_schema",
    "probe_preprocessor",
    "scan_fragment",
    "scan_table",
]

QUARANTINE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("reason", pa.string()),
        ("column", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("table", pa.string()),
        ("table_version", pa.int64()),
    ]
)
_DISTINCT_CAP = 10_000
_SAMPLES_PER_CLASS = 6
_MAX_SAMPLE_CLASSES = 20
_EXAMPLES = 10
# Distinct row contents held to find duplicates and leakage exactly; a bigger table keeps a consistent sample of
# contents (those with the smallest hashes: every copy of a content is in it or none is), so the counts are
# exact within the sample and scaled up by its fraction. Memory stays O(_CONTENT_SAMPLE), not O(rows).
_CONTENT_SAMPLE = 50_000
_U64 = 2**64


@dataclass
class ScanResult:
    """What one pass over the table learned."""

    preprocessor: Preprocessor
    profile: Profile
    bad_rows: pa.Table  # QUARANTINE_SCHEMA
    # Usable rows per fragment and split: (fragments, 3). Lets every worker plan its steps without talking.
    fragment_counts: np.ndarray

    @property
    def bad_fraction(self) -> float:
        rows = self.profile.table.rows
        return self.bad_rows.num_rows / rows if rows else 0.0


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _is_scalar(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or _is_binary(t))


def check_schema(cfg: Config, snap: Snapshot) -> None:
    """Refuse to start on a missing column or a wrong type, naming the column and the fix."""
    feats = cfg.features
    wanted = {cfg.data.key: "data.key"}
    if cfg.data.split.group is not None:
        wanted[cfg.data.split.group] = "data.split.group"
    if feats.label.task == "recommendation":  # named by their own keys first: a typo there says recommend.user
        rec = cfg.recommend
        wanted.update({rec.user: "recommend.user", rec.item: "recommend.item"})
        if rec.timestamp is not None:
            wanted[rec.timestamp] = "recommend.timestamp"
    if feats.label.column is not None:
        wanted[feats.label.column] = "features.label.column"
    for name in feats.inputs:
        wanted.setdefault(feats.column_of(name), f"features.{name}.column")
    snap.require_columns(wanted)
    schema = snap.schema
    for name, spec in feats.inputs.items():
        col = feats.column_of(name)
        codec_for(spec.type).check(name, col, schema.field(col).type)
    if feats.label.column is None:
        return
    lt = schema.field(feats.label.column).type
    if not _is_scalar(lt):
        raise DataError(
            f"Label column {feats.label.column!r} has type {lt}; a label must be a scalar. Set features.label.column."
        )
    if feats.label.task in ("regression", "recommendation") and not (
        pa.types.is_integer(lt) or pa.types.is_floating(lt) or pa.types.is_decimal(lt)
    ):
        what = "a rating" if feats.label.task == "recommendation" else "task is regression"
        raise DataError(
            f"Label column {feats.label.column!r} has type {lt}, but {what} (needs numbers). "
            "Pick a numeric column, or set features.label.task to fit the column."
        )


def vector_dims(cfg: Config, snap: Snapshot) -> dict[str, int]:
    """Each vector feature's length: the most common length among the first fragment's rows (rows of another
    length are quarantined)."""
    feats = cfg.features
    cols = {n: feats.column_of(n) for n, s in feats.inputs.items() if isinstance(s, VectorFeature)}
    dims: dict[str, int] = {}
    for name, col in cols.items():
        lengths: Counter[int] = Counter()
        for _, table in snap.iter_tables([col]):
            arr = table.column(col)
            lengths.update(x for x in pc.list_value_length(arr).to_pylist() if x)
            if lengths:
                break
        if not lengths:
            raise DataError(
                f"Vector feature {name!r}: column {col!r} has no non-empty vector to learn its length from."
            )
        dims[name] = lengths.most_common(1)[0][0]
    return dims


def probe_preprocessor(cfg: Config, dims: dict[str, int]) -> Preprocessor:
    """Neutral state: encodes every row to find unusable ones before any statistics exist."""
    feats = cfg.features
    hints = {"vector_dims": dims}
    features = [
        codec_for(spec.type).probe(name, feats.column_of(name), spec, hints) for name, spec in feats.inputs.items()
    ]
    label = LabelState(feats.label.column, feats.label.task, classes=None)
    if feats.label.task == "recommendation":
        label = LabelState(feats.label.column, feats.label.task, item=cfg.recommend.item)
    return Preprocessor(key=cfg.data.key, label=label, features=features)


def _row_hashes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """A 64-bit content hash per row over `columns` (scalars through pandas, lists by their values, mixed)."""
    nested = [c for c in columns if pa.types.is_nested(table.schema.field(c).type)]
    flat = [c for c in columns if c not in nested]
    out = np.zeros(table.num_rows, dtype=np.uint64)
    if flat:
        out = pd.util.hash_pandas_object(table.select(flat).to_pandas(), index=False).to_numpy().astype(np.uint64)
    for c in nested:
        digests = [
            hashlib.blake2b(np.asarray(v if v is not None else [], dtype=np.float64).tobytes(), digest_size=8).digest()
            for v in table.column(c).to_pylist()
        ]
        with np.errstate(over="ignore"):
            out = out * np.uint64(0x9E3779B97F4A7C15) ^ np.frombuffer(b"".join(digests), dtype=np.uint64)
    return out


class _ContentSample:
    """Per distinct row content (by 64-bit hash): the first key and split, rows per split, another key with the
    same content and one in another split (for examples). Bounded: beyond _CONTENT_SAMPLE contents only those
    with hashes below `limit` are kept, a consistent sample; the figures are scaled by its fraction."""

    def __init__(self) -> None:
        self.limit = _U64
        self.entries: dict[int, list[Any]] = {}  # hash -> [key, split, [n per split], dup key, cross key, split]

    def add(self, h: int, key: str, split: int) -> None:
        if h >= self.limit:
            return
        e = self.entries.get(h)
        if e is None:
            self.entries[h] = [key, split, [0, 0, 0], None, None, None]
            self.entries[h][2][split] = 1
            if len(self.entries) > 2 * _CONTENT_SAMPLE:
                self._shrink()
            return
        e[2][split] += 1
        if e[3] is None:
            e[3] = key
        if split != e[1] and e[4] is None:
            e[4], e[5] = key, split

    def _shrink(self) -> None:
        hashes = np.fromiter(self.entries, dtype=np.uint64, count=len(self.entries))
        cut = int(np.partition(hashes, _CONTENT_SAMPLE - 1)[_CONTENT_SAMPLE - 1])
        self.limit = min(self.limit, cut + 1)
        self.entries = {h: e for h, e in self.entries.items() if h < self.limit}

    def merge(self, other: _ContentSample) -> None:
        if other.limit < self.limit:
            self.limit = other.limit
            self.entries = {h: e for h, e in self.entries.items() if h < self.limit}
        for h, theirs in other.entries.items():
            if h >= self.limit:
                continue
            mine = self.entries.get(h)
            if mine is None:
                self.entries[h] = [theirs[0], theirs[1], list(theirs[2]), theirs[3], theirs[4], theirs[5]]
                continue
            mine[2] = [a + b for a, b in zip(mine[2], theirs[2], strict=True)]
            if mine[3] is None:
                mine[3] = theirs[0]
            if mine[4] is None:
                mine[4], mine[5] = (theirs[0], theirs[1]) if theirs[1] != mine[1] else (theirs[4], theirs[5])
        if len(self.entries) > 2 * _CONTENT_SAMPLE:
            self._shrink()

    @property
    def fraction(self) -> float:
        return self.limit / _U64

    def figures(self) -> tuple[Duplicates, Leakage]:
        """Duplicates and leakage, scaled up from the sample when there is one; examples from the sample."""
        dup_rows = groups = leak_rows = 0
        dups: list[list[str]] = []
        leaks: list[LeakExample] = []
        for h in sorted(self.entries):  # examples by hash: the same ones whatever the order the rows came in
            key, split, per_split, dup_key, cross_key, cross_split = self.entries[h]
            total = sum(per_split)
            if total < 2:
                continue
            dup_rows += total - 1
            groups += 1
            leak_rows += total - per_split[split]
            if len(dups) < _EXAMPLES:
                dups.append([key, dup_key])
            if cross_key is not None and len(leaks) < _EXAMPLES:
                leaks.append(LeakExample([key, cross_key], [SPLIT_NAMES[split], SPLIT_NAMES[cross_split]]))
        f = self.fraction
        scale = (lambda n: round(n / f)) if f < 1 else (lambda n: n)
        return (
            Duplicates(rows=scale(dup_rows), groups=scale(groups), examples=dups, sample_fraction=f),
            Leakage(rows=scale(leak_rows), examples=leaks, sample_fraction=f),
        )


def _thumbnail(blob: bytes, px: int = 48) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as src:
            im = src.convert("RGB")
            im.thumbnail((px, px))
            if im.width < px // 2:  # tiny images (8×8 digits) are upscaled so they stay visible
                scale = max(1, px // max(im.width, im.height))
                im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError, SyntaxError):
        return None
    return base64.b64encode(buf.getvalue()).decode()


def _header(blob: bytes | None) -> tuple[int, int, str] | None:
    from PIL import Image

    if not blob:
        return None
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return int(im.width), int(im.height), str(im.mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class _ColumnStats:
    """Per-column profile figures over every row; mergeable."""

    def __init__(self, name: str, dtype: pa.DataType) -> None:
        self.name, self.dtype = name, dtype
        self.nulls = 0  # null, or blank text
        self.min: Any = None
        self.max: Any = None
        self.moments = Moments()
        self.distinct: set[Any] | None = None if _is_binary(dtype) or pa.types.is_nested(dtype) else set()
        self.many = False  # more than _DISTINCT_CAP distinct values: the set is dropped (its memory with it)

    def update(self, col: pa.ChunkedArray) -> None:
        col = blank_to_null(col)
        self.nulls += col.null_count
        if self.distinct is None:
            return
        if len(col) - col.null_count > 0:
            mm = pc.min_max(col)
            self._extend(mm["min"].as_py(), mm["max"].as_py())
        if pa.types.is_integer(self.dtype) or pa.types.is_floating(self.dtype):
            self.moments.update(col.cast(pa.float64()).to_numpy(zero_copy_only=False))
        if not self.many:
            self.distinct.update(pc.unique(col).to_pylist())
            self._cap()

    def _cap(self) -> None:
        if self.distinct is not None and len(self.distinct) > _DISTINCT_CAP:
            self.many, self.distinct = True, set()

    def _extend(self, lo: Any, hi: Any) -> None:
        if lo is not None and (self.min is None or lo < self.min):
            self.min = lo
        if hi is not None and (self.max is None or hi > self.max):
            self.max = hi

    def merge(self, other: _ColumnStats) -> None:
        self.nulls += other.nulls
        self._extend(other.min, other.max)
        self.moments.merge(other.moments)
        if self.distinct is None or other.distinct is None or self.many:
            return
        if other.many:
            self.many, self.distinct = True, set()
            return
        self.distinct.update(other.distinct)
        self._cap()

    def to_profile(self, rows: int) -> ColumnProfile:
        distinct: int | str | None = None
        if self.distinct is not None:
            distinct = f">{_DISTINCT_CAP}" if self.many else len(self.distinct - {None})
        return ColumnProfile(
            name=self.name,
            type=str(self.dtype),
            nulls=self.nulls,
            missing_rate=self.nulls / rows if rows else 0.0,
            min=_jsonable(self.min),
            max=_jsonable(self.max),
            distinct=distinct,
            mean=self.moments.mean if self.moments.n else None,
        )


def _jsonable(v: Any) -> Scalar:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)


class _Plan:
    """What every fragment's scan needs to know (built once on the driver, shipped to workers)."""

    def __init__(self, cfg: Config, snap: Snapshot, split: Split | None = None) -> None:
        check_schema(cfg, snap)
        self.split: Split = split if split is not None else cfg.data.split
        feats = cfg.features
        self.cfg = cfg
        self.uri, self.version = snap.uri, snap.version
        self.dims = vector_dims(cfg, snap)
        self.key_col, self.label_col = cfg.data.key, feats.label.column
        image = next((n for n, f in feats.inputs.items() if isinstance(f, ImageFeature)), None)
        self.image_col = feats.column_of(image) if image else None
        audio = next((n for n, f in feats.inputs.items() if f.type == "audio"), None)
        self.blob_col = self.image_col or (feats.column_of(audio) if audio else None)  # contents hashed whole
        self.source_col = "path" if "path" in snap.schema.names else None
        self.feature_cols = [feats.column_of(n) for n in feats.inputs]
        extra = [self.source_col] if self.source_col else []
        label = [self.label_col] if self.label_col is not None else []
        group = split_columns(self.key_col, self.split)
        self.read_cols: list[str] = list(dict.fromkeys([*group, *self.feature_cols, *label, *extra]))
        self.schema = snap.schema


@dataclass
class ScanPartial:
    """What a scan learned from some fragments; partials from several workers `merge`."""

    columns: dict[str, _ColumnStats]
    stats: StatsAccumulator
    counts: dict[int, np.ndarray]  # fragment index -> usable rows per split
    bad: dict[str, list[Any]]
    label_by_split: list[Counter[str]]
    label_moments: Moments
    label_range: list[float]  # [min, max] of a regression label
    # classification, held-out rows whose label these fragments' training rows lack (maybe unknown to the model):
    # frag, key, label, split, source
    heldout: list[tuple[int, str, str, int, str]]
    content: _ContentSample = field(default_factory=_ContentSample)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    unlabelled: Counter[str] = field(default_factory=Counter)  # by split

    @classmethod
    def empty(cls, plan: _Plan) -> ScanPartial:
        return cls(
            columns={f.name: _ColumnStats(f.name, f.type) for f in plan.schema if f.name in plan.read_cols},
            stats=StatsAccumulator(plan.cfg, plan.dims),
            counts={},
            bad={n: [] for n in QUARANTINE_SCHEMA.names},
            label_by_split=[Counter(), Counter(), Counter()],
            label_moments=Moments(),
            label_range=[math.inf, -math.inf],
            heldout=[],
        )

    def merge(self, other: ScanPartial) -> ScanPartial:
        for name, cs in self.columns.items():
            cs.merge(other.columns[name])
        self.stats.merge(other.stats)
        for fi, c in other.counts.items():  # a fragment read in pieces: its pieces' counts add up
            self.counts[fi] = self.counts[fi] + c if fi in self.counts else c
        for k in self.bad:
            self.bad[k].extend(other.bad[k])
        for mine, theirs in zip(self.label_by_split, other.label_by_split, strict=True):
            mine.update(theirs)
        self.label_moments.merge(other.label_moments)
        self.label_range = [
            min(self.label_range[0], other.label_range[0]),
            max(self.label_range[1], other.label_range[1]),
        ]
        trained = self.label_by_split[TRAIN]  # merged above: held-out rows of labels training has are dropped
        self.heldout = [r for r in [*self.heldout, *other.heldout] if not trained.get(r[2])]
        self.content.merge(other.content)
        self.sizes.update(other.sizes)
        self.modes.update(other.modes)
        for cls, thumbs in other.samples.items():
            if cls in self.samples or len(self.samples) < _MAX_SAMPLE_CLASSES:
                bucket = self.samples.setdefault(cls, [])
                bucket.extend(thumbs[: _SAMPLES_PER_CLASS - len(bucket)])
        self.unlabelled.update(other.unlabelled)
        return self


def scan_fragment(plan: _Plan, fi: int, frag: Fragment, table: pa.Table) -> ScanPartial:
    """Everything one fragment contributes: profile figures, bad rows, usable rows per split and training
    statistics. A pure function of the fragment, so it runs wherever the fragment is read."""
    cfg = plan.cfg
    part = ScanPartial.empty(plan)
    probe = probe_preprocessor(cfg, plan.dims)
    for name, cs in part.columns.items():
        cs.update(table.column(name))
    key_arr = table.column(plan.key_col)
    keys = key_arr.cast(pa.string()).to_pylist()
    splits = table_splits(table, plan.key_col, plan.split)
    hashes = pd.util.hash_array(np.asarray(keys, dtype=object), categorize=False)
    sources = (
        table.column(plan.source_col).to_pylist() if plan.source_col else [f"{frag.path}#{frag.index}"] * len(keys)
    )
    enc = probe.encode(table, with_label=True)
    for b in enc.bad:
        row = (keys[b.index], b.reason, b.column, SPLIT_NAMES[splits[b.index]], sources[b.index], plan.uri,
               plan.version)  # fmt: skip
        for field_name, value in zip(QUARANTINE_SCHEMA.names, row, strict=True):
            part.bad[field_name].append(value)
    good = enc.valid  # usable and labelled
    unlabelled = enc.unlabelled if enc.unlabelled is not None else np.zeros(len(keys), dtype=bool)
    for s in range(3):
        part.unlabelled[SPLIT_NAMES[s]] += int((unlabelled & (splits == s)).sum())
    # content hashes: duplicates and the same content across splits (leakage)
    if plan.blob_col:
        blobs = table.column(plan.blob_col).to_pylist()
        content = np.frombuffer(b"".join(hashlib.blake2b(b or b"", digest_size=8).digest() for b in blobs),
                                dtype=np.uint64)  # fmt: skip
    else:
        content = _row_hashes(table, list(dict.fromkeys(plan.feature_cols)))
    for i in np.flatnonzero(good).tolist():
        part.content.add(int(content[i]), keys[i], int(splits[i]))
    label = cfg.features.label
    counted = label.task in ("classification", "anomaly")  # label values counted per split
    if plan.label_col is not None:
        labels = table.column(plan.label_col)
        label_strs = labels.cast(pa.string()).to_pylist()
    else:
        labels, label_strs = pa.nulls(len(keys)), [None] * len(keys)
    if label.task == "regression":
        vals = labels.cast(pa.float64()).to_numpy(zero_copy_only=False)[good]
        vals = vals[np.isfinite(vals)]
        part.label_moments.update(vals)
        if len(vals):
            part.label_range = [float(vals.min()), float(vals.max())]
    counts = np.zeros(3, dtype=np.int64)
    for s in range(3):
        mask = good & (splits == s)
        counts[s] = int(mask.sum())
        if counted:
            part.label_by_split[s].update(v for v, m in zip(label_strs, mask, strict=True) if m and v is not None)
    part.counts[fi] = part.counts[fi] + counts if fi in part.counts else counts
    if label.task == "classification":
        trained = part.label_by_split[TRAIN]
        part.heldout.extend(
            (fi, keys[i], label_strs[i], int(splits[i]), sources[i])
            for i in np.flatnonzero(good & (splits != TRAIN))
            if not trained.get(label_strs[i])
        )
    if plan.image_col:
        _image_figures(part, table.column(plan.image_col).to_pylist(), good, splits, label_strs)
    train_rows = np.flatnonzero(good & (splits == TRAIN))
    if len(train_rows):
        part.stats.update(table.take(pa.array(train_rows)), hashes[train_rows])
    return part


def _image_figures(
    part: ScanPartial, blobs: list[Any], good: np.ndarray, splits: np.ndarray, label_strs: list[Any]
) -> None:
    """Image sizes and modes from the headers of the usable rows, and a few thumbnails per class (training rows)."""
    for i in np.flatnonzero(good).tolist():
        head = _header(blobs[i])
        if head:
            part.sizes[(head[0], head[1])] += 1
            part.modes[head[2]] += 1
        cls = label_strs[i] or ""
        if splits[i] == TRAIN and (cls in part.samples or len(part.samples) < _MAX_SAMPLE_CLASSES):
            bucket = part.samples.setdefault(cls, [])
            if len(bucket) < _SAMPLES_PER_CLASS and (thumb := _thumbnail(blobs[i])):
                bucket.append(thumb)


def scan_table(cfg: Config, snap: Snapshot, *, map_fragments: Any = None, split: Split | None = None) -> ScanResult:
    """Check the schema, profile every column, find bad rows and learn preprocessing state from training rows.

    `map_fragments(fn, snapshot, columns)`: how to run `fn(fi, fragment, table) -> ScanPartial` over the
    fragments and return the partials (an engine's; default: in this process, one fragment at a time)."""
    plan = _Plan(cfg, snap, split)
    if map_fragments is None:
        partials: Any = (scan_fragment(plan, fi, piece, t) for fi, piece, t in snap.iter_pieces(plan.read_cols))
    else:
        partials = map_fragments(lambda fi, frag, t: scan_fragment(plan, fi, frag, t), snap, plan.read_cols)
    total = ScanPartial.empty(plan)
    for part in partials:
        total.merge(part)
    return _finish(plan, snap, total)


def _finish(plan: _Plan, snap: Snapshot, part: ScanPartial) -> ScanResult:
    cfg = plan.cfg
    preprocessor = part.stats.finish()
    counts = np.zeros((len(snap.fragments), 3), dtype=np.int64)
    for fi, c in part.counts.items():
        counts[fi] = c
    bad = part.bad
    # Labels in validation/test that training never saw cannot be scored: quarantine them too.
    known = set(preprocessor.label.classes or [])
    for fi, key, label, split, source in part.heldout:
        if label not in known:
            counts[fi, split] -= 1
            part.label_by_split[split][label] -= 1
            row = (key, "unknown_label", plan.label_col, SPLIT_NAMES[split], source, snap.uri, snap.version)
            for field_name, value in zip(QUARANTINE_SCHEMA.names, row, strict=True):
                bad[field_name].append(value)
    bad_table = pa.table(bad, schema=QUARANTINE_SCHEMA)
    rows = snap.num_rows
    by_reason = Counter(bad["reason"])
    duplicates, leakage = part.content.figures()
    examples = bad_table.slice(0, _EXAMPLES).select(["key", "reason", "column", "source"]).to_pylist()
    profile = Profile(
        table=TableInfo(uri=snap.uri, version=snap.version, rows=rows, format=snap.format),
        columns=[cs.to_profile(rows) for cs in part.columns.values()],
        splits={name: int(counts[:, i].sum()) for i, name in enumerate(SPLIT_NAMES)},
        unlabelled=Unlabelled(total=sum(part.unlabelled.values()), by_split=dict(part.unlabelled)),
        missing=_missing_profile(cfg, part, rows),
        label=_label_profile(cfg, part.label_by_split, part.label_moments, part.label_range),
        duplicates=duplicates,
        leakage=leakage,
        bad_rows=BadRows(
            total=bad_table.num_rows,
            fraction=bad_table.num_rows / rows if rows else 0.0,
            by_reason=dict(by_reason),
            examples=[BadRowExample(**row) for row in examples],
        ),
        images=_images_profile(plan, part, by_reason),
        warnings=[],
    )
    return ScanResult(preprocessor, replace(profile, warnings=_warnings(profile, cfg)), bad_table, counts)


def _images_profile(plan: _Plan, part: ScanPartial, by_reason: Counter[str]) -> ImagesProfile | None:
    if not plan.image_col:
        return None
    return ImagesProfile(
        column=plan.image_col,
        count=int(sum(part.sizes.values())) + int(sum(v for k, v in by_reason.items() if "image" in k)),
        undecodable=int(sum(v for k, v in by_reason.items() if "image" in k and k != "missing_image")),
        sizes=[[w, h, c] for (w, h), c in part.sizes.most_common(20)],
        modes=dict(part.modes),
        samples=part.samples,
    )


def _missing_profile(cfg: Config, part: ScanPartial, rows: int) -> dict[str, MissingProfile]:
    """Per input feature: missing values over the whole table and what is done about them."""
    from lakenet.data.codecs.base import missing_rule

    feats = cfg.features
    out: dict[str, MissingProfile] = {}
    for name, spec in feats.inputs.items():
        col = feats.column_of(name)
        n = part.columns[col].nulls if col in part.columns else 0
        rule, constant = missing_rule(spec)
        done = {
            "impute": "filled by the rule learned on the training split (stored in the model)",
            "constant": f"read as {constant!r}",
            "zeros": "read as zeros, with an indicator input",
            "quarantine": "rows quarantined",
        }[rule]
        out[name] = MissingProfile(column=col, missing=n, rate=n / rows if rows else 0.0, rule=rule, action=done)
    return out


def _label_profile(
    cfg: Config, by_split: list[Counter[str]], moments: Moments, value_range: list[float]
) -> LabelProfile:
    lab = cfg.features.label
    if lab.task in ("classification", "anomaly"):
        total: Counter[str] = Counter()
        for c in by_split:
            total.update(c)
        return LabelProfile(
            column=lab.column,
            task=lab.task,
            counts={k: v for k, v in sorted(total.items()) if v > 0},
            by_split={SPLIT_NAMES[i]: {k: v for k, v in sorted(c.items()) if v > 0} for i, c in enumerate(by_split)},
        )
    if not moments.n:
        return LabelProfile(column=lab.column, task=lab.task)
    mean, _ = moments.mean_std()
    std = float(np.sqrt(moments.m2 / moments.n))
    stats = LabelStats(min=value_range[0], max=value_range[1], mean=mean, std=std)
    return LabelProfile(column=lab.column, task=lab.task, stats=stats)


def _warnings(profile: Profile, cfg: Config) -> list[str]:
    w = []
    bad = profile.bad_rows
    if bad.total:
        reasons = ", ".join(f"{k}: {v}" for k, v in bad.by_reason.items())
        w.append(f"{bad.total} bad row(s) ({bad.fraction:.2%}) will be quarantined and skipped ({reasons})")
    if profile.leakage.rows:
        w.append(
            f"{profile.leakage.rows} row(s) have the same content as a row in another split "
            "(leakage inflates validation and test scores)"
        )
    if profile.duplicates.rows:
        w.append(f"{profile.duplicates.rows} row(s) duplicate the content of another row")
    counts = profile.label.counts or {}
    if counts:
        lo, hi = min(counts.values()), max(counts.values())
        if lo and hi / lo >= 10:
            w.append(f"label classes are imbalanced: largest/smallest = {hi}/{lo}")
    for name, n in profile.splits.items():
        if n == 0 and (name == "train" or getattr(cfg.data.split, name) > 0):
            w.append(f"the {name} split is empty")
    return w
