"""One codec per feature type, looked up by the config's `type:`. A new feature type is one module here plus
its config class in `lakenet.config.schema`."""

from __future__ import annotations

from typing import Any

from lakenet.data.codecs.audio import AudioCodec, AudioState
from lakenet.data.codecs.base import Codec, Mark, Moments, Sample, Stats, blank_to_null, strings, to_float
from lakenet.data.codecs.boolean import BooleanCodec, BooleanState
from lakenet.data.codecs.category import CategoryCodec, CategoryState
from lakenet.data.codecs.datetime import DatetimeCodec, DatetimeState
from lakenet.data.codecs.image import ImageCodec, ImageState
from lakenet.data.codecs.numeric import NumericCodec, NumericState
from lakenet.data.codecs.text import TextCodec, TextState
from lakenet.data.codecs.vector import VectorCodec, VectorState

__all__ = [
    "CODECS",
    "AudioState",
    "BooleanState",
    "CategoryState",
    "Codec",
    "DatetimeState",
    "ImageState",
    "Mark",
    "Moments",
    "NumericState",
    "Sample",
    "Stats",
    "TextState",
    "VectorState",
    "blank_to_null",
    "codec_for",
    "strings",
    "to_float",
]

CODECS: dict[str, type[Codec[Any]]] = {
    c.type: c
    for c in (NumericCodec, CategoryCodec, BooleanCodec, DatetimeCodec, ImageCodec, AudioCodec, VectorCodec, TextCodec)
}


def codec_for(feature_type: str) -> type[Codec[Any]]:
    from lakenet.errors import ConfigError

    try:
        return CODECS[feature_type]
    except KeyError:
        raise ConfigError(
            f"Unknown feature type {feature_type!r}; known: {', '.join(sorted(CODECS))}. Upgrade lakenet?"
        ) from None
