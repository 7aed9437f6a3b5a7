"""Audio without a model: decoding (mono, resampling, pad and crop), the log-mel front end, the codec's missing and
corrupt rules, a folder ingested as audio, its type inferred by init, and a split grouped by speaker."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lakenet.config.schema import AudioFeature, SplitConfig
from lakenet.data.codecs.audio import AudioCodec, audio_frames, decode_audio, log_mel
from lakenet.data.split import table_splits

sf = pytest.importorskip("soundfile")


def wav(seconds: float, rate: int = 22050, *, freq: float = 440.0, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt)
    return buf.getvalue()


def test_decode_resamples_mixes_pads_and_crops() -> None:
    short = decode_audio(wav(0.4, 22050, channels=2), 16000, 1.0)
    assert short.shape == (16000,) and short.dtype == np.float32
    assert np.abs(short[:3000]).max() == 0.0 and np.abs(short[8000]) > 0  # silence both sides, the clip centred
    long = decode_audio(wav(3.0, 44100, fmt="FLAC"), 16000, 1.0)
    assert long.shape == (16000,) and np.abs(long).max() == pytest.approx(0.5, abs=0.02)
    for blob, reason in ((b"", "empty_audio"), (b"RIFF not really a wave", "undecodable_audio"), (None, "empty_audio")):
        with pytest.raises(ValueError, match=reason):
            decode_audio(blob, 16000, 1.0)


def test_log_mel_puts_a_tone_in_its_band() -> None:
    low, high = (decode_audio(wav(1.0, freq=f), 16000, 1.0) for f in (300.0, 3000.0))
    mel = log_mel(np.stack([low, high]), 16000, 40)
    assert mel.shape == (2, 40, audio_frames(16000, 1.0)) == (2, 40, 101)
    peak = mel[:, :, 50].argmax(axis=1)
    assert peak[0] < peak[1]  # the higher tone lands in a higher mel band
    assert np.isfinite(mel).all()


def test_codec_quarantines_corrupt_clips_and_fills_missing_ones() -> None:
    spec = AudioFeature(n_mels=16, missing="zeros")
    stats = AudioCodec.stats("clip", "clip", spec, {})
    col = pa.array([wav(1.0), None, b"junk", wav(0.5, 8000)], pa.binary())
    stats.update(col, np.arange(4, dtype=np.uint64))
    codec = AudioCodec(stats.finish())
    assert codec.state.indicator and stats.missing == 1 and stats.files == 2
    bad: list[tuple[int, str]] = []
    out = codec.encode(col, lambda mask, reason, _c: bad.extend((int(i), reason) for i in np.flatnonzero(mask)))
    assert out["audio"].shape == (4, 1, 16, 101) and out["numeric"].ravel().tolist() == [0, 1, 0, 0]
    assert bad == [(2, "undecodable_audio")]
    assert np.abs(out["audio"][1]).max() == 0.0  # a missing clip is the mean spectrogram


def test_an_audio_folder_is_ingested_with_its_facts_and_inferred_as_audio(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from lakenet.data.infer import infer_features
    from lakenet.data.ingest import ingest
    from lakenet.data.sources import open_table

    for label, freq in (("low", 300.0), ("high", 3000.0)):
        (tmp_path / "clips" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "clips" / label / f"s{i}.wav").write_bytes(wav(0.6 + 0.1 * i, freq=freq))
    (tmp_path / "clips" / "low" / "broken.wav").write_bytes(b"")
    (tmp_path / "clips" / "low" / "cover.png").write_bytes(b"\x89PNG")
    res = ingest(tmp_path / "clips", tmp_path / "table")
    assert res.kind == "audio" and res.rows_written == 7
    assert res.files_skipped == ("low/cover.png: an image in a folder of the other kind",)
    t = DeltaTable(str(tmp_path / "table")).to_pyarrow_table()
    assert {"audio", "duration_s", "sample_rate", "channels"} <= set(t.column_names)
    columns = (t.column(c).to_pylist() for c in ("key", "duration_s", "sample_rate"))
    facts = {k.split("#")[0]: (d, r) for k, d, r in zip(*columns, strict=True)}
    assert facts["high/s2.wav"] == (pytest.approx(0.8), 22050) and facts["low/broken.wav"] == (None, None)
    inf = infer_features(open_table(str(tmp_path / "table")), label="label")
    assert inf.features == {"audio": {"type": "audio", "seconds": 1.0}}


def test_a_grouped_split_keeps_every_group_in_one_split() -> None:
    paths = [f"/data/{d}/{v}_s130_p35.wav" for v in (f"voice{i}" for i in range(40)) for d in range(10)]
    table = pa.table({"key": [f"k{i}" for i in range(len(paths))], "path": paths})
    split = SplitConfig(train=0.6, val=0.2, test=0.2, group="path", group_pattern=r"/([^/_]+)_s\d+_p\d+\.wav$")
    codes = table_splits(table, "key", split)
    by_voice: dict[str, set[int]] = {}
    for p, c in zip(paths, codes, strict=True):
        by_voice.setdefault(p.split("/")[-1].split("_")[0], set()).add(int(c))
    assert all(len(s) == 1 for s in by_voice.values())
    assert {next(iter(s)) for s in by_voice.values()} == {0, 1, 2}  # 40 voices reach all three splits
    # a row whose group is missing (or does not match) falls back to its own key
    odd = pa.table({"key": ["a", "b"], "path": [None, "elsewhere"]})
    assert (
        table_splits(odd, "key", split).tolist()
        == table_splits(pa.table({"key": ["a", "b"], "path": [None, None]}), "key", split).tolist()
    )
    with pytest.raises(ValueError, match="one capture group"):
        SplitConfig(group="path", group_pattern="(a)(b)")
