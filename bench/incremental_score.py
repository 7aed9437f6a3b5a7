"""incremental_score: scoring a 5 % append incrementally ÷ re-scoring the whole table, on the local engine and on
Spark local[2].

Set-up (fixed costs, reported apart): a Delta table of N card transactions (`lakenet.examples.transactions_frame`,
CSV → `lakenet.ingest`; N = 1,000,000, --quick: 4,000) and a small model (an MLP width 64 depth 2 trained for
2 epochs on another 5,000 transactions, registered as models:/fraud@champion). For each engine, an output table
is prepared by `lakenet.predict(..., version=0, incremental=True)` (every row of version 0), and 5 % more rows are
appended (`transactions_frame(N / 20, seed=2, start_id=N)` ingested: version 1). The local part runs first, then
the Spark session starts (so that an idle JVM does not sit next to the local pairs). Per pair, interleaved
(A B, B A, ...):
  A = `lakenet.predict(model, table, out, incremental=True)` into a fresh copy of the prepared output (the copy is
      made before the timer starts): it scores only the appended rows and commits them;
  B = `lakenet.predict(model, table, fresh_out)`: every row of version 1 into a new output table.
Figures (median, min–max over pairs): local_ratio = A's wall seconds ÷ B's (target ≤ 0.10), local_cpu_ratio (CPU
seconds of this process and all its descendants: the local engine's scoring pool, Spark's JVM and Python workers),
rows/s of both sides; then the same on a Spark local[2] session (spark_ratio, target ≤ 0.10), whose start is a
fixed cost. The preparation runs (a full scoring each) are the engines' warm-ups: pool / Python workers started,
bundle loaded. Every pair records the cores other processes used meanwhile.

--quick runs the local engine only (so that the CI smoke never starts a JVM); `--spark` (or LAKENET_BENCH_SPARK=1)
adds the Spark part, `--no-spark` leaves it out of a full run.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    base_parser,
    cache_root,
    fmt_range,
    interleave,
    print_table,
    quiet_summary,
    scaled,
    summary,
    write_result,
)
from bench.update_vs_retrain import Meter

NAME = "incremental_score"
RATIO_TARGET = 0.10
APPEND_SHARE = 0.05
MODEL_ROWS = 5_000
REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(root: Path, rows: int, model_epochs: int) -> dict[str, Any]:
    """The table (version 0) and the model; returns paths and set-up seconds."""
    import lakenet
    from lakenet.examples import transactions_frame

    fixed: dict[str, float] = {}
    t0 = time.perf_counter()
    csv = root / "day1.csv"
    transactions_frame(rows, seed=0).to_csv(csv, index=False)
    t1 = time.perf_counter()
    table = root / "data" / "transactions"
    lakenet.ingest(csv, table)
    csv.unlink()
    t2 = time.perf_counter()
    model_csv = root / "model.csv"
    transactions_frame(MODEL_ROWS, seed=1, start_id=10**9).to_csv(model_csv, index=False)
    model_table = root / "data" / "model_rows"
    lakenet.ingest(model_csv, model_table)
    cfg = {
        "data": {"table": str(model_table), "key": "transaction_id"},
        "features": {"label": "is_fraud", "include": "auto", "exclude": ["customer_id", "key"]},
        "model": {"architecture": "mlp", "width": 64, "depth": 2},
        "trainer": {"epochs": model_epochs, "baseline": "none"},
        "registry": {"name": "fraud"},
    }
    fit = lakenet.fit(cfg, progress=False, workdir=root)
    t3 = time.perf_counter()
    fixed.update(write_csv_s=t1 - t0, ingest_s=t2 - t1, model_fit_s=t3 - t2)
    return {"table": str(table), "model": fit.model_uri, "config": cfg, "fixed": fixed}


def append(root: Path, table: str, rows: int) -> tuple[int, float]:
    import lakenet
    from lakenet.examples import transactions_frame

    n = max(1, round(rows * APPEND_SHARE))
    t0 = time.perf_counter()
    csv = root / "day2.csv"
    transactions_frame(n, seed=2, start_id=rows).to_csv(csv, index=False)
    res = lakenet.ingest(csv, table)
    csv.unlink()
    assert res.rows_written == n, res
    return n, time.perf_counter() - t0


class Side:
    """Scoring on one engine: the prepared output (version 0 consumed), A and B runs."""

    def __init__(self, engine: str, root: Path, table: str, model: str, spark: Any = None) -> None:
        self.engine, self.root, self.table, self.model, self.spark = engine, root, table, model, spark
        self.prepared = root / f"prepared-{engine}"

    def _predict(self, out: Path, incremental: bool, version: int | None = None) -> Any:
        import lakenet

        return lakenet.predict(
            self.model, self.table, str(out), version=version, incremental=incremental, engine=self.engine,
            spark=self.spark, workdir=self.root,
        )  # fmt: skip

    def prepare(self, expect_rows: int) -> float:
        """The output holding version 0's predictions (an incremental run from nothing: every row of version 0,
        pinned, so that it can run after the append too)."""
        t0 = time.perf_counter()
        res = self._predict(self.prepared, incremental=True, version=0)
        assert res.committed and res.rows == expect_rows and res.bad_rows == 0, res
        return time.perf_counter() - t0

    def incremental(self, expect_rows: int) -> dict[str, Any]:
        out = self.root / f"inc-{self.engine}-{uuid.uuid4().hex[:8]}"
        c0 = time.perf_counter()
        shutil.copytree(self.prepared, out)  # not timed: the output as the previous run left it
        copy_s = time.perf_counter() - c0
        with Meter() as m:
            res = self._predict(out, incremental=True)
        shutil.rmtree(out, ignore_errors=True)
        assert res.committed and res.rows == expect_rows and res.bad_rows == 0, res
        assert res.replaced == 0 and res.deleted == 0, res
        return self._record(m, res, copy_s=copy_s)

    def full(self, expect_rows: int) -> dict[str, Any]:
        out = self.root / f"full-{self.engine}-{uuid.uuid4().hex[:8]}"
        with Meter() as m:
            res = self._predict(out, incremental=False)
        shutil.rmtree(out, ignore_errors=True)
        assert res.committed and res.rows == expect_rows and res.bad_rows == 0, res
        return self._record(m, res)

    def _record(self, m: Meter, res: Any, **extra: Any) -> dict[str, Any]:
        out = {
            "wall_s": m.wall,
            "cpu_s": m.cpu,
            "rows": res.rows,
            "rows_per_s": res.rows / m.wall,
            "cpu_s_per_row": m.cpu / res.rows,
            "foreign_cores": m.foreign_cores,
            **extra,
        }
        if self.engine == "spark":
            from lakenet.engines.spark import last_score_phases

            out["driver_phases_s"] = last_score_phases()
        return out


def run_pairs(side: Side, pairs_n: int, appended: int, total: int) -> list[dict[str, Any]]:
    raw = interleave(
        pairs_n,
        lambda: side.incremental(appended),
        lambda: side.full(total),
        log=lambda msg: log(f"{side.engine}:{msg}"),
    )
    pairs = []
    for i, (a, b) in enumerate(raw):
        pairs.append(
            {
                "engine": side.engine,
                "pair": i + 1,
                "order": "A B" if i % 2 == 0 else "B A",
                "incremental": a,
                "full": b,
                "ratio": a["wall_s"] / b["wall_s"],
                "cpu_ratio": a["cpu_s"] / b["cpu_s"],
                "foreign_cores": max(a["foreign_cores"], b["foreign_cores"]),
            }
        )
        q = pairs[-1]
        log(f"    {side.engine} pair {i + 1}: incremental {a['rows']:,} rows {a['wall_s']:.2f} s, full {b['rows']:,} "
            f"rows {b['wall_s']:.2f} s, ratio {q['ratio']:.3f}, other cores {q['foreign_cores']:.2f}")  # fmt: skip
    return pairs


def engine_figures(prefix: str, pairs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        f"{prefix}_ratio": summary([q["ratio"] for q in pairs]),
        f"{prefix}_cpu_ratio": summary([q["cpu_ratio"] for q in pairs]),
        f"{prefix}_incremental_s": summary([q["incremental"]["wall_s"] for q in pairs]),
        f"{prefix}_full_s": summary([q["full"]["wall_s"] for q in pairs]),
        f"{prefix}_incremental_rows_per_s": summary([q["incremental"]["rows_per_s"] for q in pairs]),
        f"{prefix}_full_rows_per_s": summary([q["full"]["rows_per_s"] for q in pairs]),
        f"{prefix}_incremental_cpu_s_per_row": summary([q["incremental"]["cpu_s_per_row"] for q in pairs]),
        f"{prefix}_full_cpu_s_per_row": summary([q["full"]["cpu_s_per_row"] for q in pairs]),
        f"{prefix}_foreign_cores": summary([q["foreign_cores"] for q in pairs]),
    }


def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, (__doc__ or NAME).splitlines()[0])
    p.add_argument(
        "--rows", type=int, default=None, help="table rows before the append; default 1,000,000, quick 4,000"
    )
    p.add_argument("--pairs", type=int, default=None, help="A/B pairs per engine; default 5, quick 3")
    spark_default = os.environ.get("LAKENET_BENCH_SPARK")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--spark", dest="spark", action="store_true", default=None, help="run the Spark part (--quick)")
    g.add_argument("--no-spark", dest="spark", action="store_false", help="leave the Spark part out")
    args = p.parse_args(argv)
    quick = args.quick
    with_spark = args.spark if args.spark is not None else (spark_default == "1" if spark_default else not quick)
    rows = args.rows or (4_000 if quick else 1_000_000)
    pairs_n = args.pairs or (3 if quick else 5)
    model_epochs = 1 if quick else 2
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = cache_root(args.cache_dir) / NAME / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    started = time.perf_counter()
    engines = ["local", *(["spark"] if with_spark else [])]
    log(f"{NAME}: {rows:,} rows + {APPEND_SHARE:.0%} append, {pairs_n} pairs per engine, engines {engines}")
    spark = None
    fixed: dict[str, Any] = {}
    pairs: list[dict[str, Any]] = []
    try:
        made = build(root, rows, model_epochs)
        fixed.update(made["fixed"])
        table, model = made["table"], made["model"]
        sides = {"local": Side("local", root, table, model)}
        fixed["local_prepare_s"] = sides["local"].prepare(rows)  # also the local engine's warm-up
        appended, fixed["append_s"] = append(root, table, rows)
        total = rows + appended
        log(f"set-up: {fixed}")
        pairs += run_pairs(sides["local"], pairs_n, appended, total)
        if with_spark:
            import lakenet.spark

            # Spark's Python workers import this repository's modules like the driver does
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            t0 = time.perf_counter()
            spark = lakenet.spark.session("local[2]")
            fixed["spark_session_start_s"] = time.perf_counter() - t0
            sides["spark"] = Side("spark", root, table, model, spark)
            fixed["spark_prepare_s"] = sides["spark"].prepare(rows)  # version 0; also Spark's warm-up
            started_s, prepared_s = fixed["spark_session_start_s"], fixed["spark_prepare_s"]
            log(f"spark set-up: session {started_s:.1f} s, prepare {prepared_s:.1f} s")
            pairs += run_pairs(sides["spark"], pairs_n, appended, total)
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    fixed["run_s"] = elapsed

    figures: dict[str, dict[str, float]] = {}
    for engine in engines:
        figures.update(engine_figures(engine, [q for q in pairs if q["engine"] == engine]))
    rows_out = []
    for engine in engines:
        f = lambda k, d=3, e=engine: fmt_range(figures[f"{e}_{k}"], d)  # noqa: E731
        rows_out += [
            [engine, f"time ratio A ÷ B (target ≤ {RATIO_TARGET})", f("ratio")],
            [engine, "CPU ratio A ÷ B (process tree)", f("cpu_ratio")],
            [engine, f"A incremental s ({appended:,} rows)", f("incremental_s", 2)],
            [engine, f"B full s ({total:,} rows)", f("full_s", 2)],
            [engine, "A rows/s", f("incremental_rows_per_s", 0)],
            [engine, "B rows/s", f("full_rows_per_s", 0)],
            [engine, "A CPU µs/row", fmt_range(scaled(figures[f"{engine}_incremental_cpu_s_per_row"], 1e6), 1)],
            [engine, "B CPU µs/row", fmt_range(scaled(figures[f"{engine}_full_cpu_s_per_row"], 1e6), 1)],
            [engine, "cores used by other processes (per pair, max of A and B)", f("foreign_cores", 2)],
        ]  # fmt: skip
    print_table(
        f"{NAME}: incremental scoring of a {APPEND_SHARE:.0%} append (A) ÷ a full re-score (B), {rows:,} + "
        f"{appended:,} rows, {pairs_n} interleaved pairs per engine; median (min–max)",
        ["engine", "figure", "median (min–max)"],
        rows_out,
    )
    print_table("fixed costs (not in the pairs)", ["what", "seconds"], [[k, f"{v:.2f}"] for k, v in fixed.items()])
    print_table(
        "per pair",
        ["engine", "pair", "order", "A s", "B s", "ratio", "CPU ratio", "foreign cores"],
        [[q["engine"], q["pair"], q["order"], f"{q['incremental']['wall_s']:.2f}", f"{q['full']['wall_s']:.2f}",
          f"{q['ratio']:.3f}", f"{q['cpu_ratio']:.3f}", f"{q['foreign_cores']:.2f}"] for q in pairs],
    )  # fmt: skip

    met = {e: figures[f"{e}_ratio"]["median"] <= RATIO_TARGET for e in engines}
    path = write_result(
        NAME,
        args,
        {
            "settings": {
                "rows": rows,
                "appended_rows": appended,
                "append_share": APPEND_SHARE,
                "pairs_per_engine": pairs_n,
                "engines": engines,
                "spark_master": "local[2]" if with_spark else None,
                "table": "transactions_frame(rows, seed=0) → CSV → lakenet.ingest; append: transactions_frame("
                "rows / 20, seed=2, start_id=rows) → lakenet.ingest (append)",
                "model": {"rows": MODEL_ROWS, "config": made["config"], "uri": model},
                "local_score_workers": "lakenet's default (one process per core)",
                "torch_threads": __import__("torch").get_num_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "cpu": "CPU seconds of this process and all its descendants (alive: own + reaped children's "
                "times from /proc/<pid>/stat), so the local scoring pool (children of a fork server) and Spark's JVM "
                "and Python workers count",
            },
            "target": {
                "local_ratio": RATIO_TARGET,
                "spark_ratio": RATIO_TARGET if with_spark else None,
                "local_met": met["local"],
                "spark_met": met.get("spark"),
                "met": all(met.values()),
                "note": "A's wall seconds (incremental, 5 % append) ÷ B's (full re-score) ≤ 0.10, median over pairs, "
                "per engine",
            },
            "figures": figures,
            "figures_quiet_pairs": {
                e: {k: quiet_summary([q for q in pairs if q["engine"] == e], k) for k in ("ratio", "cpu_ratio")}
                for e in engines
            },
            "fixed_costs": fixed,
            "pairs": pairs,
        },
    )
    ratios = ", ".join(f"{e} {figures[f'{e}_ratio']['median']:.3f}" for e in engines)
    print(f"\nratio {ratios} (target ≤ {RATIO_TARGET}); whole run {elapsed:.0f} s; result: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
