"""Feature encoders: Arrow rows → tensors, the same code for training, batch scoring and serving.

A `Preprocessor` holds only JSON-able state learned on the training split (means, vocabularies, classes), so it
travels inside the model bundle and the predictor reproduces training-time preprocessing exactly.
"""

from __future__ import annotations

import io
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lakenet.config.schema import CategoryFeature, Config, ImageFeature, NumericFeature, TextFeature, VectorFeature
from lakenet.errors import DataError

__all__ = [
    "BadRow",
    "CategoryState",
    "Encoded",
    "ImageState",
    "LabelState",
    "NumericState",
    "Preprocessor",
    "TextState",
    "VectorState",
    "decode_image",
    "text_input_keys",
]


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
class NumericState:
    name: str
    column: str
    mean: float
    std: float


@dataclass(frozen=True)
class CategoryState:
    name: str
    column: str
    vocab: list[str]  # index i + 1; index 0 is the unknown bucket
    embedding_dim: int


@dataclass(frozen=True)
class ImageState:
    name: str
    column: str
    size: int
    channels: int
    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class VectorState:
    name: str
    column: str
    dim: int


@dataclass(frozen=True)
class TextState:
    name: str
    column: str
    kind: str  # "bag" (hashed words and bigrams) or "pretrained" (the encoder's own tokenizer)
    max_length: int
    buckets: int = 0  # bag
    tokenizer: str | None = None  # pretrained: the tokenizer's JSON (Hugging Face `tokenizers` format)
    source: str | None = None  # pretrained: where the encoder came from


def text_input_keys(name: str) -> tuple[str, str]:
    """The Encoded.inputs keys of a text feature: token ids and attention mask."""
    return f"text.{name}", f"text.{name}.mask"


_WORD = re.compile(r"\w+")


def bag_ids(texts: list[str | None], buckets: int, max_length: int) -> np.ndarray:
    """(N, max_length) ids of hashed words and bigrams, interleaved in text order (w1, w1 w2, w2, ...), so
    truncation keeps the start of a text; 0 is padding."""
    out = np.zeros((len(texts), max_length), dtype=np.int64)
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower()) if text else []
        tokens: list[str] = []
        for j, w in enumerate(words):
            tokens.append(w)
            if j + 1 < len(words):
                tokens.append(f"{w} {words[j + 1]}")
            if len(tokens) >= max_length:
                break
        ids = [zlib.crc32(t.encode()) % buckets + 1 for t in tokens[:max_length]]
        out[i, : len(ids)] = ids
    return out


@dataclass(frozen=True)
class LabelState:
    column: str
    task: str
    classes: list[str] | None = None  # classification
    mean: float = 0.0  # regression targets are standardised for training and de-standardised on output
    std: float = 1.0


# Decoded pixels one image may have. Pillow only warns between its own limit (89 Mpx) and twice that, so a
# 144-Mpixel PNG would be decoded (~430 MB of RGB) for a 32×32 input; the header is read first and such an image is
# refused as `image_too_large`. The server applies its own, lower limits per image and per request.
MAX_IMAGE_PIXELS = 64 * 2**20


def image_pixels(blob: bytes) -> int | None:
    """Width × height from the image header (nothing decoded); None if the header is unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return int(im.width) * int(im.height)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def decode_image(blob: bytes | None, size: int, channels: int, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode, convert and resize one image to (size, size, channels) uint8. Raises ValueError(reason):
    empty_image, image_too_large (more than `max_pixels`), truncated_image or undecodable_image."""
    from PIL import Image, UnidentifiedImageError

    if not blob:
        raise ValueError("empty_image")
    try:
        with Image.open(io.BytesIO(blob)) as src:
            if src.width * src.height > max_pixels:
                raise ValueError("image_too_large")
            src.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at reduced scale
            im = src.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise ValueError("image_too_large") from None
    except UnidentifiedImageError:
        raise ValueError("undecodable_image") from None
    except (OSError, ValueError, SyntaxError) as err:
        if str(err) == "image_too_large":
            raise
        raise ValueError("truncated_image" if "truncat" in str(err) else "undecodable_image") from None
    return arr.reshape(size, size, channels)


def _to_float(col: pa.ChunkedArray | pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Float values and a 'was non-numeric text' mask; nulls become NaN."""
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        vals = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(vals, dtype=np.float64), np.zeros(len(vals), dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pd.Series(col.to_pylist(), dtype=object)
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        return num, raw.notna().to_numpy() & np.isnan(num)
    raise DataError(f"Column {name!r} has type {t}, which cannot be used as a numeric feature.")


def _strings(col: pa.ChunkedArray | pa.Array) -> list[str | None]:
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return col.to_pylist()


class Preprocessor:
    """Encodes Arrow tables for one config; state is learned on the training split by `fit_stats`."""

    def __init__(
        self,
        *,
        key: str,
        numeric: list[NumericState],
        categories: list[CategoryState],
        image: ImageState | None,
        label: LabelState,
        vectors: list[VectorState] | None = None,
        texts: list[TextState] | None = None,
    ) -> None:
        self.key = key
        self.numeric = numeric
        self.categories = categories
        self.image = image
        self.label = label
        self.vectors = list(vectors or [])
        self.texts = list(texts or [])
        self._cat_index = [{v: i + 1 for i, v in enumerate(c.vocab)} for c in categories]
        self._class_index = {c: i for i, c in enumerate(label.classes or [])}
        self._tokenizers: dict[str, Any] = {}

    # ---- description -------------------------------------------------------------------------------------
    @property
    def num_outputs(self) -> int:
        return len(self.label.classes or []) if self.label.task == "classification" else 1

    def input_columns(self) -> list[str]:
        cols = [s.column for s in self.numeric] + [s.column for s in self.categories]
        if self.image is not None:
            cols.append(self.image.column)
        cols += [s.column for s in self.vectors] + [s.column for s in self.texts]
        return list(dict.fromkeys(cols))

    def require_inputs(self, names: list[str] | set[str], *, what: str, fix: str) -> None:
        """Fail, naming the missing columns, when a batch lacks a column this preprocessing reads."""
        missing = [c for c in self.input_columns() if c not in names]
        if missing:
            raise DataError(f"Input is missing column(s) {missing} that {what} reads (it has {sorted(names)}); {fix}")

    def with_image_normalisation(self, mean: list[float], std: list[float]) -> Preprocessor:
        """A copy whose images are normalised with `mean`/`std` (a pretrained backbone's own statistics)."""
        if self.image is None:
            return self
        im = self.image
        if len(mean) != im.channels or len(std) != im.channels:
            raise DataError(
                f"The backbone normalises {len(mean)} channel(s) but feature {im.name!r} has {im.channels}; "
                f"set features.{im.name}.channels: {len(mean)}"
            )
        image = ImageState(im.name, im.column, im.size, im.channels, [float(m) for m in mean], [float(v) for v in std])
        return Preprocessor(
            key=self.key, numeric=self.numeric, categories=self.categories, image=image, label=self.label,
            vectors=self.vectors, texts=self.texts,
        )  # fmt: skip

    def columns(self, *, with_label: bool) -> list[str]:
        cols = [self.key, *self.input_columns()]
        if with_label:
            cols.append(self.label.column)
        return list(dict.fromkeys(cols))

    def signature(self) -> list[dict[str, str]]:
        """Input columns with their logical type (the model bundle's input signature)."""
        sig = [{"name": s.column, "type": "double", "feature": "numeric"} for s in self.numeric]
        sig += [{"name": s.column, "type": "string", "feature": "category"} for s in self.categories]
        if self.image is not None:
            sig.append({"name": self.image.column, "type": "binary", "feature": "image"})
        sig += [{"name": s.column, "type": "vector", "feature": "vector"} for s in self.vectors]
        sig += [{"name": s.column, "type": "string", "feature": "text"} for s in self.texts]
        return sig

    def input_keys(self) -> list[str]:
        """The keys of Encoded.inputs, in a fixed order (the input names of an exported ONNX graph)."""
        keys = []
        if self.numeric:
            keys.append("numeric")
        if self.categories:
            keys.append("category")
        if self.image is not None:
            keys.append("image")
        if self.vectors:
            keys.append("vector")
        for t in self.texts:
            ids, mask = text_input_keys(t.name)
            keys += [ids, mask] if t.kind == "pretrained" else [ids]
        return keys

    def example_inputs(self, n: int, seed: int | None = None) -> dict[str, np.ndarray]:
        """Encoded inputs for `n` rows without a table: zeros, or random values of the right kind and range
        (`seed`), for warm-ups and export parity checks."""
        rng = np.random.default_rng(seed) if seed is not None else None
        out: dict[str, np.ndarray] = {}

        def normal(*shape: int) -> np.ndarray:
            return rng.standard_normal(shape).astype(np.float32) if rng else np.zeros(shape, np.float32)

        if self.numeric:
            out["numeric"] = normal(n, len(self.numeric))
        if self.categories:
            cats = [rng.integers(0, len(c.vocab) + 1, n) if rng else np.zeros(n, np.int64) for c in self.categories]
            out["category"] = np.stack(cats, 1).astype(np.int64)
        if self.image is not None:
            out["image"] = normal(n, self.image.channels, self.image.size, self.image.size)
        if self.vectors:
            out["vector"] = normal(n, sum(v.dim for v in self.vectors))
        for t in self.texts:
            ids_key, mask_key = text_input_keys(t.name)
            vocab = t.buckets + 1 if t.kind == "bag" else self._tokenizer(t).get_vocab_size()
            ids = rng.integers(1, vocab, (n, t.max_length)) if rng else np.zeros((n, t.max_length), np.int64)
            mask = np.ones((n, t.max_length), dtype=np.int64)
            if rng is not None:  # rows of different lengths, padded at the end
                lengths = rng.integers(1, t.max_length + 1, n)
                mask = (np.arange(t.max_length)[None, :] < lengths[:, None]).astype(np.int64)
                ids = ids * mask
            out[ids_key] = ids.astype(np.int64)
            if t.kind == "pretrained":
                out[mask_key] = mask
        return out

    def _tokenizer(self, t: TextState) -> Any:
        tok = self._tokenizers.get(t.name)
        if tok is None:
            from tokenizers import Tokenizer

            assert t.tokenizer is not None
            tok = Tokenizer.from_str(t.tokenizer)
            pad = tok.padding or {}
            tok.enable_truncation(max_length=t.max_length)
            tok.enable_padding(
                length=t.max_length, pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]"))
            )
            self._tokenizers[t.name] = tok
        return tok

    def _encode_text(self, t: TextState, values: list[str | None]) -> dict[str, np.ndarray]:
        ids_key, mask_key = text_input_keys(t.name)
        if t.kind == "bag":
            return {ids_key: bag_ids(values, t.buckets, t.max_length)}
        encs = self._tokenizer(t).encode_batch([v or "" for v in values])
        ids = np.array([e.ids for e in encs], dtype=np.int64).reshape(len(values), t.max_length)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(values), t.max_length)
        return {ids_key: ids, mask_key: mask}

    def _encode_vectors(self, table: pa.Table | pa.RecordBatch, n: int, mark: Any) -> np.ndarray:
        """(N, sum of dims) float32; rows with a missing, wrong-length or non-finite vector are marked."""
        mat = np.zeros((n, sum(v.dim for v in self.vectors)), dtype=np.float32)
        at = 0
        for v in self.vectors:
            col = table.column(v.column)
            arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            values = pc.list_flatten(arr).cast(pa.float32()).to_numpy(zero_copy_only=False)
            mark(nulls, "missing_vector", v.column)
            mark(~nulls & (lengths != v.dim), "wrong_vector_length", v.column)
            rows = np.flatnonzero(~nulls & (lengths == v.dim))
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            block = np.asarray(values, dtype=np.float32)[starts[rows, None] + np.arange(v.dim)]  # (R, dim)
            finite = np.isfinite(block).all(1)
            mark(np.isin(np.arange(n), rows[~finite]), "non_finite_vector", v.column)
            mat[rows, at : at + v.dim] = np.where(np.isfinite(block), block, 0.0)
            at += v.dim
        return mat

    # ---- encoding ----------------------------------------------------------------------------------------
    def encode(self, table: pa.Table | pa.RecordBatch, *, with_label: bool) -> Encoded:
        """Encode every row; rows that cannot be used are reported in `bad` and left out of the arrays."""
        n = table.num_rows
        valid = np.ones(n, dtype=bool)
        bad: list[BadRow] = []

        def mark(mask: np.ndarray, reason: str, column: str) -> None:
            for i in np.flatnonzero(mask & valid):
                bad.append(BadRow(int(i), reason, column))
            valid[mask] = False

        inputs: dict[str, np.ndarray] = {}
        if self.numeric:
            mat = np.empty((n, len(self.numeric)), dtype=np.float32)
            for j, s in enumerate(self.numeric):
                vals, non_numeric = _to_float(table.column(s.column), s.column)
                mark(non_numeric, "not_numeric", s.column)
                mark(np.isnan(vals), "missing_numeric", s.column)
                mark(np.isinf(vals), "non_finite_numeric", s.column)
                with np.errstate(over="ignore", invalid="ignore"):
                    scaled = ((np.nan_to_num(vals, nan=s.mean, posinf=s.mean, neginf=s.mean) - s.mean) / s.std).astype(
                        np.float32
                    )
                # A finite value can still overflow float32 once standardised (1e300): the model would emit NaN.
                mark(~np.isfinite(scaled), "non_finite_numeric", s.column)
                mat[:, j] = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
            inputs["numeric"] = mat
        if self.categories:
            cats = np.zeros((n, len(self.categories)), dtype=np.int64)
            for j, (c, index) in enumerate(zip(self.categories, self._cat_index, strict=True)):
                cats[:, j] = [index.get(v, 0) if v is not None else 0 for v in _strings(table.column(c.column))]
            inputs["category"] = cats
        if self.image is not None:
            im = self.image
            pixels = np.zeros((n, im.size, im.size, im.channels), dtype=np.uint8)
            for i, blob in enumerate(table.column(im.column).to_pylist()):
                try:
                    pixels[i] = decode_image(blob, im.size, im.channels)
                except ValueError as err:
                    mark(np.arange(n) == i, str(err), im.column)
            # (N, H, W, C) uint8 -> (N, C, H, W) float32, normalised with training statistics
            arr = pixels.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
            mean = np.asarray(im.mean, dtype=np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(im.std, dtype=np.float32).reshape(1, -1, 1, 1)
            inputs["image"] = (arr - mean) / std
        if self.vectors:
            inputs["vector"] = self._encode_vectors(table, n, mark)
        for t in self.texts:
            values = _strings(table.column(t.column))
            mark(np.array([v is None for v in values], dtype=bool), "missing_text", t.column)
            inputs.update(self._encode_text(t, values))
        target = None
        if with_label:
            target = self._encode_label(table.column(self.label.column), mark)
        keep = np.flatnonzero(valid) if not valid.all() else None
        if keep is not None:
            inputs = {k: v[keep] for k, v in inputs.items()}
            target = target[keep] if target is not None else None
        bad.sort(key=lambda b: b.index)
        return Encoded(inputs, target, valid, bad)

    def _encode_label(self, col: pa.ChunkedArray | pa.Array, mark: Any) -> np.ndarray:
        lab = self.label
        if lab.task == "classification":
            values = _strings(col)
            if lab.classes is None:  # profiling before the vocabulary is known: only missing labels are bad
                missing = np.array([v is None for v in values], dtype=bool)
                mark(missing, "missing_label", lab.column)
                return np.zeros(len(values), dtype=np.int64)
            idx = np.array([self._class_index.get(v, -1) if v is not None else -2 for v in values], dtype=np.int64)
            mark(idx == -2, "missing_label", lab.column)
            mark(idx == -1, "unknown_label", lab.column)
            return idx
        vals, non_numeric = _to_float(col, lab.column)
        mark(non_numeric, "not_numeric", lab.column)
        mark(~np.isfinite(vals), "missing_label", lab.column)
        return ((np.nan_to_num(vals) - lab.mean) / lab.std).astype(np.float32)

    def decode_target(self, raw: np.ndarray) -> np.ndarray:
        """Undo target standardisation (regression outputs)."""
        return raw * self.label.std + self.label.mean

    # ---- state -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "numeric": [asdict(s) for s in self.numeric],
            "categories": [asdict(s) for s in self.categories],
            "image": asdict(self.image) if self.image else None,
            "label": asdict(self.label),
            "vectors": [asdict(s) for s in self.vectors],
            "texts": [asdict(s) for s in self.texts],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(
            key=d["key"],
            numeric=[NumericState(**s) for s in d["numeric"]],
            categories=[CategoryState(**s) for s in d["categories"]],
            image=ImageState(**d["image"]) if d.get("image") else None,
            label=LabelState(**d["label"]),
            vectors=[VectorState(**s) for s in d.get("vectors", [])],
            texts=[TextState(**s) for s in d.get("texts", [])],
        )


class StatsAccumulator:
    """Learns preprocessing state from training rows, fragment by fragment (nothing held but counters)."""

    _IMAGE_SAMPLE = 512

    def __init__(self, cfg: Config, vector_dims: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.vector_dims = dict(vector_dims or {})
        self.sums: dict[str, np.ndarray] = {}  # name -> [n, sum, sumsq]
        self.counts: dict[str, Counter[str]] = {}
        self.label_counts: Counter[str] = Counter()
        self.label_sums = np.zeros(3)
        self.pixel_sums = np.zeros((3, 3))  # [n, sum, sumsq] per channel
        self.images_seen = 0

    def update(self, table: pa.Table) -> None:
        """Add the training rows of `table` (already filtered to good training rows)."""
        for name, spec in self.cfg.features.inputs.items():
            col = table.column(self.cfg.features.column_of(name))
            if isinstance(spec, NumericFeature):
                vals, _ = _to_float(col, name)
                vals = vals[np.isfinite(vals)]
                acc = self.sums.setdefault(name, np.zeros(3))
                acc += (len(vals), vals.sum(), np.square(vals).sum())
            elif isinstance(spec, CategoryFeature):
                self.counts.setdefault(name, Counter()).update(v for v in _strings(col) if v is not None)
            elif isinstance(spec, ImageFeature) and self.images_seen < self._IMAGE_SAMPLE:
                for blob in col.to_pylist()[: self._IMAGE_SAMPLE - self.images_seen]:
                    try:
                        px = decode_image(blob, spec.size, spec.channels).reshape(-1, spec.channels) / 255.0
                    except ValueError:
                        continue
                    self.pixel_sums[0, : spec.channels] += len(px)
                    self.pixel_sums[1, : spec.channels] += px.sum(0)
                    self.pixel_sums[2, : spec.channels] += np.square(px).sum(0)
                    self.images_seen += 1
        lab = self.cfg.features.label
        col = table.column(lab.column)
        if lab.task == "classification":
            self.label_counts.update(v for v in _strings(col) if v is not None)
        else:
            vals, _ = _to_float(col, lab.column)
            vals = vals[np.isfinite(vals)]
            self.label_sums += (len(vals), vals.sum(), np.square(vals).sum())

    @staticmethod
    def _mean_std(n: float, s: float, ss: float) -> tuple[float, float]:
        if n == 0:
            return 0.0, 1.0
        mean = s / n
        std = float(np.sqrt(max(ss / n - mean * mean, 0.0)))
        return float(mean), std if std > 1e-8 else 1.0

    def finish(self) -> Preprocessor:
        cfg = self.cfg
        numeric, cats, image = [], [], None
        vectors: list[VectorState] = []
        texts: list[TextState] = []
        for name, spec in cfg.features.inputs.items():
            column = cfg.features.column_of(name)
            if isinstance(spec, NumericFeature):
                mean, std = self._mean_std(*self.sums.get(name, np.zeros(3)))
                numeric.append(NumericState(name, column, mean, std))
            elif isinstance(spec, CategoryFeature):
                counts = self.counts.get(name, Counter())
                vocab = sorted(
                    (v for v, c in counts.most_common(spec.max_categories) if c >= spec.min_count),
                    key=lambda v: (-counts[v], v),
                )
                dim = spec.embedding_dim or int(min(32, round(1.6 * (len(vocab) + 1) ** 0.56)))
                cats.append(CategoryState(name, column, vocab, max(dim, 1)))
            elif isinstance(spec, ImageFeature):
                ch = spec.channels
                stats = [self._mean_std(*self.pixel_sums[:, c]) for c in range(ch)]
                image = ImageState(name, column, spec.size, ch, [m for m, _ in stats], [s for _, s in stats])
            elif isinstance(spec, VectorFeature):
                vectors.append(VectorState(name, column, self.vector_dims.get(name, 0)))
            elif isinstance(spec, TextFeature):
                texts.append(text_state(name, column, spec))
        lab = cfg.features.label
        if lab.task == "classification":
            classes = sorted(self.label_counts, key=_natural_key)
            if len(classes) < 2:
                raise DataError(
                    f"Label column {lab.column!r} has {len(classes)} distinct value(s) in the training split; "
                    "classification needs at least 2. Check features.label.column or set task: regression."
                )
            label = LabelState(lab.column, lab.task, classes=classes)
        else:
            mean, std = self._mean_std(*self.label_sums)
            label = LabelState(lab.column, lab.task, mean=mean, std=std)
        return Preprocessor(
            key=cfg.data.key, numeric=numeric, categories=cats, image=image, label=label, vectors=vectors, texts=texts
        )


def text_state(name: str, column: str, spec: TextFeature) -> TextState:
    """The preprocessing state of a text feature: hashing for `bag`, else the pretrained encoder's tokenizer."""
    if spec.encoder == "bag":
        return TextState(name, column, "bag", spec.max_length, buckets=spec.buckets)
    from lakenet.models.pretrained import load_text_encoder

    enc = load_text_encoder(spec.encoder)
    length = min(spec.max_length, enc.max_positions)
    return TextState(name, column, "pretrained", length, tokenizer=enc.tokenizer_json, source=enc.source)


def _natural_key(v: str) -> tuple[int, float, str]:
    """Sort class names numerically when they are numbers ('2' < '10'), else alphabetically."""
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)
