"""Encoders: statistics from training rows only, unknown buckets, image decoding, bad-row reasons, state."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from lakenet.config import parse_config
from lakenet.data.encoders import Preprocessor, StatsAccumulator, decode_image


def png(value: int, size: int = 6, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def tabular_cfg() -> object:
    return parse_config(
        {
            "data": {"table": "t"},
            "features": {
                "label": {"column": "y"},
                "x": {"type": "numeric"},
                "city": {"type": "category", "min_count": 2},
            },
            "registry": {"name": "m"},
        }
    )


def fitted() -> Preprocessor:
    acc = StatsAccumulator(tabular_cfg())  # type: ignore[arg-type]
    acc.update(pa.table({"x": [1.0, 2.0, 3.0, None], "city": ["a", "a", "b", None], "y": ["no", "yes", "no", "no"]}))
    return acc.finish()


def test_numeric_standardised_with_training_statistics() -> None:
    pre = fitted()
    (x,) = pre.numeric
    assert x.mean == pytest.approx(2.0) and x.std == pytest.approx(np.std([1, 2, 3]))
    enc = pre.encode(pa.table({"key": ["k"], "x": [4.0], "city": ["a"]}), with_label=False)
    assert enc.inputs["numeric"][0, 0] == pytest.approx((4.0 - 2.0) / np.std([1, 2, 3]))


def test_category_vocabulary_has_unknown_bucket() -> None:
    pre = fitted()
    (city,) = pre.categories
    assert city.vocab == ["a"]  # 'b' seen once < min_count 2
    enc = pre.encode(pa.table({"key": list("abcd"), "x": [1.0] * 4, "city": ["a", "b", "zzz", None]}), with_label=False)
    assert enc.inputs["category"][:, 0].tolist() == [1, 0, 0, 0]


def test_bad_numeric_and_label_rows_are_reported() -> None:
    pre = fitted()
    table = pa.table(
        {
            "key": ["ok", "nan", "inf", "text", "nolabel", "newlabel", "huge"],
            "x": ["1.5", None, "inf", "abc", "2", "2", "1e300"],
            "city": ["a"] * 7,
            "y": ["yes", "no", "no", "no", None, "maybe", "no"],
        }
    )
    enc = pre.encode(table, with_label=True)
    reasons = {table.column("key")[b.index].as_py(): (b.reason, b.column) for b in enc.bad}
    assert reasons == {
        "nan": ("missing_numeric", "x"),
        "inf": ("non_finite_numeric", "x"),
        "text": ("not_numeric", "x"),
        "nolabel": ("missing_label", "y"),
        "newlabel": ("unknown_label", "y"),
        "huge": ("non_finite_numeric", "x"),  # finite, but overflows float32 once standardised
    }
    assert enc.valid.tolist() == [True, False, False, False, False, False, False]
    assert enc.inputs["numeric"].shape == (1, 1) and enc.target is not None and enc.target.tolist() == [1]


def test_decode_image_reasons_and_shapes() -> None:
    assert decode_image(png(255, 5), 4, 1).shape == (4, 4, 1)
    assert decode_image(png(10, 5, "RGB"), 3, 3).shape == (3, 3, 3)
    assert decode_image(png(200, 4), 4, 3)[0, 0].tolist() == [200, 200, 200]
    for blob, reason in [(b"", "empty_image"), (None, "empty_image"), (b"nope", "undecodable_image"),
                         (png(3, 64)[:60], "truncated_image")]:  # fmt: skip
        with pytest.raises(ValueError) as e:
            decode_image(blob, 4, 1)
        assert str(e.value) in {reason, "undecodable_image"}


def test_image_encoding_and_state_round_trip() -> None:
    cfg = parse_config(
        {
            "data": {"table": "t"},
            "features": {"label": {"column": "y"}, "img": {"type": "image", "size": 4, "column": "image"}},
            "registry": {"name": "m"},
        }
    )
    acc = StatsAccumulator(cfg)
    acc.update(pa.table({"image": [png(0), png(255)], "y": ["10", "2"]}))
    pre = acc.finish()
    assert pre.label.classes == ["2", "10"]  # natural order for numeric class names
    assert pre.image is not None and pre.image.mean[0] == pytest.approx(0.5)
    table = pa.table({"key": ["a", "b"], "image": [png(255), b"broken"], "y": ["2", "10"]})
    enc = pre.encode(table, with_label=True)
    assert enc.inputs["image"].shape == (1, 1, 4, 4)
    assert enc.inputs["image"][0, 0, 0, 0] == pytest.approx(1.0)  # (1 - 0.5) / 0.5
    assert [b.reason for b in enc.bad] == ["undecodable_image"]
    again = Preprocessor.from_dict(pre.to_dict())
    np.testing.assert_array_equal(again.encode(table, with_label=True).inputs["image"], enc.inputs["image"])
    assert again.signature() == [{"name": "image", "type": "binary", "feature": "image"}]
