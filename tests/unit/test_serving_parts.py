"""Serving building blocks without a server: settings (safe defaults), request decoding (JSON and multipart, every
error naming its field), response rows, and the Prometheus text format."""

from __future__ import annotations

import base64
import inspect
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import lakenet
from lakenet.errors import ConfigError
from lakenet.serving.metrics import Histogram, ServeMetrics
from lakenet.serving.schema import (
    B64_PATTERN,
    ROW_ERRORS,
    InvalidRequest,
    RequestSchema,
    TooLarge,
    decode_base64,
    response_rows,
    row_error,
)
from lakenet.serving.settings import ServeSettings, is_loopback, make_settings, read_token_file

SIGNATURE = [
    {"name": "od280/od315", "type": "double", "feature": "numeric"},
    {"name": "region", "type": "string", "feature": "category"},
    {"name": "image", "type": "binary", "feature": "image"},
]
TOKEN = "s3cret-token-of-enough-length"


# ---- settings ------------------------------------------------------------------------------------------------
def test_defaults_are_safe_and_cost_nothing_at_low_load() -> None:
    s = ServeSettings()
    assert s.host == "127.0.0.1" and s.token is None
    assert s.max_batch_delay_ms == 0.0


def test_api_serve_defaults_match_the_settings() -> None:
    # The settings are declared once, in ServeSettings: api.serve takes them as keywords and redeclares none.
    params = inspect.signature(lakenet.serve).parameters
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert not set(params) & set(ServeSettings.model_fields)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_refuses_to_expose_without_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match=r"without a token.*--token-file"):
        make_settings(host=host)
    assert make_settings(host=host, token=TOKEN).host == host


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "10.0.0.1", "localhost.example.com"])


def test_abuse_limits_are_on_by_default() -> None:
    s = ServeSettings()
    assert s.body_timeout_s == 5.0 and s.max_connections == 1000
    assert (s.max_image_pixels, s.max_request_pixels) == (16 * 2**20, 64 * 2**20)
    with pytest.raises(ConfigError, match=r"max_image_pixels \(10\) must not exceed max_request_pixels \(5\)"):
        make_settings(max_image_pixels=10, max_request_pixels=5)
    with pytest.raises(ConfigError, match="body_timeout_s: Input should be greater than 0"):
        make_settings(body_timeout_s=0)


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        make_settings(token="short")
    with pytest.raises(ConfigError, match=r"max_request_rows \(300\) must not exceed max_queue_rows \(256\)"):
        make_settings(max_request_rows=300)
    with pytest.raises(ConfigError, match="max_batch_size: Input should be greater than or equal to 1"):
        make_settings(max_batch_size=0)


def test_token_is_not_printed() -> None:
    assert TOKEN not in repr(make_settings(token=TOKEN))


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token.txt"
    f.write_text(TOKEN + "\n")
    assert read_token_file(f) == TOKEN
    f.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token_file(f)
    with pytest.raises(ConfigError, match="Cannot read the token file"):
        read_token_file(tmp_path / "missing.txt")


# ---- requests ------------------------------------------------------------------------------------------------
@pytest.fixture
def schema() -> RequestSchema:
    return RequestSchema(SIGNATURE, max_rows=3)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_rows_become_the_arrow_table_the_predictor_reads(schema: RequestSchema) -> None:
    body = (
        b'{"rows": [{"od280/od315": 3, "region": "north", "image": "' + b64(b"\x89PNG..").encode() + b'", "x": 1},'
        b' {"od280/od315": 2.5, "region": null, "image": ""}]}'
    )
    table = schema.from_json(body)
    assert table.schema == pa.schema([("od280/od315", pa.float64()), ("region", pa.string()), ("image", pa.binary())])
    assert table.to_pydict() == {"od280/od315": [3.0, 2.5], "region": ["north", None], "image": [b"\x89PNG..", b""]}


def loc_of(err: pytest.ExceptionInfo[InvalidRequest]) -> list[list[str | int]]:
    return [e["loc"] for e in err.value.errors]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"rows": [{"od280/od315": "3", "region": "n", "image": ""}]}', ["body", "rows", 0, "od280/od315"]),
        (b'{"rows": [{"od280/od315": 1, "region": "n", "image": "***"}]}', ["body", "rows", 0, "image"]),
        (b'{"rows": []}', ["body", "rows"]),
        (b'{"rows": [{}, {}, {}, {}]}', ["body", "rows"]),
        (b'{"row": []}', ["body", "rows"]),
        (b"not json", ["body"]),
    ],
)
def test_invalid_json_names_the_field(schema: RequestSchema, body: bytes, loc: list[str | int]) -> None:
    with pytest.raises(InvalidRequest) as err:
        schema.from_json(body)
    assert loc in loc_of(err)


def test_absent_and_null_fields_are_missing_values(schema: RequestSchema) -> None:
    """Missing is data: the model's learned rule fills it (the Predictor), so the request is not refused."""
    table = schema.from_json(b'{"rows": [{"region": "n"}, {"od280/od315": null, "region": null, "image": null}]}')
    assert table.to_pydict() == {"od280/od315": [None, None], "region": ["n", None], "image": [None, None]} or (
        table.column("region").to_pylist() == ["n", None] and table.column("image").to_pylist() == [None, None]
    )
    form = schema.from_form({"region": ["n", "s"], "od280/od315": ["", "2"]})
    assert form.column("image").to_pylist() == [None, None] and form.column("od280/od315").to_pylist()[1] == 2.0


def test_numbers_are_accepted_as_categories(schema: RequestSchema) -> None:
    table = schema.from_json(b'{"rows": [{"od280/od315": 1, "region": 10115, "image": ""}]}')
    assert table.column("region").to_pylist() == ["10115"]


def test_base64_variants() -> None:
    data = bytes(range(256))
    assert decode_base64(base64.b64encode(data).decode()) == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    assert decode_base64("data:image/png;base64," + base64.b64encode(data).decode()) == data
    assert decode_base64("") == b""
    for bad in ("a$bc", "abcde", "ab\ncd", "ab=c"):
        with pytest.raises(ValueError, match="not valid base64"):
            decode_base64(bad)


def test_the_documented_base64_pattern_is_what_is_accepted() -> None:
    import re

    pattern = re.compile(B64_PATTERN)
    for text in ("", "QQ", "QQ==", "QUI", "QUI=", "QUJD", "-_-_", "data:image/png;base64,QQ==", "QQ==\n"):
        assert pattern.search(text) and decode_base64(text) is not None, text
    for text in ("Q", "QQ=", "QUJDR", "a b", "data:;base64"):
        assert not pattern.search(text)
        with pytest.raises(ValueError):
            decode_base64(text)


def test_form_fields_repeat_for_several_rows(schema: RequestSchema) -> None:
    table = schema.from_form({"od280/od315": ["1.5", "2"], "region": ["n", "s"], "image": [b"a", b"b"]})
    assert table.to_pydict() == {"od280/od315": [1.5, 2.0], "region": ["n", "s"], "image": [b"a", b"b"]}


def test_form_errors_name_the_field(schema: RequestSchema) -> None:
    with pytest.raises(InvalidRequest) as err:
        schema.from_form({"od280/od315": ["x", "inf"], "image": ["%%%", b"b"]})
    assert {tuple(loc) for loc in loc_of(err)} == {  # an absent field is a missing value, not an error
        ("body", "od280/od315", 0),
        ("body", "od280/od315", 1),
        ("body", "image", 0),
    }
    with pytest.raises(InvalidRequest, match="counts differ"):
        schema.from_form({"od280/od315": ["1", "2"], "region": ["n"], "image": [b"a", b"b"]})
    with pytest.raises(InvalidRequest, match="at most 3 rows"):
        schema.from_form({"od280/od315": ["1"] * 4, "region": ["n"] * 4, "image": [b"a"] * 4})


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_pixels_are_limited_from_the_headers(schema: RequestSchema) -> None:
    rows = [{"od280/od315": 1, "region": "n", "image": b64(im)} for im in (png(10, 10), b"junk", png(30, 20))]
    table = schema.from_json(json.dumps({"rows": rows}).encode())
    assert schema.image_pixels(table, max_image=600, max_request=700, form=False) == 700  # junk counts 0
    with pytest.raises(InvalidRequest) as err:
        schema.image_pixels(table, max_image=599, max_request=10_000, form=False)
    assert loc_of(err) == [["body", "rows", 2, "image"]]
    assert err.value.errors[0]["type"] == "image_too_large" and "600 pixels" in err.value.errors[0]["msg"]
    with pytest.raises(InvalidRequest) as err:
        schema.image_pixels(table, max_image=599, max_request=10_000, form=True)
    assert loc_of(err) == [["body", "image", 2]]
    with pytest.raises(TooLarge, match=r"700 pixels in all.*at most 699"):
        schema.image_pixels(table, max_image=600, max_request=699, form=False)


def test_row_errors_name_the_row_and_column() -> None:
    assert row_error(3, "image", "undecodable_image", form=False)["loc"] == ["body", "rows", 3, "image"]
    assert row_error(3, "image", "undecodable_image", form=True)["loc"] == ["body", "image", 3]
    err = row_error(1, None, "something_new", form=False)
    assert err == {"loc": ["body", "rows", 1], "msg": err["msg"], "type": "something_new"}
    assert "something_new" in err["msg"]
    assert set(ROW_ERRORS) >= {"empty_image", "undecodable_image", "truncated_image", "image_too_large"}


def test_openapi_models_use_the_column_names(schema: RequestSchema) -> None:
    row = schema.row_model.model_json_schema()
    assert list(row["properties"]) == ["od280/od315", "region", "image"]
    assert "required" not in row  # missing is data: null or absent fields are filled by the model's rule
    assert row["properties"]["image"]["contentEncoding"] == "base64"
    form = schema.form_schema()
    assert form["properties"]["image"]["format"] == "binary"
    assert "required" not in form


# ---- responses -----------------------------------------------------------------------------------------------
def test_response_rows() -> None:
    probs = pa.MapArray.from_arrays(
        pa.array([0, 2, 4], pa.int32()),
        pa.array(["a", "b", "a", "b"]),
        pa.array([0.25, 0.75, 0.0, 0.0], pa.float32()),
        mask=pa.array([False, True]),
    )
    out = pa.RecordBatch.from_pydict(
        {
            "prediction": pa.array(["b", None]),
            "confidence": pa.array([0.75, None], pa.float32()),
            "probabilities": probs,
            "error": pa.array([None, "undecodable_image"]),
        }
    )
    assert response_rows(out, task="classification") == [
        {"prediction": "b", "confidence": 0.75, "probabilities": {"a": 0.25, "b": 0.75}, "error": None},
        {"prediction": None, "confidence": None, "probabilities": None, "error": "undecodable_image"},
    ]
    reg = pa.RecordBatch.from_pydict({"prediction": pa.array([1.5]), "error": pa.array([None], pa.string())})
    assert response_rows(reg, task="regression") == [{"prediction": 1.5, "error": None}]


# ---- metrics -------------------------------------------------------------------------------------------------
def test_histogram_buckets_are_cumulative() -> None:
    registry = CollectorRegistry()
    h = Histogram(registry, "x_seconds", "help", [0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 5.0):
        h.observe(v)
    lines = generate_latest(registry).decode().splitlines()
    assert [line for line in lines if line.startswith("x_seconds_") and "_created" not in line] == [
        'x_seconds_bucket{le="0.1"} 2.0',
        'x_seconds_bucket{le="1.0"} 3.0',
        'x_seconds_bucket{le="+Inf"} 4.0',
        "x_seconds_count 4.0",
        "x_seconds_sum 5.65",
    ]
    assert (h.get(), h.count, h.sum) == (4, 4, pytest.approx(5.65))


def test_exposition_format() -> None:
    m = ServeMetrics()
    m.requests.inc("/v1/predict", "200")
    m.requests.inc("/v1/predict", "503")
    m.set_model('we"ird', "2")
    text = m.render()
    assert text.endswith("\n")
    assert 'lakenet_http_requests_total{route="/v1/predict",status="503"} 1' in text
    assert 'lakenet_model_info{name="we\\"ird",version="2"} 1' in text
    for line in text.splitlines():
        assert line.startswith("# ") or len(line.rsplit(" ", 1)) == 2
    types = [line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")]
    assert set(types) == {"counter", "gauge", "histogram"}


def test_each_server_counts_in_its_own_registry() -> None:
    a, b = ServeMetrics(), ServeMetrics()  # two servers in one process register the same names twice
    a.shed.inc("busy")
    a.rows.inc("ok", by=3)
    a.inflight.inc()
    a.inflight.inc(by=-1)
    assert (a.shed.get("busy"), a.rows.get("ok"), a.inflight.get()) == (1, 3, 0)
    assert (b.shed.get("busy"), b.rows.get("ok")) == (0, 0)
    assert a.shed.get("never") == 0


def test_standard_collectors_and_types() -> None:
    m = ServeMetrics()
    m.set_model("wine", "1")
    m.set_model("wine", "2")  # the info is replaced, not added to
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["process_cpu_seconds"].type == "counter"  # a counter (it was once exported as a gauge)
    assert families["process_cpu_seconds"].samples[0].value > 0
    assert families["process_start_time_seconds"].type == "gauge"
    assert "python_info" in families
    assert [s.labels for s in families["lakenet_model_info"].samples] == [{"name": "wine", "version": "2"}]
    assert families["lakenet_rejected_requests"].type == "counter"


def test_exposition_follows_the_accept_header() -> None:
    m = ServeMetrics()
    m.swaps.inc()
    body, content_type = m.exposition(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "lakenet_model_swaps_total 1.0" in body.decode().splitlines()
    body, content_type = m.exposition("application/openmetrics-text; version=1.0.0,*/*;q=0.1")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
