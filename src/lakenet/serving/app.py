"""The HTTP app: FastAPI routes over the micro-batcher and the same Predictor batch scoring uses.

Routes: POST /v1/predict (JSON or multipart), GET /v1/model, /healthz, /readyz, /metrics, /openapi.json, /docs.
Nothing here loads a model from a client-supplied URL or path: the model is fixed when the server starts (and
moved only by --follow-alias, from the registry the operator configured).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakenet.inference.predictor import Predictor
from lakenet.serving.batcher import Draining, MicroBatcher, Overloaded
from lakenet.serving.metrics import ServeMetrics
from lakenet.serving.schema import (
    InvalidRequest,
    RecommendRequest,
    RecommendResponse,
    RequestSchema,
    TooLarge,
    response_model,
    response_rows,
    row_error,
)
from lakenet.serving.settings import ServeSettings

__all__ = ["Refresh", "Scorer", "create_app", "warm_up"]

log = logging.getLogger("lakenet.serve")

Refresh = Callable[[], Predictor | None]
"""Called on a worker thread every poll interval: a newly loaded Predictor when the alias moved, else None."""

PREDICT = "/v1/predict"
EXPLAIN = "/v1/explain"
RECOMMEND = "/v1/recommend"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes answer without a token
ROUTES = frozenset(
    {PREDICT, EXPLAIN, RECOMMEND, "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}
)
_JSON = [(b"content-type", b"application/json")]


class Scorer:
    """One loaded model version, as the batcher calls it: Arrow table in, JSON-ready rows out."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.name, self.version = predictor.model_name, predictor.model_version
        self.signature = predictor.pre.signature()
        self.task = predictor.task

    def __call__(self, table: pa.Table) -> list[dict[str, Any]]:
        # An input near the float64 limit overflows float32 in the encoder: such rows come out non-finite and
        # response_rows flags them, so numpy's warning is noise here.
        with np.errstate(over="ignore", invalid="ignore"):
            out = self.predictor(table)
        return response_rows(out, task=self.task)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    def error_column(self, table: pa.Table, row: int, reason: str) -> str | None:
        """The input column that made `row` fail with `reason` (the Predictor reports the reason only), or None
        when it cannot be told: the one column of that kind, or among several the first whose value is unusable."""
        pre = self.predictor.pre
        if reason.endswith("_image"):
            return pre.image.column if pre.image is not None else None
        if "audio" in reason:
            return pre.audio.column if pre.audio is not None else None

        def value(column: str) -> Any:
            return table.column(column)[row].as_py()

        if reason.endswith("_text"):
            found = [(t.column, value(t.column) is None) for t in pre.texts]
        elif "vector" in reason:
            found = [(v.column, _bad_vector(value(v.column), v.dim)) for v in pre.vectors]
        elif reason.endswith("_numeric"):
            found = [(n.column, _bad_number(value(n.column), n.mean, n.std)) for n in pre.numeric]
        else:
            return None
        if len(found) == 1:
            return found[0][0]
        return next((column for column, bad in found if bad), None)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _bad_vector(value: list[float] | None, dim: int) -> bool:
    return value is None or len(value) != dim or not all(math.isfinite(x) for x in value)


def _bad_number(value: float | None, mean: float, std: float) -> bool:
    return value is None or not math.isfinite(value) or abs((value - mean) / std) > _FLOAT32_MAX


def warm_up(predictor: Predictor) -> None:
    """One forward pass on zeros, so the first real request does not pay for lazy kernel set-up."""
    inputs = predictor.pre.example_inputs(1)
    if inputs:
        predictor.forward(inputs)


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


class _Gate:
    """Outermost ASGI middleware: request metrics, the bearer token, and the limits on reading a body: its size
    (413 from the declared content-length at once, or as soon as a streamed body passes the limit), its time (408
    when it is not complete `body_timeout_s` after the request head, and the connection is closed), and the body
    bytes all requests hold together (503).

    The concurrency limit of /v1/predict is not here but in the route, once the body is read: counted before, a
    client sending its body slowly would hold a slot for as long as it liked."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        metrics: ServeMetrics,
        body_timeout_s: float,
        max_held_bytes: int,
    ) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.max_body = max_body_bytes
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.max_held = max_held_bytes
        self.held = 0  # body bytes received by the requests in progress

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope.setdefault("state", {})["t0"] = t0
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = 500
        m = self.metrics
        m.inflight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        held = [0]
        try:
            headers = dict(scope["headers"])
            if self.token is not None and path not in OPEN_PATHS and not self._authorised(headers):
                await _send_simple(
                    send_wrapper,
                    401,
                    {"detail": "Missing or invalid bearer token: send Authorization: Bearer <token>"},
                    [(b"www-authenticate", b'Bearer realm="lakenet"')],
                )
                return
            declared = headers.get(b"content-length")
            if declared is not None:
                if not declared.isdigit():
                    await _send_simple(send_wrapper, 400, {"detail": "Invalid Content-Length header"})
                    return
                if int(declared) > self.max_body:
                    await _send_simple(send_wrapper, 413, {"detail": self._too_large()})
                    return
            deadline = asyncio.get_running_loop().time() + self.body_timeout_s
            await self.app(scope, self._reading(receive, deadline, held), send_wrapper)
        finally:
            self.held -= held[0]
            m.inflight.inc(by=-1)
            m.requests.inc(route, str(status))
            if route in (PREDICT, RECOMMEND):
                m.latency.observe(time.perf_counter() - t0)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        assert self.token is not None
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        # compare_digest: the time taken does not reveal how much of the token matched
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    def _too_large(self) -> str:
        return f"Request body larger than the server's limit of {self.max_body} bytes"

    def _reading(self, receive: Receive, deadline: float, held: list[int]) -> Receive:
        """`receive`, with the body's size, time and memory limits; `held[0]`: the body bytes received so far."""
        complete = False

        async def reading() -> Message:
            nonlocal complete
            if complete:  # later calls only wait for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self.metrics.shed.inc("body_timeout")
                # Connection: close, as the rest of the body may still come: read as a next request, it would be
                # garbage, and waiting for it would let the client hold the connection on.
                raise HTTPException(
                    408,
                    f"The request body was not complete {self.body_timeout_s:g} s after its head; send the whole "
                    "request at once (the server's body timeout)",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                n = len(message.get("body", b""))
                if held[0] + n > self.max_body:
                    raise HTTPException(413, self._too_large())
                if self.held + n > self.max_held:
                    # Slow clients hold no slot (their bytes trickle in); many fast large bodies at once would
                    # hold up to max_connections × max_body_bytes without this.
                    self.metrics.shed.inc("body_bytes")
                    raise HTTPException(
                        503,
                        "Overloaded: too many request bytes held at once; retry later",
                        headers={"Retry-After": "1", "Connection": "close"},
                    )
                held[0] += n
                self.held += n
                complete = not message.get("more_body", False)
            return message

        return reading


async def _send_simple(
    send: Send, status: int, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _predict_operation() -> dict[str, Any]:
    return {
        "summary": "Score rows",
        "description": "Rows in, one prediction per row out, scored with the model's training-time "
        "preprocessing. Rows that cannot be scored (e.g. an undecodable image) come back with `error` set; when "
        "no row of the request can be scored, the answer is 422 with one error per row instead.",
        "operationId": "predict",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/PredictForm"}},
            },
        },
        "responses": {str(k): v for k, v in _error_responses("#/components/schemas/PredictResponse").items()},
    }


def _explain_operation() -> dict[str, Any]:
    responses = {str(k): v for k, v in _error_responses("#/components/schemas/ExplainResponse").items()}
    responses["200"] = {
        "description": "One explanation per row, in order.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExplainResponse"}}},
    }
    responses["503"]["description"] = "Too many explanations in progress (max_inflight_explain), or shutting down."
    return {
        "summary": "Explain rows",
        "description": "The same rows as /v1/predict; per row, the prediction and why: Integrated Gradients "
        "attributions per input column from an average-row baseline (numbers at their training mean, categories at "
        "their commonest value, empty text, images at the normalisation mean), the top columns, the completeness "
        "gap, per-token attributions for text, and a heat-map PNG (base64) with region shares for images. It costs "
        "about explain_steps forward and backward passes per row, so it has its own concurrency limit and deadline.",
        "operationId": "explain",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/PredictForm"}},
            },
        },
        "responses": responses,
    }


def _explain_response_schema() -> dict[str, Any]:
    fields: dict[str, Any] = {"column": {"type": "string"}, "attribution": {"type": "number"}}
    pair = {"type": "object", "properties": fields}
    token = {"type": "object", "properties": {**fields, "token": {"type": "string"}}}
    numbers = {"type": "object", "additionalProperties": {"type": "number"}}
    row = {
        "type": "object",
        "properties": {
            "prediction": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
            "confidence": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "output": {
                "anyOf": [{"type": "number"}, {"type": "null"}],
                "description": "What is explained: the log-probability of the predicted class, or the value.",
            },
            "baseline_output": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "top": {"anyOf": [{"type": "array", "items": pair}, {"type": "null"}]},
            "attributions": {"anyOf": [numbers, {"type": "null"}], "description": "Every input column."},
            "completeness_gap": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "steps": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "method": {
                "anyOf": [{"type": "string", "enum": ["integrated_gradients", "shapley_sampling"]}, {"type": "null"}],
                "description": "shapley_sampling (with an occlusion map) for a model without gradients.",
            },
            "tokens": {"anyOf": [{"type": "array", "items": token}, {"type": "null"}]},
            "image_map": {"anyOf": [{"type": "string", "format": "byte"}, {"type": "null"}]},
            "regions": {"anyOf": [numbers, {"type": "null"}]},
            "error": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }
    return {
        "type": "object",
        "properties": {"model": {"type": "object"}, "explanations": {"type": "array", "items": row}},
        "required": ["model", "explanations"],
    }


def _recommend_responses() -> dict[int | str, dict[str, Any]]:
    """/v1/recommend's error answers: the gate's (token, body size and time), not a recommender, invalid fields."""
    shared = _error_responses("#/components/schemas/RecommendResponse")
    out: dict[int | str, dict[str, Any]] = {code: shared[code] for code in (400, 401, 408, 413, 422, 503)}
    out[404] = {
        "description": "The model served is not a recommender.",
        "content": {"application/json": {"schema": shared[400]["content"]["application/json"]["schema"]}},
    }
    out[422] = {**shared[422], "description": "An invalid field, or a feature the model does not take."}
    return out


def _error_responses(schema_ref: str) -> dict[int | str, dict[str, Any]]:
    detail = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

    def plain(desc: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"description": desc, "content": {"application/json": {"schema": detail}}}
        if headers:
            out["headers"] = headers
        return out

    return {
        200: {
            "description": "One prediction per row, in order.",
            "content": {"application/json": {"schema": {"$ref": schema_ref}}},
        },
        400: plain("Malformed body (e.g. a broken multipart message)."),
        401: plain("Missing or wrong bearer token."),
        408: plain("The body was not sent in time; the connection is closed."),
        413: plain("The body is larger than the server's limit, or its images have more pixels than it decodes."),
        415: plain("Content-Type is neither application/json nor multipart/form-data."),
        422: {
            "description": "A field is missing or invalid (e.g. an image with more pixels than the server decodes), "
            "or no row could be scored (e.g. every image undecodable); each error's `loc` names the field, or the "
            "row and its column, and `type` says why.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ValidationErrors"}}},
        },
        500: plain("The model failed on this request (the server log has the traceback)."),
        503: plain(
            "Overloaded (too many requests in flight, rows waiting or body bytes held) or shutting down: retry later.",
            retry,
        ),
        504: plain("The request's deadline passed before it was scored."),
    }


class _Service:
    """What the routes share: the scorer behind its micro-batcher, the request schema, the metrics and whether
    the server is draining. Its methods are the routes and the lifespan."""

    def __init__(self, predictor: Predictor, settings: ServeSettings, refresh: Refresh | None) -> None:
        self.settings, self.refresh = settings, refresh
        self.metrics = metrics = ServeMetrics()
        self.scorer = scorer = Scorer(predictor)
        self.schema = RequestSchema(scorer.signature, max_rows=settings.max_request_rows)
        self.batcher: MicroBatcher[Scorer] = MicroBatcher(
            scorer,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            max_queue_rows=settings.max_queue_rows,
            # a batch decodes at most one request's worth of pixels, so a request whose deadline passes behind it
            # is dropped soon, not after many requests' large images
            max_batch_cost=settings.max_request_pixels,
            metrics=metrics,
        )
        metrics.set_model(scorer.name or "bundle", scorer.version or "")
        self.token = settings.token.get_secret_value() if settings.token is not None else None
        self.draining = False
        self.predicting = 0  # requests past the body read
        self.explains = _Explains(settings)

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        settings, metrics, batcher, scorer = self.settings, self.metrics, self.batcher, self.scorer
        await batcher.start()
        follower = None
        if self.refresh is not None:
            follower = asyncio.create_task(self._follow(self.refresh), name="lakenet-follow-alias")
        metrics.ready.set(1)
        served = f"{scorer.name} version {scorer.version}" if scorer.name else "a model bundle"
        following = f", following the alias every {settings.poll_interval_s:g} s" if follower is not None else ""
        log.info("serving %s: batches of ≤ %d rows, %g ms delay, queue ≤ %d rows, ≤ %d requests in flight, "
                 "bodies within %g s, %s%s",
                 served, settings.max_batch_size, settings.max_batch_delay_ms, settings.max_queue_rows,
                 settings.max_inflight_requests, settings.body_timeout_s,
                 "token required" if self.token is not None else "no token (loopback only)", following)  # fmt: skip
        try:
            yield
        finally:
            self.draining = True
            metrics.ready.set(0)
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await batcher.close(settings.drain_timeout_s)
            self.explains.close()
            log.info("drained: every admitted request was answered")

    async def _follow(self, refresh: Refresh) -> None:
        metrics, batcher = self.metrics, self.batcher
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                new = await asyncio.to_thread(_load_next, refresh)
            except Exception as err:
                metrics.swap_refusals.inc()
                log.warning("--follow-alias: could not load the new version (%s: %s); still serving version %s",
                            type(err).__name__, err, batcher.model.version)  # fmt: skip
                continue
            if new is None:
                continue
            old = batcher.model
            if new.signature != old.signature or new.task != old.task:
                metrics.swap_refusals.inc()
                log.error("--follow-alias: version %s has a different input signature or task than version %s; "
                          "not switching (clients would break). Restart the server to serve it.",
                          new.version, old.version)  # fmt: skip
                continue
            batcher.swap(new)  # batches already running finish on the old version
            metrics.swaps.inc()
            metrics.set_model(new.name or "bundle", new.version or "")
            log.info("--follow-alias: now serving %s version %s (was %s)", new.name, new.version, old.version)

    async def predict(self, request: Request) -> Response:
        """A plain Starlette route (FastAPI's dependency machinery costs ~0.1 ms a request and validates nothing
        here: the body is validated against the bundle's schema below); documented in _install_openapi."""
        t0: float = request.scope["state"]["t0"]
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        form = ctype == "multipart/form-data"
        try:
            self.batcher.admit(1)  # a full queue refuses before the body is read: shedding must cost next to nothing
            if not form and ctype != "application/json" and not ctype.endswith("+json"):
                return _json_response(415, {"detail": "Send application/json or multipart/form-data"})
            body = await request.body()  # within the _Gate's time and size limits
        except Overloaded as err:
            return self._queue_full(err)
        except Draining:
            return self._draining()
        except ClientDisconnect:  # gone before its body was complete: nobody to answer
            return Response(status_code=499)
        if self.predicting >= self.settings.max_inflight_requests:
            # Refused before parsing: under overload the event loop itself is the bottleneck, and every request it
            # takes on lengthens every admitted request's wait.
            self.metrics.shed.inc("busy")
            return _json_response(
                503, {"detail": "Overloaded: too many requests in flight; retry later"}, {"Retry-After": "1"}
            )
        self.predicting += 1
        try:
            return await self._predict(request, body, form, t0)
        finally:
            self.predicting -= 1

    async def _predict(self, request: Request, body: bytes, form: bool, t0: float) -> Response:
        settings, schema, batcher, metrics = self.settings, self.schema, self.batcher, self.metrics
        try:
            table = schema.from_form(await _read_form(request, schema, settings)) if form else schema.from_json(body)
            # From the image headers, before anything is decoded: a few huge images would otherwise hold the
            # inference thread for seconds, and their decoded pixels the memory.
            pixels = schema.image_pixels(
                table, max_image=settings.max_image_pixels, max_request=settings.max_request_pixels, form=form
            )
            future = batcher.submit(table, cost=pixels)
        except InvalidRequest as err:
            return _json_response(422, {"detail": err.errors})
        except TooLarge as err:
            return _json_response(413, {"detail": str(err)})
        except Overloaded as err:
            return self._queue_full(err)
        except Draining:
            return self._draining()
        deadline = settings.request_timeout_s
        try:
            used, rows = await asyncio.wait_for(future, deadline - (time.perf_counter() - t0))
        except TimeoutError:
            metrics.shed.inc("deadline")
            return _json_response(504, {"detail": f"Not scored within the {deadline:g} s deadline"})
        except Draining:  # the drain timed out before this request's batch ran
            return self._draining()
        except Exception:
            log.exception("scoring a request failed")
            return _json_response(500, {"detail": "The model failed on this request; the server log says why"})
        ok = sum(1 for r in rows if r["error"] is None)
        metrics.rows.inc("ok", by=ok)
        metrics.rows.inc("error", by=len(rows) - ok)
        if rows and not ok:
            # Nothing usable came out: an error status, so a client that checks only the status sees it.
            errors = [row_error(i, used.error_column(table, i, r["error"]), r["error"], form=form)
                      for i, r in enumerate(rows)]  # fmt: skip
            return _json_response(422, {"detail": errors})
        return Response(json.dumps({"model": used.describe(), "predictions": rows}), media_type="application/json")

    def _queue_full(self, err: Overloaded) -> Response:
        self.metrics.shed.inc("queue_full")
        return _json_response(
            503,
            {"detail": "Overloaded: too many rows waiting for the model; retry later"},
            {"Retry-After": str(err.retry_after_s)},
        )

    def _draining(self) -> Response:
        self.metrics.shed.inc("draining")
        return _json_response(503, {"detail": "Shutting down"}, {"Retry-After": "1", "Connection": "close"})

    async def recommend(self, body: RecommendRequest) -> Response:
        """The top-k items for one user (a recommendation model); a user the model never learned gets the
        popularity ranking, and `source` says so."""
        current = self.batcher.model
        predictor = current.predictor
        if predictor.task != "recommendation":
            return _json_response(404, {"detail": f"This model does a {predictor.task}, not recommendations; use "
                                                  f"{PREDICT}"})  # fmt: skip
        if self.draining:
            return self._draining()
        rec = predictor.recommender()
        unknown = sorted(set(body.features) - set(rec.user_columns))
        if unknown:
            msg = f"not a user feature of this model (user features: {', '.join(rec.user_columns)})"
            errors = [{"loc": ["body", "features", n], "type": "extra_forbidden", "msg": msg} for n in unknown]
            return _json_response(422, {"detail": errors})
        try:
            row = {**body.features, rec.user_codec.column: body.user}
            table = self.schema.from_json(json.dumps({"rows": [row]}).encode())
        except InvalidRequest as err:
            return _json_response(422, {"detail": err.errors})
        exclude = {int(i) for i in rec.item_index(body.exclude)} - {0}
        k = body.k or rec.k
        out = await asyncio.to_thread(rec, table, exclude=[exclude], k=k)
        row = out.to_pylist()[0]
        if row["error"] is not None:
            return _json_response(422, {"detail": [row_error(0, rec.user_codec.column, row["error"], form=False)]})
        items = [{"item": i, "score": s} for i, s in zip(row["items"], row["scores"], strict=True)]
        self.metrics.rows.inc("ok")
        doc = {"model": current.describe(), "user": body.user, "source": row["source"], "items": items}
        return Response(json.dumps(doc), media_type="application/json")

    async def explain(self, request: Request) -> Response:
        """Attributions per row (documented in _install_openapi): computed in their own processes, at most
        max_inflight_explain at once, so they cannot starve /v1/predict."""
        t0: float = request.scope["state"]["t0"]
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        form = ctype == "multipart/form-data"
        if not form and ctype != "application/json" and not ctype.endswith("+json"):
            return _json_response(415, {"detail": "Send application/json or multipart/form-data"})
        if self.draining:
            return self._draining()
        if not self.explains.admit():
            self.metrics.shed.inc("explain_busy")
            return _json_response(
                503, {"detail": "Too many explanations in progress; retry later"}, {"Retry-After": "1"}
            )
        try:
            body = await request.body()
            table = (
                self.schema.from_form(await _read_form(request, self.schema, self.settings))
                if form
                else self.schema.from_json(body)
            )
            self.schema.image_pixels(table, max_image=self.settings.max_image_pixels,
                                     max_request=self.settings.max_request_pixels, form=form)  # fmt: skip
        except InvalidRequest as err:
            self.explains.release()
            return _json_response(422, {"detail": err.errors})
        except TooLarge as err:
            self.explains.release()
            return _json_response(413, {"detail": str(err)})
        except BaseException:
            self.explains.release()
            raise
        used = self.batcher.model
        return await self.explains.run(used, table, t0)

    async def model_info(self) -> dict[str, Any]:
        current, settings = self.batcher.model, self.settings
        return {
            **current.describe(),
            "task": current.task,
            "classes": current.predictor.classes or None,
            "inputs": current.signature,
            "batching": {
                "max_batch_size": settings.max_batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms,
                "max_queue_rows": settings.max_queue_rows,
                "max_request_rows": settings.max_request_rows,
                "request_timeout_s": settings.request_timeout_s,
            },
        }

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(self) -> Response:
        if self.batcher.running and not self.draining:
            # With a token, the probes are the only routes open to anyone: they must not tell what is served.
            shown = {"model": self.batcher.model.describe()} if self.token is None else {}
            return _json_response(200, {"status": "ready", **shown})
        return _json_response(503, {"status": "not ready"})

    async def metrics_route(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)


class _Explains:
    """The /v1/explain side of the server: a pool of max_inflight_explain worker processes at a lower CPU
    priority (started on the first explanation), each loading the served bundle once, and the count of
    explanations admitted (a slot is freed when its worker is done, not when its client stops waiting).
    Processes, not threads: attribution holds the GIL for most of its forward and backward passes, and threads
    of the server's own process would make /v1/predict wait for it."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.admitted = 0
        self._pool: Any = None
        self._lock = threading.Lock()

    def admit(self) -> bool:
        if self.admitted >= self.settings.max_inflight_explain:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    def pool(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.settings.max_inflight_explain, initializer=_explain_worker_init,
                                                 mp_context=multiprocessing.get_context("spawn"))  # fmt: skip
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def _broken(self) -> None:
        with self._lock:  # a worker died (killed, out of memory): the next explanation starts a new pool
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def run(self, scorer: Scorer, table: pa.Table, t0: float) -> Response:
        from concurrent.futures.process import BrokenProcessPool

        p = scorer.predictor
        source = p.bundle.source
        if source is None:
            self.release()  # admitted in explain(): the slot is this request's
            return _json_response(500, {"detail": "This model was not loaded from a bundle directory"})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        job = (str(source), scorer.name, scorer.version, p.trust_modules, self.settings.explain_steps,
               sink.getvalue().to_pybytes())  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.pool(), _explain_in_worker, *job)
        except BrokenProcessPool:
            self._broken()
            future = loop.run_in_executor(self.pool(), _explain_in_worker, *job)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self.release))
        deadline = self.settings.explain_timeout_s
        try:
            rows = await asyncio.wait_for(asyncio.shield(future), deadline - (time.perf_counter() - t0))
        except TimeoutError:
            return _json_response(504, {"detail": f"Not explained within the {deadline:g} s deadline"})
        except BrokenProcessPool:
            self._broken()
            log.error("an explanation worker process died; the next explanation starts a new one")
            return _json_response(500, {"detail": "The explanation worker died; retry"})
        except Exception:
            log.exception("explaining a request failed")
            return _json_response(500, {"detail": "The explanation failed on this request; the server log says why"})
        # The rows arrive as JSON text from the worker: encoding them here would hold the GIL /v1/predict needs.
        body = b'{"model": ' + json.dumps(scorer.describe()).encode() + b', "explanations": ' + rows + b"}"
        return Response(body, media_type="application/json")


_WORKER_EXPLAINERS: dict[tuple[Any, ...], Any] = {}  # in an explanation worker: one Explainer per served version


def _explain_worker_init() -> None:
    """An explanation worker: the lowest CPU priority (nice 19: a CPU share of about 1.5 % against a scoring
    thread at nice 0, where nice 10 left it about 10 %) and one torch thread, so scoring keeps its latency and
    explanations use what is left."""
    import torch

    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    torch.set_num_threads(1)


def _explain_in_worker(
    source: str, name: str | None, version: str | None, trust: tuple[str, ...], n_steps: int, payload: bytes
) -> bytes:
    """The explanations of the rows in `payload` (an Arrow IPC stream), as a JSON array."""
    from lakenet.inference.explain import Explainer

    key = (source, name, version, trust, n_steps)
    if key not in _WORKER_EXPLAINERS:
        _WORKER_EXPLAINERS.clear()  # a new version replaces the old one (follow_alias)
        _WORKER_EXPLAINERS[key] = Explainer(source, n_steps=n_steps, model_name=name, model_version=version,
                                            trust_modules=trust)  # fmt: skip
    table = pa.ipc.open_stream(payload).read_all()
    return json.dumps(explain_rows(_WORKER_EXPLAINERS[key](table))).encode()


def explain_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The Explainer's rows as JSON: maps as objects, the heat map as base64 PNG. A row whose output or
    attributions are not finite numbers (an input so large it overflowed the model) is the error row
    `non_finite_output`, as /v1/predict answers it: JSON has no NaN, and a null attribution would say nothing."""
    out = []
    for r in batch.to_pylist():
        for k in ("attributions", "regions"):
            r[k] = dict(r[k]) if r[k] is not None else None
        if r.get("image_map") is not None:
            r["image_map"] = base64.b64encode(r["image_map"]).decode()
        numbers = [r.get("output"), r.get("baseline_output"), *(r["attributions"] or {}).values()]
        if r.get("error") is None and not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
            r = {**dict.fromkeys(r), "key": r.get("key"), "error": "non_finite_output"}
        out.append(r)
    return out


def create_app(predictor: Predictor, settings: ServeSettings, *, refresh: Refresh | None = None) -> FastAPI:
    """The app serving `predictor`; with `refresh`, a background task swaps in the Predictor it returns."""
    svc = _Service(predictor, settings, refresh)
    app = FastAPI(
        title=f"lakenet: {svc.scorer.name or 'model'}",
        version=str(svc.scorer.version or "bundle"),
        description="Scores rows with the model's training-time preprocessing. POST /v1/predict with JSON "
        '(`{"rows": [...]}`, images base64) or multipart/form-data (one part per input column).',
        lifespan=svc.lifespan,
        redoc_url=None,
    )
    app.add_middleware(
        _Gate,
        token=svc.token,
        max_body_bytes=settings.max_body_bytes,
        metrics=svc.metrics,
        body_timeout_s=settings.body_timeout_s,
        max_held_bytes=settings.max_inflight_requests * settings.max_body_bytes,
    )
    app.state.batcher = svc.batcher
    app.state.metrics = svc.metrics
    app.add_route(PREDICT, svc.predict, methods=["POST"], include_in_schema=False)
    app.add_route(EXPLAIN, svc.explain, methods=["POST"], include_in_schema=False)
    app.post(
        RECOMMEND,
        summary="Recommend items to a user",
        description="A recommendation model's top-k items for `user`, scored by its two towers (the user-side "
        "`features` as for /v1/predict; missing ones filled by the model's rules). A user the model never learned "
        "(cold start) gets the most popular items, and `source` is `popularity` instead of `model`.",
        response_model=RecommendResponse,
        responses=_recommend_responses(),
    )(svc.recommend)
    app.get("/v1/model", summary="The model being served and its inputs")(svc.model_info)
    app.get("/healthz", summary="Liveness: the process answers")(svc.healthz)
    app.get("/readyz", summary="Readiness: a model is loaded and requests are admitted",
            responses={503: {"description": "Not ready (starting or shutting down)."}})(svc.readyz)  # fmt: skip
    text: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}
    app.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=text)(svc.metrics_route)
    _install_openapi(app, svc.schema, svc.scorer, secured=svc.token is not None)
    return app


def _load_next(refresh: Refresh) -> Scorer | None:
    predictor = refresh()
    if predictor is None:
        return None
    warm_up(predictor)
    return Scorer(predictor)


_FORM_PARTS = 1000  # Starlette's default limit on fields (and on files) per form


async def _read_form(request: Request, schema: RequestSchema, settings: ServeSettings) -> dict[str, list[str | bytes]]:
    # Fields the model does not take are ignored, as unknown keys of a JSON row are (the documented form allows
    # them): the limit leaves room for them. The body's size bounds the parsing work anyway.
    limit = max(_FORM_PARTS, schema.max_rows * len(schema.columns))
    form = await request.form(max_files=limit, max_fields=limit, max_part_size=settings.max_body_bytes)
    try:
        fields: dict[str, list[str | bytes]] = {}
        for key, value in form.multi_items():
            fields.setdefault(key, []).append(await value.read() if isinstance(value, UploadFile) else value)
        return fields
    finally:
        await form.close()


def _install_openapi(app: FastAPI, schema: RequestSchema, scorer: Scorer, *, secured: bool) -> None:
    """The generated document plus the request models derived from the bundle's signature."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        for model in (schema.request_model, response_model(task=scorer.task)):
            js = model.model_json_schema(ref_template=ref)
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        components["PredictForm"] = schema.form_schema()
        doc["paths"] = {PREDICT: {"post": _predict_operation()}, EXPLAIN: {"post": _explain_operation()},
                        **doc["paths"]}  # fmt: skip
        components["ExplainResponse"] = _explain_response_schema()
        components["ValidationErrors"] = {
            "type": "object",
            "properties": {
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                }
            },
            "required": ["detail"],
        }
        if secured:
            doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in doc["paths"].items():
                if path not in OPEN_PATHS:
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
