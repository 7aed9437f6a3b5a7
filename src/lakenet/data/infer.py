"""Feature types inferred from a table: what `lakenet init` proposes and what `features: {include: auto}` resolves
to at train time (the same function, on the same table version, gives the same answer).

Every column gets a decision with a reason a person can check: a type, or left out (an identifier, a constant,
empty, the key, derived file facts). Inference reads a bounded sample (the first rows in the table's file order,
deterministic for a Delta version), except where a whole column must be known (a proposed key must be unique).
"""

from __future__ import annotations

import io
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.config.schema import Config
from lakenet.data.codecs.base import strings
from lakenet.data.codecs.boolean import to_bool
from lakenet.data.codecs.datetime import parse_datetimes
from lakenet.data.sources import Snapshot
from lakenet.errors import DataError

__all__ = [
    "Decision",
    "Inference",
    "LabelDecision",
    "feature_name",
    "infer_features",
    "infer_label",
    "resolve_features",
]

SAMPLE_ROWS = 20_000
_BLOB_SAMPLE = 64
_ID_NAME = re.compile(r"(^|[_\-. ])(id|uuid|guid|key|identifier|no|number|nr|num)$|^id[_\-. ]", re.I)
_ID_CAMEL = re.compile(r"[a-z0-9](Id|ID|Key|Uuid|UUID|No|Number)$")  # customerId, orderNo: case matters here
# written by `lakenet ingest` next to images and audio files
_FILE_FACTS = {"path", "size_bytes", "width", "height", "duration_s", "sample_rate", "channels"}
_HASHED_OVER = 1000  # distinct values above which a category column is hashed
_HASH_BUCKETS = 4096


@dataclass(frozen=True)
class Decision:
    """What one column becomes: a feature spec, or None (left out), and why."""

    column: str
    spec: dict[str, Any] | None
    reason: str

    @property
    def type(self) -> str | None:
        return None if self.spec is None else str(self.spec["type"])


@dataclass(frozen=True)
class LabelDecision:
    column: str | None  # None: an anomaly model without labels
    task: str
    reason: str
    classes: dict[str, int] = field(default_factory=dict)  # classification: counts in the sample
    minority_share: float | None = None  # binary or multi-class: the rarest class's share


@dataclass(frozen=True)
class Inference:
    rows: int  # rows in the table
    sampled: int  # rows the types were inferred from
    key: str
    key_reason: str
    label: LabelDecision
    decisions: list[Decision]

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return {d.column: d.spec for d in self.decisions if d.spec is not None}

    @property
    def left_out(self) -> list[Decision]:
        return [d for d in self.decisions if d.spec is None]


def _sample(snap: Snapshot) -> pa.Table:
    """The first rows in file order (binary columns: only the first few, they are large)."""
    blobs = [f.name for f in snap.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    other = [n for n in snap.schema.names if n not in blobs]
    parts, n = [], 0
    for frag in snap.fragments:
        if n >= SAMPLE_ROWS:
            break
        parts.append(snap.read(frag, other))
        n += parts[-1].num_rows
    table = pa.concat_tables(parts).slice(0, SAMPLE_ROWS) if parts else pa.table({c: [] for c in other})
    for b in blobs:
        col = snap.read(snap.fragments[0], [b]).column(b).slice(0, _BLOB_SAMPLE) if snap.fragments else pa.array([])
        head = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        padded = pa.concat_arrays([head, pa.nulls(max(0, table.num_rows - len(col)), snap.schema.field(b).type)])
        table = table.append_column(snap.schema.field(b), padded.slice(0, table.num_rows))
    return table


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _id_like(name: str) -> bool:
    return bool(_ID_NAME.search(name) or _ID_CAMEL.search(name))


def infer_label(table: pa.Table, column: str, force: str | None = None) -> LabelDecision:
    """Classification for strings, booleans and numbers with few distinct integer values (a 0/1 float label is a
    class, not a quantity); regression otherwise. `force`: that task, as the user said (--task)."""
    col = table.column(column)
    t = col.type
    present = pc.drop_null(blank_if_text(col))
    distinct = pc.unique(present)
    n_distinct = len(distinct)
    integer_valued = False
    if _is_number_type(t) and len(present):
        vals = present.cast(pa.float64()).to_numpy(zero_copy_only=False)
        integer_valued = bool(np.all(np.isfinite(vals)) and np.all(vals == np.round(vals)))
    if force == "regression" or (force is None and _is_number_type(t) and not (integer_valued and n_distinct <= 20)):
        return LabelDecision(column, "regression", f"numbers with {n_distinct} distinct values")
    counts: dict[str, int] = {}
    for v in strings(col):
        if v is not None:
            key = v[:-2] if _is_number_type(t) and v.endswith(".0") else v
            counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    minority = min(counts.values()) / total if total else None
    why = f"{n_distinct} classes" + (" (numbers with few distinct whole values)" if _is_number_type(t) else "")
    return LabelDecision(column, "classification", why, dict(sorted(counts.items())), minority)


def blank_if_text(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    from lakenet.data.codecs.base import blank_to_null

    return blank_to_null(col) if _is_text_type(col.type) else col


_AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")


def _is_audio(blobs: list[bytes | None]) -> bool:
    """Most present values start like a WAV, FLAC, OGG or MP3 file."""
    present = [b for b in blobs if b]
    hits = sum(b.startswith(_AUDIO_MAGIC) for b in present)
    return bool(present) and hits * 2 > len(present)


def _audio_seconds(blobs: list[bytes | None]) -> float:
    """A clip length that holds most files whole: the 90th percentile of their durations, rounded up to 0.5 s
    (at least 0.5 s, at most 10 s; longer recordings are cropped to their middle)."""
    from lakenet.data.codecs.audio import audio_info

    durations = [info[0] for b in blobs if b and (info := audio_info(b)) is not None]
    if not durations:
        return 1.0
    p90 = float(np.percentile(durations, 90))
    return float(min(10.0, max(0.5, math.ceil(p90 * 2) / 2)))


def _image_spec(blobs: list[bytes | None]) -> dict[str, Any]:
    """Input size and channels from the images' headers: small images stay small (no upsampling 8×8 digits to
    32×32, which costs 16× the compute for nothing), large ones are capped at 64."""
    from PIL import Image

    sizes, channels = [], 1
    for b in blobs:
        try:
            with Image.open(io.BytesIO(b or b"")) as im:
                sizes.append(max(im.size))
                if im.mode not in {"L", "1", "I", "I;16", "F", "LA"}:
                    channels = 3
        except (OSError, ValueError, SyntaxError):
            continue
    typical = sorted(sizes)[len(sizes) // 2] if sizes else 32
    size = 8 if typical <= 12 else 16 if typical <= 24 else 32 if typical <= 96 else 64
    return {"type": "image", "size": size, "channels": channels}


def _decide(name: str, col: pa.ChunkedArray, rows: int) -> Decision:
    t = col.type
    col = blank_if_text(col)
    if pa.types.is_floating(t):  # NaN is a missing number, as the numeric codec reads it
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, t), col)
    present = pc.drop_null(col)
    n_present = len(present)
    missing = rows - n_present
    miss = f", {missing / rows:.1%} missing" if rows and missing else ""
    if n_present == 0:
        return Decision(name, None, "left out: every value is missing")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        blobs = col.to_pylist()
        if _is_audio(blobs):
            seconds = _audio_seconds(blobs)
            return Decision(name, {"type": "audio", "seconds": seconds}, f"audio files, read as {seconds:g} s clips")
        spec = _image_spec(blobs)
        return Decision(name, spec, f"image bytes, typically read as {spec['size']}×{spec['size']}")
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if _is_number_type(t.value_type) or pa.types.is_floating(t.value_type):
            return Decision(name, {"type": "vector"}, "lists of numbers (an embedding)" + miss)
        return Decision(name, None, f"left out: lists of {t.value_type} are not a feature type")
    if pa.types.is_nested(t):
        return Decision(name, None, f"left out: {t} values are not a feature type")
    distinct = len(pc.unique(present))
    if distinct == 1:
        return Decision(name, None, f"left out: constant ({present[0].as_py()!r} in every row{miss})")
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return Decision(name, {"type": "datetime"}, f"{t} values{miss}")
    if pa.types.is_boolean(t):
        return Decision(name, {"type": "boolean"}, "true/false" + miss)
    ratio = distinct / n_present
    if distinct == 2 and _is_number_type(t) and set(present.cast(pa.float64()).to_pylist()) <= {0.0, 1.0}:
        return Decision(name, {"type": "boolean"}, "only 0 and 1" + miss)
    if distinct <= 2 and _is_text_type(t) and not to_bool(present)[2].any():
        return Decision(name, {"type": "boolean"}, "yes/no values" + miss)
    if _id_like(name) and (ratio >= 0.05 or distinct > _HASHED_OVER):
        return Decision(name, None, f"left out: named like an identifier, {distinct} distinct in {n_present} rows")
    if _id_like(name):  # a few stores or regions by number: a category, not a quantity
        return Decision(name, {"type": "category"}, f"named like an identifier with {distinct} values: categories")
    if _is_number_type(t):
        if pa.types.is_integer(t) and ratio >= 0.95 and n_present > 50 and _monotone(present):
            return Decision(name, None, f"left out: a running number ({distinct} distinct, increasing), an identifier")
        return Decision(name, {"type": "numeric"}, f"numbers{miss}" + (", median fill + indicator" if missing else ""))
    if not _is_text_type(t):
        return Decision(name, None, f"left out: {t} values are not a feature type")
    values = [v for v in strings(present) if v is not None]
    # dates and times as ISO strings
    _, _, bad = parse_datetimes(pa.array(values[:2000]), "UTC")
    if bad.mean() <= 0.02 and any(ch.isdigit() for ch in values[0]) and ("-" in values[0] or ":" in values[0]):
        return Decision(name, {"type": "datetime"}, "ISO 8601 dates/times (read in UTC)" + miss)
    if _all_numeric(values[:2000]):
        return Decision(name, {"type": "numeric"}, "numbers written as text" + miss)
    words = statistics.median(len(v.split()) for v in values[:2000])
    if ratio >= 0.9 and n_present > 50 and _code_like(values):
        return Decision(name, None, f"left out: {distinct} distinct values in {n_present} rows (an identifier)")
    if words >= 4 and ratio >= 0.5:
        return Decision(name, {"type": "text"}, f"free text (median {words:g} words)" + miss)
    if ratio >= 0.5 and n_present > 50:
        return Decision(
            name, {"type": "text"}, f"nearly unique short strings ({distinct} distinct in {n_present}): read as words"
        )
    if distinct > _HASHED_OVER:
        spec = {"type": "category", "buckets": _HASH_BUCKETS}
        return Decision(name, spec, f"{distinct} distinct values: hashed into {_HASH_BUCKETS} buckets" + miss)
    return Decision(name, {"type": "category"}, f"{distinct} categories" + miss)


def _monotone(col: pa.Array | pa.ChunkedArray) -> bool:
    vals = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    diffs = np.diff(vals)
    return bool(len(diffs) and ((diffs > 0).mean() > 0.99 or (diffs < 0).mean() > 0.99))


def _all_numeric(values: list[str]) -> bool:
    try:
        for v in values:
            float(v)
    except ValueError:
        return False
    return bool(values)


def _code_like(values: list[str]) -> bool:
    """Identifier-shaped: one token, with digits or of one length (TX000123, a UUID), unlike names and titles."""
    sample = values[:2000]
    one_token = sum(1 for v in sample if " " not in v.strip()) / len(sample)
    digits = sum(1 for v in sample if any(c.isdigit() for c in v)) / len(sample)
    lengths = {len(v) for v in sample}
    return one_token > 0.95 and (digits > 0.5 or len(lengths) <= 2)


def _whole_column_unique(snap: Snapshot, column: str) -> bool:
    seen = 0
    chunks = []
    for _, t in snap.iter_tables([column]):
        col = t.column(column)
        if col.null_count:
            return False
        chunks.append(col)
        seen += len(col)
    if not chunks:
        return False
    arr = pa.chunked_array([c for ch in chunks for c in ch.chunks])
    return len(pc.unique(arr)) == seen


def infer_features(snap: Snapshot, *, label: str | None, key: str | None = None, task: str | None = None) -> Inference:
    """Decide every column of the table (the label's task, the key, each feature's type or why it is left out).
    `task`: anomaly (the label, if any, marks known anomalies); default: classification or regression, inferred."""
    schema = snap.schema
    if label is not None and label not in schema.names:
        raise DataError(f"Column {label!r} not in table {snap.uri} (columns: {', '.join(schema.names)}). Pass --label.")
    if label is None and task != "anomaly":
        raise DataError("A label column is needed (--label) for classification or regression; only --task anomaly "
                        "works without one.")  # fmt: skip
    sample = _sample(snap)
    rows = sample.num_rows
    lab = infer_label(sample, label) if label is not None else LabelDecision(None, "anomaly", "no labels")
    if task in ("classification", "regression") and label is not None and lab.task != task:
        lab = infer_label(sample, label, force=task)
    if task == "anomaly" and label is not None:
        lab = LabelDecision(
            label, "anomaly", f"known anomalies where set ({lab.reason})", lab.classes, lab.minority_share
        )
    # An ingested image folder (or its embeddings from `lakenet featurize`) carries file facts, not features.
    images = any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in schema) or (
        {"path", "size_bytes"} <= set(schema.names)
    )
    decisions: list[Decision] = []
    for f in schema:
        if f.name == label:
            continue
        if images and f.name in _FILE_FACTS:
            decisions.append(Decision(f.name, None, "left out: a file fact written by `lakenet ingest`"))
            continue
        if f.name == "error" and "embedding" in schema.names:
            decisions.append(Decision(f.name, None, "left out: `lakenet featurize`'s per-row error"))
            continue
        decisions.append(_decide(f.name, sample.column(f.name), rows))
    chosen, why = _choose_key(snap, decisions, key)
    decisions = [Decision(d.column, None, "the row key (data.key)") if d.column == chosen else d for d in decisions]
    return Inference(snap.num_rows, rows, chosen, why, lab, decisions)


def _choose_key(snap: Snapshot, decisions: list[Decision], key: str | None) -> tuple[str, str]:
    """The given key; else a unique, never-null identifier column; else the `key` column lakenet made."""
    names = snap.schema.names
    if key is not None:
        if key not in names:
            raise DataError(f"Key column {key!r} not in table {snap.uri} (columns: {', '.join(names)}). Pass --key.")
        return key, "given with --key"
    # The table's own identifier first; the `key` column `lakenet ingest` makes only when there is none.
    candidates = [d for d in decisions if d.spec is None and "identifier" in d.reason]
    candidates.sort(key=lambda d: d.column == "key")
    for d in candidates:
        if _whole_column_unique(snap, d.column):
            return d.column, f"{d.column}: unique and never null in all {snap.num_rows:,} rows"
    if "key" in names:
        return "key", "made by `lakenet ingest` (file and row) since no column is a unique identifier"
    raise DataError(
        f"Table {snap.uri} has no column that identifies a row (no 'key' column, no unique identifier). Ingest it "
        "with `lakenet ingest` (which adds one) or pass --key COLUMN."
    )


def feature_name(column: str) -> str:
    """Feature names are identifiers; a column like "od280/od315" keeps its name in `column`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", column).lstrip("_.-") or "feature"


def resolve_features(cfg: Config, snap: Snapshot) -> tuple[Config, Inference | None]:
    """`features: {include: auto}` made explicit for this table version: the inferred features (minus `exclude`
    and the columns explicit entries read), then the explicit entries. Other configs are returned unchanged."""
    from lakenet.config.loader import parse_config

    feats = cfg.features
    if feats.include != "auto":
        return cfg, None
    task = "anomaly" if feats.label.task == "anomaly" else None
    if feats.label.column is not None:  # named by its config key here, not init's --label
        snap.require_columns({feats.label.column: "features.label.column"})
    inference = infer_features(snap, label=feats.label.column, key=cfg.data.key, task=task)
    raw = cfg.to_yaml_dict()
    explicit = {k: v for k, v in raw["features"].items() if k not in ("label", "include", "exclude")}
    taken = {feats.column_of(n) for n in feats.inputs}
    unknown = [c for c in feats.exclude if c not in snap.schema.names]
    if unknown:
        raise DataError(f"features.exclude names {unknown}, not columns of {snap.uri} ({', '.join(snap.schema.names)})")
    resolved: dict[str, Any] = {}
    for d in inference.decisions:
        if d.spec is None or d.column in feats.exclude or d.column in taken:
            continue
        spec = dict(d.spec)
        name = feature_name(d.column)
        if name != d.column:
            spec["column"] = d.column
        resolved[name] = spec
    raw["features"] = {"label": raw["features"]["label"], **resolved, **explicit}
    if len(raw["features"]) == 1:
        raise DataError(
            f"features.include: auto found no usable feature column in {snap.uri} besides the label "
            f"({'; '.join(f'{d.column}: {d.reason}' for d in inference.left_out)})."
        )
    return parse_config(raw), inference
