"""serve_batching: `lakenet serve` throughput with micro-batching ÷ without, 16 concurrent clients, CNN; then
overload at twice the measured capacity.

A = `lakenet serve <cnn bundle> --max-batch-size 32` (the default batching: no added delay, requests that arrive
    while the model is busy go together in the next batch).
B = the same server with `--max-batch-size 1`: every request is its own forward pass.
Both: --threads 1 (torch pinned, OMP_NUM_THREADS=1), --max-queue-rows 32, --max-inflight 16 (sized to the 16
clients: the concurrency the capacity is measured at), started once (start-up is a fixed cost, reported apart)
and warmed up. 16 clients (asyncio, raw HTTP/1.1, one keep-alive connection each) send multipart
image requests back to back; a block is a fixed number of requests. Blocks alternate A B, B A, ... for each pair:
throughput ratio A/B and p99 ratio A/B (target: ≥ 2.0 and ≤ 1.0). CPU ms per request: server (/proc) and client.

Overload: open-loop load on A at 2 × A's median throughput for a bounded time (requests sent on a schedule,
whatever the answers), through a pool of connections. Reported: the share refused with 503, how fast a 503
comes back, the admitted requests' p99 next to the closed-loop p99, other 5xx (must be 0), connection errors,
and whether the server is still alive and healthy afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import (
    base_parser,
    cpu_seconds,
    fmt_range,
    interleave,
    machine_busy_s,
    pick_device,
    print_table,
    quiet_summary,
    summary,
    write_result,
)
from bench._serve import (
    AsyncRawClient,
    ServerProcess,
    cnn_case,
    http_request,
    ms,
    multipart_body,
    no_gc,
    pct,
    start_server,
)

NAME = "serve_batching"
TARGET = 2.0
CLIENTS = 16


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def _batch_stats(server: ServerProcess) -> tuple[float, float]:
    text = server.get("/metrics")[1].decode()
    total = re.search(r"^lakenet_batch_size_rows_sum (\S+)$", text, re.M)
    count = re.search(r"^lakenet_batch_size_rows_count (\S+)$", text, re.M)
    return (float(total.group(1)) if total else 0.0), (float(count.group(1)) if count else 0.0)


async def _closed_loop(port: int, raw: bytes, clients: int, per_client: int) -> tuple[list[float], Counter[int], float]:
    """Latencies, statuses, and the wall seconds of the requests (connections are opened before)."""
    conns = [await AsyncRawClient.connect(port) for _ in range(clients)]
    lat: list[float] = []
    statuses: Counter[int] = Counter()

    async def client(c: AsyncRawClient) -> None:
        for _ in range(per_client):
            t = time.perf_counter()
            status, _, _ = await c.request(raw)
            lat.append(time.perf_counter() - t)
            statuses[status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return lat, statuses, wall


def block(runner: asyncio.Runner, server: ServerProcess, raw: bytes, per_client: int) -> dict[str, Any]:
    rows0, batches0 = _batch_stats(server)
    with no_gc():
        s0, c0, m0, t0 = server.cpu_seconds(), cpu_seconds(children=False), machine_busy_s(), time.perf_counter()
        lat, statuses, wall = runner.run(_closed_loop(server.port, raw, CLIENTS, per_client))
        total = time.perf_counter() - t0
        server_cpu, client_cpu = server.cpu_seconds() - s0, cpu_seconds(children=False) - c0
        foreign = (machine_busy_s() - m0 - server_cpu - client_cpu) / total
    rows1, batches1 = _batch_stats(server)
    n = len(lat)
    if statuses[200] != n:
        raise RuntimeError(f"closed-loop block got statuses {dict(statuses)}")
    return {
        "requests": n,
        "wall_s": wall,
        "throughput": n / wall,
        "p50_ms": ms(pct(lat, 50)),
        "p99_ms": ms(pct(lat, 99)),
        "server_cpu_ms_per_request": ms(server_cpu / n),
        "client_cpu_ms_per_request": ms(client_cpu / n),
        "mean_batch_rows": (rows1 - rows0) / max(1.0, batches1 - batches0 - 1),  # the /metrics scrape is no batch
        "foreign_cores": foreign,
    }


async def _open_loop(port: int, raw: bytes, rate: float, duration: float, conns: int) -> dict[str, Any]:
    idle: asyncio.Queue[AsyncRawClient] = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await AsyncRawClient.connect(port))
    results: list[tuple[int, float, float]] = []  # status, latency, send time
    errors: Counter[str] = Counter()
    skipped = 0

    async def one(c: AsyncRawClient, sent: float) -> None:
        try:
            status, head, _ = await c.request(raw)
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            errors[type(err).__name__] += 1
            await c.close()
            idle.put_nowait(await AsyncRawClient.connect(port))
            return
        results.append((status, time.perf_counter() - sent, sent))
        if b"connection: close" in head.lower():
            await c.close()
            c = await AsyncRawClient.connect(port)
        idle.put_nowait(c)

    n = int(rate * duration)
    tasks = []
    t0 = time.perf_counter()
    for k in range(n):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle.empty():
            skipped += 1  # every connection is waiting for an answer: the client cannot send this one
            continue
        tasks.append(asyncio.create_task(one(idle.get_nowait(), time.perf_counter())))
    send_wall = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    while not idle.empty():
        await idle.get_nowait().close()
    return {"results": results, "errors": dict(errors), "skipped": skipped, "scheduled": n, "send_wall_s": send_wall}


def overload(runner: asyncio.Runner, server: ServerProcess, raw: bytes, rate: float, duration: float,
             conns: int) -> dict[str, Any]:  # fmt: skip
    s0 = server.cpu_seconds()
    with no_gc():
        out = runner.run(_open_loop(server.port, raw, rate, duration, conns))
    server_cpu = server.cpu_seconds() - s0
    res = out["results"]
    by_status = Counter(s for s, _, _ in res)
    ok = [lat for s, lat, _ in res if s == 200]
    shed = [lat for s, lat, _ in res if s == 503]
    sent = len(res) + sum(out["errors"].values())
    alive = server.alive()
    healthy = alive and server.get("/healthz")[0] == 200
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "scheduled": out["scheduled"],
        "sent": sent,
        "sent_rate": sent / out["send_wall_s"],
        "not_sent_all_connections_busy": out["skipped"],
        "statuses": {str(k): v for k, v in sorted(by_status.items())},
        "share_503": len(shed) / max(1, len(res)),
        "admitted_rate": len(ok) / out["send_wall_s"],
        "admitted_p50_ms": ms(pct(ok, 50)) if ok else None,
        "admitted_p99_ms": ms(pct(ok, 99)) if ok else None,
        "rejected_p50_ms": ms(pct(shed, 50)) if shed else None,
        "rejected_p99_ms": ms(pct(shed, 99)) if shed else None,
        "other_5xx": sum(v for k, v in by_status.items() if k >= 500 and k != 503),
        "other_non_200": sum(v for k, v in by_status.items() if k not in (200, 503)),
        "connection_errors": out["errors"],
        "server_alive_after": alive,
        "server_healthy_after": healthy,
        "server_cpu_s": server_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    p.set_defaults(threads=1)
    p.add_argument("--pairs", type=int, default=None, help="interleaved block pairs (default 7, quick 3)")
    p.add_argument("--per-client", type=int, default=None, help="requests per client per block (default 60, quick 15)")
    p.add_argument("--overload-seconds", type=float, default=None, help="overload duration (default 10, quick 2)")
    p.add_argument("--connections", type=int, default=256, help="connection pool of the overload client")
    args = p.parse_args(argv)
    device, device_note = pick_device(args.device)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    q = args.quick
    pairs = args.pairs or (3 if q else 7)
    per_client = args.per_client or (15 if q else 60)
    overload_s = args.overload_seconds or (2.0 if q else 10.0)
    model = {"size": 8, "width": 16, "depth": 2} if q else {"size": 8, "width": 64, "depth": 3}
    common = ["--threads", str(args.threads), "--device", device, "--max-queue-rows", "32",
              "--max-request-rows", "32", "--max-inflight", str(CLIENTS)]  # fmt: skip
    settings: dict[str, Any] = {
        "clients": CLIENTS,
        "requests_per_block": CLIENTS * per_client,
        "pairs": pairs,
        "model": model,
        "format": "multipart/form-data, one PNG per request",
        "server_a": "lakenet serve --max-batch-size 32 (delay 0) " + " ".join(common),
        "server_b": "lakenet serve --max-batch-size 1 " + " ".join(common),
        "torch_threads": args.threads,
        "device": device,
        "overload": {"factor": 2.0, "seconds": overload_s, "connections": args.connections},
        "interleaving": "per pair: a block on A and a block on B, order alternating",
    }
    print(f"{NAME}: {settings}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="serve-batching-"))
    case = cnn_case(root, **model)
    body, ctype = multipart_body(case.row)
    raw = http_request("/v1/predict", body, ctype)
    t0 = time.perf_counter()
    a = start_server(case.bundle_dir, threads=args.threads, log_dir=root, extra=["--max-batch-size", "32", *common])
    b = start_server(case.bundle_dir, threads=args.threads, log_dir=root, extra=["--max-batch-size", "1", *common])
    runner = _runner()
    try:
        for server in (a, b):  # warm-up: connections, allocator, oneDNN primitives for every batch size seen
            block(runner, server, raw, max(5, per_client // 3))
        results = interleave(
            pairs,
            lambda: block(runner, a, raw, per_client),
            lambda: block(runner, b, raw, per_client),
            log=lambda m: print(m, flush=True),
        )
        capacity = summary([ra["throughput"] for ra, _ in results])["median"]
        closed_p99 = summary([ra["p99_ms"] for ra, _ in results])["median"]
        print(f"  overload: {2 * capacity:.0f} req/s for {overload_s:g} s ...", flush=True)
        over = overload(runner, a, raw, 2 * capacity, overload_s, args.connections)
        after = block(runner, a, raw, per_client)  # still serving at full speed afterwards?
    finally:
        runner.close()
        exit_a, exit_b = a.stop(), b.stop()
    bench_s = time.perf_counter() - t0
    log_a = a.log_path.read_text()
    per_pair = []
    for i, (ra, rb) in enumerate(results):
        per_pair.append(
            {
                "pair": i + 1,
                "ratio_throughput": ra["throughput"] / rb["throughput"],
                "ratio_p99": ra["p99_ms"] / rb["p99_ms"],
                "ratio_cpu_per_request": ra["server_cpu_ms_per_request"] / rb["server_cpu_ms_per_request"],
                "foreign_cores": max(ra["foreign_cores"], rb["foreign_cores"]),
                **{f"batched_{k}": v for k, v in ra.items() if k != "foreign_cores"},
                **{f"unbatched_{k}": v for k, v in rb.items() if k != "foreign_cores"},
            }
        )

    def col(key: str) -> dict[str, float]:
        return summary([pp[key] for pp in per_pair])

    figure_keys = [
        "ratio_throughput", "ratio_p99", "ratio_cpu_per_request", "batched_throughput", "unbatched_throughput",
        "batched_p50_ms", "batched_p99_ms", "unbatched_p50_ms", "unbatched_p99_ms", "batched_server_cpu_ms_per_request",
        "unbatched_server_cpu_ms_per_request", "batched_client_cpu_ms_per_request", "batched_mean_batch_rows",
        "unbatched_mean_batch_rows",
    ]  # fmt: skip
    figures: dict[str, Any] = {k: col(k) for k in figure_keys}
    figures["overload"] = over
    figures["overload"]["admitted_p99_over_closed_loop_p99"] = (
        over["admitted_p99_ms"] / closed_p99 if over["admitted_p99_ms"] else None
    )
    figures["after_overload_throughput_over_capacity"] = after["throughput"] / capacity
    figures["bench_seconds"] = bench_s
    ratio, p99 = figures["ratio_throughput"], figures["ratio_p99"]
    overload_ok = (
        over["other_5xx"] == 0
        and over["server_alive_after"]
        and over["server_healthy_after"]
        and over["share_503"] > 0
        and not sum(over["connection_errors"].values())
    )
    met = ratio["median"] >= TARGET and p99["median"] <= 1.0
    path = write_result(
        NAME,
        args,
        {
            "settings": settings,
            "device_note": device_note,
            "target": {
                "figure": "ratio_throughput (and ratio_p99 ≤ 1.0)",
                "op": ">=",
                "value": TARGET,
                "met": met,
                "overload_met": overload_ok,
            },
            "figures": figures,
            "quiet": {k: quiet_summary(per_pair, k) for k in ("ratio_throughput", "ratio_p99")},
            "fixed_costs": {
                "server_a_start_to_ready_s": a.startup_s,
                "server_b_start_to_ready_s": b.startup_s,
                "exit_codes_on_sigterm": [exit_a, exit_b],
                "tracebacks_in_server_log": log_a.count("Traceback"),
            },
            "pairs": per_pair,
            "notes": [
                "throughput: requests/s over a block of 16 clients × per-client requests, closed loop",
                "mean_batch_rows from the server's /metrics (lakenet_batch_size_rows)",
                "overload is open loop: requests leave on a fixed schedule at 2 × the batched capacity; "
                "--max-inflight 16 refuses what the 16 clients' worth of capacity cannot take before reading it "
                "(503 + Retry-After), --max-queue-rows 32 bounds the rows waiting for the model",
                "the load generator shares the 2 cores with the server: its CPU per request is reported",
            ],
        },
    )
    print_table(
        f"{NAME}: {CLIENTS} clients, median (min–max) over {pairs} pairs",
        ["figure", "batched (A)", "unbatched (B)", "ratio A/B"],
        [
            ["requests/s", fmt_range(figures["batched_throughput"], 0), fmt_range(figures["unbatched_throughput"], 0),
             fmt_range(ratio)],
            ["p50 ms", fmt_range(figures["batched_p50_ms"], 2), fmt_range(figures["unbatched_p50_ms"], 2), ""],
            ["p99 ms", fmt_range(figures["batched_p99_ms"], 2), fmt_range(figures["unbatched_p99_ms"], 2),
             fmt_range(p99)],
            ["server CPU ms / request", fmt_range(figures["batched_server_cpu_ms_per_request"]),
             fmt_range(figures["unbatched_server_cpu_ms_per_request"]), fmt_range(figures["ratio_cpu_per_request"])],
            ["mean rows per batch", fmt_range(figures["batched_mean_batch_rows"], 1),
             fmt_range(figures["unbatched_mean_batch_rows"], 1), ""],
        ],
    )  # fmt: skip
    fmt_ms = "{:.1f}".format
    print_table(
        f"overload: {over['offered_rate']:.0f} req/s offered (2 × capacity) for {overload_s:g} s",
        ["figure", "value"],
        [
            ["sent (req/s)", f"{over['sent_rate']:.0f} ({over['not_sent_all_connections_busy']} not sent: pool busy)"],
            ["statuses", str(over["statuses"])],
            ["share refused with 503", f"{over['share_503']:.2%}"],
            ["503 latency p50 / p99 (ms)",
             f"{fmt_ms(over['rejected_p50_ms'] or 0)} / {fmt_ms(over['rejected_p99_ms'] or 0)}"],
            ["admitted p99 (ms) vs closed-loop p99", f"{fmt_ms(over['admitted_p99_ms'] or 0)} vs {closed_p99:.1f}"],
            ["other 5xx / connection errors", f"{over['other_5xx']} / {over['connection_errors']}"],
            ["alive and healthy after", f"{over['server_alive_after']} / {over['server_healthy_after']}"],
            ["throughput after ÷ capacity", f"{figures['after_overload_throughput_over_capacity']:.2f}"],
        ],
    )  # fmt: skip
    print(f"\ntarget ratio_throughput ≥ {TARGET} with p99 not worse: {'MET' if met else 'MISSED'} "
          f"(median {ratio['median']:.2f}, p99 ratio {p99['median']:.2f}); overload: "
          f"{'OK' if overload_ok else 'NOT OK'}; wrote {path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
