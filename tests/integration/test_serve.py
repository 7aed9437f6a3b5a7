"""`lakenet serve` on real uvicorn on 127.0.0.1, with models trained and registered in a real MLflow sqlite store:
round trips equal batch scoring, every error status, the token, load shedding, deadlines, draining, alias
following, metrics, the CLI, and a schemathesis run over the OpenAPI document."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

import lakenet
from lakenet.cli import main
from lakenet.data.sources import open_table
from lakenet.demo import write_digits_folder
from lakenet.errors import ConfigError, ModelError
from lakenet.inference.predictor import Predictor
from lakenet.serving.schema import ROW_ERRORS
from lakenet.serving.server import ServerHandle, start_background
from lakenet.serving.settings import make_settings
from tests.conftest import digits_config

pytestmark = pytest.mark.integration

TOKEN = "test-token-0123456789abcdef"
DIGITS = "models:/digits@champion"
WINE1, WINE2 = "models:/wine/1", "models:/wine/2"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, wine_csv: Path) -> Iterator[dict[str, Any]]:
    """One working directory (own MLflow store) with a digits CNN and two versions of a wine MLP. The digits
    table is this module's own: training writes a quarantine table next to it."""
    wd = tmp_path_factory.mktemp("serve")
    mp = pytest.MonkeyPatch()
    mp.chdir(wd)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_digits_folder(wd / "images", limit=240, corrupt=3)
    digits_table = Path(lakenet.ingest(wd / "images", wd / "digits").table)
    digits = lakenet.fit(digits_config(digits_table, trainer__epochs=1), progress=False)
    raw = yaml.safe_load(lakenet.init_config(str(wine_csv), label="cultivar", name="wine"))
    raw["trainer"].update(epochs=3, batch_size=16, learning_rate=0.01)
    wine1 = lakenet.fit(raw, progress=False)
    raw["trainer"]["seed"] = 7
    wine2 = lakenet.fit(raw, progress=False)
    assert (wine1.version, wine2.version) == ("1", "2")
    yield {"wd": wd, "digits": digits, "wine": [wine1, wine2], "digits_table": digits_table, "wine_csv": wine_csv}
    mp.undo()


def serve(model: str, **settings: Any) -> ServerHandle:
    handle = lakenet.serve(model, port=0, background=True, log_level="warning", **settings)
    assert handle is not None
    return handle


def wine_rows(csv: Path) -> pa.Table:
    snap = open_table(str(csv))
    return pa.concat_tables([snap.read(f) for f in snap.fragments])


def rows_json(table: pa.Table, columns: list[str]) -> list[dict[str, Any]]:
    out = []
    for row in table.select(columns).to_pylist():
        out.append({k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in row.items()})
    return out


def expected(batch: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """Batch-scoring output rows in the server's JSON shape."""
    keep = [c for c in ("prediction", "confidence", "probabilities", "error") if c in batch.schema.names]
    rows = batch.select(keep).to_pylist()
    for r in rows:
        if r.get("probabilities") is not None:
            r["probabilities"] = dict(r["probabilities"])
    return rows


def metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# ---- round trips -----------------------------------------------------------------------------------------------
def test_image_round_trips_equal_batch_scoring(reg: dict[str, Any]) -> None:
    table = DeltaTable(str(reg["digits_table"])).to_pyarrow_table(columns=["key", "image"]).sort_by("key")
    scored = lakenet.predict(DIGITS, str(reg["digits_table"]), str(reg["wd"] / "digits_scored"), workers=1)
    assert scored.bad_rows == 3
    batch = DeltaTable(scored.table).to_pyarrow_table().sort_by("key")
    direct = Predictor(reg["digits"].bundle_dir)
    with serve(DIGITS) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        # JSON, base64 images, every row in one request: the same rows in the same order as the batch job
        r = c.post("/v1/predict", json={"rows": rows_json(table, ["image"])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == {"name": "digits", "version": "1"}
        assert body["predictions"] == expected(batch)
        assert sorted(p["error"] for p in body["predictions"] if p["error"]) == [
            "empty_image",
            "truncated_image",
            "undecodable_image",
        ]
        # multipart, image files, several rows per request (the field repeated), as curl -F image=@x.png sends
        for start in range(0, 40, 4):
            part = table.slice(start, 4)
            files = [("image", (f"{k}.png", v, "image/png")) for k, v in zip(*part.to_pydict().values(), strict=True)]
            r = c.post("/v1/predict", files=files)
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == expected(direct(part))


def test_tabular_round_trips_equal_batch_scoring(reg: dict[str, Any]) -> None:
    wine = wine_rows(reg["wine_csv"])
    scored = lakenet.predict(WINE1, str(reg["wine_csv"]), str(reg["wd"] / "wine_scored"), workers=1)
    batch = DeltaTable(scored.table).to_pyarrow_table().sort_by("key")
    direct = Predictor(reg["wine"][0].bundle_dir)
    columns = direct.input_columns
    assert "od280/od315_of_diluted_wines" in columns
    wine = wine.sort_by("key")
    with serve(WINE1) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/predict", json={"rows": rows_json(wine, columns)})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected(batch)
        for i in range(0, 20, 5):  # one row per request, as an online client sends them
            row = wine.slice(i, 1)
            r = c.post("/v1/predict", json={"rows": rows_json(row, columns)})
            assert r.json()["predictions"] == expected(direct(row))
        # the same row as a form (every value a text field)
        row = wine.slice(3, 1)
        form = {k: str(v[0]) for k, v in row.select(columns).to_pydict().items()}
        r = c.post("/v1/predict", data=form)
        assert r.status_code == 415  # urlencoded is not multipart
        r = c.post("/v1/predict", files={k: (None, v) for k, v in form.items()})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected(direct(row))
        info = c.get("/v1/model").json()
        assert info["name"] == "wine" and info["version"] == "1" and info["task"] == "classification"
        assert [i["name"] for i in info["inputs"]] == columns


def test_a_timestamp_sent_as_an_iso_string_scores_as_in_the_table(reg: dict[str, Any], tmp_path: Path) -> None:
    """The table stores microseconds, the request an ISO 8601 string: the same instant, the same prediction (a
    model once saw a 1000× larger epoch online and answered every request alike)."""
    from datetime import datetime

    from lakenet.examples import transactions_frame

    transactions_frame(600, seed=2, start_id=0).to_csv(tmp_path / "tx.csv", index=False)
    table = lakenet.ingest(tmp_path / "tx.csv", tmp_path / "tx").table
    cfg = {
        "data": {"table": table, "key": "transaction_id"},
        "features": {"label": "is_fraud", "include": "auto", "exclude": ["customer_id", "key"]},
        "trainer": {"epochs": 2, "baseline": "none", "importance_repeats": 0},
        "registry": {"name": "tx_serve"},
    }
    fit = lakenet.fit(cfg, progress=False)
    rows = DeltaTable(table).to_pyarrow_table().slice(0, 12)
    assert pa.types.is_timestamp(rows.schema.field("timestamp").type)
    direct = Predictor(fit.bundle_dir)
    assert "timestamp" in direct.input_columns
    body = [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}
            for r in rows.select(direct.input_columns).to_pylist()]  # fmt: skip
    want = expected(direct(rows))
    assert len({round(w["confidence"], 6) for w in want}) > 1  # the rows do differ
    with serve(fit.model_uri) as srv, httpx.Client(base_url=srv.url) as c:
        got = c.post("/v1/predict", json={"rows": body}).json()["predictions"]
    assert [g["prediction"] for g in got] == [w["prediction"] for w in want]
    assert [g["confidence"] for g in got] == pytest.approx([w["confidence"] for w in want], abs=1e-6)


# ---- errors --------------------------------------------------------------------------------------------------
def test_error_statuses_name_the_problem(reg: dict[str, Any]) -> None:
    columns = Predictor(reg["wine"][0].bundle_dir).input_columns
    good = rows_json(wine_rows(reg["wine_csv"]).slice(0, 1), columns)[0]
    with serve(WINE1, max_body_bytes=4096, max_request_rows=4) as srv, httpx.Client(base_url=srv.url) as c:
        missing = {k: v for k, v in good.items() if k != "proline"}  # an absent value is filled by the model's rule
        r = c.post("/v1/predict", json={"rows": [good, missing, {**good, "proline": None}]})
        assert r.status_code == 200 and [p["error"] for p in r.json()["predictions"]] == [None] * 3
        r = c.post("/v1/predict", json={"rows": [{**good, "proline": "lots"}]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "rows", 0, "proline"]
        r = c.post("/v1/predict", json={"rows": [{**good, "hue": "high"}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rows", 0, "hue"]
        r = c.post("/v1/predict", json={"rows": [good] * 5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rows"]
        r = c.post("/v1/predict", content=b'{"rows": [', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        r = c.post("/v1/predict", content=b"alcohol=1", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/v1/predict", files={"alcohol": (None, "high")})
        assert r.status_code == 422 and ["body", "alcohol", 0] in [e["loc"] for e in r.json()["detail"]]
        # too large: declared up front, and streamed without a length (chunked)
        big = json.dumps({"rows": [good], "pad": "x" * 8000}).encode()
        r = c.post("/v1/predict", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]
        r = c.post("/v1/predict", content=iter([big[:3000], big[3000:]]), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/predict", json={"rows": [good]}).status_code == 200  # and it keeps serving
        assert c.get("/nope").status_code == 404
        text = c.get("/metrics").text
        for status in ("200", "404", "413", "415", "422"):
            assert metric(text, f'lakenet_http_requests_total{{route="/v1/predict",status="{status}"}}') >= (
                0 if status == "404" else 1
            )
        assert metric(text, 'lakenet_http_requests_total{route="other",status="404"}') == 1


def test_image_row_errors_and_422(reg: dict[str, Any]) -> None:
    with serve(DIGITS) as srv, httpx.Client(base_url=srv.url) as c:
        # no row could be scored: 422 naming the row and the column, not 200 with nothing but errors
        r = c.post("/v1/predict", files={"image": ("x.png", b"not an image", "image/png")})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "image", 0]
        assert r.json()["detail"][0]["type"] == "undecodable_image"
        r = c.post("/v1/predict", json={"rows": [{"image": "%%%"}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "rows", 0, "image"]
        assert "base64" in r.json()["detail"][0]["msg"]
        r = c.post("/v1/predict", files={"picture": ("x.png", b"x", "image/png")})  # no field the model reads
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "missing_image"
        r = c.post("/v1/predict", json={"rows": [{"image": None}]})  # this model quarantines a missing image
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "missing_image"


class Gated(Predictor):
    """The real predictor, held at a gate before each batch, so a test decides when the model is busy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        self.entered.set()
        assert self.gate.wait(30)
        return super().__call__(batch)


def gated_server(reg: dict[str, Any], **settings: Any) -> tuple[ServerHandle, Gated, dict[str, Any]]:
    pred = Gated(reg["wine"][0].bundle_dir, model_name="wine", model_version="1")
    row = rows_json(wine_rows(reg["wine_csv"]).slice(0, 1), pred.input_columns)[0]
    handle = start_background(pred, make_settings(port=0, log_level="warning", **settings))
    return handle, pred, {"rows": [row]}


def test_full_queue_sheds_load_with_503_and_retry_after(reg: dict[str, Any]) -> None:
    srv, pred, body = gated_server(reg, max_batch_size=1, max_queue_rows=2, max_request_rows=1)
    url = srv.url + "/v1/predict"
    with srv, ThreadPoolExecutor(3) as pool:
        first = pool.submit(httpx.post, url, json=body, timeout=30)
        assert pred.entered.wait(20)
        queued = [pool.submit(httpx.post, url, json=body, timeout=30) for _ in range(2)]
        wait_for(lambda: srv.app.state.batcher.queued_rows == 2)
        t0 = time.perf_counter()
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert time.perf_counter() - t0 < 2.0  # refused at once, not queued
        pred.gate.set()
        assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, 'lakenet_rejected_requests_total{reason="queue_full"}') == 1
        assert metric(text, "lakenet_queue_rows") == 0


def test_too_many_requests_in_flight_are_refused_before_their_body_is_parsed(reg: dict[str, Any]) -> None:
    srv, pred, body = gated_server(reg, max_inflight_requests=2)
    url = srv.url + "/v1/predict"
    with srv, ThreadPoolExecutor(2) as pool:
        # One at a time: sent together, both could land in one batch and nothing would be queued.
        inflight = [pool.submit(httpx.post, url, json=body, timeout=30)]
        assert pred.entered.wait(20)
        inflight.append(pool.submit(httpx.post, url, json=body, timeout=30))
        wait_for(lambda: srv.app.state.batcher.queued_rows == 1)
        r = httpx.post(url, content=b"{not even json", headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"  # not 422: never parsed
        assert httpx.get(srv.url + "/healthz").status_code == 200  # other routes do not count
        pred.gate.set()
        assert [f.result().status_code for f in inflight] == [200, 200]
        assert httpx.post(url, json=body, timeout=30).status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, 'lakenet_rejected_requests_total{reason="busy"}') == 1


def test_deadline_gives_504_and_the_server_keeps_serving(reg: dict[str, Any]) -> None:
    srv, pred, body = gated_server(reg, request_timeout_s=0.3)
    with srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/predict", json=body)
        assert r.status_code == 504 and "deadline" in r.json()["detail"]
        assert 0.3 <= time.perf_counter() - t0 < 5
        pred.gate.set()  # the timed-out batch finishes in the background; nobody is waiting for it
        r = c.post("/v1/predict", json=body)
        assert r.status_code == 200
        assert metric(c.get("/metrics").text, 'lakenet_rejected_requests_total{reason="deadline"}') == 1


def test_graceful_shutdown_answers_in_flight_requests(reg: dict[str, Any]) -> None:
    srv, pred, body = gated_server(reg, max_batch_size=1)
    url = srv.url + "/v1/predict"
    with ThreadPoolExecutor(4) as pool:
        inflight = [pool.submit(httpx.post, url, json=body, timeout=30) for _ in range(3)]
        assert pred.entered.wait(20)
        wait_for(lambda: srv.app.state.batcher.queued_rows == 2)
        stopping = pool.submit(srv.stop)

        def refused() -> bool:
            try:
                httpx.get(srv.url + "/healthz", timeout=1)
            except httpx.TransportError:
                return True
            return False

        wait_for(refused)  # no new connections once shutting down ...
        assert not any(f.done() for f in inflight)
        pred.gate.set()  # ... but every admitted request is answered
        assert [f.result().status_code for f in inflight] == [200, 200, 200]
        stopping.result(timeout=30)
    assert not srv.thread.is_alive()


# ---- security ------------------------------------------------------------------------------------------------
def test_token_is_enforced_except_on_probes(reg: dict[str, Any], tmp_path: Path) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    columns = Predictor(reg["wine"][0].bundle_dir).input_columns
    body = {"rows": rows_json(wine_rows(reg["wine_csv"]).slice(0, 1), columns)}
    with serve(WINE1, token_file=token_file) as srv, httpx.Client(base_url=srv.url) as c:
        for path in ("/v1/model", "/metrics", "/openapi.json", "/docs"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert c.post("/v1/predict", json=body).status_code == 401
        wrong = {"authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert c.post("/v1/predict", json=body, headers=wrong).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"authorization": TOKEN}).status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert c.post("/v1/predict", json=body, headers=auth).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        doc = c.get("/openapi.json", headers=auth).json()
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_refuses_to_expose_without_a_token(reg: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        lakenet.serve(WINE1, host="0.0.0.0", background=True)
    with pytest.raises(SystemExit) as e:
        main(["serve", WINE1, "--host", "0.0.0.0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without a token" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="--follow-alias needs a registry alias"):
        lakenet.serve(WINE1, follow_alias=True, background=True)
    with pytest.raises(ModelError, match="not found"):
        lakenet.serve("models:/nope@champion", background=True)


# ---- operations ----------------------------------------------------------------------------------------------
def test_probes_and_metrics(reg: dict[str, Any]) -> None:
    columns = Predictor(reg["wine"][0].bundle_dir).input_columns
    rows = rows_json(wine_rows(reg["wine_csv"]).slice(0, 3), columns)
    with serve(WINE1) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready", "model": {"name": "wine", "version": "1"}}
        for _ in range(4):
            assert c.post("/v1/predict", json={"rows": rows}).status_code == 200
        r = c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.text
    assert metric(text, 'lakenet_http_requests_total{route="/v1/predict",status="200"}') == 4
    assert metric(text, 'lakenet_predict_latency_seconds_bucket{le="+Inf"}') == 4
    assert metric(text, "lakenet_predict_latency_seconds_count") == 4
    assert metric(text, 'lakenet_batch_size_rows_bucket{le="2.0"}') == 0
    assert metric(text, 'lakenet_batch_size_rows_bucket{le="4.0"}') == 4
    assert metric(text, 'lakenet_predict_rows_total{outcome="ok"}') == 12
    assert metric(text, "lakenet_queue_rows") == 0
    assert metric(text, 'lakenet_model_info{name="wine",version="1"}') == 1
    assert metric(text, "process_cpu_seconds_total") > 0


def test_follow_alias_switches_versions_without_failing_a_request(
    reg: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    main(["models", "promote", "wine", "1", "--alias", "live"])
    assert "models:/wine@live → version 1" in capsys.readouterr().out
    columns = Predictor(reg["wine"][0].bundle_dir).input_columns
    body = {"rows": rows_json(wine_rows(reg["wine_csv"]).slice(0, 2), columns)}
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()
    with serve("models:/wine@live", follow_alias=True, poll_interval_s=0.1) as srv:

        def client() -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                while not stop.is_set() and len(seen) < 5000:
                    r = c.post("/v1/predict", json=body)
                    seen.append((r.status_code, r.json()["model"]["version"] if r.status_code == 200 else None))

        clients = [threading.Thread(target=client) for _ in range(2)]
        for t in clients:
            t.start()
        wait_for(lambda: len(seen) >= 10)
        assert lakenet.promote("wine", 2, alias="live") == "1"
        wait_for(lambda: any(v == "2" for _, v in seen[-5:]), timeout=30)
        n = len(seen)
        wait_for(lambda: len(seen) >= n + 10)
        stop.set()
        for t in clients:
            t.join()
        text = httpx.get(srv.url + "/metrics").text
    assert {s for s, _ in seen} == {200}, "a request failed during the switch"
    first_new = next(i for i, (_, v) in enumerate(seen) if v == "2")
    assert all(v == "2" for _, v in seen[first_new + 2 :])  # two client threads: at most one straggler each
    assert metric(text, "lakenet_model_swaps_total") == 1
    assert metric(text, 'lakenet_model_info{name="wine",version="2"}') == 1


def test_cli_serve_drains_on_sigterm(reg: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakenet.cli", "serve", WINE1, "--port", str(port), "--workdir", str(reg["wd"])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60)
        columns = Predictor(reg["wine"][0].bundle_dir).input_columns
        body = {"rows": rows_json(wine_rows(reg["wine_csv"]).slice(0, 1), columns)}
        assert httpx.post(url + "/v1/predict", json=body).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "drained" in out and "Traceback" not in out


# ---- the OpenAPI document --------------------------------------------------------------------------------------
def test_openapi_describes_the_real_fields(reg: dict[str, Any]) -> None:
    with serve(WINE1) as srv:
        doc = httpx.get(srv.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    columns = Predictor(reg["wine"][0].bundle_dir).input_columns
    assert list(schemas["PredictRow"]["properties"]) == columns
    assert schemas["PredictRow"]["properties"]["region"]["anyOf"][0] == {"type": "string"}
    assert schemas["PredictRow"]["properties"]["alcohol"]["anyOf"][0] == {"type": "number"}
    assert list(schemas["PredictForm"]["properties"]) == columns
    assert set(doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
    }


@pytest.mark.parametrize("model", [WINE1, DIGITS])
def test_schemathesis_finds_no_server_errors(reg: dict[str, Any], model: str, tmp_path: Path) -> None:
    """Schema-valid and schema-invalid requests for every operation: never a 5xx, and every response passes
    schemathesis's checks (documented status codes and bodies, auth enforced, invalid data rejected)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    auth = {"authorization": f"Bearer {TOKEN}"}
    calls = 0
    with serve(model, token_file=token_file, max_request_rows=8) as srv:
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json", headers=auth)
        for result in schema.get_all_operations():
            operation = result.ok()
            negative = [GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else []  # GETs take nothing
            for mode in [GenerationMode.POSITIVE, *negative]:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=25,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    nonlocal calls
                    calls += 1
                    response = case.call(base_url=srv.url, headers=auth)
                    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
                    # Schema-valid rows the model cannot score (random bytes as an image, a number that overflows
                    # the model) get 422 when no row of the request could be scored: the schema cannot say that.
                    unscorable = response.status_code == 422 and all(
                        e["type"] in ROW_ERRORS for e in response.json()["detail"]
                    )
                    excluded = [positive_data_acceptance] if unscorable else []
                    if "multipart" in (case.media_type or ""):
                        # Every multipart value is text: a JSON null the generator sends as a "wrong type" arrives
                        # as the string "null", which a category or text column rightly takes as a value.
                        excluded.append(negative_data_rejection)
                    case.validate_response(response, headers=auth, excluded_checks=excluded)

                check()
        text = httpx.get(srv.url + "/metrics", headers=auth).text
    assert calls > 100
    assert not [line for line in text.splitlines() if 'status="5' in line]
