"""Voice: spoken digits synthesised offline with espeak-ng in many voices, ingested as an audio folder, trained
with the split grouped by voice, so the test split holds only voices training never heard; corrupt files
quarantined; a WAV file posted to the server (multipart) gets the batch prediction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.examples.spoken_digits import VOICE_PATTERN, espeak, write_spoken_digits

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(espeak() is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"),
]


def voice_config(table: str, name: str, **engine: Any) -> dict[str, Any]:
    return {
        "data": {"table": table, "max_bad_fraction": 0.05,
                 "split": {"train": 0.6, "val": 0.15, "test": 0.25, "group": "path", "group_pattern": VOICE_PATTERN}},
        "features": {"label": "label", "audio": {"type": "audio", "n_mels": 40}},
        "model": {"width": 32, "depth": 2},
        "trainer": {"epochs": 20, "batch_size": 32, "learning_rate": 0.003},
        "engine": engine or {"type": "local"},
        "registry": {"name": name},
    }  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    wd = tmp_path_factory.mktemp("voice")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = write_spoken_digits(wd / "wav", voice_count=20, speeds=(130, 175), pitches=(50,))
    (folder / "three" / "broken_s130_p50.wav").write_bytes(b"")  # an empty file
    (folder / "four" / "noise_s130_p50.wav").write_bytes(b"RIFF\x00\x00 this is not a wave file")
    table = lakenet.ingest(folder, wd / "spoken").table
    fit = lakenet.fit(voice_config(table, "spoken"), progress=False)
    yield {"wd": wd, "table": table, "fit": fit, "folder": folder}
    mp.undo()


def test_held_out_voices_are_recognised(trained: dict[str, Any]) -> None:
    fit, wd = trained["fit"], trained["wd"]
    assert fit.metrics["test_accuracy"] >= 0.9, fit.metrics
    import json
    import re

    from lakenet.config import load_config
    from lakenet.data.split import TEST, TRAIN, table_splits

    cfg = load_config(voice_config(trained["table"], "spoken"))
    rows = DeltaTable(trained["table"]).to_pyarrow_table(columns=["key", "path"])
    codes = table_splits(rows, "key", cfg.data.split)
    voice = [m.group(1) for p in rows.column("path").to_pylist() if (m := re.search(VOICE_PATTERN, p))]
    test_voices = {v for v, c in zip(voice, codes, strict=True) if c == TEST}
    train_voices = {v for v, c in zip(voice, codes, strict=True) if c == TRAIN}
    assert test_voices and not test_voices & train_voices  # the test voices were never heard in training
    bad = json.loads((wd / "reports" / "spoken" / "profile.json").read_text())["bad_rows"]["by_reason"]
    assert bad == {"empty_audio": 1, "undecodable_audio": 1}


def test_a_posted_wav_gets_the_batch_prediction(trained: dict[str, Any]) -> None:
    fit, wd = trained["fit"], trained["wd"]
    res = lakenet.predict(fit.model_uri, trained["table"], str(wd / "scored"))
    assert res.bad_rows == 2
    batch = DeltaTable(str(wd / "scored")).to_pandas().set_index("key")
    files = sorted((trained["folder"] / "seven").glob("*.wav"))[:3]
    handle = lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning")
    assert handle is not None
    try:
        for f in files:
            r = httpx.post(f"{handle.url}/v1/predict", files={"audio": (f.name, f.read_bytes(), "audio/wav")})
            assert r.status_code == 200, r.text
            got = r.json()["predictions"][0]
            key = next(k for k in batch.index if k.startswith(f"seven/{f.name}#"))
            assert got["prediction"] == batch.loc[key, "prediction"]
            assert got["confidence"] == pytest.approx(batch.loc[key, "confidence"], abs=1e-5)
        r = httpx.post(f"{handle.url}/v1/predict", files={"audio": ("x.wav", b"not audio", "audio/wav")})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "undecodable_audio"
    finally:
        handle.stop()
