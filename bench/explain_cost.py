"""explain_cost: what per-row attributions (Integrated Gradients) cost next to predictions, in batch and online.

Set-up (fixed costs, reported apart): a Delta table of N card transactions (`lakenet.examples.transactions_frame`,
CSV → `lakenet.ingest`; N = 20,000, --quick: 2,000), a fraud MLP (width 64, depth 2, `features: {label: is_fraud,
include: auto, exclude: [customer_id, key]}`, `baseline: none`, `importance_repeats: 0`) trained on other rows of
the same generator and registered as models:/fraud@champion, and (full runs) a 1,024-row table for the per-call
cost. The integration steps the explanations actually used (lakenet redoes a row with 4× the steps, twice at most,
when its completeness gap is too large) are recorded for each path.

1. Batch throughput, the local engine (a process pool, one worker per core, 1 torch thread each). Per pair,
   interleaved (A B, B A, ...): A = `lakenet.predict(model, table, fresh_out)`, B = `lakenet.explain(model,
   table, fresh_out, n_steps=50)` (each into a new output table: exactly-once would make a rerun a no-op).
   Figure: B's rows/s ÷ A's rows/s (target ≥ 0.05), CPU seconds per row of the process tree (the pool's workers
   included). The same in-process (no engine, no Delta): `Predictor` on 256-row Arrow batches (what predict
   scores in) and on 64-row ones, `Explainer` on 64-row batches (what explain scores in), batches read before,
   --threads torch threads: what attribution itself costs, apart from the engine.
2. /v1/explain latency: `lakenet serve <bundle> --threads 1 --max-inflight-explain S` on 127.0.0.1 (S: --slots,
   default the server's own, one less than the cores); blocks of single-row /v1/explain requests at concurrency
   1 (one keep-alive connection, raw HTTP/1.1), interleaved with
   blocks of the bare in-process `Explainer(row)` (1 torch thread): p50/p99 and the server's overhead over bare.
3. /v1/predict p99 at concurrency 1 (single rows, a fresh connection per window) unloaded, and while background
   clients (--explain-clients processes, default max_inflight_explain: processes, so that they never hold the
   GIL of the client that times /v1/predict) keep /v1/explain busy with 64-row requests; windows interleaved
   (unloaded, loaded, ...), figure: the median over pairs of loaded p99 ÷ unloaded p99 (target ≤ 1.5).
   Diagnostic window (full runs; --diagnose / --no-diagnose): the same attribution work in separate processes at
   the server's explanation workers' priority (nice 19), one per explanation slot, instead of in the server: it
   competes for the cores but not for the server's GIL, which tells CPU contention from GIL contention.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from bench._common import (
    base_parser,
    cache_root,
    cpu_seconds,
    fmt_range,
    interleave,
    machine_busy_s,
    pick_device,
    print_table,
    quiet_summary,
    scaled,
    summary,
    write_result,
)
from bench._serve import RawClient, ServerProcess, http_request, ms, no_gc, pct, start_server
from bench.serve_latency import _bare_block, _server_block
from bench.update_vs_retrain import Meter

NAME = "explain_cost"
THROUGHPUT_TARGET = 0.05  # explain rows/s ÷ predict rows/s, at least
P99_TARGET = 1.5  # /v1/predict p99 with /v1/explain loaded ÷ unloaded, at most
N_STEPS = 50
PREDICT_BATCH, EXPLAIN_BATCH = 256, 64  # the rows per batch lakenet.predict and lakenet.explain score
LOAD_ROWS = 64  # rows per background /v1/explain request
SERVER_THREADS = 1
CALL_ROWS = 1_024
OK, BUSY, OTHER, INFLIGHT, LAST_OTHER = range(5)  # the explain load's counters (LAST_OTHER: a status code)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- set-up ------------------------------------------------------------------------------------------------------
def _ingest(root: Path, name: str, rows: int, *, seed: int, start_id: int) -> str:
    import lakenet
    from lakenet.examples import transactions_frame

    csv = root / f"{name}.csv"
    transactions_frame(rows, seed=seed, start_id=start_id).to_csv(csv, index=False)
    table = lakenet.ingest(csv, root / "data" / name).table
    csv.unlink()
    return str(table)


def build(root: Path, rows: int, model_rows: int, epochs: int, exclude: list[str], *, with_small: bool
          ) -> dict[str, Any]:  # fmt: skip
    """The table, a small one for the per-call cost, and the registered model; set-up seconds."""
    import lakenet

    t0 = time.perf_counter()
    table = _ingest(root, "transactions", rows, seed=0, start_id=0)
    small = _ingest(root, "small", CALL_ROWS, seed=3, start_id=2 * 10**9) if with_small else None
    t1 = time.perf_counter()
    model_table = _ingest(root, "model_rows", model_rows, seed=1, start_id=10**9)
    cfg = {
        "data": {"table": model_table, "key": "transaction_id"},
        "features": {"label": "is_fraud", "include": "auto", "exclude": ["customer_id", "key", *exclude]},
        "model": {"architecture": "mlp", "width": 64, "depth": 2},
        "trainer": {"epochs": epochs, "baseline": "none", "importance_repeats": 0},
        "registry": {"name": "fraud"},
    }
    fit = lakenet.fit(cfg, progress=False, workdir=root)
    t2 = time.perf_counter()
    return {
        "table": table,
        "small": small,
        "model": fit.model_uri,
        "bundle_dir": Path(fit.bundle_dir),
        "config": cfg,
        "fixed": {"tables_s": t1 - t0, "model_fit_s": t2 - t1},
    }


# ---- 1. batch throughput -----------------------------------------------------------------------------------------
class EngineRuns:
    """`lakenet.predict` / `lakenet.explain` on the local engine, each into a fresh output table."""

    def __init__(self, root: Path, model: str) -> None:
        self.root, self.model = root, model

    def run(self, kind: str, table: str, expect_rows: int, *, steps: bool = False) -> dict[str, Any]:
        """One call; `steps`: also the mean integration steps per row the explanations used (read back)."""
        import lakenet

        out = self.root / f"{kind}-{uuid.uuid4().hex[:8]}"
        with Meter() as m:
            if kind == "explain":
                res = lakenet.explain(self.model, table, str(out), n_steps=N_STEPS, workdir=self.root)
            else:
                res = lakenet.predict(self.model, table, str(out), workdir=self.root)
        mean_steps = _mean_steps(str(out)) if steps and kind == "explain" else None
        shutil.rmtree(out, ignore_errors=True)
        assert res.committed and res.rows == expect_rows and res.bad_rows == 0, res
        return {"wall_s": m.wall, "cpu_s": m.cpu, "rows": res.rows, "rows_per_s": res.rows / m.wall,
                "cpu_s_per_row": m.cpu / res.rows, "foreign_cores": m.foreign_cores,
                "mean_steps": mean_steps}  # fmt: skip


def _mean_steps(table: str) -> float | None:
    from deltalake import DeltaTable

    dt = DeltaTable(table)
    if "steps" not in dt.schema().to_arrow().names:
        return None
    return float(pa.compute.mean(dt.to_pyarrow_table(columns=["steps"]).column("steps")).as_py())


def engine_pairs(runs: EngineRuns, table: str, rows: int, pairs_n: int) -> list[dict[str, Any]]:
    raw = interleave(pairs_n, lambda: runs.run("predict", table, rows), lambda: runs.run("explain", table, rows),
                     log=lambda msg: log(f"engine:{msg}"))  # fmt: skip
    out = []
    for i, (a, b) in enumerate(raw):
        out.append({"pair": i + 1, "order": "A B" if i % 2 == 0 else "B A", "predict": a, "explain": b,
                    "ratio": b["rows_per_s"] / a["rows_per_s"], "cpu_ratio": b["cpu_s_per_row"] / a["cpu_s_per_row"],
                    "foreign_cores": max(a["foreign_cores"], b["foreign_cores"])})  # fmt: skip
        log(f"    pair {i + 1}: predict {a['rows_per_s']:,.0f} rows/s, explain {b['rows_per_s']:,.0f} rows/s, "
            f"ratio {out[-1]['ratio']:.4f}, other cores {out[-1]['foreign_cores']:.2f}")  # fmt: skip
    return out


def _timed_batches(fn: Callable[[Any], Any], batches: list[pa.RecordBatch]) -> dict[str, Any]:
    rows = sum(b.num_rows for b in batches)
    with no_gc():
        c0, m0, t0 = cpu_seconds(children=False), machine_busy_s(), time.perf_counter()
        for b in batches:
            fn(b)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(children=False) - c0
    foreign = max(0.0, machine_busy_s() - m0 - cpu) / wall
    return {"wall_s": wall, "cpu_s": cpu, "rows": rows, "rows_per_s": rows / wall, "cpu_s_per_row": cpu / rows,
            "foreign_cores": foreign}  # fmt: skip


def read_rows(table: str, columns: list[str], limit: int) -> pa.Table:
    """The first `limit` rows of the table's fragments, read as the engine reads them."""
    from lakenet.data.sources import open_table

    snap = open_table(table)
    parts, n = [], 0
    for frag in snap.fragments:
        if n >= limit:
            break
        parts.append(snap.read(frag, columns))
        n += parts[-1].num_rows
    return pa.concat_tables(parts).slice(0, limit).combine_chunks()


def _steps_of(rows: pa.RecordBatch | list[dict[str, Any]]) -> float | None:
    """The mean integration steps per row of explanations (Arrow, or the server's JSON)."""
    values = rows.column("steps").to_pylist() if isinstance(rows, pa.RecordBatch) else [r["steps"] for r in rows]
    return sum(values) / len(values) if values and None not in values else None


def inprocess_pairs(predictor: Any, explainer: Any, data: pa.Table, pairs_n: int) -> list[dict[str, Any]]:
    """Predictor (256- and 64-row batches) vs Explainer (64-row batches) on batches already in memory."""
    big, small = data.to_batches(max_chunksize=PREDICT_BATCH), data.to_batches(max_chunksize=EXPLAIN_BATCH)
    predictor(big[0]), explainer(small[0])  # warm-up

    def run_a() -> dict[str, Any]:
        return {"predict": _timed_batches(predictor, big), "predict_64": _timed_batches(predictor, small)}

    raw = interleave(pairs_n, run_a, lambda: _timed_batches(explainer, small), log=lambda m: log(f"in-process:{m}"))
    out = []
    for i, (a, b) in enumerate(raw):
        p, p64 = a["predict"], a["predict_64"]
        out.append({"pair": i + 1, "order": "A B" if i % 2 == 0 else "B A", "predict": p, "predict_64": p64,
                    "explain": b, "ratio": b["rows_per_s"] / p["rows_per_s"],
                    "ratio_same_batch": b["rows_per_s"] / p64["rows_per_s"],
                    "cpu_ratio": b["cpu_s_per_row"] / p["cpu_s_per_row"],
                    "foreign_cores": max(p["foreign_cores"], p64["foreign_cores"], b["foreign_cores"])})  # fmt: skip
    return out


# ---- serving: requests, the explain load, the CPU burners ------------------------------------------------------
def request_rows(data: pa.Table, columns: list[str], n: int) -> list[dict[str, Any]]:
    """n rows of the model's input columns as JSON-ready dicts (timestamps as ISO 8601)."""
    rows = data.select(columns).slice(0, n).to_pylist()
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]


def raw_request(path: str, rows: list[dict[str, Any]]) -> bytes:
    return http_request(path, json.dumps({"rows": rows}).encode(), "application/json")


def _cpu_burner(bundle_dir: str, table: str, columns: list[str], go: Any, stop: Any, done: Any) -> None:
    """A separate process at nice 19 (the server's explanation workers'): the Explainer on LOAD_ROWS rows back to
    back while `go` is set (the same attribution work, competing for the cores but not for the server's GIL)."""
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    torch.set_num_threads(1)
    from lakenet.inference.explain import Explainer

    explainer = Explainer(bundle_dir, n_steps=N_STEPS)
    batch = read_rows(table, columns, LOAD_ROWS)
    explainer(batch)
    done[1] = 1  # ready
    while not stop.is_set():
        if go.wait(0.05):
            explainer(batch)
            done[0] += 1


class Background:
    """Workers started once and switched on and off per window (`go`), with counters; `procs` separate processes
    (`target(*args, go, stop, counters)`) or, without a target, nothing (a subclass runs threads)."""

    def __init__(self, target: Callable[..., None] | None, args: tuple[Any, ...], procs: int, counters: int) -> None:
        ctx = mp.get_context("spawn")
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.counts = [ctx.RawArray("q", counters) for _ in range(procs)]
        self.workers: list[Any] = []
        if target is not None:
            self.workers = [ctx.Process(target=target, args=(*args, self.go, self.stop, c), daemon=True)
                            for c in self.counts]  # fmt: skip
        for w in self.workers:
            w.start()

    def total(self, i: int) -> int:
        return sum(int(c[i]) for c in self.counts)

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or not all(w.is_alive() for w in self.workers):
                raise RuntimeError(f"background work: {what} did not happen")
            time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        for w in self.workers:
            w.join(10)
            if isinstance(w, mp.process.BaseProcess) and w.is_alive():
                w.kill()


def _explain_client(port: int, raw: bytes, go: Any, stop: Any, counts: Any) -> None:
    """A separate process sending `raw` to /v1/explain back to back while `go` is set, on its own connection
    (opened per window: the server closes keep-alive connections idle for 5 s), waiting for each answer."""
    while not stop.is_set():
        if not go.wait(0.05) or stop.is_set():
            continue
        client = RawClient(port)
        try:
            while go.is_set() and not stop.is_set():
                counts[INFLIGHT] += 1
                try:
                    status, _ = client.request(raw)
                finally:
                    counts[INFLIGHT] -= 1
                counts[OK if status == 200 else BUSY if status == 503 else OTHER] += 1
                if status not in (200, 503):
                    counts[LAST_OTHER] = status
                if status != 200:
                    time.sleep(0.01)
        finally:
            client.close()


class ExplainLoad(Background):
    """`clients` processes keeping /v1/explain busy (`_explain_client`). Processes, not threads of this one: at
    ~50 answers a second (64 rows each), a load thread here would hold the GIL that the client timing
    /v1/predict needs, and its reads would count as the server's latency."""

    def __init__(self, port: int, raw: bytes, clients: int) -> None:
        super().__init__(_explain_client, (port, raw), clients, 5)


# ---- 2. /v1/explain latency --------------------------------------------------------------------------------------
def explain_latency(server: ServerProcess, explainer: Any, rows: list[dict[str, Any]], table1: pa.Table,
                    pairs_n: int, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Blocks of single-row /v1/explain (A) and of the bare in-process Explainer on the same row (B)."""
    raw = raw_request("/v1/explain", rows[:1])
    client = RawClient(server.port)
    t0 = time.perf_counter()
    status, body = client.request(raw)  # builds the server's Explainer
    first_ms = ms(time.perf_counter() - t0)
    assert status == 200 and len(json.loads(body)["explanations"]) == 1, body[:300]
    status, body = client.request(raw_request("/v1/explain", rows))
    assert status == 200, body[:300]
    fixed = {
        "first_explain_request_ms": first_ms,
        "server_explain_mean_steps": _steps_of(json.loads(body)["explanations"]),
    }
    warm = max(3, n // 5)
    _server_block(server, client, raw, warm)
    _bare_block(lambda: explainer(table1), warm)
    raw_pairs = interleave(pairs_n, lambda: _server_block(server, client, raw, n),
                           lambda: _bare_block(lambda: explainer(table1), n))  # fmt: skip
    client.close()
    out = []
    for i, (a, b) in enumerate(raw_pairs):
        out.append({"pair": i + 1, "server_p50_ms": ms(pct(a["lat"], 50)), "server_p99_ms": ms(pct(a["lat"], 99)),
                    "bare_p50_ms": ms(pct(b["lat"], 50)), "bare_p99_ms": ms(pct(b["lat"], 99)),
                    "overhead_p50_ms": ms(pct(a["lat"], 50) - pct(b["lat"], 50)),
                    "overhead_p99_ms": ms(pct(a["lat"], 99) - pct(b["lat"], 99)),
                    "server_cpu_ms_per_request": ms(a["server_cpu"]), "bare_cpu_ms": ms(b["cpu"]),
                    "foreign_cores": max(a["foreign_cores"], b["foreign_cores"])})  # fmt: skip
    return out, fixed


# ---- 3. /v1/predict p99 while /v1/explain is loaded --------------------------------------------------------------
class LoadWindows:
    """Windows of single-row /v1/predict requests: unloaded, with the explain load on, with the CPU burners on."""

    def __init__(self, server: ServerProcess, raw: bytes, n: int, load: ExplainLoad, clients: int,
                 burners: Background | None) -> None:  # fmt: skip
        self.server, self.raw, self.n, self.load, self.clients, self.burners = server, raw, n, load, clients, burners

    def _block(self) -> dict[str, Any]:
        client = RawClient(self.server.port)  # a fresh connection: an idle keep-alive one is closed after 5 s
        try:
            client.request(self.raw)
            b = _server_block(self.server, client, self.raw, self.n)
        finally:
            client.close()
        wall = sum(b["lat"])
        return {"p50_ms": ms(pct(b["lat"], 50)), "p99_ms": ms(pct(b["lat"], 99)), "max_ms": ms(max(b["lat"])),
                "server_cores": b["server_cpu"] * self.n / wall, "foreign_cores": b["foreign_cores"],
                "wall_s": wall}  # fmt: skip

    def unloaded(self) -> dict[str, Any]:
        self.load.wait(lambda: self.load.total(INFLIGHT) == 0, "the explain load draining")
        return self._block()

    def loaded(self) -> dict[str, Any]:
        """A window with the explain load on (started before, stopped after: explanations served over the whole
        span, go to drained, give the explain rows/s)."""
        before = [self.load.total(i) for i in (OK, BUSY, OTHER)]
        t0 = time.perf_counter()
        self.load.go.set()
        self.load.wait(lambda: self.load.total(INFLIGHT) == self.clients, "the explain load starting")
        time.sleep(0.02)  # the requests reach their threads
        out = self._block()
        self.load.go.clear()
        self.load.wait(lambda: self.load.total(INFLIGHT) == 0, "the explain load draining")
        span = time.perf_counter() - t0
        ok, busy, other = (self.load.total(i) - b for i, b in zip((OK, BUSY, OTHER), before, strict=True))
        out.update(explain_ok=ok, explain_503=busy, explain_other=other, explain_span_s=span,
                   explain_rows_per_s=ok * LOAD_ROWS / span, last_other_status=self.load.total(LAST_OTHER))  # fmt: skip
        return out

    def cpu_loaded(self) -> dict[str, Any]:
        assert self.burners is not None
        start = self.burners.total(0)
        self.burners.go.set()
        self.burners.wait(lambda: self.burners.total(0) >= start + len(self.burners.workers), "the burners starting")
        d0 = self.burners.total(0)
        out = self._block()
        self.burners.go.clear()
        out["explain_rows_per_s"] = (self.burners.total(0) - d0) * LOAD_ROWS / out["wall_s"]
        time.sleep(0.2)  # a burner finishes the batch it is on
        return out

    def pair(self) -> dict[str, Any]:
        return {"loaded": self.loaded(), **({"cpu_loaded": self.cpu_loaded()} if self.burners else {})}


def load_pairs(windows: LoadWindows, pairs_n: int) -> list[dict[str, Any]]:
    windows.unloaded()  # warm-up
    raw = interleave(pairs_n, windows.unloaded, windows.pair, log=lambda m: log(f"load windows:{m}"))
    out = []
    for i, (u, b) in enumerate(raw):
        ld = b["loaded"]
        q = {"pair": i + 1, "order": "U L" if i % 2 == 0 else "L U", "unloaded": u, "loaded": ld,
             "ratio_p99": ld["p99_ms"] / u["p99_ms"], "ratio_p50": ld["p50_ms"] / u["p50_ms"],
             "foreign_cores": u["foreign_cores"]}  # fmt: skip
        if "cpu_loaded" in b:
            c = b["cpu_loaded"]
            q.update(cpu_loaded=c, cpu_ratio_p99=c["p99_ms"] / u["p99_ms"], cpu_ratio_p50=c["p50_ms"] / u["p50_ms"])
        out.append(q)
        log(f"    pair {i + 1}: p99 unloaded {u['p99_ms']:.2f} ms, loaded {ld['p99_ms']:.2f} ms (ratio "
            f"{q['ratio_p99']:.2f}, server {ld['server_cores']:.2f} cores, {ld['explain_503']} refused)"
            + (f", CPU-only load {q['cpu_loaded']['p99_ms']:.2f} ms" if "cpu_loaded" in q else ""))  # fmt: skip
    return out


def serve_part(made: dict[str, Any], data: pa.Table, columns: list[str], explainer: Any, args: Any,
               log_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Parts 2 and 3 against one server; returns their pairs and fixed costs."""
    torch.set_num_threads(SERVER_THREADS)  # the bare Explainer runs with the server's torch threads
    extra = ["--device", args.device_used, "--max-inflight-explain", str(args.slots),
             "--explain-steps", str(N_STEPS), "--log-level", "warning"]  # fmt: skip
    server = start_server(made["bundle_dir"], threads=SERVER_THREADS, log_dir=log_dir, extra=extra)
    fixed: dict[str, Any] = {"server_start_to_ready_s": server.startup_s}
    load = burners = None
    try:
        inputs = made["inputs"]
        rows = request_rows(data, inputs, LOAD_ROWS)
        log(f"/v1/explain latency: {args.pairs} pairs × {args.explain_requests} single-row requests")
        latency, first = explain_latency(server, explainer, rows, data.slice(0, 1), args.pairs,
                                         args.explain_requests)  # fmt: skip
        fixed.update(first)
        t0 = time.perf_counter()
        load = ExplainLoad(server.port, raw_request("/v1/explain", rows), args.explain_clients)
        if args.diagnose:
            burners = Background(_cpu_burner, (str(made["bundle_dir"]), made["table"], columns),
                                 args.slots, 2)  # fmt: skip
            burners.wait(lambda: all(c[1] for c in burners.counts), "the burners loading the model")
        fixed["background_processes_start_s"] = time.perf_counter() - t0
        windows = LoadWindows(server, raw_request("/v1/predict", rows[:1]), args.requests, load,
                              args.explain_clients, burners)  # fmt: skip
        log(f"/v1/predict under /v1/explain load: {args.pairs_serve} pairs × {args.requests} requests per window")
        loaded = load_pairs(windows, args.pairs_serve)
    finally:
        for bg in (load, burners):
            if bg is not None:
                bg.close()
        fixed["server_exit_code_on_sigterm"] = server.stop()
    return {"latency": latency, "load": loaded, "fixed": fixed}


# ---- figures and the report --------------------------------------------------------------------------------------
def _col(pairs: list[dict[str, Any]], *path: str) -> dict[str, float]:
    def get(q: dict[str, Any]) -> float:
        for p in path:
            q = q[p]
        return float(q)  # type: ignore[arg-type]

    return summary([get(q) for q in pairs])


def figures(eng: list[dict[str, Any]], inproc: list[dict[str, Any]], srv: dict[str, Any]) -> dict[str, Any]:
    lat, load = srv["latency"], srv["load"]
    f: dict[str, Any] = {
        "ratio": _col(eng, "ratio"),
        "engine_cpu_ratio": _col(eng, "cpu_ratio"),
        "engine_predict_rows_per_s": _col(eng, "predict", "rows_per_s"),
        "engine_explain_rows_per_s": _col(eng, "explain", "rows_per_s"),
        "engine_predict_cpu_s_per_row": _col(eng, "predict", "cpu_s_per_row"),
        "engine_explain_cpu_s_per_row": _col(eng, "explain", "cpu_s_per_row"),
        "engine_foreign_cores": _col(eng, "foreign_cores"),
        "inprocess_ratio": _col(inproc, "ratio"),
        "inprocess_ratio_same_batch": _col(inproc, "ratio_same_batch"),
        "inprocess_cpu_ratio": _col(inproc, "cpu_ratio"),
        "inprocess_predict_rows_per_s": _col(inproc, "predict", "rows_per_s"),
        "inprocess_predict_64_rows_per_s": _col(inproc, "predict_64", "rows_per_s"),
        "inprocess_explain_rows_per_s": _col(inproc, "explain", "rows_per_s"),
        "inprocess_predict_cpu_s_per_row": _col(inproc, "predict", "cpu_s_per_row"),
        "inprocess_explain_cpu_s_per_row": _col(inproc, "explain", "cpu_s_per_row"),
    }
    for k in ("server_p50_ms", "server_p99_ms", "bare_p50_ms", "bare_p99_ms", "overhead_p50_ms", "overhead_p99_ms",
              "server_cpu_ms_per_request", "bare_cpu_ms"):  # fmt: skip
        f[f"explain_{k}"] = _col(lat, k)
    f.update(
        predict_p99_ratio=_col(load, "ratio_p99"),
        predict_p50_ratio=_col(load, "ratio_p50"),
        unloaded_p50_ms=_col(load, "unloaded", "p50_ms"),
        unloaded_p99_ms=_col(load, "unloaded", "p99_ms"),
        loaded_p50_ms=_col(load, "loaded", "p50_ms"),
        loaded_p99_ms=_col(load, "loaded", "p99_ms"),
        unloaded_server_cores=_col(load, "unloaded", "server_cores"),
        loaded_server_cores=_col(load, "loaded", "server_cores"),
        loaded_explain_rows_per_s=_col(load, "loaded", "explain_rows_per_s"),
        loaded_explain_503=_col(load, "loaded", "explain_503"),
    )
    if load and "cpu_loaded" in load[0]:
        f.update(cpu_loaded_p99_ratio=_col(load, "cpu_ratio_p99"), cpu_loaded_p50_ratio=_col(load, "cpu_ratio_p50"),
                 cpu_loaded_p99_ms=_col(load, "cpu_loaded", "p99_ms"),
                 cpu_loaded_explain_rows_per_s=_col(load, "cpu_loaded", "explain_rows_per_s"))  # fmt: skip
    # derived from the medians (the two sides come from different pairs): what the engine adds per row
    for side in ("predict", "explain"):
        e, i = f[f"engine_{side}_cpu_s_per_row"]["median"], f[f"inprocess_{side}_cpu_s_per_row"]["median"]
        f[f"engine_{side}_cpu_s_per_row_over_inprocess"] = e - i
    return f


def report(f: dict[str, Any], fixed: dict[str, Any], settings: dict[str, Any]) -> None:
    us = lambda k: fmt_range(scaled(f[k], 1e6), 1)  # noqa: E731
    rows = [
        ["1 engine", f"explain ÷ predict rows/s (target ≥ {THROUGHPUT_TARGET})", fmt_range(f["ratio"], 4)],
        ["1 engine", "predict rows/s", fmt_range(f["engine_predict_rows_per_s"], 0)],
        ["1 engine", "explain rows/s", fmt_range(f["engine_explain_rows_per_s"], 0)],
        ["1 engine", "predict CPU µs/row (process tree)", us("engine_predict_cpu_s_per_row")],
        ["1 engine", "explain CPU µs/row (process tree)", us("engine_explain_cpu_s_per_row")],
        ["1 in-process", "explain ÷ predict rows/s (predict in 256-row batches)", fmt_range(f["inprocess_ratio"], 4)],
        ["1 in-process", "explain ÷ predict rows/s (both 64-row batches)",
         fmt_range(f["inprocess_ratio_same_batch"], 4)],
        ["1 in-process", "predict rows/s", fmt_range(f["inprocess_predict_rows_per_s"], 0)],
        ["1 in-process", "explain rows/s", fmt_range(f["inprocess_explain_rows_per_s"], 0)],
        ["1 in-process", "predict CPU µs/row", us("inprocess_predict_cpu_s_per_row")],
        ["1 in-process", "explain CPU µs/row", us("inprocess_explain_cpu_s_per_row")],
        ["2 /v1/explain", "1 row, server p50 / p99 ms",
         f"{fmt_range(f['explain_server_p50_ms'], 2)} / {fmt_range(f['explain_server_p99_ms'], 2)}"],
        ["2 /v1/explain", "1 row, bare Explainer p50 / p99 ms",
         f"{fmt_range(f['explain_bare_p50_ms'], 2)} / {fmt_range(f['explain_bare_p99_ms'], 2)}"],
        ["2 /v1/explain", "server − bare, p50 / p99 ms",
         f"{fmt_range(f['explain_overhead_p50_ms'], 2)} / {fmt_range(f['explain_overhead_p99_ms'], 2)}"],
        ["3 /v1/predict", f"p99 loaded ÷ unloaded (target ≤ {P99_TARGET})", fmt_range(f["predict_p99_ratio"], 2)],
        ["3 /v1/predict", "p50 loaded ÷ unloaded", fmt_range(f["predict_p50_ratio"], 2)],
        ["3 /v1/predict", "p99 ms unloaded / loaded",
         f"{fmt_range(f['unloaded_p99_ms'], 2)} / {fmt_range(f['loaded_p99_ms'], 2)}"],
        ["3 /v1/predict", "server cores while loaded", fmt_range(f["loaded_server_cores"], 2)],
        ["3 /v1/predict", "explain rows/s served while loaded", fmt_range(f["loaded_explain_rows_per_s"], 0)],
    ]  # fmt: skip
    if "cpu_loaded_p99_ratio" in f:
        rows += [
            [
                "3 diagnostic",
                "p99 with CPU-only load (burner processes) ÷ unloaded",
                fmt_range(f["cpu_loaded_p99_ratio"], 2),
            ],
            ["3 diagnostic", "explain rows/s of the burners", fmt_range(f["cpu_loaded_explain_rows_per_s"], 0)],
        ]
    print_table(f"{NAME}: median (min–max) over interleaved pairs; {settings['rows']:,} rows, n_steps {N_STEPS}",
                ["part", "figure", "median (min–max)"], rows)  # fmt: skip
    print_table("fixed costs (not in the pairs)", ["what", "value"],
                [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in fixed.items()])  # fmt: skip


def parse_args(argv: list[str] | None) -> Any:
    p = base_parser(NAME, (__doc__ or NAME).splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="table rows; default 20,000, quick 2,000")
    p.add_argument("--pairs", type=int, default=None, help="pairs of parts 1 and 2; default 5, quick 3")
    p.add_argument("--pairs-serve", type=int, default=None, help="load-window pairs (part 3); default 7, quick 3")
    p.add_argument("--requests", type=int, default=None, help="/v1/predict per window; default 300, quick 20")
    p.add_argument("--explain-requests", type=int, default=None, help="/v1/explain per block; default 60, quick 6")
    p.add_argument("--slots", type=int, default=None, help="the server's --max-inflight-explain (default: its own)")
    p.add_argument("--explain-clients", type=int, default=None, help="background explain clients (default: slots)")
    p.add_argument("--exclude", action="append", default=[], help="another column the model leaves out (repeat)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--diagnose", dest="diagnose", action="store_true", default=None, help="CPU-only load windows")
    g.add_argument("--no-diagnose", dest="diagnose", action="store_false", help="no CPU-only load windows")
    args = p.parse_args(argv)
    q = args.quick
    args.rows = args.rows or (2_000 if q else 20_000)
    args.model_rows, args.epochs = (1_000, 1) if q else (5_000, 3)
    args.inprocess_rows = min(args.rows, 128 if q else 4_096)  # quick: two explain batches
    args.pairs = args.pairs or (3 if q else 5)
    args.pairs_serve = args.pairs_serve or (3 if q else 7)
    args.requests = args.requests or (20 if q else 300)
    args.explain_requests = args.explain_requests or (6 if q else 60)
    args.diagnose = (not q) if args.diagnose is None else args.diagnose
    if args.slots is None:
        from lakenet.serving.settings import ServeSettings

        args.slots = int(ServeSettings.model_fields["max_inflight_explain"].default)
    args.explain_clients = args.explain_clients or args.slots
    args.device_used, args.device_note = pick_device(args.device)
    return args


def run(args: Any, root: Path) -> dict[str, Any]:
    """Set-up, warm-ups, then parts 1, 2 and 3; returns pairs, fixed costs and what was built."""
    from lakenet.inference.explain import Explainer
    from lakenet.inference.predictor import Predictor

    made = build(root, args.rows, args.model_rows, args.epochs, args.exclude, with_small=not args.quick)
    fixed: dict[str, Any] = dict(made["fixed"])
    runs = EngineRuns(root, made["model"])
    for kind in ("predict", "explain"):  # warm-up: the fork server, the page cache, lakenet's imports
        first = runs.run(kind, made["table"], args.rows, steps=True)
        fixed[f"first_{kind}_s"] = first["wall_s"]
    fixed["batch_explain_mean_steps"] = first["mean_steps"]
    if made["small"] is not None:  # the per-call cost: pool start, model load per worker, Delta commit
        for kind in ("predict", "explain"):
            fixed[f"{kind}_{CALL_ROWS}_rows_call_s"] = runs.run(kind, made["small"], CALL_ROWS)["wall_s"]
    log(f"set-up: {fixed}")
    engine = engine_pairs(runs, made["table"], args.rows, args.pairs)
    t0 = time.perf_counter()
    predictor = Predictor(made["bundle_dir"], device=args.device_used)
    t1 = time.perf_counter()
    explainer = Explainer(made["bundle_dir"], device=args.device_used, n_steps=N_STEPS, batch_size=EXPLAIN_BATCH)
    fixed.update(predictor_load_s=t1 - t0, explainer_load_s=time.perf_counter() - t1)
    columns = list(predictor.pre.columns(with_label=False))
    made["inputs"] = list(predictor.pre.input_columns())
    data = read_rows(made["table"], columns, args.inprocess_rows)
    log(f"in-process: {data.num_rows:,} rows, {torch.get_num_threads()} torch threads")
    fixed["inprocess_explain_mean_steps"] = _steps_of(explainer(data.slice(0, EXPLAIN_BATCH)))
    inproc = inprocess_pairs(predictor, explainer, data, args.pairs)
    srv = serve_part(made, data, columns, explainer, args, root)
    fixed.update(srv["fixed"])
    return {"made": made, "fixed": fixed, "engine": engine, "inprocess": inproc, "serve": srv}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = cache_root(args.cache_dir) / NAME / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    started = time.perf_counter()
    log(f"{NAME}: {args.rows:,} rows, {args.pairs} engine/in-process pairs, {args.pairs_serve} serving pairs")
    try:
        res = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    fixed = {**res["fixed"], "run_s": time.perf_counter() - started}
    eng, inproc, srv = res["engine"], res["inprocess"], res["serve"]
    f = figures(eng, inproc, srv)
    met_tp = f["ratio"]["median"] >= THROUGHPUT_TARGET
    met_p99 = f["predict_p99_ratio"]["median"] <= P99_TARGET
    settings = settings_doc(args, res["made"])
    report(f, fixed, settings)
    path = write_result(NAME, args, {
        "settings": settings,
        "device_note": args.device_note,
        "target": {
            "throughput_ratio": {"figure": "ratio", "op": ">=", "value": THROUGHPUT_TARGET, "met": met_tp},
            "predict_p99_ratio": {"figure": "predict_p99_ratio", "op": "<=", "value": P99_TARGET, "met": met_p99},
            "met": met_tp and met_p99,
        },
        "figures": f,
        "figures_quiet_pairs": {"ratio": quiet_summary(eng, "ratio"),
                                "inprocess_ratio": quiet_summary(inproc, "ratio")},
        "fixed_costs": fixed,
        "pairs": [{"part": "engine", **q} for q in eng] + [{"part": "inprocess", **q} for q in inproc]
        + [{"part": "explain_latency", **q} for q in srv["latency"]] + [{"part": "predict_under_explain", **q}
                                                                         for q in srv["load"]],
        "notes": NOTES,
    })  # fmt: skip
    verdict = lambda ok: "MET" if ok else "MISSED"  # noqa: E731
    print(f"\nexplain ÷ predict rows/s ratio {f['ratio']['median']:.4f} (target ≥ {THROUGHPUT_TARGET}: "
          f"{verdict(met_tp)}); /v1/predict p99 loaded ÷ unloaded {f['predict_p99_ratio']['median']:.2f} (target ≤ "
          f"{P99_TARGET}: {verdict(met_p99)}); whole run {fixed['run_s']:.0f} s; result: {path}")  # fmt: skip
    return 0


def settings_doc(args: Any, made: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows": args.rows,
        "inprocess_rows": args.inprocess_rows,
        "pairs": args.pairs,
        "pairs_serve": args.pairs_serve,
        "predict_requests_per_window": args.requests,
        "explain_requests_per_block": args.explain_requests,
        "n_steps": N_STEPS,
        "batch_rows": {"predict": PREDICT_BATCH, "explain": EXPLAIN_BATCH},
        "model": {"rows": args.model_rows, "config": made["config"], "uri": made["model"]},
        "table": "transactions_frame(rows, seed=0) → CSV → lakenet.ingest",
        "local_score_workers": "lakenet's default (one process per core, torch threads = cores // processes)",
        "inprocess_torch_threads": args.threads,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "server": f"python -m lakenet.cli serve <bundle> --threads {SERVER_THREADS} --max-inflight-explain "
        f"{args.slots} --explain-steps {N_STEPS} (other settings default)",
        "explain_load": f"{args.explain_clients} client processes (spawned), {LOAD_ROWS}-row /v1/explain requests "
        "back to back (raw HTTP/1.1, one connection each)",
        "diagnose": args.diagnose,
        "exclude_also": args.exclude,
        "device": args.device_used,
    }


NOTES = [
    "ratio = lakenet.explain rows/s ÷ lakenet.predict rows/s, per interleaved pair, whole calls (pool start, model "
    "load, Delta commit included); figures are medians (min–max) over pairs",
    "CPU seconds per row: this process and every descendant (the local engine's scoring pool)",
    "in-process: Predictor / Explainer on Arrow batches read before the timer, this process's CPU only",
    "predict_p99_ratio: per pair, p99 of single-row /v1/predict with the explain load on ÷ without",
    "cpu_loaded_*: the same attribution work in separate nice-10 processes (one per explanation slot) instead of "
    "the server's threads: contention for the cores without contention for the server's GIL",
    "foreign_cores: CPU of other processes during the pair (for load windows: the unloaded window's)",
]


if __name__ == "__main__":
    raise SystemExit(main())
