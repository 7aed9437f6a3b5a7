"""Images stored as encoded bytes (PNG, JPEG, ...): decoded with Pillow, resized, normalised with training
statistics. Empty, truncated, undecodable or oversized images are quarantined; a row with no image at all is
quarantined too unless `missing: zeros` (a blank image plus an indicator input)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Moments, Stats, indicator
from lakenet.errors import DataError

__all__ = ["MAX_IMAGE_PIXELS", "ImageCodec", "ImageState", "decode_image", "image_pixels"]

# Decoded pixels one image may have. Pillow only warns between its own limit (89 Mpx) and twice that, so a
# 144-Mpixel PNG would be decoded (~430 MB of RGB) for a 32×32 input; the header is read first and such an image is
# refused as `image_too_large`. The server applies its own, lower limits per image and per request.
MAX_IMAGE_PIXELS = 64 * 2**20
_STATS_IMAGES = 512  # images per partial result used for the pixel mean and standard deviation


@dataclass(frozen=True)
class ImageState:
    name: str
    column: str
    size: int
    channels: int
    mean: list[float]
    std: list[float]
    missing: str = "quarantine"  # quarantine | zeros
    indicator: bool = False


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


def _binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


class ImageStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.channels = [Moments() for _ in range(spec.channels)]
        self.images = self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        spec = self.spec
        blobs = col.to_pylist()
        self.missing += sum(b is None for b in blobs)
        for blob in blobs:
            if self.images >= _STATS_IMAGES:
                break
            try:
                px = decode_image(blob, spec.size, spec.channels).reshape(-1, spec.channels) / 255.0
            except ValueError:
                continue
            for c, m in enumerate(self.channels):
                m.update(px[:, c])
            self.images += 1

    def merge(self, other: ImageStats) -> None:
        for mine, theirs in zip(self.channels, other.channels, strict=True):
            mine.merge(theirs)
        self.images += other.images
        self.missing += other.missing

    def finish(self) -> ImageState:
        stats = [m.mean_std() for m in self.channels]
        spec = self.spec
        return ImageState(
            self.name,
            self.column,
            spec.size,
            spec.channels,
            [m for m, _ in stats],
            [s for _, s in stats],
            spec.missing,
            spec.missing == "zeros" and self.missing > 0,
        )


class ImageCodec(Codec[ImageState]):
    type = "image"
    state_class = ImageState

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        if not _binary(dtype):
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}, but an image feature needs encoded image "
                f"bytes (binary). Ingest the images with `lakenet ingest <folder> --table ...`, or change "
                f"features.{name}.type."
            )

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> ImageStats:
        return ImageStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> ImageCodec:
        ch = spec.channels
        return cls(ImageState(name, column, spec.size, ch, [0.0] * ch, [1.0] * ch, spec.missing))

    def numeric_width(self) -> int:
        return int(self.state.indicator)

    @property
    def logical_type(self) -> str:
        return "binary"

    def encode(self, col: pa.ChunkedArray | pa.Array, mark: Mark) -> dict[str, np.ndarray]:
        s = self.state
        n = len(col)
        blobs = col.to_pylist()
        missing = np.array([b is None for b in blobs], dtype=bool)
        if s.missing == "quarantine":
            mark(missing, "missing_image", s.column)
        pixels = np.zeros((n, s.size, s.size, s.channels), dtype=np.uint8)
        for i, blob in enumerate(blobs):
            if blob is None:
                continue
            try:
                pixels[i] = decode_image(blob, s.size, s.channels)
            except ValueError as err:
                mark(np.arange(n) == i, str(err), s.column)
        # (N, H, W, C) uint8 -> (N, C, H, W) float32, normalised with training statistics
        arr = pixels.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        mean = np.asarray(s.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(s.std, dtype=np.float32).reshape(1, -1, 1, 1)
        image = (arr - mean) / std
        image[missing] = 0.0  # a missing image is the mean image, not a black one
        out = {"image": image}
        if s.indicator:
            out["numeric"] = indicator(missing)
        return out

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        s = self.state
        shape = (n, s.channels, s.size, s.size)
        out = {"image": rng.standard_normal(shape).astype(np.float32) if rng else np.zeros(shape, np.float32)}
        if s.indicator:
            out["numeric"] = np.zeros((n, 1), np.float32)
        return out
