"""Free text: hashed words and bigrams for the trainable bag encoder, or a pretrained encoder's own tokenizer.
A missing text is read as empty text (or quarantined with `missing: quarantine`)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Stats, missing_rule, strings
from lakenet.errors import DataError

__all__ = ["TextCodec", "TextState", "bag_ids", "bag_tokens", "text_input_keys", "text_state"]


@dataclass(frozen=True)
class TextState:
    name: str
    column: str
    kind: str  # "bag" (hashed words and bigrams) or "pretrained" (the encoder's own tokenizer)
    max_length: int
    buckets: int = 0  # bag
    tokenizer: str | None = None  # pretrained: the tokenizer's JSON (Hugging Face `tokenizers` format)
    source: str | None = None  # pretrained: where the encoder came from
    # Bundles written before missing text was read as empty quarantined it: that stays their rule.
    missing: str = "quarantine"  # impute (empty text) | constant | quarantine
    fill: str | None = None  # constant: the text a missing value is read as


def text_input_keys(name: str) -> tuple[str, str]:
    """The encoded input keys of a text feature: token ids and attention mask."""
    return f"text.{name}", f"text.{name}.mask"


_WORD = re.compile(r"\w+")


def bag_tokens(text: str | None, max_length: int) -> list[str]:
    """The words and bigrams of a text, interleaved in text order (w1, w1 w2, w2, ...), at most `max_length`."""
    words = _WORD.findall(text.lower()) if text else []
    tokens: list[str] = []
    for j, w in enumerate(words):
        tokens.append(w)
        if j + 1 < len(words):
            tokens.append(f"{w} {words[j + 1]}")
        if len(tokens) >= max_length:
            break
    return tokens[:max_length]


def bag_ids(texts: list[str | None], buckets: int, max_length: int) -> np.ndarray:
    """(N, max_length) ids of hashed words and bigrams (see bag_tokens), so truncation keeps the start of a
    text; 0 is padding."""
    out = np.zeros((len(texts), max_length), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [zlib.crc32(t.encode()) % buckets + 1 for t in bag_tokens(text, max_length)]
        out[i, : len(ids)] = ids
    return out


def text_state(name: str, column: str, spec: Any) -> TextState:
    """The preprocessing state of a text feature: hashing for `bag`, else the pretrained encoder's tokenizer."""
    rule, constant = missing_rule(spec)
    fill = None if constant is None else str(constant)
    if spec.encoder == "bag":
        return TextState(name, column, "bag", spec.max_length, buckets=spec.buckets, missing=rule, fill=fill)
    from lakenet.data.hf import text_tokenizer

    tok = text_tokenizer(spec.encoder)
    length = min(spec.max_length, tok.max_positions)
    return TextState(
        name, column, "pretrained", length, tokenizer=tok.tokenizer_json, source=tok.source, missing=rule, fill=fill
    )


class TextStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        self.missing += sum(v is None for v in strings(col))

    def merge(self, other: TextStats) -> None:
        self.missing += other.missing

    def finish(self) -> TextState:
        return text_state(self.name, self.column, self.spec)


class TextCodec(Codec[TextState]):
    type = "text"
    state_class = TextState

    def __init__(self, state: TextState) -> None:
        super().__init__(state)
        self._tokenizer: Any = None

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)):
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}, but a text feature needs strings. Set "
                f"features.{name}.type to numeric or category, or pick another column."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> TextStats:
        return TextStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> TextCodec:
        # Only presence is checked before statistics exist: no tokenizer is loaded.
        rule, constant = missing_rule(spec)
        return cls(TextState(name, column, "bag", 1, buckets=16, missing=rule, fill=constant))

    @property
    def logical_type(self) -> str:
        return "string"

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            s = self.state
            assert s.tokenizer is not None
            tok = Tokenizer.from_str(s.tokenizer)
            pad = tok.padding or {}
            tok.enable_truncation(max_length=s.max_length)
            tok.enable_padding(
                length=s.max_length, pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]"))
            )
            self._tokenizer = tok
        return self._tokenizer

    def encode_texts(self, values: list[str | None]) -> dict[str, np.ndarray]:
        s = self.state
        ids_key, mask_key = text_input_keys(s.name)
        if s.kind == "bag":
            return {ids_key: bag_ids(values, s.buckets, s.max_length)}
        encs = self.tokenizer().encode_batch([v or "" for v in values])
        ids = np.array([e.ids for e in encs], dtype=np.int64).reshape(len(values), s.max_length)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(values), s.max_length)
        return {ids_key: ids, mask_key: mask}

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        values = strings(col)
        if s.missing == "quarantine":
            mark(np.array([v is None for v in values], dtype=bool), "missing_text", s.column)
        elif s.missing == "constant":
            values = [s.fill if v is None else v for v in values]
        return self.encode_texts(values)

    def input_keys(self) -> list[str]:
        ids, mask = text_input_keys(self.state.name)
        return [ids, mask] if self.state.kind == "pretrained" else [ids]

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        s = self.state
        ids_key, mask_key = text_input_keys(s.name)
        vocab = s.buckets + 1 if s.kind == "bag" else self.tokenizer().get_vocab_size()
        ids = rng.integers(1, vocab, (n, s.max_length)) if rng else np.zeros((n, s.max_length), np.int64)
        mask = np.ones((n, s.max_length), dtype=np.int64)
        if rng is not None:  # rows of different lengths, padded at the end
            lengths = rng.integers(1, s.max_length + 1, n)
            mask = (np.arange(s.max_length)[None, :] < lengths[:, None]).astype(np.int64)
            ids = ids * mask
        out = {ids_key: ids.astype(np.int64)}
        if s.kind == "pretrained":
            out[mask_key] = mask
        return out
