"""ddp_local: samples/s of 2 DDP processes × 1 thread ÷ 1 process × 2 threads, same global batch.

A = `LocalEngine().train(workers=2)`: two spawned processes, gloo on 127.0.0.1, torch threads = cores // 2 each,
    per-rank batch = global batch / 2.
B = `LocalEngine().train(workers=1)`: in-process (that is what lakenet does for one worker), with
    torch.set_num_threads(2) in this process. B pays no spawn, so the spawn + process-group setup is A's fixed
    cost, reported apart.

Steady-state samples/s from epochs ≥ 2 (decoded cache warm): lakenet's own per-epoch rows/s (rank 0's history,
steps only) and rank 0's epoch clock (epoch end to epoch end, checkpoint included). Target: ≥ 0.85.
CPU seconds: the whole call (this process + waited-for children) and steady epochs (rank 0 × workers).
A reference for the fixed cost: bare torch (spawn 2 processes, import torch, init gloo, barrier, exit).
A DDP run whose worker process dies is retried (twice at most) and listed in the result's `ddp_run_failures`.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from bench._common import (
    CORES,
    QUIET_CORES,
    LakenetRun,
    base_parser,
    bench_config,
    cache_root,
    digits_table,
    fmt_range,
    interleave,
    pick_device,
    prepare,
    print_table,
    quiet_summary,
    run_lakenet,
    scaled,
    summary,
    write_result,
)
from lakenet.errors import LakenetError

NAME = "ddp_local"
TARGET = 0.85


def _bare_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    dist.barrier()
    dist.destroy_process_group()


def bare_spawn_s(world: int) -> float:
    """Seconds to spawn `world` processes that import torch, join a gloo group, barrier, exit (no lakenet)."""
    import torch.multiprocessing as tmp

    from lakenet.engines.local import _free_port

    t0 = time.monotonic()
    tmp.start_processes(_bare_worker, args=(world, _free_port()), nprocs=world, join=True, start_method="spawn")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    p.add_argument("--pairs", type=int, default=None, help="interleaved run pairs (default 7, quick 3)")
    p.add_argument("--epochs", type=int, default=None, help="steady epochs per run after the cold one (default 3)")
    p.add_argument("--workers", type=int, default=2, help="DDP processes of side A (default 2)")
    args = p.parse_args(argv)
    device, device_note = pick_device(args.device)
    if device == "cuda" and torch.cuda.device_count() < args.workers:
        device_note = (
            f"--device cuda needs one GPU per DDP process (NCCL cannot put {args.workers} ranks on "
            f"{torch.cuda.device_count()} GPU(s)); falling back to cpu"
        )
        print(f"NOTE: {device_note}", file=sys.stderr, flush=True)
        device = "cpu"
    world = args.workers
    torch.set_num_threads(args.threads)  # side B: one process with the whole thread budget
    q = args.quick
    pairs = args.pairs or (3 if q else 7)
    steady = args.epochs or (1 if q else 3)
    settings: dict[str, Any] = {
        "rows_limit": 400 if q else None,
        "image_size": 8 if q else 16,
        "width": 8 if q else 16,
        "depth": 2,
        "blocks": 1,
        "global_batch_size": 32 if q else 64,
        "cold_epochs": 1,
        "steady_epochs": steady,
        "pairs": pairs,
        "device": device,
        "A": f"{world} processes × {max(1, CORES // world)} thread(s) (LocalEngine, spawn, gloo)",
        "B": f"1 process × {args.threads} thread(s) (LocalEngine in-process)",
    }
    print(f"{NAME}: {settings}", flush=True)
    table = digits_table(args.cache_dir, limit=settings["rows_limit"])
    raw = bench_config(
        table,
        size=settings["image_size"],
        width=settings["width"],
        depth=settings["depth"],
        blocks=settings["blocks"],
        batch_size=settings["global_batch_size"],
        epochs=1 + steady,
        device=device,
    )
    prep = prepare(raw, min_fragments=4 * world)  # the same snapshot (fragments) for both sides
    settings["train_rows"] = prep.train_rows
    settings["fragments"] = len(prep.snap.fragments)
    workdir = cache_root(args.cache_dir) / "runs"

    failures: list[str] = []

    def ddp() -> LakenetRun:
        # A DDP run whose worker dies (seen once in a while on this shared machine: a rank aborting with
        # "terminate called without an active exception") is retried up to twice and recorded, not hidden.
        for attempt in range(3):
            try:
                return run_lakenet(prep, workers=world, device=device, workdir=workdir)
            except LakenetError as err:
                failures.append(f"{type(err).__name__}: {err}")
                print(f"  DDP run failed ({err}); retry {attempt + 1}/2", file=sys.stderr, flush=True)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def single() -> LakenetRun:
        return run_lakenet(prep, workers=1, device=device, workdir=workdir)

    if not q:
        print("warm-up run of each side ...", flush=True)
        ddp()
        single()
    t0 = time.perf_counter()
    results = interleave(pairs, ddp, single, log=lambda s: print(s, flush=True))
    bench_s = time.perf_counter() - t0

    per_pair = []
    for a, b in results:
        sa, sb = a.steady(first=1), b.steady(first=1)
        per_pair.append(
            {
                "ddp_samples_per_s": 1.0 / sa["loop_s_per_sample"],
                "single_samples_per_s": 1.0 / sb["loop_s_per_sample"],
                "ratio_loop_only": sb["loop_s_per_sample"] / sa["loop_s_per_sample"],
                "ratio_epoch_clock": sb["s_per_sample"] / sa["s_per_sample"],
                "ratio_whole_call": (b.call_s / b.rows_seen) / (a.call_s / a.rows_seen),
                "ddp_cpu_per_sample": sa["cpu_per_sample"],
                "single_cpu_per_sample": sb["cpu_per_sample"],
                "ddp_call_cpu_per_sample": a.cpu_total_s / a.rows_seen,
                "single_call_cpu_per_sample": b.cpu_total_s / b.rows_seen,
                "ddp_setup_s": a.setup_s,
                "single_setup_s": b.setup_s,
                "ddp_teardown_s": a.teardown_s,
                "single_teardown_s": b.teardown_s,
                "ddp_cold_epoch_s": a.epoch_wall[0],
                "single_cold_epoch_s": b.epoch_wall[0],
                "ddp_call_s": a.call_s,
                "single_call_s": b.call_s,
                "foreign_cores": max(sa["foreign_cores"], sb["foreign_cores"]),
            }
        )

    def col(key: str) -> dict[str, float]:
        return summary([r[key] for r in per_pair])

    bare = None if q else summary([bare_spawn_s(world) for _ in range(3)])  # quick: skipped
    ratio = col("ratio_loop_only")
    fixed = {
        "ddp_setup_s": col("ddp_setup_s"),
        "single_setup_s": col("single_setup_s"),
        "spawn_and_process_group_s": statistics.median(r["ddp_setup_s"] - r["single_setup_s"] for r in per_pair),
        "bare_torch_spawn_gloo_barrier_s": bare,
        "ddp_teardown_s": col("ddp_teardown_s"),
        "single_teardown_s": col("single_teardown_s"),
        "ddp_cold_epoch_s": col("ddp_cold_epoch_s"),
        "single_cold_epoch_s": col("single_cold_epoch_s"),
    }
    figures = {
        "ratio_loop_only": ratio,
        "ratio_epoch_clock": col("ratio_epoch_clock"),
        "ratio_whole_call": col("ratio_whole_call"),
        "ratio_loop_only_quiet": quiet_summary(per_pair, "ratio_loop_only"),
        "foreign_cores": col("foreign_cores"),
        "ddp_samples_per_s": col("ddp_samples_per_s"),
        "single_samples_per_s": col("single_samples_per_s"),
        "ddp_cpu_s_per_sample": col("ddp_cpu_per_sample"),
        "single_cpu_s_per_sample": col("single_cpu_per_sample"),
        "ddp_call_cpu_s_per_sample": col("ddp_call_cpu_per_sample"),
        "single_call_cpu_s_per_sample": col("single_call_cpu_per_sample"),
        "bench_seconds": bench_s,
    }
    meets = ratio["median"] >= TARGET
    path = write_result(
        NAME,
        args,
        {
            "settings": settings,
            "device_note": device_note,
            "target": {"figure": "ratio_loop_only", "op": ">=", "value": TARGET, "met": meets},
            "figures": figures,
            "fixed_costs": fixed,
            "pairs": per_pair,
            "ddp_run_failures": failures,
            "notes": [
                "ratio_loop_only (headline): steady epochs ≥ 2, lakenet's own rows/s (rank 0, × world), "
                "DDP ÷ single process.",
                "ratio_epoch_clock: rank 0's epoch end to epoch end (includes the epoch-end checkpoint, the "
                "epoch's loss all-reduce). ratio_whole_call: rows ÷ the whole engine.train call, fixed costs "
                "included (short runs: dominated by spawn).",
                "side B runs in this process (as LocalEngine does for one worker); spawn + process-group setup "
                "= A's setup minus B's.",
                "steady CPU s/sample: rank 0's getrusage × world; call CPU: this process + children over the call.",
                f"*_quiet: pairs during whose steady epochs nothing else used more than {QUIET_CORES} core "
                "(/proc/stat busy minus ours; rank 1 assumed to use what rank 0 does). A diagnostic.",
            ],
        },
    )

    s_ = fmt_range
    ms = 1e3
    print_table(
        f"{NAME}: {world} procs × {max(1, CORES // world)} thread ÷ 1 proc × {args.threads} threads, "
        f"{prep.train_rows} rows/epoch, {pairs} pairs",
        ["figure", f"DDP ×{world}", "single", "ratio median (min–max)"],
        [
            ["samples/s steady (loop only)", s_(col("ddp_samples_per_s"), 0), s_(col("single_samples_per_s"), 0),
             s_(ratio)],
            ["samples/s steady (epoch clock)", "", "", s_(col("ratio_epoch_clock"))],
            [f"  quiet pairs only (others ≤ {QUIET_CORES} core), loop only", "", "",
             _quiet(figures["ratio_loop_only_quiet"])],
            ["samples/s whole call (fixed costs incl.)", "", "", s_(col("ratio_whole_call"))],
            ["CPU ms/sample steady", s_(scaled(col("ddp_cpu_per_sample"), ms)),
             s_(scaled(col("single_cpu_per_sample"), ms)), ""],
            ["CPU ms/sample whole call", s_(scaled(col("ddp_call_cpu_per_sample"), ms)),
             s_(scaled(col("single_call_cpu_per_sample"), ms)), ""],
        ],
    )  # fmt: skip
    print_table(
        "fixed costs",
        ["item", f"DDP ×{world} s", "single s"],
        [
            ["engine call → loop start on rank 0", s_(fixed["ddp_setup_s"]), s_(fixed["single_setup_s"])],
            ["  of which spawn + process group (A − B, median)", f"{fixed['spawn_and_process_group_s']:.3f}", ""],
            ["  bare torch: spawn, import, gloo init, barrier, exit", s_(bare) if bare else "skipped (--quick)", ""],
            ["cold first epoch", s_(fixed["ddp_cold_epoch_s"]), s_(fixed["single_cold_epoch_s"])],
            ["loop end → call returns (joins)", s_(fixed["ddp_teardown_s"]), s_(fixed["single_teardown_s"])],
            ["scan_table (profile pass, once per job)", f"{prep.scan_s:.3f}", f"{prep.scan_s:.3f}"],
        ],
    )  # fmt: skip
    if failures:
        print(f"\n{len(failures)} DDP run(s) failed and were retried: {failures}")
    print(f"\ntarget ratio ≥ {TARGET}: {'MET' if meets else 'MISSED'} (median {ratio['median']:.3f}); wrote {path}")
    return 0


def _quiet(s: dict[str, float] | None) -> str:
    return f"{fmt_range(s)} [{s['n']}/{s['of']} pairs]" if s else "no quiet pair"


if __name__ == "__main__":
    sys.exit(main())
