"""real_tables: what `lakenet init` gives a user on real tables, unedited, and how its image config compares with the
hand-written config of the README demo.

Part A, real tables. For each table: CSV → `lakenet.ingest` → `lakenet.init_config` (written to a file, not
edited) → `lakenet.fit` (each in a fresh working directory) → `lakenet.predict` on the whole table. Recorded: the
rows, the config's non-comment lines (what a user would read or edit), the fit call's wall and CPU seconds (profile,
training, evaluation, the gradient-boosting baseline and registration: everything a user waits for), the deep
model's headline test metric next to the baseline's on the same split (ROC-AUC for two classes, macro-F1 for more,
R² for regression: `lakenet.evaluation.baseline.headline_metric`), the deep model's test macro-F1 for
classification, and whether predict scored every row. The tables:
- breast_cancer: scikit-learn's breast cancer (569 rows, 30 numbers) with a unique `customer_id` string, a seeded
  random `country` (DE/FR/IT), 6 blank cells in one numeric column, and the label as strings (`diagnosis`:
  malignant/benign), as a CRM export has them;
- wine: scikit-learn's wine (178 rows, 3 classes) with 5 % of the numeric cells blanked (seeded);
- diabetes: scikit-learn's diabetes (442 rows, regression) with 5 % of the numeric feature cells blanked;
- transactions: `lakenet.examples.write_transactions_csv` (20,000 rows; --quick: 4,000), a rare fraud label.
These are absolute figures of one run each (no pair): the deep-vs-baseline comparison is within the run, on the
same test rows. A warm-up fit (untimed) pays the process's one-off costs (imports, MLflow schema) first.

Part B, digits: the init config against the README demo's config. The digits PNG folder (1,797 images + 3 corrupt
files, `lakenet.demo.write_digits_folder`) is ingested once. A = the init config, unedited; B = the demo's
(`lakenet.demo.run_demo`: image size 16, resnet width 32 depth 2 dropout 0.1, 15 epochs, batch 64, learning rate
3e-3) with `engine: local, workers 1`, the init config's default, so that the pairs compare configs and not process
counts. A and B run interleaved (A B, B A, ...), each fit in a fresh working directory, after an untimed warm-up
fit of the image path. Figures: per pair A's fit wall seconds ÷ B's (target ≤ 3.0) and CPU seconds ÷ B's, as the
median (min–max) over pairs, and each side's test accuracy (target: A ≥ 0.98, full mode only). --quick trains
both sides for 1 epoch on the first 300 images (overriding trainer.epochs on both, so A is then not unedited) in
3 pairs, without warm-ups: it checks that the benchmark runs, not its figures.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bench._common import (
    base_parser,
    cache_root,
    cpu_seconds,
    fmt_range,
    interleave,
    machine_busy_s,
    print_table,
    quiet_summary,
    summary,
    write_result,
)

NAME = "real_tables"
TIME_TARGET = 3.0  # digits: the init config's fit may take at most 3× the demo config's
ACCURACY_TARGET = 0.98  # digits: the init config's test accuracy (full mode)
QUICK_EPOCHS = 1  # --quick: digits fits train 1 epoch on a subset of the images ...
QUICK_DIGITS = 300  # ... so that 3 pairs (what the smoke test asks of every benchmark) fit in about a minute


# ---- the tables ------------------------------------------------------------------------------------------------
def _blank(df: pd.DataFrame, share: float, seed: int, skip: tuple[str, ...]) -> pd.DataFrame:
    """Blank `share` of the numeric cells (not the label), as CSV exports have them."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for col in out.columns:
        if col not in skip and pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].astype("Float64").mask(rng.random(len(out)) < share)
    return out


def write_breast_cancer(path: Path, quick: bool) -> str:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    rng = np.random.default_rng(1)
    frame.insert(0, "customer_id", [f"CU{i + 1:06d}" for i in range(len(frame))])
    frame["country"] = rng.choice(["DE", "FR", "IT"], len(frame))
    blank = rng.choice(len(frame), 6, replace=False)
    frame["mean smoothness"] = frame["mean smoothness"].astype("Float64")
    frame.loc[blank, "mean smoothness"] = pd.NA
    frame["diagnosis"] = [str(data.target_names[t]) for t in data.target]
    frame.to_csv(path, index=False)
    return "6 blank cells in 'mean smoothness', customer_id (unique string), country (DE/FR/IT), string label"


def write_wine(path: Path, quick: bool) -> str:
    from sklearn.datasets import load_wine

    _blank(load_wine(as_frame=True).frame, 0.05, seed=3, skip=("target",)).to_csv(path, index=False)
    return "5 % of the numeric cells blank"


def write_diabetes(path: Path, quick: bool) -> str:
    from sklearn.datasets import load_diabetes

    _blank(load_diabetes(as_frame=True).frame, 0.05, seed=3, skip=("target",)).to_csv(path, index=False)
    return "5 % of the numeric feature cells blank (regression)"


def write_transactions(path: Path, quick: bool) -> str:
    from lakenet.examples import write_transactions_csv

    rows = 4_000 if quick else 20_000
    write_transactions_csv(path, rows=rows, seed=0)
    return f"write_transactions_csv(rows={rows}, seed=0): ids, timestamps, 2 % blank amounts, ~2 % fraud"


TABLES: dict[str, tuple[str, Callable[[Path, bool], str]]] = {
    "breast_cancer": ("diagnosis", write_breast_cancer),
    "wine": ("target", write_wine),
    "diabetes": ("target", write_diabetes),
    "transactions": ("is_fraud", write_transactions),
}


# ---- helpers -----------------------------------------------------------------------------------------------------
def config_lines(text: str) -> int:
    """Lines a user reads as config: neither blank nor a comment."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def fresh_dir(root: Path, name: str) -> Path:
    """A new folder per fit: MLflow keeps its sqlite connection to a store it opened, so none is reused."""
    d = root / f"{name}-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    return d


def timed_fit(config: Path, workdir: Path) -> tuple[Any, float, float, float]:
    """`lakenet.fit` with its wall seconds, CPU seconds (self + waited-for children) and the cores anything else
    on the machine used meanwhile."""
    import lakenet

    w0, c0, b0 = time.perf_counter(), cpu_seconds(), machine_busy_s()
    fit = lakenet.fit(config, progress=False, workdir=workdir)
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    foreign = max(0.0, machine_busy_s() - b0 - cpu) / wall
    return fit, wall, cpu, foreign


def shorten(verdict: str | None) -> str:
    """ "The deep model wins: test ROC-AUC ..." → "The deep model wins"."""
    if not verdict:
        return "-"
    head = verdict.split(":", 1)[0].replace(" (HistGradientBoosting)", "")
    return head if len(head) <= 60 else head[:57] + "..."


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- part A ------------------------------------------------------------------------------------------------------
def run_table(name: str, root: Path, quick: bool) -> dict[str, Any]:
    import lakenet
    from lakenet.evaluation.baseline import headline_metric

    label, write = TABLES[name]
    wd = fresh_dir(root, name)
    csv = wd / f"{name}.csv"
    described = write(csv, quick)
    classes = pd.read_csv(csv, usecols=[label])[label].nunique()
    t0 = time.perf_counter()
    ingested = lakenet.ingest(csv, wd / "data" / name)
    t1 = time.perf_counter()
    text = lakenet.init_config(ingested.table, label=label, name=name, config_dir=wd)
    t2 = time.perf_counter()
    config = wd / f"{name}.yaml"
    config.write_text(text)
    fit, wall, cpu, foreign = timed_fit(config, wd)
    t3 = time.perf_counter()
    scored = lakenet.predict(fit.model_uri, ingested.table, str(wd / "data" / f"{name}_scored"), workdir=wd)
    t4 = time.perf_counter()
    task = "regression" if "test_r2" in fit.metrics else "classification"
    headline = headline_metric(task, classes)
    m = fit.metrics
    return {
        "table": name,
        "label": label,
        "data": described,
        "task": task,
        "classes": classes if task == "classification" else None,
        "rows": ingested.rows_written,
        "config_lines": config_lines(text),
        "config": text,
        "train_s": wall,
        "train_cpu_s": cpu,
        "foreign_cores": foreign,
        "epochs": len(fit.history),
        "headline": headline,
        "deep": m.get(f"test_{headline}"),
        "baseline": m.get(f"baseline_{headline}"),
        "deep_macro_f1": m.get("test_macro_f1") if task == "classification" else None,
        "verdict": fit.baseline,
        "predicted_rows": scored.rows,
        "bad_rows": scored.bad_rows,
        "predict_all_rows": scored.bad_rows == 0 and scored.rows == ingested.rows_written,
        "ingest_s": t1 - t0,
        "init_s": t2 - t1,
        "predict_s": t4 - t3,
        "metrics": m,
    }


def warm_up(root: Path) -> float:
    """One untimed short fit (wine, 1 epoch, no baseline): imports, MLflow schema creation, first torch call."""
    import lakenet

    wd = fresh_dir(root, "warmup")
    write_wine(wd / "wine.csv", True)
    table = lakenet.ingest(wd / "wine.csv", wd / "data" / "wine").table
    raw = yaml.safe_load(lakenet.init_config(table, label="target", name="warmup", config_dir=wd))
    raw["trainer"].update(epochs=1, baseline="none")
    (wd / "warmup.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    t0 = time.perf_counter()
    lakenet.fit(wd / "warmup.yaml", progress=False, workdir=wd)
    return time.perf_counter() - t0


# ---- part B ------------------------------------------------------------------------------------------------------
def digits_configs(root: Path, epochs: int | None, limit: int | None) -> tuple[Path, Path, Path, dict[str, Any]]:
    """The digits folder ingested once; A = the init config as written, B = the README demo's config (workers 1),
    and B for 1 epoch (the untimed warm-up). `epochs` and `limit` (--quick) override trainer.epochs on both sides
    and take only the first `limit` images."""
    import lakenet
    from lakenet.demo import write_digits_folder

    base = root / "digits"
    t0 = time.perf_counter()
    images = write_digits_folder(base / "images", limit=limit)
    t1 = time.perf_counter()
    ingested = lakenet.ingest(base / "images", base / "data" / "digits")
    t2 = time.perf_counter()
    text = lakenet.init_config(ingested.table, label="label", name="digits", config_dir=base)
    t3 = time.perf_counter()
    init_raw = yaml.safe_load(text)
    demo_raw = yaml.safe_load(text)
    # as in lakenet.demo.run_demo, except the worker count
    demo_raw["features"]["image"].update(size=16, channels=1)
    demo_raw["model"].update(architecture="resnet", width=32, depth=2, dropout=0.1)
    demo_raw["trainer"].update(epochs=15, batch_size=64, learning_rate=0.003)
    demo_raw["engine"] = {"type": "local", "workers": 1}
    a, b, warm = base / "init.yaml", base / "demo.yaml", base / "warmup.yaml"
    warm.write_text(yaml.safe_dump({**demo_raw, "trainer": {**demo_raw["trainer"], "epochs": 1}}, sort_keys=False))
    if epochs is None:
        a.write_text(text)
    else:
        init_raw["trainer"]["epochs"] = epochs
        demo_raw["trainer"]["epochs"] = epochs
        a.write_text(yaml.safe_dump(init_raw, sort_keys=False))
    b.write_text(yaml.safe_dump(demo_raw, sort_keys=False))
    info = {
        "images": images,
        "rows": ingested.rows_written,
        "write_images_s": t1 - t0,
        "ingest_s": t2 - t1,
        "init_s": t3 - t2,
        "init_config_lines": config_lines(text),
        "init_epochs": init_raw["trainer"]["epochs"],
        "demo_epochs": demo_raw["trainer"]["epochs"],
        "init_config": text,
        "demo_config": yaml.safe_dump(demo_raw, sort_keys=False),
    }
    return a, b, warm, info


def digits_side(config: Path, root: Path, name: str) -> dict[str, Any]:
    fit, wall, cpu, foreign = timed_fit(config, fresh_dir(root, name))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "foreign_cores": foreign,
        "epochs": len(fit.history),
        "test_accuracy": fit.metrics["test_accuracy"],
        "test_macro_f1": fit.metrics["test_macro_f1"],
    }


# ---- main --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, __doc__ or NAME)
    p.add_argument("--pairs", type=int, default=None, help="digits A/B pairs; default 5 (quick: 3 short ones)")
    args = p.parse_args(argv)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # every fit keeps its own store in its working directory
    pairs_n = args.pairs or (3 if args.quick else 5)
    epochs = QUICK_EPOCHS if args.quick else None
    limit = QUICK_DIGITS if args.quick else None
    root = cache_root(args.cache_dir) / "real_tables" / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    started = time.perf_counter()
    try:
        # --quick checks that the benchmark runs, not its figures: no warm-ups there
        warmup_s = None if args.quick else warm_up(root)

        # Part A: a failing table is reported (its exact error), not hidden, and the run exits non-zero.
        tables: dict[str, dict[str, Any]] = {}
        for name in TABLES:
            try:
                tables[name] = run_table(name, root, args.quick)
                r = tables[name]
                log(f"{name}: {r['rows']} rows, fit {r['train_s']:.1f} s, {r['headline']} {r['deep']}, {r['baseline']}")
            except Exception as err:
                tables[name] = {"table": name, "error": f"{type(err).__name__}: {err}"}
                log(f"{name}: FAILED: {tables[name]['error']}")

        # Part B
        a_cfg, b_cfg, warm_cfg, digits = digits_configs(root, epochs, limit)
        w0 = time.perf_counter()
        if not args.quick:
            digits_side(warm_cfg, root, "digits-warmup")  # the image path's first use, outside the pairs
        digits["warmup_fit_s"] = None if args.quick else time.perf_counter() - w0
        raw_pairs = interleave(
            pairs_n,
            lambda: digits_side(a_cfg, root, "digits-init"),
            lambda: digits_side(b_cfg, root, "digits-demo"),
            log=log,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started

    pairs = [
        {
            "pair": i + 1,
            "order": "A B" if i % 2 == 0 else "B A",
            "init": a,
            "demo": b,
            "time_ratio": a["wall_s"] / b["wall_s"],
            "cpu_ratio": a["cpu_s"] / b["cpu_s"],
            "foreign_cores": max(a["foreign_cores"], b["foreign_cores"]),
        }
        for i, (a, b) in enumerate(raw_pairs)
    ]
    figures: dict[str, dict[str, float]] = {}
    for name, r in tables.items():
        if "error" in r:
            continue
        figures[f"{name}_deep"] = summary([r["deep"]])
        if r["baseline"] is not None:
            figures[f"{name}_baseline"] = summary([r["baseline"]])
        figures[f"{name}_train_s"] = summary([r["train_s"]])
        figures[f"{name}_train_cpu_s"] = summary([r["train_cpu_s"]])
        figures[f"{name}_config_lines"] = summary([r["config_lines"]])
    figures["digits_time_ratio"] = summary([q["time_ratio"] for q in pairs])
    figures["digits_cpu_ratio"] = summary([q["cpu_ratio"] for q in pairs])
    figures["digits_init_test_accuracy"] = summary([q["init"]["test_accuracy"] for q in pairs])
    figures["digits_demo_test_accuracy"] = summary([q["demo"]["test_accuracy"] for q in pairs])
    figures["digits_init_fit_s"] = summary([q["init"]["wall_s"] for q in pairs])
    figures["digits_demo_fit_s"] = summary([q["demo"]["wall_s"] for q in pairs])
    figures["digits_foreign_cores"] = summary([q["foreign_cores"] for q in pairs])

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = []
    for name, r in tables.items():
        if "error" in r:
            rows.append([name, "FAILED", r["error"], "", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                f"{r['rows']:,}",
                r["config_lines"],
                f"{r['train_s']:.1f}",
                f"{r['headline']} {fmt(r['deep'])}",
                fmt(r["baseline"]),
                fmt(r["deep_macro_f1"]),
                ("" if r["predict_all_rows"] else f"PREDICT: {r['bad_rows']} bad rows; ") + shorten(r["verdict"]),
            ]
        )
    print_table(
        f"{NAME} A: ingest → init (unedited) → fit → predict, deep model vs HistGradientBoosting on the same test rows",
        ["table", "rows", "config lines", "train s", "deep metric", "baseline metric", "macro-F1 (deep)", "verdict"],
        rows,
    )

    time_median = figures["digits_time_ratio"]["median"]
    acc_median = figures["digits_init_test_accuracy"]["median"]
    time_met = time_median <= TIME_TARGET
    acc_met = None if args.quick else acc_median >= ACCURACY_TARGET
    epochs_note = (
        f"first {limit} images, both sides {epochs} epoch(s) (--quick)"
        if args.quick
        else f"A {digits['init_epochs']} epochs (init), B {digits['demo_epochs']} (demo)"
    )
    print_table(
        f"{NAME} B: digits, init config (A) vs README demo config (B), workers 1 both, {epochs_note}, "
        f"{pairs_n} interleaved pairs",
        ["figure", "median (min–max)"],
        [
            [f"fit time ratio A ÷ B (target ≤ {TIME_TARGET})", fmt_range(figures["digits_time_ratio"])],
            ["fit CPU ratio A ÷ B", fmt_range(figures["digits_cpu_ratio"])],
            [
                f"A test accuracy (target ≥ {ACCURACY_TARGET}{', full mode' if args.quick else ''})",
                fmt_range(figures["digits_init_test_accuracy"], 4),
            ],
            ["B test accuracy", fmt_range(figures["digits_demo_test_accuracy"], 4)],
            ["A fit s", fmt_range(figures["digits_init_fit_s"], 1)],
            ["B fit s", fmt_range(figures["digits_demo_fit_s"], 1)],
            ["init config lines (A)", str(digits["init_config_lines"])],
            ["cores used by other processes (per pair, max of A and B)", fmt_range(figures["digits_foreign_cores"], 2)],
        ],
    )

    failed = [n for n, r in tables.items() if "error" in r or not r["predict_all_rows"]]
    path = write_result(
        NAME,
        args,
        {
            "settings": {
                "tables": {n: {"label": lab, "data": tables[n].get("data")} for n, (lab, _) in TABLES.items()},
                "transactions_rows": 4_000 if args.quick else 20_000,
                "part_a": "one fit per table with the init config unedited (its own epochs, early stopping, "
                "baseline); figures are single values (n=1)",
                "digits_pairs": pairs_n,
                "digits_images": limit or "all (1,797 + 3 corrupt files)",
                "digits_A": "the init config, unedited" + (f" except trainer.epochs={epochs}" if epochs else ""),
                "digits_B": "lakenet.demo.run_demo's config (image 16×1, resnet width 32 depth 2 dropout 0.1, "
                "batch 64, lr 0.003, 15 epochs) with engine local workers 1 instead of the demo's 2, so that "
                "both sides run one process and the pairs compare configs, not process counts"
                + (f"; trainer.epochs={epochs}" if epochs else ""),
                "quick_epochs_override": epochs,
                "torch_threads": __import__("torch").get_num_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            },
            "target": {
                "digits_time_ratio": TIME_TARGET,
                "digits_init_test_accuracy": ACCURACY_TARGET,
                "time_met": time_met,
                "accuracy_met": acc_met,
                "met": time_met and acc_met is not False,
                "note": "A's fit wall seconds ÷ B's ≤ 3.0 (median over pairs); A's test accuracy ≥ 0.98 "
                "(median, full mode only: --quick trains a few epochs)",
                "tables_failed": failed,
            },
            "figures": figures,
            "figures_quiet_pairs": {k: quiet_summary(pairs, k) for k in ("time_ratio", "cpu_ratio")},
            "fixed_costs": {
                "warmup_fit_s": warmup_s,
                "tables": {
                    n: {k: r[k] for k in ("ingest_s", "init_s", "predict_s")}
                    for n, r in tables.items()
                    if "error" not in r
                },
                "digits": {k: digits[k] for k in ("write_images_s", "ingest_s", "init_s", "warmup_fit_s")},
                "run_s": elapsed,
            },
            "tables": tables,
            "digits": digits,
            "pairs": pairs,
        },
    )
    median_a = statistics.median(q["init"]["wall_s"] for q in pairs)
    print(
        f"\ndigits time ratio {time_median:.3f} (target ≤ {TIME_TARGET}), A test accuracy {acc_median:.4f}, "
        f"A fit {median_a:.1f} s; whole run {elapsed:.0f} s; result: {path}"
    )
    if failed:
        print(f"FAILED tables: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
