"""Request and response models derived from a model bundle's input signature, and the decoding of JSON and
multipart bodies into the Arrow table the Predictor scores — so the OpenAPI document describes the real fields
and a request is encoded by the same preprocessing as a table.

JSON: `{"rows": [{"amount": 12.5, "country": "DE", "image": "<base64>"}, ...]}`.
Multipart: one form field per input column (files for images); repeat every field to send several rows.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from lakenet.data.encoders import image_pixels
from lakenet.errors import ModelError

__all__ = [
    "B64_PATTERN",
    "ROW_ERRORS",
    "InvalidRequest",
    "RecommendRequest",
    "RecommendResponse",
    "RequestSchema",
    "TooLarge",
    "decode_base64",
    "response_model",
    "response_rows",
    "row_error",
    "row_loc",
]

_ARROW = {
    "numeric": pa.float64(),
    "category": pa.string(),
    "boolean": pa.bool_(),
    "datetime": pa.string(),
    "image": pa.binary(),
    "audio": pa.binary(),
    "text": pa.string(),
    "vector": pa.list_(pa.float64()),
}
_B64_CHARS = "[A-Za-z0-9+/_-]"  # both alphabets: standard (+/) and URL-safe (-_)
# Base64 of whole bytes, padding optional, optionally as a data URL. Documented as the field's `pattern`, and
# exactly what decode_base64 accepts, so the OpenAPI document neither over- nor under-promises.
_B64_DATA = rf"(?:{_B64_CHARS}{{4}})*(?:{_B64_CHARS}{{2}}(?:==)?|{_B64_CHARS}{{3}}=?)?"
_DATA_URL = r"(?:data:[^,;]*;base64,)?"
B64_PATTERN = f"^{_DATA_URL}{_B64_DATA}$"
_B64 = re.compile(f"{_DATA_URL}({_B64_DATA})")


class InvalidRequest(Exception):
    """The body does not match the model's input schema: answered 422, each error naming its field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class TooLarge(Exception):
    """The request would cost more than the server allows (e.g. its images' pixels in all): answered 413."""


def _error(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def row_loc(row: int, column: str | None, *, form: bool) -> list[str | int]:
    """Where a row's value is in the request, as 422 errors name it: rows.<row>.<column> in JSON, <column>.<row>
    in a form (its fields repeat per row); the row alone when the column is unknown."""
    if form:
        return ["body", column, row] if column is not None else ["body", row]
    return ["body", "rows", row, column] if column is not None else ["body", "rows", row]


def decode_base64(value: str) -> bytes:
    """Standard or URL-safe base64 (padding optional), optionally as a data URL: `B64_PATTERN`."""
    # `$` in a JSON-schema pattern, read by Python's re, also matches before one final newline
    match = _B64.fullmatch(value.removesuffix("\n"))
    if match is None:
        raise ValueError("not valid base64 (send the image file's bytes base64-encoded, without line breaks)")
    text = match.group(1)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):  # unreachable for text matching the pattern; kept as a guard
        raise ValueError("not valid base64 (send the image file's bytes base64-encoded)") from None


@dataclass(frozen=True)
class Column:
    name: str  # the input column: JSON key and form field name
    feature: str  # numeric, category, boolean, datetime, image, audio, text or vector
    attr: str  # the attribute on the generated pydantic row model

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.feature]


_MISSING = " Null or absent: filled by the model's missing-value rule (or an error row where it quarantines them)."


def _field(col: Column) -> tuple[Any, Any]:
    """A row model field for an input column: every field may be null or absent (missing is data)."""
    desc = f"Input column {col.name!r}"
    if col.feature == "numeric":
        return (
            Annotated[
                float | None, Field(alias=col.name, strict=True, allow_inf_nan=False, description=desc + "." + _MISSING)
            ],
            None,
        )
    if col.feature == "category":
        desc += " (a category; unseen values go to the unknown bucket)."
        return Annotated[
            str | None, Field(alias=col.name, coerce_numbers_to_str=True, description=desc + _MISSING)
        ], None
    if col.feature == "boolean":
        desc += " (true/false, 1/0, yes/no)."
        return Annotated[bool | None, Field(alias=col.name, description=desc + _MISSING)], None
    if col.feature == "datetime":
        desc += " (an ISO 8601 date or time, e.g. 2026-03-01T14:05:00+01:00)."
        return Annotated[str | None, Field(alias=col.name, description=desc + _MISSING)], None
    if col.feature == "text":
        return Annotated[str | None, Field(alias=col.name, description=desc + " (text)." + _MISSING)], None
    if col.feature == "vector":
        return (
            Annotated[
                list[Annotated[float, Field(strict=False, allow_inf_nan=False)]] | None,
                Field(alias=col.name, description=desc + " (a list of numbers: an embedding)." + _MISSING),
            ],
            None,
        )
    media = col.feature  # image or audio: a file's bytes
    schema: dict[str, Any] = {"contentEncoding": "base64", "contentMediaType": f"{media}/*", "pattern": B64_PATTERN}
    return (
        Annotated[
            str | None,
            Field(
                alias=col.name,
                strict=True,
                description=desc + f": the {media} file, base64." + _MISSING,
                json_schema_extra=schema,
            ),
            AfterValidator(lambda v: None if v is None else decode_base64(v)),
        ],
        None,
    )


class RequestSchema:
    """The model's inputs as pydantic models (JSON) and as a form (multipart), both decoding to Arrow."""

    def __init__(self, signature: Sequence[dict[str, str]], *, max_rows: int) -> None:
        self.columns = [Column(c["name"], c["feature"], f"f{i}") for i, c in enumerate(signature)]
        unknown = [c.feature for c in self.columns if c.feature not in _ARROW]
        if unknown:
            raise ModelError(f"This lakenet can serve {', '.join(_ARROW)} inputs, not {unknown}; upgrade lakenet.")
        self.max_rows = max_rows
        self._numeric = [c for c in self.columns if c.feature == "numeric"]
        self.schema = pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])
        self.row_model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            "PredictRow",
            __config__=ConfigDict(extra="ignore", title="PredictRow"),
            __doc__="One row: a value for every input column of the model (other keys are ignored).",
            **{c.attr: _field(c) for c in self.columns},
        )
        self.request_model: type[BaseModel] = create_model(
            "PredictRequest",
            __config__=ConfigDict(extra="forbid", title="PredictRequest"),
            __doc__="Rows to score, in order; the response has one prediction per row.",
            rows=(list[self.row_model], Field(min_length=1, max_length=max_rows)),  # type: ignore[name-defined]
        )

    # ---- decoding ----------------------------------------------------------------------------------------------
    def from_json(self, body: bytes) -> pa.Table:
        try:
            req = self.request_model.model_validate_json(body)
        except ValidationError as err:
            raise InvalidRequest(
                [
                    _error(e["loc"], e["msg"].removeprefix("Value error, "), e["type"])
                    for e in err.errors(include_url=False, include_input=False, include_context=False)
                ]
            ) from None
        rows = req.rows  # type: ignore[attr-defined]
        numeric: dict[str, np.ndarray] = {}
        if self._numeric:
            # one (F, N) float64 matrix, its rows handed to Arrow without copies: ~2× faster than a list per column
            get = attrgetter(*(c.attr for c in self._numeric))
            values = [get(r) for r in rows] if len(self._numeric) > 1 else [(get(r),) for r in rows]
            mat = np.array(values, dtype=np.float64).T.copy()
            numeric = {c.name: mat[j] for j, c in enumerate(self._numeric)}
        arrays = [
            pa.array(numeric[c.name])
            if c.name in numeric
            else pa.array([getattr(r, c.attr) for r in rows], c.arrow_type)
            for c in self.columns
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def from_form(self, fields: dict[str, list[str | bytes]]) -> pa.Table:
        """`fields`: each form field's values, in order (file parts already read to bytes)."""
        errors: list[dict[str, Any]] = []
        columns: dict[str, list[Any]] = {}
        for c in self.columns:
            values = fields.get(c.name, [])
            if values:  # an absent field is a missing value in every row (filled after the row count is known)
                columns[c.name] = [self._form_value(c, v, i, errors) for i, v in enumerate(values)]
        counts = {name: len(v) for name, v in columns.items()}
        if not errors and len(set(counts.values())) > 1:
            errors.append(
                _error(
                    [],
                    f"every field needs one value per row, but the counts differ: {counts}",
                    "row_count_mismatch",
                )
            )
        n = max(counts.values(), default=1)  # no field the model reads: one row of missing values
        if not errors and n > self.max_rows:
            errors.append(_error([], f"at most {self.max_rows} rows per request, got {n}", "too_long"))
        if errors:
            raise InvalidRequest(errors)
        return pa.table(
            {c.name: pa.array(columns.get(c.name, [None] * n), c.arrow_type) for c in self.columns}, schema=self.schema
        )

    @staticmethod
    def _form_value(c: Column, v: str | bytes, i: int, errors: list[dict[str, Any]]) -> Any:
        loc: list[str | int] = [c.name, i]
        if c.feature in ("image", "audio"):
            if isinstance(v, bytes):
                return v
            try:
                return decode_base64(v)
            except ValueError as err:
                errors.append(_error(loc, f"{err}, or upload it as a file part", "base64_decode"))
                return None
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        if c.feature in ("category", "text", "datetime"):
            return text
        if not text.strip():  # an empty form value is a missing value
            return None
        if c.feature == "boolean":
            low = text.strip().lower()
            if low in ("true", "1", "yes", "y", "t", "on"):
                return True
            if low in ("false", "0", "no", "n", "f", "off"):
                return False
            errors.append(_error(loc, "Input should be a valid boolean", "bool_parsing"))
            return None
        if c.feature == "vector":
            try:
                values = [float(x) for x in text.strip().strip("[]").split(",") if x.strip()]
            except ValueError:
                errors.append(_error(loc, "Input should be numbers separated by commas", "list_parsing"))
                return None
            if not all(math.isfinite(x) for x in values):
                errors.append(_error(loc, "Input should be finite numbers", "finite_number"))
            return values
        try:
            num = float(text)
        except ValueError:
            errors.append(_error(loc, "Input should be a valid number", "float_parsing"))
            return None
        if not math.isfinite(num):
            errors.append(_error(loc, "Input should be a finite number", "finite_number"))
        return num

    def image_pixels(self, table: pa.Table, *, max_image: int, max_request: int, form: bool) -> int:
        """The pixels of every image in `table`, from the image headers (nothing is decoded). Raises InvalidRequest
        naming each image over `max_image` pixels, then TooLarge when they add up to more than `max_request`.
        An unreadable header counts 0: the model reports such a row as undecodable."""
        from PIL import Image

        errors: list[dict[str, Any]] = []
        total = 0
        images = [(c.name, table.column(c.name).to_pylist()) for c in self.columns if c.feature == "image"]
        with warnings.catch_warnings():
            # Pillow warns of a "decompression bomb" when it opens a header above its own limit; the limits here
            # refuse such images, so the warning says nothing new.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            sizes = [(name, i, image_pixels(b) or 0) for name, blobs in images for i, b in enumerate(blobs) if b]
        for name, i, pixels in sizes:
            if pixels > max_image:
                errors.append(
                    {
                        "loc": row_loc(i, name, form=form),
                        "msg": f"The image has {pixels} pixels; this server decodes at most {max_image} pixels per "
                        "image. Resize it (the model sees it much smaller) and send it again",
                        "type": "image_too_large",
                    }
                )
            total += pixels
        if errors:
            raise InvalidRequest(errors)
        if total > max_request:
            raise TooLarge(
                f"The request's images have {total} pixels in all; this server decodes at most {max_request} pixels "
                "per request. Send fewer or smaller images per request"
            )
        return total

    # ---- documentation -------------------------------------------------------------------------------------------
    def form_schema(self) -> dict[str, Any]:
        """The multipart/form-data body: one part per input column (repeat all of them for several rows)."""
        props: dict[str, Any] = {}
        for c in self.columns:
            if c.feature == "numeric":
                props[c.name] = {"type": "number", "description": f"Input column {c.name!r}"}
            elif c.feature == "category":
                props[c.name] = {"type": "string", "description": f"Input column {c.name!r} (a category)"}
            elif c.feature == "boolean":
                props[c.name] = {"type": "boolean", "description": f"Input column {c.name!r} (true or false)"}
            elif c.feature == "datetime":
                props[c.name] = {"type": "string", "description": f"Input column {c.name!r} (an ISO 8601 date)"}
            elif c.feature == "text":
                props[c.name] = {"type": "string", "description": f"Input column {c.name!r} (text)"}
            elif c.feature == "vector":
                props[c.name] = {
                    "type": "string",
                    "description": f"Input column {c.name!r}: numbers separated by commas, e.g. 0.1,0.2",
                }
            else:
                props[c.name] = {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": f"{c.feature}/*",
                    "description": f"Input column {c.name!r}: the {c.feature} file",
                }
        return {
            "title": "PredictForm",
            "type": "object",
            "description": "One part per input column (image and audio files as file parts); repeat every field, in "
            "the same order, to send several rows. An absent field or an empty value is a missing value.",
            "properties": props,
        }


def response_rows(out: pa.RecordBatch, *, task: str) -> list[dict[str, Any]]:
    """The Predictor's output as JSON-ready rows: prediction, confidence, probabilities (classification),
    prediction (regression) or score, is_anomaly and raw_score (anomaly), and the row's error (null when it was
    scored).

    A row whose output is not finite (an input so large that it overflowed the model's float32) gets the error
    `non_finite_output` instead of NaNs, which JSON cannot carry.
    """
    err = out.column("error").to_pylist()
    if task == "recommendation":
        cols = [out.column(c).to_pylist() for c in ("user", "items", "scores", "source")]
        return [{"user": u, "items": i, "scores": s, "source": src, "error": e}
                for u, i, s, src, e in zip(*cols, err, strict=True)]  # fmt: skip
    if task == "anomaly":
        cols = [out.column(c).to_pylist() for c in ("score", "is_anomaly", "raw_score")]
        return [
            {"score": s, "is_anomaly": a, "raw_score": r, "error": e}
            if r is None or math.isfinite(r)
            else {**_NON_FINITE_ANOMALY}
            for s, a, r, e in zip(*cols, err, strict=True)
        ]
    pred = out.column("prediction").to_pylist()
    if task != "classification":
        return [
            {"prediction": p, "error": e} if p is None or math.isfinite(p) else {**_NON_FINITE_VALUE}
            for p, e in zip(pred, err, strict=True)
        ]
    conf = out.column("confidence").to_pylist()
    probs = out.column("probabilities").to_pylist()
    return [
        {"prediction": p, "confidence": c, "probabilities": dict(pr) if pr is not None else None, "error": e}
        if c is None or math.isfinite(c)
        else {**_NON_FINITE_CLASS}
        for p, c, pr, e in zip(pred, conf, probs, err, strict=True)
    ]


# Why a row could not be scored (the `error` the model reports), as a 422 message: what was wrong and the fix.
ROW_ERRORS = {
    "empty_image": "The image is empty (0 bytes); send the image file's bytes",
    "undecodable_image": "This is not an image the server can read; send a PNG, JPEG, GIF, BMP, TIFF or WebP file",
    "truncated_image": "The image file is cut short; send the whole file",
    "image_too_large": "The image has more pixels than the model decodes; resize it and send it again",
    "empty_audio": "The audio file is empty (no samples); send the recording's bytes",
    "undecodable_audio": "This is not an audio file the server can read; send a WAV, FLAC or OGG file",
    "audio_too_long": "The recording is longer than the model decodes (10 minutes); send a shorter clip",
    "missing_audio": "The audio is missing and this model sets rows without one aside; send the recording",
    "missing_text": "The text is missing and this model sets such rows aside; send a string",
    "missing_vector": "The vector is missing and this model sets such rows aside; send a list of numbers",
    "wrong_vector_length": "The vector does not have the length the model was trained on; send that many numbers",
    "non_finite_vector": "The vector holds a number too large for the model; send the values seen in training",
    "not_numeric": "This is not a number; send a number",
    "missing_numeric": "The number is missing and this model sets such rows aside; send a number",
    "non_finite_numeric": "The number is too large for the model (it overflows float32 once standardised); send "
    "values in the range seen in training",
    "non_finite_output": "The model's output for this row is not a finite number (an input far outside the range "
    "seen in training?); send values in that range",
    "missing_image": "The image is missing and this model sets rows without one aside; send the image",
    "missing_category": "The value is missing and this model sets such rows aside; send a value",
    "missing_boolean": "The value is missing and this model sets such rows aside; send true or false",
    "missing_datetime": "The date is missing and this model sets such rows aside; send an ISO 8601 date",
    "not_boolean": "This is not a yes/no value; send true or false",
    "not_a_datetime": "This is not a date the model can read; send an ISO 8601 date such as 2026-03-01T14:05:00Z",
}


def row_error(row: int, column: str | None, reason: str, *, form: bool) -> dict[str, Any]:
    """A 422 error for a row the model could not score, in the format of the other 422 errors."""
    msg = ROW_ERRORS.get(reason, f"The row could not be scored ({reason}); check its values")
    return {"loc": row_loc(row, column, form=form), "msg": msg, "type": reason}


_NON_FINITE_VALUE = {"prediction": None, "error": "non_finite_output"}
_NON_FINITE_ANOMALY = {"score": None, "is_anomaly": None, "raw_score": None, "error": "non_finite_output"}
_NON_FINITE_CLASS = {"prediction": None, "confidence": None, "probabilities": None, "error": "non_finite_output"}


class ModelRef(BaseModel):
    name: str | None = Field(description="Registered model name (null when serving a bundle directory).")
    version: str | None = Field(description="Registered version that scored these rows.")


class ClassPrediction(BaseModel):
    prediction: str | None = Field(description="The most likely class (null when the row could not be scored).")
    confidence: float | None = Field(description="Its probability.")
    probabilities: dict[str, float] | None = Field(description="Every class's probability, in class order.")
    error: str | None = Field(description="Why the row could not be scored (e.g. undecodable_image), else null.")


class ValuePrediction(BaseModel):
    prediction: float | None = Field(description="The predicted value (null when the row could not be scored).")
    error: str | None = Field(description="Why the row could not be scored, else null.")


class AnomalyPrediction(BaseModel):
    score: float | None = Field(
        description="Calibrated anomaly score in (0, 1): the share of validation rows that look more normal."
    )
    is_anomaly: bool | None = Field(description="Whether the score reaches the model's threshold.")
    raw_score: float | None = Field(description="The reconstruction error the score is calibrated from.")
    error: str | None = Field(description="Why the row could not be scored, else null.")


class RecommendPrediction(BaseModel):
    user: str | None = Field(description="The row's user.")
    items: list[str] | None = Field(description="The top-k items, best first.")
    scores: list[float] | None = Field(description="Their scores (dot products of the user and item vectors).")
    source: str | None = Field(description="model, or popularity for a user the model never learned (cold start).")
    error: str | None = Field(description="Why the row could not be scored, else null.")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=1000, description="The user to recommend to.")
    k: int | None = Field(None, ge=1, le=1000, description="Items to return; default: the model's recommend.k.")
    features: dict[str, Any] = Field(
        default_factory=dict, description="The user-side features (as in a /v1/predict row); absent ones are missing."
    )
    exclude: list[str] = Field(
        default_factory=list, max_length=100_000, description="Items not to recommend (e.g. already bought)."
    )


class RecommendedItem(BaseModel):
    item: str
    score: float


class RecommendResponse(BaseModel):
    model: ModelRef
    user: str
    source: str = Field(description="model, or popularity: the user is not one the model learned (cold start).")
    items: list[RecommendedItem]


def response_model(*, task: str) -> type[BaseModel]:
    rows: dict[str, type[BaseModel]] = {
        "classification": ClassPrediction,
        "anomaly": AnomalyPrediction,
        "recommendation": RecommendPrediction,
    }
    row = rows.get(task, ValuePrediction)
    return create_model(
        "PredictResponse",
        __doc__="One prediction per request row, in order.",
        model=(ModelRef, ...),
        predictions=(list[row], ...),  # type: ignore[valid-type]
    )
