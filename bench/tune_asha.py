"""tune_asha: epochs ASHA needs to get within 1 % of full random search's best ÷ the epochs of full random search.

Data: scikit-learn's digits (1,797 8×8 images) as a Delta table of 64 pixel columns, split 80/10/10; an MLP.
Space (the issue's example): learning rate log-uniform [1e-4, 1], width {16, 32, 64, 128}, dropout [0, 0.5],
batch size {32, 64, 128}. Metric: val_accuracy (maximize). No early stopping, so a full-budget trial always
trains E epochs.

Per pair (one sampler seed), both studies run through `lakenet.tune` (real Optuna study in sqlite, trials as the
training loop, MLflow child runs) with the same seeded random sampler, one trial at a time, so trial i samples
the same configuration in both:
- B = random search, no pruner: N configurations × E epochs. Its best is the best final val_accuracy.
- A = ASHA (min 1 epoch, reduction factor 3: rungs at 1, 3, 9, 27 epochs) on the same sampler: its first N
  trials are B's N configurations (ASHA's decisions at a trial depend only on the trials before it, so they are
  the same whatever comes after); it may go on to sample up to 3N, as a search that has not yet found a good
  configuration would.
The ratio is A's cumulative epochs (in trial order, pruned trials counted for the epochs they trained) at the
first complete trial whose value is within 1 % of B's best (≥ 0.99 × best), ÷ N × E. A pair where A does not
get there within 3N trials counts as infinitely bad (`reached: false`), so it can only raise the median.
Also reported: whether A got there within B's own N configurations, A's epochs over those N ÷ B's, wall-clock
and CPU ratios (of the whole studies). Target: ≤ 0.30.
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import base_parser, cache_root, cpu_seconds, fmt_range, print_table, summary, write_result

NAME = "tune_asha"
TARGET = 0.30
WITHIN = 0.01


def digits_pixels_table(cache_dir: str | Path | None) -> Path:
    """The digits as 64 numeric pixel columns in a Delta table (made once per cache dir)."""
    import pandas as pd
    from sklearn.datasets import load_digits

    import lakenet

    root = cache_root(cache_dir) / "digits_pixels"
    table = root / "table"
    if not (table / "_delta_log").is_dir():
        digits = load_digits()
        df = pd.DataFrame(digits.data, columns=[f"p{i}" for i in range(64)])
        df.insert(0, "key", [f"d{i}" for i in range(len(df))])
        df["label"] = [str(int(v)) for v in digits.target]
        root.mkdir(parents=True, exist_ok=True)
        df.to_parquet(root / "digits.parquet", index=False)
        lakenet.ingest(root / "digits.parquet", table, mode="overwrite")
    return table


def config(table: Path, *, trials: int, epochs: int, seed: int, pruner: str) -> dict[str, Any]:
    return {
        "data": {"table": str(table)},
        "features": {"label": {"column": "label"}, **{f"p{i}": {"type": "numeric"} for i in range(64)}},
        "model": {"architecture": "mlp", "depth": 2},
        "trainer": {"epochs": epochs, "early_stopping": None, "checkpoint_every_steps": 0, "schedule": "cosine"},
        "registry": {"name": "digits_tune"},
        "tune": {
            "metric": "val_accuracy",
            "trials": trials,
            "sampler": "random",
            "pruner": pruner,
            "min_epochs": 1,
            "reduction_factor": 3,
            "seed": seed,
            "space": {
                "trainer.learning_rate": {"log_uniform": [1.0e-4, 1.0]},
                "model.width": {"choice": [16, 32, 64, 128]},
                "model.dropout": {"uniform": [0.0, 0.5]},
                "trainer.batch_size": {"choice": [32, 64, 128]},
            },
        },
    }


def run_study(raw: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One `lakenet.tune` study in a fresh working directory: its trials in order, wall and CPU seconds."""
    import optuna

    import lakenet

    # A fresh folder per study (not the same one emptied): this process's MLflow client keeps its sqlite
    # connection to the store it opened, and a store deleted under it turns read-only.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir = workdir.with_name(f"{workdir.name}-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = lakenet.tune(raw, register=False, quiet=True, workdir=workdir)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    study = optuna.load_study(study_name=res.study, storage=res.storage)
    trials = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "epochs": int(t.user_attrs.get("trained_epochs", 0)),
            "params": dict(t.params),
        }
        for t in sorted(study.trials, key=lambda t: t.number)
    ]
    return {"trials": trials, "wall_s": wall, "cpu_s": cpu, "best": res.best_value, "counts": res.counts}


def epochs_to_reach(trials: list[dict[str, Any]], threshold: float) -> int | None:
    spent = 0
    for t in trials:
        spent += t["epochs"]
        if t["state"] == "complete" and t["value"] is not None and t["value"] >= threshold:
            return spent
    return None


def main(argv: list[str] | None = None) -> int:
    p = base_parser(NAME, __doc__ or NAME)
    p.add_argument("--pairs", type=int, default=None, help="sampler seeds (pairs of studies); default 5 (quick: 3)")
    p.add_argument("--trials", type=int, default=None, help="configurations per study; default 27 (quick: 3)")
    p.add_argument("--epochs", type=int, default=None, help="full budget per trial; default 27 (quick: 3)")
    args = p.parse_args(argv)
    pairs_n = args.pairs or (3 if args.quick else 5)
    # --quick: the smallest study that still has two ASHA rungs (1 and 3 epochs) and lets ASHA go past B's N
    n = args.trials or (3 if args.quick else 27)
    e = args.epochs or (3 if args.quick else 27)
    table = digits_pixels_table(args.cache_dir)
    runs = cache_root(args.cache_dir) / "tune_runs"
    # one untimed study: imports (torch.optim pulls in dynamo), MLflow and Optuna schema creation
    run_study(config(table, trials=1, epochs=1, seed=999, pruner="none"), runs / "warmup")

    pairs: list[dict[str, Any]] = []
    for i in range(pairs_n):
        seed = 100 + i
        order = ("random", "asha") if i % 2 == 0 else ("asha", "random")  # interleave which side runs first
        out: dict[str, dict[str, Any]] = {}
        for side in order:
            if side == "random":
                out[side] = run_study(config(table, trials=n, epochs=e, seed=seed, pruner="none"), runs / side)
            else:
                out[side] = run_study(config(table, trials=3 * n, epochs=e, seed=seed, pruner="asha"), runs / side)
        rs, asha = out["random"], out["asha"]
        first_n = asha["trials"][:n]
        same = [a["params"] for a in first_n] == [r["params"] for r in rs["trials"]]
        rs_epochs = sum(t["epochs"] for t in rs["trials"])
        asha_epochs = sum(t["epochs"] for t in first_n)
        threshold = (1 - WITHIN) * rs["best"]
        reach = epochs_to_reach(asha["trials"], threshold)
        reach_n = epochs_to_reach(first_n, threshold)
        pairs.append(
            {
                "seed": seed,
                "same_configurations": same,
                "random_best": rs["best"],
                "asha_best": asha["best"],
                "threshold": threshold,
                "reached": reach is not None,
                "reached_within_same_configurations": reach_n is not None,
                "asha_epochs_to_reach": reach,
                "asha_trials": len(asha["trials"]),
                "random_epochs": rs_epochs,
                "asha_epochs_same_configurations": asha_epochs,
                "ratio": reach / rs_epochs if reach is not None else math.inf,
                "ratio_total_epochs": asha_epochs / rs_epochs,
                "ratio_wall": asha["wall_s"] / rs["wall_s"],
                "ratio_cpu": asha["cpu_s"] / rs["cpu_s"],
                "asha_counts": asha["counts"],
                "random_wall_s": rs["wall_s"],
                "asha_wall_s": asha["wall_s"],
            }
        )
        last = pairs[-1]
        print(
            f"seed {seed}: random best {rs['best']:.4f} in {rs_epochs} epochs; ASHA within 1% after {reach} "
            f"epochs (its first {n} configurations: {asha_epochs} epochs, best {asha['best']:.4f} in "
            f"{len(asha['trials'])} trials); ratio {last['ratio']:.3f}",
            file=sys.stderr,
            flush=True,
        )

    figures = {k: summary([p[k] for p in pairs]) for k in ("ratio", "ratio_total_epochs", "ratio_wall", "ratio_cpu")}
    median = figures["ratio"]["median"]
    print_table(
        f"{NAME}: ASHA epochs to within 1% of random search's best ÷ random search's epochs ({n} configs × {e} epochs)",
        ["figure", "median (min–max)"],
        [
            ["epochs ratio (target ≤ 0.30)", fmt_range(figures["ratio"])],
            ["epochs ratio over the same N configurations", fmt_range(figures["ratio_total_epochs"])],
            ["wall-clock ratio", fmt_range(figures["ratio_wall"])],
            ["CPU ratio", fmt_range(figures["ratio_cpu"])],
            ["pairs that reached 1%", f"{sum(p['reached'] for p in pairs)}/{len(pairs)}"],
            [
                "… within the same N configurations",
                f"{sum(p['reached_within_same_configurations'] for p in pairs)}/{len(pairs)}",
            ],
            ["same configurations", str(all(p["same_configurations"] for p in pairs))],
        ],
    )
    path = write_result(
        NAME,
        args,
        {
            "settings": {
                "configurations": n,
                "full_budget_epochs": e,
                "pairs": pairs_n,
                "within": WITHIN,
                "asha": {"min_epochs": 1, "reduction_factor": 3},
                "space": config(table, trials=n, epochs=e, seed=0, pruner="asha")["tune"]["space"],
                "model": "mlp depth 2 on 64 pixel columns",
            },
            "target": {"ratio": TARGET, "met": median <= TARGET},
            "figures": figures,
            "fixed_costs": {"random_wall_s_median": statistics.median(p["random_wall_s"] for p in pairs)},
            "pairs": pairs,
        },
    )
    print(f"\nmedian ratio {median:.3f} (target ≤ {TARGET}); result: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
