"""scale: how lakenet's cost grows with the table. `profile`, one training epoch and `predict` on generated tables
of growing size: seconds, rows/s and the peak RSS of the whole process tree for each step.

- Tabular: 20 numeric and 5 category columns, a key and a binary label that depends on 3 numbers and one category;
  10^4, 10^5, 10^6 and 10^7 rows (--quick: 10^3 and 10^4), written to Delta in 10^6-row appends.
- Images: 32×32 PNG shapes (`lakenet.examples.shapes`, 6 classes), 10^3, 10^4 and 5·10^4 rows (--quick: 120 and
  480), ingested from a folder.
- Every step is a fresh process (`python -m bench.scale --step …`: what a CLI call costs, imports included), the
  model an MLP of width 64 and depth 2 (tabular) or lakenet's small ResNet (images), `data.cache_mb: 0`
  (the cache off), `baseline: none`, `importance_repeats: 0`. The tree's RSS (the step's process and every
  descendant: the scoring pool) is sampled every 20 ms with psutil; peak = the largest sum.
- Sizes up to 10^5 rows (images: 10^4) run --repeats times (default 3), larger ones once; figures are medians
  (min–max). Targets (tabular, and images against 10^4): rows/s at the largest size ≥ 0.8 × rows/s at 10^5;
  peak RSS at the largest size ≤ 1.3 × at 10^5.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import base_parser, cache_root, fmt_range, print_table, summary, write_result

NAME = "scale"
SPEED_TARGET = 0.8
RSS_TARGET = 1.3
STEPS = ("profile", "train", "predict")
_CHUNK = 1_000_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- tables ------------------------------------------------------------------------------------------------------
def tabular_table(where: Path, rows: int, *, seed: int = 0) -> str:
    """`rows` rows, written in appends of at most 10^6; reused when already there."""
    import numpy as np
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    if (where / "_delta_log").is_dir() and DeltaTable(str(where)).to_pyarrow_dataset().count_rows() == rows:
        return str(where)
    shutil.rmtree(where, ignore_errors=True)
    rng = np.random.default_rng(seed)
    levels = [10, 30, 100, 300, 1000]
    for start in range(0, rows, _CHUNK):
        n = min(_CHUNK, rows - start)
        num = rng.normal(size=(n, 20))
        cats = [rng.integers(0, k, n) for k in levels]
        effect = np.where(cats[0] % 3 == 0, 0.8, -0.4)
        logit = 1.2 * num[:, 0] - 0.9 * num[:, 1] + 0.5 * num[:, 2] * num[:, 3] + effect
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        cols: dict[str, Any] = {"key": pa.array(np.char.add("r", np.arange(start, start + n).astype(str)))}
        cols.update({f"x{i}": pa.array(num[:, i]) for i in range(20)})
        for j, (k, idx) in enumerate(zip(levels, cats, strict=True)):
            names = pa.array([f"c{j}_{v}" for v in range(k)])
            cols[f"c{j}"] = pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), names).cast(pa.string())
        cols["label"] = pa.array(label).cast(pa.string())
        write_deltalake(str(where), pa.table(cols), mode="append")
    return str(where)


def image_table(root: Path, rows: int) -> str:
    import lakenet
    from lakenet.examples.shapes import SOURCE_SHAPES, write_shapes_folder

    table = root / f"images-{rows}"
    if (table / "_delta_log").is_dir():
        return str(table)
    folder = root / f"png-{rows}"
    shutil.rmtree(folder, ignore_errors=True)
    write_shapes_folder(folder, SOURCE_SHAPES, per_class=rows // len(SOURCE_SHAPES), seed=rows)
    out = str(lakenet.ingest(folder, table).table)
    shutil.rmtree(folder, ignore_errors=True)
    return out


def config(kind: str, table: str, name: str) -> dict[str, Any]:
    if kind == "tabular":
        model: dict[str, Any] = {"architecture": "mlp", "width": 64, "depth": 2}
        features: dict[str, Any] = {"label": "label", "include": "auto", "exclude": ["key"]}
    else:
        model = {"architecture": "resnet", "width": 16, "depth": 2}
        features = {"label": {"column": "label"}, "image": {"type": "image", "size": 32}}
    return {
        "data": {"table": table, "key": "key", "cache_mb": 0},
        "features": features,
        "model": model,
        "trainer": {
            "epochs": 1,
            "batch_size": 256,
            "baseline": "none",
            "importance_repeats": 0,
            "early_stopping": None,
        },
        "registry": {"name": name},
    }


# ---- one step, in its own process ----------------------------------------------------------------------------------
def step(which: str, cfg_path: str, workdir: str, out: str | None) -> dict[str, Any]:
    """Runs in the child: one lakenet call; what it reports."""
    import lakenet

    cfg = json.loads(Path(cfg_path).read_text())
    t0 = time.perf_counter()
    if which == "profile":
        res = lakenet.profile(cfg, workdir=workdir)
        return {"inner_s": time.perf_counter() - t0, "rows": sum(res.profile.splits.values())}
    if which == "train":
        fit = lakenet.fit(cfg, progress=False, workdir=workdir)
        Path(workdir, "bundle.txt").write_text(str(fit.bundle_dir))
        return {"inner_s": time.perf_counter() - t0, "train_seconds": fit.metrics.get("train_seconds")}
    bundle = Path(workdir, "bundle.txt").read_text()
    assert out is not None
    res = lakenet.predict(bundle, cfg["data"]["table"], out, workdir=workdir)
    return {"inner_s": time.perf_counter() - t0, "rows": res.rows}


def run_step(which: str, cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """The step as a child process, its tree's RSS sampled meanwhile."""
    import psutil

    cfg_path = root / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    out = root / f"scored-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "bench.scale", "--step", which, "--config", str(cfg_path), "--workdir", str(root),
           "--step-out", str(out)]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    peak = [0, 0]  # the tree's summed RSS, and its summed PSS
    done = threading.Event()

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    tree = [p, *p.children(recursive=True)]
                    rss = pss = 0
                    for q in tree:
                        with contextlib.suppress(psutil.Error):
                            mem = q.memory_full_info()  # smaps_rollup: ~0.2 ms a process
                            rss += mem.rss
                            pss += mem.pss
                    peak[0] = max(peak[0], rss)
                    peak[1] = max(peak[1], pss)
                except psutil.Error:
                    return
                done.wait(0.02)
        except psutil.Error:
            return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed ({proc.returncode}):\n{stderr[-3000:]}")
    inner = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20, **inner}


# ---- the study -----------------------------------------------------------------------------------------------------
def measure(kind: str, sizes: list[int], reference: int, repeats: int, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        t0 = time.perf_counter()
        table = tabular_table(root / f"tabular-{n}", n) if kind == "tabular" else image_table(root, n)
        made_s = time.perf_counter() - t0
        work = root / f"work-{kind}-{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        cfg = config(kind, table, f"scale_{kind}_{n}")
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in STEPS}
        for r in range(repeats if n <= reference else 1):
            for s in STEPS:
                res = run_step(s, cfg, work)
                res["rows_per_s"] = n / res["wall_s"]
                runs[s].append(res)
                log(f"{kind} {n:>10,} rows, run {r + 1}: {s:<8} {res['wall_s']:8.2f} s "
                    f"{res['rows_per_s']:>10,.0f} rows/s, peak RSS {res['peak_rss_mb']:7.0f} MiB")  # fmt: skip
        out[str(n)] = {
            "rows": n,
            "table_made_s": made_s,
            "runs": runs,
            **{f"{s}_{k}": summary([x[k] for x in runs[s]]) for s in STEPS for k in ("wall_s", "rows_per_s",
                                                                                       "peak_rss_mb")},
        }  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    return out


def targets(kind: str, res: dict[str, Any], reference: int) -> dict[str, Any]:
    largest = str(max(int(k) for k in res))
    ref = str(reference) if str(reference) in res else str(min(int(k) for k in res))
    out: dict[str, Any] = {"reference_rows": int(ref), "largest_rows": int(largest)}
    met = True
    for s in STEPS:
        speed = res[largest][f"{s}_rows_per_s"]["median"] / res[ref][f"{s}_rows_per_s"]["median"]
        rss = res[largest][f"{s}_peak_rss_mb"]["median"] / res[ref][f"{s}_peak_rss_mb"]["median"]
        ok = speed >= SPEED_TARGET and rss <= RSS_TARGET
        met &= ok
        out[s] = {"rows_per_s_ratio": speed, "peak_rss_ratio": rss, "met": ok}
    out["met"] = met
    return out


def report(name: str, res: dict[str, Any]) -> None:
    rows = []
    for n, r in res.items():
        for s in STEPS:
            rows.append([f"{int(n):,}", s, fmt_range(r[f"{s}_wall_s"], 2), fmt_range(r[f"{s}_rows_per_s"], 0),
                         fmt_range(r[f"{s}_peak_rss_mb"], 0)])  # fmt: skip
    print_table(f"{NAME}: {name}, median (min–max)", ["rows", "step", "seconds", "rows/s", "peak RSS MiB"], rows)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, (__doc__ or NAME).splitlines()[0])
    p.add_argument("--step", choices=STEPS, help=argparse_hidden())
    p.add_argument("--config", help=argparse_hidden())
    p.add_argument("--workdir", help=argparse_hidden())
    p.add_argument("--step-out", help=argparse_hidden())
    p.add_argument("--repeats", type=int, default=3, help="runs of each step at the small sizes")
    p.add_argument("--sizes", default=None, help="tabular sizes, comma-separated (default 1e4,1e5,1e6,1e7)")
    p.add_argument("--image-sizes", default=None, help="image sizes, comma-separated (default 1e3,1e4,5e4)")
    args = p.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, args.config, args.workdir, args.step_out)))
        return 0

    def sizes(text: str | None, default: str) -> list[int]:
        return [int(float(x)) for x in (text or default).split(",")]

    tab = sizes(args.sizes, "1e3,1e4" if args.quick else "1e4,1e5,1e6,1e7")
    img = sizes(args.image_sizes, "120,480" if args.quick else "1e3,1e4,5e4")
    repeats = 1 if args.quick else args.repeats
    root = cache_root(args.cache_dir) / NAME
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"tabular": measure("tabular", tab, 100_000, repeats, root),
               "images": measure("images", img, 10_000, repeats, root)}  # fmt: skip
    goals = {"tabular": targets("tabular", results["tabular"], 100_000),
             "images": targets("images", results["images"], 10_000)}  # fmt: skip
    for kind, res in results.items():
        report(kind, res)
    goals["met"] = goals["tabular"]["met"] and goals["images"]["met"]
    path = write_result(NAME, args, {
        "settings": {"tabular_sizes": tab, "image_sizes": img, "repeats": repeats, "cache_mb": 0,
                     "configs": {"tabular": config("tabular", "<table>", "-"), "images": config("images", "<table>",
                                                                                                "-")}},
        "target": {"rows_per_s_ratio": SPEED_TARGET, "peak_rss_ratio": RSS_TARGET, **goals},
        "figures": results,
        "run_s": time.perf_counter() - started,
        "notes": [
            "every step is a fresh process: its wall time includes interpreter start and imports",
            "peak RSS: the largest sum over the step's process tree, sampled every 20 ms",
            "rows/s = table rows ÷ the step's wall time",
        ],
    })  # fmt: skip
    for kind in ("tabular", "images"):
        g = goals[kind]
        parts = ", ".join(f"{s} speed {g[s]['rows_per_s_ratio']:.2f} RSS {g[s]['peak_rss_ratio']:.2f}" for s in STEPS)
        print(f"{kind}: {g['largest_rows']:,} vs {g['reference_rows']:,} rows: {parts}; met: {g['met']}")
    print(f"whole run {time.perf_counter() - started:.0f} s; result: {path}")
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
