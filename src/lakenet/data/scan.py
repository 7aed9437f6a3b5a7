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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.config.schema import CategoryFeature, Config, ImageFeature, NumericFeature, TextFeature, VectorFeature
from lakenet.data.encoders import (
    ImageState,
    LabelState,
    NumericState,
    Preprocessor,
    StatsAccumulator,
    TextState,
    VectorState,
)
from lakenet.data.sources import Snapshot
from lakenet.data.split import SPLIT_NAMES, TRAIN, assign_splits
from lakenet.errors import DataError

__all__ = ["QUARANTINE_SCHEMA", "ScanResult", "check_schema", "scan_table"]

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


@dataclass
class ScanResult:
    """What one pass over the table learned."""

    preprocessor: Preprocessor
    profile: dict[str, Any]
    bad_rows: pa.Table  # QUARANTINE_SCHEMA
    # Usable rows per fragment and split: (fragments, 3). Lets every worker plan its steps without talking.
    fragment_counts: np.ndarray

    @property
    def bad_fraction(self) -> float:
        rows = self.profile["table"]["rows"]
        return self.bad_rows.num_rows / rows if rows else 0.0


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _is_scalar(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or _is_binary(t))


def check_schema(cfg: Config, snap: Snapshot) -> None:
    """Refuse to start on a missing column or a wrong type, naming the column and the fix."""
    feats = cfg.features
    wanted = {cfg.data.key: "data.key", feats.label.column: "features.label.column"}
    for name in feats.inputs:
        wanted.setdefault(feats.column_of(name), f"features.{name}.column")
    snap.require_columns(wanted)
    schema = snap.schema
    for name, spec in feats.inputs.items():
        col = feats.column_of(name)
        t = schema.field(col).type
        if isinstance(spec, ImageFeature) and not _is_binary(t):
            raise DataError(
                f"Column {col!r} (feature {name!r}) has type {t}, but an image feature needs encoded image "
                f"bytes (binary). Ingest the images with `lakenet ingest <folder> --table ...`, or change "
                f"features.{name}.type."
            )
        if isinstance(spec, NumericFeature) and not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
        ):
            raise DataError(
                f"Column {col!r} (feature {name!r}) has type {t}, which is not numeric. "
                f"Set features.{name}.type to category or image, or pick another column."
            )
        if isinstance(spec, VectorFeature) and not (
            (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
        ):
            raise DataError(
                f"Column {col!r} (feature {name!r}) has type {t}, but a vector feature needs a list of numbers per "
                f"row (an embedding, as `lakenet featurize` writes). Change features.{name}.type or pick another "
                "column."
            )
        if isinstance(spec, TextFeature) and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(
                f"Column {col!r} (feature {name!r}) has type {t}, but a text feature needs strings. Set "
                f"features.{name}.type to numeric or category, or pick another column."
            )
        if isinstance(spec, CategoryFeature) and not _is_scalar(t):
            raise DataError(
                f"Column {col!r} (feature {name!r}) has type {t}; a category feature needs scalar values. "
                f"Set features.{name}.type: image for image bytes."
            )
    lt = schema.field(feats.label.column).type
    if not _is_scalar(lt):
        raise DataError(
            f"Label column {feats.label.column!r} has type {lt}; a label must be a scalar. Set features.label.column."
        )
    if feats.label.task == "regression" and not (
        pa.types.is_integer(lt) or pa.types.is_floating(lt) or pa.types.is_decimal(lt)
    ):
        raise DataError(
            f"Label column {feats.label.column!r} has type {lt}, but task is regression (needs numbers). "
            "Set features.label.task: classification or pick a numeric column."
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


def _probe_preprocessor(cfg: Config, dims: dict[str, int]) -> Preprocessor:
    """Neutral state: encodes every row to find unusable ones before any statistics exist (text is only
    checked for presence, so no tokenizer is loaded)."""
    feats = cfg.features
    vectors = [VectorState(n, feats.column_of(n), dims[n]) for n, s in feats.inputs.items() if n in dims]
    texts = [
        TextState(n, feats.column_of(n), "bag", 1, buckets=16)
        for n, s in feats.inputs.items()
        if isinstance(s, TextFeature)
    ]
    numeric = [
        NumericState(n, feats.column_of(n), 0.0, 1.0) for n, s in feats.inputs.items() if isinstance(s, NumericFeature)
    ]
    image = next(
        (
            ImageState(n, feats.column_of(n), s.size, s.channels, [0.0] * s.channels, [1.0] * s.channels)
            for n, s in feats.inputs.items()
            if isinstance(s, ImageFeature)
        ),
        None,
    )
    label = LabelState(feats.label.column, feats.label.task, classes=None)
    return Preprocessor(
        key=cfg.data.key, numeric=numeric, categories=[], image=image, label=label, vectors=vectors, texts=texts
    )


def _row_hashes(table: pa.Table, columns: list[str]) -> list[bytes]:
    """A content hash per row over `columns` (lists hashed by their values, scalars through pandas)."""
    nested = [c for c in columns if pa.types.is_nested(table.schema.field(c).type)]
    flat = [c for c in columns if c not in nested]
    parts: list[list[bytes]] = []
    if flat:
        df = table.select(flat).to_pandas()
        parts.append([h.tobytes() for h in pd.util.hash_pandas_object(df, index=False).to_numpy()])
    for c in nested:
        parts.append(
            [
                hashlib.blake2b(
                    np.asarray(v if v is not None else [], dtype=np.float64).tobytes(), digest_size=12
                ).digest()
                for v in table.column(c).to_pylist()
            ]
        )
    return [b"".join(p) for p in zip(*parts, strict=True)] if parts else [b""] * table.num_rows


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
    def __init__(self, name: str, dtype: pa.DataType) -> None:
        self.name, self.dtype = name, dtype
        self.nulls = 0
        self.min: Any = None
        self.max: Any = None
        self.sum = 0.0
        self.n = 0
        self.distinct: set[Any] | None = None if _is_binary(dtype) or pa.types.is_nested(dtype) else set()

    def update(self, col: pa.ChunkedArray) -> None:
        self.nulls += col.null_count
        if self.distinct is None:
            return
        if len(col) - col.null_count > 0:
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            self.min = lo if self.min is None or (lo is not None and lo < self.min) else self.min
            self.max = hi if self.max is None or (hi is not None and hi > self.max) else self.max
        if pa.types.is_integer(self.dtype) or pa.types.is_floating(self.dtype):
            vals = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            vals = vals[np.isfinite(vals)]
            self.sum += float(vals.sum())
            self.n += len(vals)
        if len(self.distinct) <= _DISTINCT_CAP:
            self.distinct.update(pc.unique(col).to_pylist())

    def to_dict(self) -> dict[str, Any]:
        distinct: int | str | None = None
        if self.distinct is not None:
            distinct = len(self.distinct) if len(self.distinct) <= _DISTINCT_CAP else f">{_DISTINCT_CAP}"
        return {
            "name": self.name,
            "type": str(self.dtype),
            "nulls": self.nulls,
            "min": _jsonable(self.min),
            "max": _jsonable(self.max),
            "distinct": distinct,
            "mean": self.sum / self.n if self.n else None,
        }


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)


def scan_table(cfg: Config, snap: Snapshot) -> ScanResult:
    """Check the schema, profile every column, find bad rows and learn preprocessing state from training rows."""
    check_schema(cfg, snap)
    feats = cfg.features
    dims = vector_dims(cfg, snap)
    probe = _probe_preprocessor(cfg, dims)
    stats = StatsAccumulator(cfg, dims)
    key_col, label_col = cfg.data.key, feats.label.column
    image_col = probe.image.column if probe.image else None
    source_col = "path" if "path" in snap.schema.names else None
    feature_cols = [feats.column_of(n) for n in feats.inputs]
    read_cols = list(dict.fromkeys([key_col, *feature_cols, label_col] + ([source_col] if source_col else [])))

    col_stats = {f.name: _ColumnStats(f.name, f.type) for f in snap.schema if f.name in read_cols}
    label_by_split: list[Counter[str]] = [Counter(), Counter(), Counter()]
    counts = np.zeros((len(snap.fragments), 3), dtype=np.int64)
    bad: dict[str, list[Any]] = {n: [] for n in QUARANTINE_SCHEMA.names}
    heldout_labels: list[tuple[int, str, str, int, str]] = []  # frag, key, label, split, source
    seen: dict[bytes, tuple[str, int]] = {}
    dup_rows, leak_rows = 0, 0
    dup_examples: list[list[str]] = []
    leak_examples: list[dict[str, list[str]]] = []
    dup_groups: set[bytes] = set()
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    samples: dict[str, list[str]] = {}
    label_values: list[float] = []

    for fi, (frag, table) in enumerate(snap.iter_tables(read_cols)):
        for name, cs in col_stats.items():
            cs.update(table.column(name))
        keys = table.column(key_col).cast(pa.string()).to_pylist()
        splits = assign_splits(table.column(key_col), cfg.data.split)
        sources = table.column(source_col).to_pylist() if source_col else [f"{frag.path}#{frag.index}"] * len(keys)
        enc = probe.encode(table, with_label=True)
        for b in enc.bad:
            for field_name, value in zip(
                QUARANTINE_SCHEMA.names,
                (
                    keys[b.index],
                    b.reason,
                    b.column,
                    SPLIT_NAMES[splits[b.index]],
                    sources[b.index],
                    snap.uri,
                    snap.version,
                ),
                strict=True,
            ):
                bad[field_name].append(value)
        good = enc.valid
        # content hashes: duplicates and the same content across splits (leakage)
        if image_col:
            blobs = table.column(image_col).to_pylist()
            hashes = [hashlib.blake2b(b or b"", digest_size=12).digest() for b in blobs]
        else:
            hashes = _row_hashes(table, list(dict.fromkeys(feature_cols)))
        for i, h in enumerate(hashes):
            if not good[i]:
                continue
            prev = seen.get(h)
            if prev is None:
                seen[h] = (keys[i], int(splits[i]))
                continue
            dup_rows += 1
            dup_groups.add(h)
            if len(dup_examples) < _EXAMPLES:
                dup_examples.append([prev[0], keys[i]])
            if prev[1] != splits[i]:
                leak_rows += 1
                if len(leak_examples) < _EXAMPLES:
                    leak_examples.append(
                        {"keys": [prev[0], keys[i]], "splits": [SPLIT_NAMES[prev[1]], SPLIT_NAMES[splits[i]]]}
                    )
        labels = table.column(label_col)
        label_strs = labels.cast(pa.string()).to_pylist()
        if feats.label.task == "regression":
            vals = labels.cast(pa.float64()).to_numpy(zero_copy_only=False)
            label_values.extend(vals[good & np.isfinite(vals)].tolist())
        for s in range(3):
            mask = good & (splits == s)
            counts[fi, s] = int(mask.sum())
            if feats.label.task == "classification":
                label_by_split[s].update(v for v, m in zip(label_strs, mask, strict=True) if m)
        if feats.label.task == "classification":
            heldout_labels.extend(
                (fi, keys[i], label_strs[i], int(splits[i]), sources[i])
                for i in np.flatnonzero(good & (splits != TRAIN))
            )
        if image_col:
            blobs = table.column(image_col).to_pylist()
            for i in np.flatnonzero(good).tolist():
                head = _header(blobs[i])
                if head:
                    sizes[(head[0], head[1])] += 1
                    modes[head[2]] += 1
                cls = label_strs[i] or ""
                if splits[i] == TRAIN and (cls in samples or len(samples) < _MAX_SAMPLE_CLASSES):
                    bucket = samples.setdefault(cls, [])
                    if len(bucket) < _SAMPLES_PER_CLASS and (thumb := _thumbnail(blobs[i])):
                        bucket.append(thumb)
        train_rows = np.flatnonzero(good & (splits == TRAIN))
        if len(train_rows):
            stats.update(table.take(pa.array(train_rows)))

    preprocessor = stats.finish()
    # Labels in validation/test that training never saw cannot be scored: quarantine them too.
    known = set(preprocessor.label.classes or [])
    for fi, key, label, split, source in heldout_labels:
        if label not in known:
            counts[fi, split] -= 1
            label_by_split[split][label] -= 1
            for field_name, value in zip(
                QUARANTINE_SCHEMA.names,
                (key, "unknown_label", label_col, SPLIT_NAMES[split], source, snap.uri, snap.version),
                strict=True,
            ):
                bad[field_name].append(value)
    bad_table = pa.table(bad, schema=QUARANTINE_SCHEMA)
    rows = snap.num_rows
    by_reason = Counter(bad["reason"])
    profile = {
        "table": {"uri": snap.uri, "version": snap.version, "rows": rows, "format": snap.format},
        "columns": [cs.to_dict() for cs in col_stats.values()],
        "splits": {name: int(counts[:, i].sum()) for i, name in enumerate(SPLIT_NAMES)},
        "label": _label_profile(cfg, label_by_split, label_values),
        "duplicates": {"rows": dup_rows, "groups": len(dup_groups), "examples": dup_examples},
        "leakage": {"rows": leak_rows, "examples": leak_examples},
        "bad_rows": {
            "total": bad_table.num_rows,
            "fraction": bad_table.num_rows / rows if rows else 0.0,
            "by_reason": dict(by_reason),
            "examples": bad_table.slice(0, _EXAMPLES).select(["key", "reason", "column", "source"]).to_pylist(),
        },
    }
    if image_col:
        profile["images"] = {
            "column": image_col,
            "count": int(sum(sizes.values())) + int(sum(v for k, v in by_reason.items() if "image" in k)),
            "undecodable": int(sum(v for k, v in by_reason.items() if "image" in k)),
            "sizes": [[w, h, c] for (w, h), c in sizes.most_common(20)],
            "modes": dict(modes),
            "samples": samples,
        }
    profile["warnings"] = _warnings(profile, cfg)
    return ScanResult(preprocessor, profile, bad_table, counts)


def _label_profile(cfg: Config, by_split: list[Counter[str]], values: list[float]) -> dict[str, Any]:
    lab = cfg.features.label
    out: dict[str, Any] = {"column": lab.column, "task": lab.task}
    if lab.task == "classification":
        total: Counter[str] = Counter()
        for c in by_split:
            total.update(c)
        out["counts"] = {k: v for k, v in sorted(total.items()) if v > 0}
        out["by_split"] = {
            SPLIT_NAMES[i]: {k: v for k, v in sorted(c.items()) if v > 0} for i, c in enumerate(by_split)
        }
    elif values:
        arr = np.asarray(values)
        out["stats"] = {
            "min": float(arr.min()),
            "max": float(arr.max()),
            "mean": float(arr.mean()),
            "std": float(arr.std()),
        }
    return out


def _warnings(profile: dict[str, Any], cfg: Config) -> list[str]:
    w = []
    bad = profile["bad_rows"]
    if bad["total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in bad["by_reason"].items())
        w.append(f"{bad['total']} bad row(s) ({bad['fraction']:.2%}) will be quarantined and skipped ({reasons})")
    if profile["leakage"]["rows"]:
        w.append(
            f"{profile['leakage']['rows']} row(s) have the same content as a row in another split "
            "(leakage inflates validation and test scores)"
        )
    if profile["duplicates"]["rows"]:
        w.append(f"{profile['duplicates']['rows']} row(s) duplicate the content of another row")
    counts = profile["label"].get("counts") or {}
    if counts:
        lo, hi = min(counts.values()), max(counts.values())
        if lo and hi / lo >= 10:
            w.append(f"label classes are imbalanced: largest/smallest = {hi}/{lo}")
    for name, n in profile["splits"].items():
        if n == 0 and (name == "train" or getattr(cfg.data.split, name) > 0):
            w.append(f"the {name} split is empty")
    return w
