"""The Predictor contract: load once, arrow batch in → arrow batch out, deterministic, bad rows flagged."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from lakenet.data.encoders import ImageState, LabelState, NumericState, Preprocessor
from lakenet.errors import DataError
from lakenet.inference.predictor import Predictor
from lakenet.models.bundle import Bundle
from lakenet.models.registry import build_model
from lakenet.models.spec import ModelSpec


def png(v: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (6, 6), v).save(buf, format="PNG")
    return buf.getvalue()


def image_bundle(seed: int) -> Bundle:
    pre = Preprocessor(
        key="key",
        numeric=[NumericState("age", "age", 40.0, 10.0)],
        categories=[],
        image=ImageState("image", "image", 8, 1, [0.5], [0.25]),
        label=LabelState("label", "classification", classes=["cat", "dog", "eel"]),
    )
    spec = ModelSpec("resnet", 3, numeric_dim=1, image_channels=1, image_size=8, width=4, depth=2)
    torch.manual_seed(seed)
    return Bundle(spec, pre, build_model(spec).state_dict())


def batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "key": ["a", "b", "c", "d"],
            "image": [png(10), png(200), b"garbage", png(90)],
            "age": [30.0, 50.0, 20.0, None],
        }
    )


def test_output_schema_and_values(tmp_path: Path, seed: int) -> None:
    path = image_bundle(seed).save(tmp_path / "b")
    pred = Predictor(path, model_name="m", model_version="3")
    out = pred(batch())
    assert out.schema == pred.output_schema()
    assert out.column("key").to_pylist() == ["a", "b", "c", "d"]
    assert out.column("error").to_pylist() == [None, None, "undecodable_image", "missing_numeric"]
    preds = out.column("prediction").to_pylist()
    assert preds[2] is None and preds[3] is None and set(preds[:2]) <= {"cat", "dog", "eel"}
    probs = out.column("probabilities").to_pylist()
    assert [k for k, _ in probs[0]] == ["cat", "dog", "eel"]
    assert sum(v for _, v in probs[0]) == pytest.approx(1.0, abs=1e-5)
    assert out.column("confidence")[0].as_py() == pytest.approx(max(v for _, v in probs[0]))
    assert set(out.column("model_version").to_pylist()) == {"3"}


def test_idempotent_and_batch_independent(tmp_path: Path, seed: int) -> None:
    pred = Predictor(image_bundle(seed).save(tmp_path / "b"))
    a, b = pred(batch()), pred(batch())
    assert a.equals(b)
    one_by_one = [pred(batch().slice(i, 1)) for i in range(4)]
    np.testing.assert_allclose(
        [r.column("confidence")[0].as_py() or 0.0 for r in one_by_one],
        np.nan_to_num(a.column("confidence").to_numpy(zero_copy_only=False)),
        rtol=1e-5,
    )


def test_bundle_round_trip_is_exact(tmp_path: Path, seed: int) -> None:
    bundle = image_bundle(seed)
    direct = Predictor(bundle)(batch())
    loaded = Predictor(bundle.save(tmp_path / "b"))(batch())
    assert direct.equals(loaded)


def test_missing_input_column_is_named(tmp_path: Path, seed: int) -> None:
    pred = Predictor(image_bundle(seed).save(tmp_path / "b"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['age'\]"):
        pred(batch().drop_columns(["age"]))


def test_regression_output_is_destandardised(tmp_path: Path) -> None:
    pre = Preprocessor(
        key="id",
        numeric=[NumericState("x", "x", 0.0, 1.0)],
        categories=[],
        image=None,
        label=LabelState("y", "regression", mean=100.0, std=5.0),
    )
    spec = ModelSpec("mlp", 1, numeric_dim=1, width=4, depth=1)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.fill_(2.0)  # standardised output 2 → 100 + 2·5
    pred = Predictor(Bundle(spec, pre, model.state_dict()))
    out = pred(pa.table({"x": [1.0, 2.0]}))
    assert "id" not in out.schema.names  # no key column in, none out (e.g. HTTP requests)
    assert out.column("prediction").to_pylist() == [110.0, 110.0]
