"""Feature encoders: Arrow rows → tensors, the same code for training, batch scoring and serving.

A `Preprocessor` is a list of codecs (one per input feature, see `lakenet.data.codecs`) plus the label's
state. It holds only JSON-able state learned on the training split (statistics, fill values, vocabularies,
classes, the decision threshold), so it travels inside the model bundle and the predictor reproduces
training-time preprocessing, missing values included, exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.config.schema import Config
from lakenet.data.codecs import CODECS, Codec, Moments, Stats, codec_for, strings, to_float
from lakenet.data.codecs.audio import AudioCodec, AudioState
from lakenet.data.codecs.category import CategoryCodec, CategoryState
from lakenet.data.codecs.image import MAX_IMAGE_PIXELS, ImageCodec, ImageState, decode_image, image_pixels
from lakenet.data.codecs.numeric import NumericCodec, NumericState
from lakenet.data.codecs.text import TextCodec, TextState, bag_ids, text_input_keys, text_state
from lakenet.data.codecs.vector import VectorCodec, VectorState
from lakenet.errors import DataError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "BadRow",
    "CategoryState",
    "Encoded",
    "ImageState",
    "LabelState",
    "NumericState",
    "Preprocessor",
    "StatsAccumulator",
    "TextState",
    "VectorState",
    "bag_ids",
    "decode_image",
    "image_pixels",
    "text_input_keys",
    "text_state",
]

PREPROCESSOR_FORMAT = 2  # 1: lists per feature type (bundles before codecs); 2: a list of codecs in config order


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used, with the reason and the column at fault."""

    index: int
    reason: str
    column: str


@dataclass
class Encoded:
    """A batch of encoded rows: only rows where `valid` is true are present in `inputs`/`target`."""

    # "numeric": (N, F) f32, "category": (N, K) i64, "image": (N, C, S, S) f32, "vector": (N, V) f32,
    # "text.<name>": (N, L) i64 token ids (0 = padding for bag encoders) and "text.<name>.mask": (N, L) i64
    inputs: dict[str, np.ndarray]
    target: np.ndarray | None  # (N,) i64 class index, or (N,) f32 standardised value
    valid: np.ndarray  # (rows,) bool over the input batch
    bad: list[BadRow] = field(default_factory=list)
    # With the label: rows whose label is missing. Not bad (they are still scored by predict), just not
    # usable for training or evaluation; they are neither in `inputs` nor in `bad`.
    unlabelled: np.ndarray | None = None

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def reasons(self) -> list[str | None]:
        """Per input row: why it could not be used (its first problem), or None."""
        out: list[str | None] = [None] * len(self.valid)
        for b in self.bad:
            out[b.index] = out[b.index] or b.reason
        return out


@dataclass(frozen=True)
class LabelState:
    column: str | None  # None: an anomaly model trained without labels
    task: str  # classification, regression, anomaly
    classes: list[str] | None = None  # classification
    mean: float = 0.0  # regression targets are standardised for training and de-standardised on output
    std: float = 1.0
    # Binary classification: the class the threshold is about (the rarer one), and the probability of it from which
    # a row is predicted as it, chosen on the validation split (None: the most probable class wins).
    positive: str | None = None
    threshold: float | None = None
    # Anomaly: the validation rows' raw scores (log) at evenly spaced quantiles, which map a raw score to the
    # calibrated one (`lakenet.evaluation.anomaly.Calibration`); `threshold` is then on the calibrated score.
    calibration: list[float] | None = None
    # Recommendation: the item feature (its index is the target) and, with a rating label, the lowest rating that
    # counts as a positive interaction.
    item: str | None = None
    min_rating: float | None = None
    k: int | None = None  # items recommended per user


def _number_of(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Preprocessor:
    """Encodes Arrow tables for one config: a codec per input feature (config order) and the label's state."""

    def __init__(
        self,
        *,
        key: str,
        label: LabelState,
        features: list[Codec[Any]] | None = None,
        numeric: list[NumericState] | None = None,
        categories: list[CategoryState] | None = None,
        image: ImageState | None = None,
        vectors: list[VectorState] | None = None,
        texts: list[TextState] | None = None,
    ) -> None:
        """`features`: the codecs in order. The per-type lists are the layout of bundles written before codecs
        (numeric, categories, image, vectors, texts), kept so those bundles load unchanged."""
        self.key = key
        self.label = label
        if features is None:
            features = [
                *(NumericCodec(s) for s in numeric or []),
                *(CategoryCodec(s) for s in categories or []),
                *([ImageCodec(image)] if image is not None else []),
                *(VectorCodec(s) for s in vectors or []),
                *(TextCodec(s) for s in texts or []),
            ]
        self.features = list(features)
        self._class_index = {c: i for i, c in enumerate(label.classes or [])}

    # ---- views by type -----------------------------------------------------------------------------------
    def _states(self, kind: type[Codec[Any]]) -> list[Any]:
        return [c.state for c in self.features if isinstance(c, kind)]

    @property
    def numeric(self) -> list[NumericState]:
        return self._states(NumericCodec)

    @property
    def categories(self) -> list[CategoryState]:
        return self._states(CategoryCodec)

    @property
    def image(self) -> ImageState | None:
        images = self._states(ImageCodec)
        return images[0] if images else None

    @property
    def audio(self) -> AudioState | None:
        clips = self._states(AudioCodec)
        return clips[0] if clips else None

    @property
    def vectors(self) -> list[VectorState]:
        return self._states(VectorCodec)

    @property
    def texts(self) -> list[TextState]:
        return self._states(TextCodec)

    @property
    def numeric_width(self) -> int:
        """Columns of the numeric block: numbers, booleans, dates and missing-value indicators."""
        return sum(c.numeric_width() for c in self.features)

    @property
    def category_sizes(self) -> tuple[int, ...]:
        return tuple(s.size for s in self.categories)

    # ---- description -------------------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        if self.label.task == "recommendation":
            return self.item_codec().state.size  # a score per catalogue index
        return len(self.label.classes or []) if self.label.task == "classification" else 1

    @property
    def labelled(self) -> bool:
        """The rows carry a label column (every task but an anomaly model trained without labels)."""
        return self.label.column is not None

    def input_columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for c in self.features))

    def require_inputs(self, names: list[str] | set[str], *, what: str, fix: str) -> None:
        """Fail, naming the missing columns, when a batch lacks a column this preprocessing reads."""
        missing = [c for c in self.input_columns() if c not in names]
        if missing:
            raise DataError(f"Input is missing column(s) {missing} that {what} reads (it has {sorted(names)}); {fix}")

    def with_image_normalisation(self, mean: list[float], std: list[float]) -> Preprocessor:
        """A copy whose images are normalised with `mean`/`std` (a pretrained backbone's own statistics)."""
        im = self.image
        if im is None:
            return self
        if len(mean) != im.channels or len(std) != im.channels:
            raise DataError(
                f"The backbone normalises {len(mean)} channel(s) but feature {im.name!r} has {im.channels}; "
                f"set features.{im.name}.channels: {len(mean)}"
            )
        from dataclasses import replace

        image = replace(im, mean=[float(m) for m in mean], std=[float(v) for v in std])
        features = [ImageCodec(image) if isinstance(c, ImageCodec) else c for c in self.features]
        return Preprocessor(key=self.key, label=self.label, features=features)

    def columns(self, *, with_label: bool) -> list[str]:
        cols = [self.key, *self.input_columns()]
        if with_label and self.label.column is not None:
            cols.append(self.label.column)
        return list(dict.fromkeys(cols))

    def signature(self) -> list[dict[str, str]]:
        """Input columns with their logical type (the model bundle's input signature)."""
        return [c.signature() for c in self.features]

    def input_keys(self) -> list[str]:
        """The keys of Encoded.inputs, in a fixed order (the input names of an exported ONNX graph)."""
        keys = []
        if self.numeric_width:
            keys.append("numeric")
        if self.categories:
            keys.append("category")
        if self.image is not None:
            keys.append("image")
        if self.audio is not None:
            keys.append("audio")
        if self.vectors:
            keys.append("vector")
        for c in self.features:
            if isinstance(c, TextCodec):
                keys += c.input_keys()
        return keys

    def example_inputs(self, n: int, seed: int | None = None) -> dict[str, np.ndarray]:
        """Encoded inputs for `n` rows without a table: zeros, or random values of the right kind and range
        (`seed`), for warm-ups and export parity checks."""
        rng = np.random.default_rng(seed) if seed is not None else None
        return self._assemble([c.example(n, rng) for c in self.features])

    @staticmethod
    def _assemble(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Each feature's contribution joined into the model's input blocks, in feature order."""
        joined: dict[str, list[np.ndarray]] = {}
        for part in parts:
            for k, v in part.items():
                joined.setdefault(k, []).append(v)
        out = {}
        for k, vs in joined.items():
            if k in ("numeric", "category", "vector"):
                out[k] = np.concatenate(vs, axis=1)
            else:
                (out[k],) = vs
        return out

    # ---- encoding ----------------------------------------------------------------------------------------
    def encode(self, table: pa.Table | pa.RecordBatch, *, with_label: bool) -> Encoded:
        """Encode every row; rows that cannot be used are reported in `bad` and left out of the arrays.
        Missing values are filled by each feature's learned rule; with the label, rows without one are left
        out as `unlabelled`."""
        n = table.num_rows
        valid = np.ones(n, dtype=bool)
        bad: list[BadRow] = []

        def mark(mask: np.ndarray, reason: str, column: str) -> None:
            for i in np.flatnonzero(mask & valid):
                bad.append(BadRow(int(i), reason, column))
            valid[mask] = False

        inputs = self._assemble([c.encode(table.column(c.column), mark) for c in self.features])
        target, unlabelled = None, None
        if with_label and self.label.task == "recommendation":
            target = self.encode_interactions(table)
        elif with_label and self.label.task == "anomaly":
            # Rows without a label are the bulk of an anomaly model's training rows, not rows to leave out.
            target = self.encode_anomaly_label(table)
        elif with_label:
            assert self.label.column is not None
            target, unlabelled = self._encode_label(table.column(self.label.column), mark)
        usable = valid & ~unlabelled if unlabelled is not None else valid
        keep = np.flatnonzero(usable) if not usable.all() else None
        if keep is not None:
            inputs = {k: v[keep] for k, v in inputs.items()}
            target = target[keep] if target is not None else None
        bad.sort(key=lambda b: b.index)
        return Encoded(inputs, target, usable, bad, unlabelled)

    def item_codec(self) -> CategoryCodec:
        """Recommendation: the item feature's codec (its vocabulary is the catalogue)."""
        found = [c for c in self.features if isinstance(c, CategoryCodec) and c.name == self.label.item]
        if not found:
            raise DataError(f"This recommendation model has no item feature {self.label.item!r}")
        return found[0]

    def encode_interactions(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """(N,) int64: the item's index in the catalogue for a positive interaction, -100 (ignored by the loss)
        for an item outside the catalogue or a rating below recommend.min_rating."""
        codec = self.item_codec()
        target = codec.index_of(strings(table.column(codec.column))).astype(np.int64)
        target[target == 0] = -100  # unknown items
        if codec.state.missing == "impute":
            target[target == codec.state.size - 1] = -100  # the missing-value bucket is no item
        lab = self.label
        if lab.column is not None and lab.min_rating is not None:
            rating, _ = to_float(table.column(lab.column), lab.column)
            target[~(rating >= lab.min_rating)] = -100  # below the bar, or no rating
        return target

    def encode_anomaly_label(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """(N,) int64: 1 a known anomaly (the label is the positive value), 0 a known normal row, -1 unknown."""
        lab, n = self.label, table.num_rows
        if lab.column is None:
            return np.full(n, -1, dtype=np.int64)
        values = strings(table.column(lab.column))
        positive = lab.positive
        out = np.full(n, -1, dtype=np.int64)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = 1 if v == positive or _same_number(v, positive) else 0
        return out

    def _encode_label(self, col: pa.ChunkedArray | pa.Array, mark: Any) -> tuple[np.ndarray, np.ndarray]:
        lab = self.label
        if lab.task == "classification":
            values = strings(col)
            missing = np.array([v is None for v in values], dtype=bool)
            if lab.classes is None:  # profiling before the classes are known
                return np.zeros(len(values), dtype=np.int64), missing
            idx = np.array([self._class_index.get(v, -1) if v is not None else -2 for v in values], dtype=np.int64)
            # A numeric label read back as text ("1.0" for class "1"): the same class.
            for i in np.flatnonzero(idx == -1):
                num = _number_of(values[i])
                if num is not None and num.is_integer():
                    idx[i] = self._class_index.get(str(int(num)), -1)
            mark(idx == -1, "unknown_label", lab.column)
            return idx, missing
        assert lab.column is not None  # regression always has a label column
        vals, non_numeric = to_float(col, lab.column)
        mark(non_numeric, "not_numeric", lab.column)
        mark(np.isinf(vals), "non_finite_label", lab.column)
        missing = np.isnan(vals) & ~non_numeric
        return ((np.nan_to_num(vals) - lab.mean) / lab.std).astype(np.float32), missing

    def decode_target(self, raw: np.ndarray) -> np.ndarray:
        """Undo target standardisation (regression outputs)."""
        return raw * self.label.std + self.label.mean

    # ---- state -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREPROCESSOR_FORMAT,
            "key": self.key,
            "label": asdict(self.label),
            "features": [c.to_dict() for c in self.features],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        label = LabelState(**{k: v for k, v in d["label"].items() if k in {f.name for f in fields(LabelState)}})
        if "features" in d:
            features = [codec_for(f["type"]).from_dict(f) for f in d["features"]]
            return cls(key=d["key"], label=label, features=features)
        return cls(  # format 1
            key=d["key"],
            label=label,
            numeric=[NumericState(**s) for s in d["numeric"]],
            categories=[CategoryState(**s) for s in d["categories"]],
            image=ImageState(**d["image"]) if d.get("image") else None,
            vectors=[VectorState(**s) for s in d.get("vectors", [])],
            texts=[TextState(**s) for s in d.get("texts", [])],
        )


class StatsAccumulator:
    """Learns preprocessing state from training rows, fragment by fragment; partial results from several
    workers merge (`merge`) before `finish`. Holds counters and bounded samples, never rows."""

    def __init__(self, cfg: Config, vector_dims: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        hints = {"vector_dims": dict(vector_dims or {})}
        feats = cfg.features
        self.stats: dict[str, Stats] = {
            name: codec_for(spec.type).stats(name, feats.column_of(name), spec, hints)
            for name, spec in feats.inputs.items()
        }
        self.label_counts: Counter[str] = Counter()
        self.label_moments = Moments()

    def update(self, table: pa.Table, hashes: np.ndarray | None = None) -> None:
        """Add the training rows of `table` (already filtered to usable, labelled training rows); `hashes`: the
        rows' key hashes (deterministic samples for medians), default: their positions."""
        if hashes is None:
            hashes = np.arange(table.num_rows, dtype=np.uint64)
        feats = self.cfg.features
        for name, st in self.stats.items():
            st.update(table.column(feats.column_of(name)), hashes)
        lab = feats.label
        if lab.column is None or lab.task == "recommendation":
            return
        col = table.column(lab.column)
        if lab.task in ("classification", "anomaly"):
            self.label_counts.update(v for v in strings(col) if v is not None)
        else:
            vals, _ = to_float(col, lab.column)
            self.label_moments.update(vals)

    def merge(self, other: StatsAccumulator) -> None:
        for name, st in self.stats.items():
            st.merge(other.stats[name])
        self.label_counts.update(other.label_counts)
        self.label_moments.merge(other.label_moments)

    def missing_counts(self) -> dict[str, int]:
        return {name: st.missing for name, st in self.stats.items()}

    def finish(self) -> Preprocessor:
        cfg = self.cfg
        features = [CODECS[spec.type](self.stats[name].finish()) for name, spec in cfg.features.inputs.items()]
        lab = cfg.features.label
        if lab.task == "recommendation":
            rec = cfg.recommend
            label = LabelState(lab.column, lab.task, item=rec.item, min_rating=rec.min_rating, k=rec.k)
        elif lab.task == "anomaly":
            label = _anomaly_label(lab.column, self.label_counts, cfg.anomaly.positive)
        elif lab.task == "classification":
            classes = sorted(self.label_counts, key=_natural_key)
            if len(classes) < 2:
                raise DataError(
                    f"Label column {lab.column!r} has {len(classes)} distinct value(s) in the training split; "
                    "classification needs at least 2. Check features.label.column or set task: regression."
                )
            positive = min(classes, key=lambda c: (self.label_counts[c], c)) if len(classes) == 2 else None
            label = LabelState(lab.column, lab.task, classes=classes, positive=positive)
        else:
            mean, std = self.label_moments.mean_std()
            label = LabelState(lab.column, lab.task, mean=mean, std=std)
        return Preprocessor(key=cfg.data.key, label=label, features=features)


def _anomaly_label(column: str | None, counts: Counter[str], positive: str | None) -> LabelState:
    """An anomaly model's label: the values seen in training and which one marks a known anomaly (the configured
    one, else the rarer of two)."""
    values = sorted(counts, key=_natural_key)
    if positive is None and len(values) >= 2:
        positive = min(values, key=lambda c: (counts[c], c))
    if positive is not None and column is not None and values and positive not in values:
        hit = [v for v in values if _same_number(v, positive)]
        positive = hit[0] if hit else positive
    return LabelState(column, "anomaly", classes=values or None, positive=positive)


def _same_number(value: str, other: str | None) -> bool:
    """'1.0' and '1' are the same label value (a numeric column read back as text)."""
    if other is None:
        return False
    a, b = _number_of(value), _number_of(other)
    return a is not None and a == b


def _natural_key(v: str) -> tuple[int, float, str]:
    """Sort class names numerically when they are numbers ('2' < '10'), else alphabetically."""
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)
