"""Every missing-value rule, end to end: a tiny model is trained on a generated table with missing cells, then
batch `predict` and `/v1/predict` on a real server on 127.0.0.1 score the same rows with the same results. Rows
with a missing value are scored (never dropped or quarantined) unless the rule is `quarantine`; the value a
missing cell is read as is the one learned on the training split and stored in the bundle; a present but
corrupt value in the same table is still quarantined.

Rules: numeric, boolean, category, datetime and text take `impute` (the default), `{constant: v}` and
`quarantine`; vector, image and audio take `zeros` (with an indicator input) and `quarantine`; a missing label
leaves the row out of training, counts it as unlabelled and still scores it."""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

import lakenet
from lakenet.models.bundle import Bundle

pytestmark = pytest.mark.integration

N = 300  # rows of the tabular table
VEC = 4  # vector width
TRAINER = {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "early_stopping": None, "baseline": "none"}

# The tabular table's features: (name, type, missing rule); text and vectors with small encoders.
TEXT = {"type": "text", "buckets": 64, "max_length": 8, "embedding_dim": 4}
TABULAR: dict[str, dict[str, Any]] = {
    "n_imp": {"type": "numeric"},
    "n_const": {"type": "numeric", "missing": {"constant": -3.5}},
    "n_quar": {"type": "numeric", "missing": "quarantine"},
    "b_imp": {"type": "boolean"},
    "b_const": {"type": "boolean", "missing": {"constant": True}},
    "b_quar": {"type": "boolean", "missing": "quarantine"},
    "c_imp": {"type": "category"},
    "c_const": {"type": "category", "missing": {"constant": "b"}},
    "c_quar": {"type": "category", "missing": "quarantine"},
    "d_imp": {"type": "datetime"},
    "d_const": {"type": "datetime", "missing": {"constant": "2024-06-01T12:00:00Z"}},
    "d_quar": {"type": "datetime", "missing": "quarantine"},
    "t_imp": TEXT,
    "t_const": {**TEXT, "missing": {"constant": "nothing to say"}},
    "t_quar": {**TEXT, "missing": "quarantine"},
    "v_zeros": {"type": "vector", "missing": "zeros"},
    "v_quar": {"type": "vector", "missing": "quarantine"},
}
QUARANTINED = ["n_quar", "b_quar", "c_quar", "d_quar", "t_quar", "v_quar"]
# The reason a missing value in a `quarantine` column is set aside with.
REASON = {"n": "missing_numeric", "b": "missing_boolean", "c": "missing_category", "d": "missing_datetime",
          "t": "missing_text", "v": "missing_vector"}  # fmt: skip
LEARNED = ["n_imp", "b_imp", "d_imp"]  # fills learned on the training split (medians, shares)
UNLABELLED = range(20, 30)  # training rows without a label
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("n_imp", pa.float64()),
        ("n_const", pa.float64()),
        ("n_quar", pa.float64()),
        ("b_imp", pa.bool_()),  # Arrow booleans ...
        ("b_const", pa.string()),  # ... and yes/no strings (a blank one is missing)
        ("b_quar", pa.bool_()),
        ("c_imp", pa.string()),
        ("c_const", pa.string()),
        ("c_quar", pa.string()),
        ("d_imp", pa.string()),
        ("d_const", pa.string()),
        ("d_quar", pa.string()),
        ("t_imp", pa.string()),
        ("t_const", pa.string()),
        ("t_quar", pa.string()),
        ("v_zeros", pa.list_(pa.float32())),
        ("v_quar", pa.list_(pa.float32())),
    ]
)


# ---- helpers -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One working directory (own MLflow sqlite store) for every model of this module."""
    path = tmp_path_factory.mktemp("missing_rules")
    mp = pytest.MonkeyPatch()
    mp.chdir(path)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield path
    mp.undo()


def _fit(wd: Path, name: str, table: Path, features: dict[str, Any], **model: Any) -> lakenet.FitResult:
    cfg = {
        "data": {"table": str(table), "max_bad_fraction": 0.25},
        "features": {"label": {"column": "y", "task": "regression"}, **features},
        "model": {"width": 8, "depth": 1, **model},
        "trainer": TRAINER,
        "registry": {"name": name},
    }
    return lakenet.fit(cfg, progress=False, workdir=wd)


def _json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as a client sends them: bytes base64, booleans as JSON booleans, no key; a missing value is null in
    even rows, absent in odd."""
    out = []
    for i, row in enumerate(table.drop_columns(["key"]).to_pylist()):
        body = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in row.items()}
        if "b_const" in body:  # yes/no strings in the table; a JSON client sends true, false or null
            body["b_const"] = {"yes": True, "no": False}.get((body["b_const"] or "").strip())
        out.append(body if i % 2 == 0 else {k: v for k, v in body.items() if v is not None})
    return out


def _score_both(fit: lakenet.FitResult, wd: Path, rows: pa.Table, name: str) -> dict[str, dict[str, Any]]:
    """Score `rows` with batch predict and with the served model; assert both give the same output per row and
    return the batch output by key."""
    src = wd / f"{name}.parquet"
    pq.write_table(rows, src)
    scored = lakenet.predict(fit.model_uri, str(src), str(wd / f"{name}_scored"), workdir=wd)
    assert scored.rows == rows.num_rows  # nothing is dropped
    batch = {r["key"]: r for r in DeltaTable(scored.table).to_pyarrow_table().to_pylist()}
    assert set(batch) == set(rows.column("key").to_pylist())
    assert scored.bad_rows == sum(r["error"] is not None for r in batch.values())
    with lakenet.serve(fit.model_uri, port=0, background=True, log_level="warning", workdir=wd) as server:
        answer = httpx.post(f"{server.url}/v1/predict", json={"rows": _json_rows(rows)}, timeout=60)
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"]
    assert len(served) == rows.num_rows
    for key, got in zip(rows.column("key").to_pylist(), served, strict=True):
        want = batch[key]
        assert got["error"] == want["error"], key
        if want["error"] is None:
            assert got["prediction"] == pytest.approx(want["prediction"], rel=1e-5, abs=1e-5), key
        else:
            assert got["prediction"] is None and want["prediction"] is None, key
    return batch


def _parts(bundle: Bundle, table: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Each feature's encoding of `table` by the bundle's own codecs (what the model is fed)."""
    return {c.name: c.encode(table.column(c.column), lambda *_: None) for c in bundle.preprocessor.features}


def _train_split(table: pa.Table) -> np.ndarray:
    """A mask of the rows in the training split, as training drew it (the default split)."""
    from lakenet.config.schema import SplitConfig
    from lakenet.data.split import TRAIN, table_splits

    return np.asarray(table_splits(table, "key", SplitConfig())) == TRAIN


def _epoch_seconds(iso: str | None) -> float:
    return pd.Timestamp(iso).timestamp() if iso is not None else float("nan")


# ---- numeric, boolean, category, datetime, text and vector: one model ---------------------------------------------
def _tabular_table() -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.normal(size=N)
    hole = rng.random((N, 8)) < 0.12  # missing cells of the imputed / zero-filled columns
    letters = rng.choice(["a", "b", "c", "d"], N)
    dates = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 365 * 24, N), unit="h")
    iso = [d.isoformat() for d in dates]
    words = rng.choice(["good", "bad", "fine", "slow", "fast"], (N, 2))
    texts = [" ".join(w) for w in words]
    vecs = rng.normal(size=(N, VEC)).astype(np.float32)
    flags = rng.random(N) < 0.4
    cols: dict[str, list[Any]] = {
        "key": [f"r{i:03d}" for i in range(N)],
        "n_imp": [None if h else float(v) for v, h in zip(x, hole[:, 0], strict=True)],
        "n_const": [None if h else float(v) for v, h in zip(-x, hole[:, 1], strict=True)],
        "n_quar": [float(v) for v in x * 2],
        "b_imp": [None if h else bool(f) for f, h in zip(flags, hole[:, 2], strict=True)],
        "b_const": [" " if h else ("yes" if f else "no") for f, h in zip(flags, hole[:, 3], strict=True)],
        "b_quar": [bool(f) for f in ~flags],
        "c_imp": [
            ("  " if i % 2 else None) if h else c for i, (c, h) in enumerate(zip(letters, hole[:, 4], strict=True))
        ],
        "c_const": [None if h else c for c, h in zip(letters, hole[:, 5], strict=True)],
        "c_quar": list(letters),
        "d_imp": [None if h else d for d, h in zip(iso, hole[:, 6], strict=True)],
        "d_const": [None if h else d for d, h in zip(iso, hole[:, 7], strict=True)],
        "d_quar": list(iso),
        "t_imp": [None if h else t for t, h in zip(texts, hole[:, 0], strict=True)],
        "t_const": [None if h else t for t, h in zip(texts, hole[:, 1], strict=True)],
        "t_quar": list(texts),
        "v_zeros": [None if h else list(map(float, v)) for v, h in zip(vecs, hole[:, 2], strict=True)],
        "v_quar": [list(map(float, v)) for v in vecs],
    }
    # three rows with a missing value in each quarantine column, set aside in training
    for j, name in enumerate(QUARANTINED):
        for i in range(3 * j, 3 * j + 3):
            cols[name][i] = None
    # the learned fills must not depend on whether training counts set-aside or unlabelled rows: empty there
    for i in [*range(3 * len(QUARANTINED)), *UNLABELLED]:
        for name in LEARNED:
            cols[name][i] = None
    y = x + 0.5 * (letters == "a") + 0.3 * flags + rng.normal(scale=0.1, size=N)
    label = [None if i in UNLABELLED else float(v) for i, v in enumerate(y)]
    return pa.Table.from_pydict(cols, schema=SCHEMA).append_column("y", pa.array(label, pa.float64()))


@pytest.fixture(scope="module")
def tabular(wd: Path) -> dict[str, Any]:
    table = _tabular_table()
    path = wd / "tabular.parquet"
    pq.write_table(table, path)
    fit = _fit(wd, "missing_tabular", path, TABULAR, architecture="mlp")
    return {"table": table, "fit": fit, "bundle": Bundle.load(fit.bundle_dir)}


def _present_row() -> dict[str, Any]:
    return {
        "n_imp": 0.3, "n_const": -0.3, "n_quar": 0.6, "b_imp": True, "b_const": "no", "b_quar": False,
        "c_imp": "a", "c_const": "c", "c_quar": "a", "d_imp": "2024-03-01T08:00:00+00:00",
        "d_const": "2024-03-01T08:00:00+00:00", "d_quar": "2024-03-01T08:00:00+00:00", "t_imp": "good fast",
        "t_const": "good fast", "t_quar": "good fast", "v_zeros": [0.1, 0.2, 0.3, 0.4], "v_quar": [0.1, 0.2, 0.3, 0.4],
    }  # fmt: skip


def _fills(bundle: Bundle) -> dict[str, Any]:
    """The value each imputing feature's missing cell is read as, from the bundle, as a raw column value."""
    st = {c.name: c.state for c in bundle.preprocessor.features}
    iso = {n: pd.Timestamp(st[n].fill, unit="s", tz="UTC").isoformat() for n in ("d_imp", "d_const")}
    return {
        "n_imp": st["n_imp"].fill, "n_const": st["n_const"].fill, "b_imp": st["b_imp"].fill,
        "b_const": "yes" if st["b_const"].fill == 1.0 else "no", "c_const": st["c_const"].fill, **iso,
        "t_imp": "%%% ...",  # no word at all: the same tokens as empty text
        "t_const": st["t_const"].fill,
    }  # fmt: skip


def _probe_rows(bundle: Bundle) -> pa.Table:
    """A present row; per feature a row with that value missing (null, or blank where it is a string) and a row
    with the stored fill written out; present-but-corrupt values; the unlabelled training rows."""
    base = _present_row()
    rows: list[dict[str, Any]] = [{"key": "present", **base}]
    for name in TABULAR:
        rows.append({**base, "key": f"null_{name}", name: None})
    for name in ("c_imp", "c_const", "c_quar", "t_imp", "t_const", "t_quar", "d_imp"):  # blank strings
        rows.append({**base, "key": f"blank_{name}", name: "   "})
    for name, value in _fills(bundle).items():
        if name != "b_imp":  # a share of true (a fraction) is no value a boolean column can hold
            rows.append({**base, "key": f"fill_{name}", name: value})
    rows.append({**base, "key": "corrupt_d_imp", "d_imp": "yesterday at noon"})
    rows.append({**base, "key": "corrupt_v_zeros", "v_zeros": [1.0, 2.0, 3.0]})  # a wrong length
    rows.append({**base, "key": "unknown_c_quar", "c_quar": "never seen"})  # unknown is neither missing nor bad
    return pa.Table.from_pylist(rows, schema=SCHEMA)


@pytest.fixture(scope="module")
def tabular_scored(tabular: dict[str, Any], wd: Path) -> dict[str, Any]:
    probe = _probe_rows(tabular["bundle"])
    unlabelled = tabular["table"].drop_columns(["y"]).take(list(UNLABELLED))
    rows = pa.concat_tables([probe, unlabelled])
    return {"rows": rows, "batch": _score_both(tabular["fit"], wd, rows, "tabular_probe")}


def test_training_counts_missing_cells_and_sets_aside_only_the_quarantine_rules(tabular: dict[str, Any]) -> None:
    profile = json.loads(tabular["fit"].reports["profile"].with_suffix(".json").read_text())
    rules = {name: profile["missing"][name]["rule"] for name in TABULAR}
    short = {"imp": "impute", "const": "constant", "quar": "quarantine", "zeros": "zeros"}
    assert rules == {name: short[name.split("_")[1]] for name in TABULAR}
    table = tabular["table"]
    for name in TABULAR:
        nulls = sum(v is None or (isinstance(v, str) and not v.strip()) for v in table.column(name).to_pylist())
        assert profile["missing"][name]["missing"] == nulls > 0, name
    assert profile["bad_rows"]["by_reason"] == {REASON[n[0]]: 3 for n in QUARANTINED}
    assert profile["unlabelled"]["total"] == len(UNLABELLED)


def test_the_stored_fills_are_the_ones_learned_on_the_training_split(tabular: dict[str, Any]) -> None:
    table, st = tabular["table"], {c.name: c.state for c in tabular["bundle"].preprocessor.features}
    train = _train_split(table)

    def present(name: str) -> np.ndarray:
        vals = [v for v, t in zip(table.column(name).to_pylist(), train, strict=True) if t and v is not None]
        return np.array([_epoch_seconds(v) for v in vals] if name.startswith("d_") else vals, dtype=np.float64)

    assert st["n_imp"].fill == pytest.approx(float(np.median(present("n_imp"))))
    assert st["b_imp"].fill == pytest.approx(float(present("b_imp").mean()))
    assert st["d_imp"].fill == pytest.approx(float(np.median(present("d_imp"))))
    assert st["n_const"].fill == -3.5 and st["b_const"].fill == 1.0 and st["c_const"].fill == "b"
    assert st["d_const"].fill == _epoch_seconds("2024-06-01T12:00:00Z")
    assert st["t_const"].fill == "nothing to say" and st["t_imp"].missing == "impute"
    assert st["c_imp"].missing == "impute" and st["v_zeros"].missing == "zeros"
    # an indicator input where a missing value is filled and training saw one; none where it is set aside
    for name in ("n_imp", "n_const", "b_imp", "b_const", "d_imp", "d_const", "v_zeros"):
        assert st[name].indicator, name
    for name in QUARANTINED:
        assert st[name].missing == "quarantine" and not getattr(st[name], "indicator", False), name


def test_missing_values_are_scored_the_same_by_predict_and_serve(tabular_scored: dict[str, Any]) -> None:
    batch = tabular_scored["batch"]
    for key, row in batch.items():
        name = key.split("_", 1)[1] if "_" in key else ""
        if key.startswith(("null_", "blank_")) and name in QUARANTINED:
            assert row["error"] == REASON[name[0]], key  # the quarantine rule sets the row aside ...
        elif key == "corrupt_d_imp":
            assert row["error"] == "not_a_datetime"  # ... and corrupt is bad whatever the rule
        elif key == "corrupt_v_zeros":
            assert row["error"] == "wrong_vector_length"
        else:  # missing is data: filled and scored (unlabelled training rows too)
            assert row["error"] is None and np.isfinite(row["prediction"]), key
    assert sum(k.startswith("r") for k in batch) == len(UNLABELLED)


def test_a_missing_value_is_read_as_the_stored_fill(tabular: dict[str, Any], tabular_scored: dict[str, Any]) -> None:
    bundle, rows, batch = tabular["bundle"], tabular_scored["rows"], tabular_scored["batch"]
    by_key = {k: i for i, k in enumerate(rows.column("key").to_pylist())}
    parts = _parts(bundle, rows)

    def enc(name: str, key: str, block: str) -> np.ndarray:
        return parts[name][block][by_key[key]]

    # numbers, booleans and dates: the fill's encoding, plus the indicator input set to 1
    for name in ("n_imp", "n_const", "b_const", "d_imp", "d_const"):
        for missing in [f"null_{name}"] + ([f"blank_{name}"] if f"blank_{name}" in by_key else []):
            got, want = enc(name, missing, "numeric"), enc(name, f"fill_{name}", "numeric")
            np.testing.assert_allclose(got[:-1], want[:-1], atol=1e-5, err_msg=missing)
            assert (got[-1], want[-1], enc(name, "present", "numeric")[-1]) == (1.0, 0.0, 0.0), missing
    st = {c.name: c.state for c in bundle.preprocessor.features}
    got = enc("b_imp", "null_b_imp", "numeric")  # the training share of true, which no present value can be
    assert got.tolist() == pytest.approx([st["b_imp"].fill, 1.0]) and 0.0 < st["b_imp"].fill < 1.0
    # a missing category has a bucket of its own: not unknown (0), not a value
    cat = st["c_imp"]
    assert enc("c_imp", "null_c_imp", "category")[0] == enc("c_imp", "blank_c_imp", "category")[0] == cat.size - 1
    assert 0 < enc("c_imp", "present", "category")[0] < cat.size - 1
    assert enc("c_const", "null_c_const", "category")[0] == enc("c_const", "fill_c_const", "category")[0] != 0
    # missing text is empty text (or the constant): no token ids at all
    assert not enc("t_imp", "null_t_imp", "text.t_imp").any() and not enc("t_imp", "blank_t_imp", "text.t_imp").any()
    np.testing.assert_array_equal(enc("t_const", "null_t_const", "text.t_const"),
                                  enc("t_const", "fill_t_const", "text.t_const"))  # fmt: skip
    assert enc("t_const", "null_t_const", "text.t_const").any()
    # a missing vector is zeros plus the indicator
    assert not enc("v_zeros", "null_v_zeros", "vector").any() and enc("v_zeros", "null_v_zeros", "numeric")[0] == 1.0
    # where a rule adds no indicator input, a missing value scores exactly as its fill, in predict and in serve
    # (which `tabular_scored` showed to agree)
    for name in ("c_const", "t_imp", "t_const"):
        fill = batch[f"fill_{name}"]["prediction"]
        assert batch[f"null_{name}"]["prediction"] == pytest.approx(fill, abs=1e-6), name
        assert batch[f"blank_{name}"]["prediction"] == pytest.approx(fill, abs=1e-6), name


# ---- image and audio: one model per (type, rule) -----------------------------------------------------------------
def _png(level: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), level, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _wav(freq: float, rate: int = 8000, seconds: float = 0.25) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


RAW_N = 120
RAW_MISSING = range(0, RAW_N, 10)  # 12 training rows without the image or clip
RAW = {
    "image": ({"type": "image", "size": 8}, lambda v: _png(int(40 + 170 * v)), b"\x89PNG not really"),
    "audio": ({"type": "audio", "seconds": 0.25, "sample_rate": 8000, "n_mels": 16},
              lambda v: _wav(300 + 1500 * v), b"RIFF\x00\x00 this is not a wave file"),
}  # fmt: skip


@pytest.fixture(scope="module", params=["image-zeros", "image-quarantine", "audio-zeros", "audio-quarantine"])
def raw(request: pytest.FixtureRequest, wd: Path) -> dict[str, Any]:
    kind, rule = request.param.split("-")
    spec, make, corrupt = RAW[kind]
    rng = np.random.default_rng(1)
    level = rng.random(RAW_N)
    blobs = [None if i in RAW_MISSING else make(v) for i, v in enumerate(level)]
    table = pa.table(
        {
            "key": [f"r{i:03d}" for i in range(RAW_N)],
            kind: pa.array(blobs, pa.binary()),
            "x": rng.normal(size=RAW_N),
            "y": level + rng.normal(scale=0.05, size=RAW_N),
        }
    )
    path = wd / f"{kind}_{rule}.parquet"
    pq.write_table(table, path)
    fit = _fit(wd, f"missing_{kind}_{rule}", path, {kind: {**spec, "missing": rule}, "x": {"type": "numeric"}})
    probe = pa.table(
        {
            "key": ["present", "null", "absent", "corrupt"],
            kind: pa.array([make(0.5), None, None, corrupt], pa.binary()),
            "x": [0.1, 0.1, 0.1, 0.1],
        }
    )
    batch = _score_both(fit, wd, probe, f"{kind}_{rule}_probe")
    return {"kind": kind, "rule": rule, "fit": fit, "probe": probe, "batch": batch}


def test_a_missing_image_or_clip_is_zeros_with_an_indicator_or_set_aside(raw: dict[str, Any]) -> None:
    kind, rule, batch = raw["kind"], raw["rule"], raw["batch"]
    bundle = Bundle.load(raw["fit"].bundle_dir)
    state = {c.name: c.state for c in bundle.preprocessor.features}[kind]
    assert state.missing == rule and state.indicator == (rule == "zeros")
    profile = json.loads(raw["fit"].reports["profile"].with_suffix(".json").read_text())
    assert profile["missing"][kind]["rule"] == rule and profile["missing"][kind]["missing"] == len(RAW_MISSING)
    assert batch["present"]["error"] is None
    assert batch["corrupt"]["error"] == f"undecodable_{kind}"  # present but corrupt: quarantined by either rule
    if rule == "quarantine":
        assert profile["bad_rows"]["by_reason"] == {f"missing_{kind}": len(RAW_MISSING)}
        assert batch["null"]["error"] == batch["absent"]["error"] == f"missing_{kind}"
        return
    assert profile["bad_rows"]["total"] == 0
    assert batch["null"]["error"] is None and np.isfinite(batch["null"]["prediction"])
    assert batch["null"]["prediction"] == pytest.approx(batch["absent"]["prediction"], abs=1e-6)
    parts = _parts(bundle, raw["probe"])[kind]
    assert not parts[kind][1].any() and parts[kind][0].any()  # the mean image / spectrogram (0 after scaling)
    assert parts["numeric"][:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # the indicator input
