"""Audio stored as encoded bytes (WAV, FLAC, OGG/Vorbis, MP3 where libsndfile reads it): decoded with soundfile,
mixed to mono, resampled, padded or cropped to a fixed length, and turned into a log-mel spectrogram in torch
(`torch.stft` and a mel filter bank: torchaudio has no build for the torch lakenet pins), normalised per mel band
with training statistics. Empty, undecodable or over-long files are quarantined; a row with no audio at all is
quarantined too unless `missing: zeros` (silence plus an indicator input)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs.base import Codec, Mark, Moments, Stats, indicator
from lakenet.errors import DataError

__all__ = ["MAX_AUDIO_SECONDS", "AudioCodec", "AudioState", "audio_frames", "decode_audio", "log_mel"]

# Longer files are refused (`audio_too_long`) before they are decoded: a 1-second model has no use for an hour
# of audio, and decoding it would take ~230 MB per channel at 16 kHz float32.
MAX_AUDIO_SECONDS = 600.0
_STATS_FILES = 512  # files per partial result used for the per-band mean and standard deviation
_N_FFT, _WIN_S, _HOP_S = 512, 0.025, 0.010  # 25 ms windows every 10 ms (the usual speech front end)


@dataclass(frozen=True)
class AudioState:
    name: str
    column: str
    sample_rate: int
    seconds: float
    n_mels: int
    mean: list[float]  # per mel band, of the log-mel values on training files
    std: list[float]
    missing: str = "quarantine"  # quarantine | zeros
    indicator: bool = False

    @property
    def frames(self) -> int:
        return audio_frames(self.sample_rate, self.seconds)


def _hop(sample_rate: int) -> int:
    return max(1, round(sample_rate * _HOP_S))


def audio_frames(sample_rate: int, seconds: float) -> int:
    """Spectrogram frames for a clip of `seconds` (torch.stft with center=True: one per hop, plus one)."""
    return 1 + round(sample_rate * seconds) // _hop(sample_rate)


def audio_info(blob: bytes) -> tuple[float, int, int] | None:
    """(seconds, sample rate, channels) from the file header (nothing decoded); None if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(blob))
    except (RuntimeError, ValueError, TypeError, sf.LibsndfileError):
        return None
    return float(info.duration), int(info.samplerate), int(info.channels)


def decode_audio(blob: bytes | None, sample_rate: int, seconds: float) -> np.ndarray:
    """Decode, mix to mono, resample to `sample_rate` and pad (silence, both sides) or crop (the middle) to
    `seconds`: (samples,) float32 in [-1, 1]. Raises ValueError(reason): empty_audio, audio_too_long or
    undecodable_audio."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if not blob:
        raise ValueError("empty_audio")
    info = audio_info(blob)
    if info is None:
        raise ValueError("undecodable_audio")
    if info[0] > MAX_AUDIO_SECONDS:
        raise ValueError("audio_too_long")
    try:
        data, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, sf.LibsndfileError):
        raise ValueError("undecodable_audio") from None
    if data.size == 0:
        raise ValueError("empty_audio")
    wave = data.mean(axis=1)  # (samples, channels) -> (samples,)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, sample_rate // g, int(rate) // g).astype(np.float32)
    if not np.isfinite(wave).all():
        raise ValueError("undecodable_audio")
    n = round(sample_rate * seconds)
    if len(wave) >= n:
        start = (len(wave) - n) // 2
        return np.ascontiguousarray(wave[start : start + n], dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    start = (n - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters evenly spaced on the HTK mel scale, from 0 Hz to Nyquist."""

    def mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(mel(np.array(0.0)), mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None, :]) / np.maximum(upper - center, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(waves: np.ndarray, sample_rate: int, n_mels: int) -> np.ndarray:
    """(N, samples) waveforms -> (N, n_mels, frames) log-mel power spectrograms (natural log, floor 1e-6)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
    win = max(1, round(sample_rate * _WIN_S))
    n_fft = max(_N_FFT, 1 << (win - 1).bit_length())
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=_hop(sample_rate),
        win_length=win,
        window=torch.hann_window(win),
        center=True,
        return_complex=True,
    )  # (N, n_fft // 2 + 1, frames)
    power = spec.real.square() + spec.imag.square()
    mel = torch.from_numpy(_mel_filters(sample_rate, n_fft, n_mels)) @ power  # (N, n_mels, frames)
    return torch.log(mel + 1e-6).numpy()


def _binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


class AudioStats(Stats):
    def __init__(self, name: str, column: str, spec: Any) -> None:
        self.name, self.column, self.spec = name, column, spec
        self.bands = [Moments() for _ in range(spec.n_mels)]
        self.files = self.missing = 0

    def update(self, col: pa.ChunkedArray | pa.Array, hashes: np.ndarray) -> None:
        spec = self.spec
        blobs = col.to_pylist()
        self.missing += sum(b is None for b in blobs)
        waves: list[np.ndarray] = []
        for blob in blobs:
            if self.files + len(waves) >= _STATS_FILES:
                break
            try:
                waves.append(decode_audio(blob, spec.sample_rate, spec.seconds))
            except ValueError:
                continue
        if not waves:
            return
        mel = log_mel(np.stack(waves), spec.sample_rate, spec.n_mels)  # (n, M, T)
        for b, m in enumerate(self.bands):
            m.update(mel[:, b, :].ravel().astype(np.float64))
        self.files += len(waves)

    def merge(self, other: AudioStats) -> None:
        for mine, theirs in zip(self.bands, other.bands, strict=True):
            mine.merge(theirs)
        self.files += other.files
        self.missing += other.missing

    def finish(self) -> AudioState:
        stats = [m.mean_std() for m in self.bands]
        spec = self.spec
        return AudioState(
            self.name,
            self.column,
            spec.sample_rate,
            spec.seconds,
            spec.n_mels,
            [m for m, _ in stats],
            [s for _, s in stats],
            spec.missing,
            spec.missing == "zeros" and self.missing > 0,
        )


class AudioCodec(Codec[AudioState]):
    type = "audio"
    state_class = AudioState

    @classmethod
    def check(cls, name: str, column: str, dtype: pa.DataType) -> None:
        if not _binary(dtype):
            raise DataError(
                f"Column {column!r} (feature {name!r}) has type {dtype}, but an audio feature needs encoded audio "
                f"bytes (binary: WAV, FLAC, OGG). Ingest the files with `lakenet ingest <folder> --table ...`, or "
                f"change features.{name}.type."
            )
        try:
            import soundfile  # noqa: F401
        except ImportError:
            raise DataError(
                "Audio features need the soundfile package (libsndfile): pip install 'lakenet[audio]'"
            ) from None

    @classmethod
    def stats(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> AudioStats:
        return AudioStats(name, column, spec)

    @classmethod
    def probe(cls, name: str, column: str, spec: Any, hints: dict[str, Any]) -> AudioCodec:
        m = spec.n_mels
        return cls(AudioState(name, column, spec.sample_rate, spec.seconds, m, [0.0] * m, [1.0] * m, spec.missing))

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
            mark(missing, "missing_audio", s.column)
        waves = np.zeros((n, round(s.sample_rate * s.seconds)), dtype=np.float32)
        for i, blob in enumerate(blobs):
            if blob is None:
                continue
            try:
                waves[i] = decode_audio(blob, s.sample_rate, s.seconds)
            except ValueError as err:
                mark(np.arange(n) == i, str(err), s.column)
        mel = log_mel(waves, s.sample_rate, s.n_mels) if n else np.zeros((0, s.n_mels, s.frames), np.float32)
        mean = np.asarray(s.mean, dtype=np.float32).reshape(1, -1, 1)
        std = np.asarray(s.std, dtype=np.float32).reshape(1, -1, 1)
        spec = ((mel - mean) / std)[:, None, :, :]  # (N, M, T) -> (N, 1, M, T)
        spec[missing] = 0.0  # a missing clip is the mean spectrogram
        out = {"audio": spec.astype(np.float32)}
        if s.indicator:
            out["numeric"] = indicator(missing)
        return out

    def example(self, n: int, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        s = self.state
        shape = (n, 1, s.n_mels, s.frames)
        out = {"audio": rng.standard_normal(shape).astype(np.float32) if rng else np.zeros(shape, np.float32)}
        if s.indicator:
            out["numeric"] = np.zeros((n, 1), np.float32)
        return out
