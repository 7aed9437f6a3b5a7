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
    assert x.fill == pytest.approx(2.0) and x.indicator  # training saw a missing x: median fill + indicator input
    assert enc.inputs["numeric"].shape == (1, 2) and enc.inputs["numeric"][0, 1] == 0.0


def test_category_vocabulary_has_unknown_bucket() -> None:
    pre = fitted()
    (city,) = pre.categories
    assert city.vocab == ["a"]  # 'b' seen once < min_count 2
    rows = {"key": list("abcde"), "x": [1.0] * 5, "city": ["a", "b", "zzz", None, "  "]}
    enc = pre.encode(pa.table(rows), with_label=False)
    # unknown values share index 0; missing (null or blank) values have a bucket of their own, the last
    assert enc.inputs["category"][:, 0].tolist() == [1, 0, 0, 2, 2] and city.size == 3


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
    # missing is data (a filled value, an unlabelled row); present but unusable values are bad
    assert reasons == {
        "inf": ("non_finite_numeric", "x"),
        "text": ("not_numeric", "x"),
        "newlabel": ("unknown_label", "y"),
        "huge": ("non_finite_numeric", "x"),  # finite, but overflows float32 once standardised
    }
    assert enc.valid.tolist() == [True, True, False, False, False, False, False]
    assert enc.unlabelled is not None and enc.unlabelled.tolist() == [False] * 4 + [True, False, False]
    assert enc.inputs["numeric"][:, 1].tolist() == [0.0, 1.0]  # the indicator says which value was filled
    assert enc.target is not None and enc.target.tolist() == [1, 0]


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


def test_vector_rows_are_checked_and_concatenated() -> None:
    from lakenet.data.encoders import LabelState, VectorState

    pre = Preprocessor(
        key="key", numeric=[], categories=[], image=None, label=LabelState("y", "classification", ["a", "b"]),
        vectors=[VectorState("v", "v", 3), VectorState("w", "w", 1)],
    )  # fmt: skip
    table = pa.table(
        {
            "v": pa.array([[1.0, 2.0, 3.0], None, [1.0, 2.0], [1.0, float("nan"), 0.0], [4.0, 5.0, 6.0]]),
            "w": pa.array([[7.0], [1.0], [1.0], [1.0], [8.0]], pa.list_(pa.float32())),
        }
    )
    enc = pre.encode(table, with_label=False)
    assert enc.valid.tolist() == [True, False, False, False, True]
    assert [(b.index, b.reason) for b in enc.bad] == [
        (1, "missing_vector"),
        (2, "wrong_vector_length"),
        (3, "non_finite_vector"),
    ]
    assert enc.inputs["vector"].tolist() == [[1, 2, 3, 7], [4, 5, 6, 8]]


def test_bag_text_ids_are_stable_hashes_of_words_and_bigrams() -> None:
    from lakenet.data.encoders import bag_ids

    ids = bag_ids(["Not bad at all", "not BAD", None], buckets=1000, max_length=5)
    assert ids.shape == (3, 5) and (ids[2] == 0).all()
    # words and bigrams interleaved, case-insensitive: "not", "not bad", "bad", ...
    assert ids[0, :3].tolist() == ids[1, :3].tolist() and ids[1, 3:].tolist() == [0, 0]
    assert ((ids[0] >= 1) & (ids[0] <= 1000)).all()


def test_pretrained_tokenizer_pads_and_truncates() -> None:
    from lakenet.config.schema import TextFeature
    from lakenet.data.encoders import LabelState, text_state

    state = text_state("t", "t", TextFeature(encoder="all-MiniLM-L6-v2", max_length=8))
    pre = Preprocessor(
        key="key", numeric=[], categories=[], image=None, label=LabelState("y", "classification", ["a", "b"]),
        texts=[state],
    )  # fmt: skip
    enc = pre.encode(
        pa.table({"t": ["short", "a much longer sentence that goes past eight tokens", None]}), with_label=False
    )
    ids, mask = enc.inputs["text.t"], enc.inputs["text.t.mask"]
    assert ids.shape == mask.shape == (3, 8) and mask[0].sum() == 3 and mask[1].sum() == 8  # [CLS] short [SEP]
    assert enc.bad == [] and mask[2].sum() == 2  # a missing text is empty text: [CLS] [SEP]
    again = Preprocessor.from_dict(pre.to_dict()).encode(pa.table({"t": ["short"]}), with_label=False)
    assert again.inputs["text.t"][0].tolist() == ids[0].tolist()
