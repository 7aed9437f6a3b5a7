"""use_cases: the three uses beyond classification and regression, each against the baseline a user would try
first, on the same rows in the same run.

Anomaly (`task: anomaly`). Two tables: scikit-learn's breast-cancer data with the malignant class subsampled to
5 % of the rows (the rare anomalies; one subsample per seed) and `lakenet.examples.sensors` (machine readings with
2 % planted faults, most inside every column's normal range; labels on the 30 % that were inspected). Per seed,
on one split (train 0.5 / val 0.1 / test 0.4): lakenet's autoencoder trained with the labels it has
(`anomaly.labelled: push`) and without any label (the label column left out), and scikit-learn's IsolationForest
(default settings) on the same encoded features (lakenet's numeric block and category indices), fitted on every
training row and on the training rows not known to be anomalies. Figure: test ROC-AUC on the test rows with a
known label; ratio = lakenet ÷ IsolationForest per seed (the matching IsolationForest: normal rows for the
labelled model, every row for the unlabelled one), median (min–max) over seeds. Target: ≥ 1.0 on both tables.

Recommendation (`task: recommendation`). `lakenet.examples.interactions` (1,000 users, 500 items, latent tastes;
one log per seed), `lakenet init --task recommendation`'s config, 15 epochs; recall@10 and NDCG@10 on each user's
last interaction (items seen before left out) against the popularity ranking on the same users. Target: ≥ 2.0×.
Serving: a catalogue of 10,000 items (a 4,000-user log over 10,000 items, 1 epoch: the latency does not depend on
the fit), `POST /v1/recommend` at concurrency 1 (a persistent connection, 50 warm-up requests, then 500), p50 and
p99, next to the in-process Recommender call for one user (the same work without HTTP). Target: p99 ≤ 10 ms.

Voice (`audio` features). `lakenet.examples.spoken_digits` (espeak-ng; skipped, and said so, when it is not
installed): 30 voices × 2 speeds × 2 pitches × 10 digits, the split grouped by voice
(`data.split.group_pattern`), so the test voices were never heard in training. Figure: test accuracy. Target:
≥ 0.9. The fit's wall seconds are reported too.

--quick: one seed and small tables everywhere (a 2,000-item catalogue, 100 requests, 4 voices): it checks that the
benchmark runs, not its figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench._common import base_parser, fmt_range, print_table, summary, write_result

NAME = "use_cases"


def _in(wd: Path) -> None:
    wd.mkdir(parents=True, exist_ok=True)
    os.chdir(wd)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


# ---- anomaly -----------------------------------------------------------------------------------------------------
def _breast_cancer(seed: int, share: float = 0.05) -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    df.columns = [c.replace(" ", "_") for c in df.columns]
    normal, anomalous = df[df.target == 1], df[df.target == 0]
    n = round(share / (1 - share) * len(normal))
    df = pd.concat([normal, anomalous.sample(n, random_state=seed)]).sample(frac=1.0, random_state=seed)
    df["fault"] = (df.pop("target") == 0).astype(int)
    df.insert(0, "row_id", [f"P{seed}-{i:05d}" for i in range(len(df))])
    return df


def _sensors(seed: int, rows: int) -> pd.DataFrame:
    from lakenet.examples.sensors import sensors_frame

    return sensors_frame(rows, seed=seed).drop(columns=["fault_kind"]).rename(columns={"reading_id": "row_id"})


def _anomaly_seed(df: pd.DataFrame, wd: Path, *, epochs: int, seed: int) -> dict[str, float]:
    """One split of one table: the test ROC-AUC of lakenet with and without labels and of IsolationForest."""
    import pyarrow as pa
    from deltalake import DeltaTable
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    import lakenet
    from lakenet.config.schema import SplitConfig
    from lakenet.data.split import TEST, TRAIN, table_splits
    from lakenet.models.bundle import Bundle

    _in(wd)
    df.to_csv(wd / "t.csv", index=False)
    table = lakenet.ingest(wd / "t.csv", wd / "t", key="row_id").table
    base: dict[str, Any] = {
        "data": {"table": table, "key": "row_id", "split": {"train": 0.5, "val": 0.1, "test": 0.4, "seed": seed}},
        "trainer": {"epochs": epochs, "batch_size": 64, "seed": seed},
    }
    labelled = lakenet.fit({**base, "features": {"label": {"column": "fault", "task": "anomaly"}, "include": "auto"},
                            "registry": {"name": "labelled"}}, progress=False)  # fmt: skip
    blind = lakenet.fit({**base, "features": {"label": {"task": "anomaly"}, "include": "auto", "exclude": ["fault"]},
                         "registry": {"name": "blind"}}, progress=False)  # fmt: skip
    rows = pd.read_csv(wd / "t.csv")
    arrow = pa.Table.from_pandas(rows.astype({"row_id": str}), preserve_index=False)
    splits = table_splits(arrow, "row_id", SplitConfig(train=0.5, val=0.1, test=0.4, seed=seed))
    test = (splits == TEST) & rows.fault.notna().to_numpy()
    out: dict[str, float] = {}
    for name, fit in (("lakenet_labelled", labelled), ("lakenet_unlabelled", blind)):
        lakenet.predict(fit.model_uri, table, str(wd / f"scored_{name}"))
        scored = DeltaTable(str(wd / f"scored_{name}")).to_pandas().set_index("row_id").loc[rows.row_id]
        out[name] = float(roc_auc_score(rows.fault[test], scored.raw_score.to_numpy()[test]))
    pre = Bundle.load(labelled.bundle_dir).preprocessor
    enc = pre.encode(arrow, with_label=True)
    x = np.hstack([enc.inputs[k].astype(np.float64) for k in ("numeric", "category") if k in enc.inputs])
    known = np.asarray(enc.target) >= 0
    valid_splits, valid_test = splits[enc.valid], test[enc.valid]
    train = valid_splits == TRAIN
    normals = train & ~(np.asarray(enc.target) == 1)
    for name, fit_rows in (("iforest_all", train), ("iforest_normals", normals)):
        forest = IsolationForest(random_state=seed).fit(x[fit_rows])
        score = -forest.score_samples(x[valid_test & known])
        out[name] = float(roc_auc_score(np.asarray(enc.target)[valid_test & known] == 1, score))
    out["test_anomalies"] = float(rows.fault[test].sum())
    return out


def run_anomaly(root: Path, *, quick: bool) -> dict[str, Any]:
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    figures: dict[str, Any] = {}
    pairs: list[dict[str, Any]] = []
    tables = {"breast_cancer": lambda s: _breast_cancer(s), "sensors": lambda s: _sensors(s, 3000 if quick else 20_000)}
    for table, make in tables.items():
        runs = []
        for seed in seeds if table == "breast_cancer" else seeds[:3]:
            r = _anomaly_seed(make(seed), root / f"anomaly_{table}_{seed}", epochs=5 if quick else 40, seed=seed)
            r["ratio_labelled"] = r["lakenet_labelled"] / r["iforest_normals"]
            r["ratio_unlabelled"] = r["lakenet_unlabelled"] / r["iforest_all"]
            runs.append({"table": table, "seed": seed, **r})
        pairs.extend(runs)
        figures[table] = {k: summary([r[k] for r in runs]) for k in runs[0] if k not in ("table", "seed")}
    return {"figures": figures, "pairs": pairs}


# ---- recommendation ----------------------------------------------------------------------------------------------
def _recommender(wd: Path, log: pd.DataFrame, *, epochs: int) -> Any:
    import yaml

    import lakenet

    _in(wd)
    log.to_csv(wd / "log.csv", index=False)
    table = lakenet.ingest(wd / "log.csv", wd / "log", key="event_id").table
    raw = yaml.safe_load(lakenet.init_config(table, task="recommendation", name="shop"))
    raw["trainer"].update(epochs=epochs)
    return lakenet.fit(raw, progress=False), table


def _latency(model: str, users: list[str], requests: int) -> dict[str, Any]:
    import httpx
    import pyarrow as pa

    import lakenet
    from lakenet.inference.predictor import Predictor
    from lakenet.workflows.common import resolve

    handle = lakenet.serve(model, port=0, background=True, log_level="warning")
    assert handle is not None
    served: list[float] = []
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(50 + requests):
                t0 = time.perf_counter()
                r = client.post(f"{handle.url}/v1/recommend", json={"user": users[i % len(users)]})
                dt = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 50:
                    served.append(dt)
    finally:
        handle.stop()
    rec = Predictor(resolve(model, Path.cwd()).bundle_dir).recommender()
    bare: list[float] = []
    for i in range(50 + requests):
        t0 = time.perf_counter()
        rec(pa.table({rec.user_codec.column: [users[i % len(users)]]}))
        if i >= 50:
            bare.append(time.perf_counter() - t0)
    ms = 1e3
    return {
        "items": int((~rec.never).sum()),
        "served_p50_ms": float(np.percentile(served, 50) * ms),
        "served_p99_ms": float(np.percentile(served, 99) * ms),
        "bare_p50_ms": float(np.percentile(bare, 50) * ms),
        "bare_p99_ms": float(np.percentile(bare, 99) * ms),
        "requests": requests,
    }


def run_recommendation(root: Path, *, quick: bool) -> dict[str, Any]:
    from lakenet.examples.interactions import interactions_frame

    seeds = [0] if quick else [0, 1, 2]
    runs = []
    for seed in seeds:
        users, items = (300, 150) if quick else (1000, 500)
        t0 = time.perf_counter()
        fit, _ = _recommender(
            root / f"rec_{seed}", interactions_frame(users, items, seed=seed), epochs=3 if quick else 15
        )
        m = fit.metrics
        runs.append({"seed": seed, "recall_at_10": m["test_recall_at_10"], "ndcg_at_10": m["test_ndcg_at_10"],
                     "popularity_recall_at_10": m["baseline_recall_at_10"],
                     "popularity_ndcg_at_10": m["baseline_ndcg_at_10"],
                     "ratio_recall": m["test_recall_at_10"] / max(m["baseline_recall_at_10"], 1e-9),
                     "ratio_ndcg": m["test_ndcg_at_10"] / max(m["baseline_ndcg_at_10"], 1e-9),
                     "users": m["test_users"], "fit_s": time.perf_counter() - t0})  # fmt: skip
    figures = {k: summary([r[k] for r in runs]) for k in runs[0] if k != "seed"}
    users, items = (600, 2000) if quick else (4000, 10_000)
    log = interactions_frame(users, items, seed=7, per_user=(10, 30))
    fit, _ = _recommender(root / "rec_latency", log, epochs=1)
    latency = _latency(fit.model_uri, sorted(log.user_id.unique()), 100 if quick else 500)
    return {"figures": figures, "latency": latency, "pairs": runs}


# ---- voice -------------------------------------------------------------------------------------------------------
def run_voice(root: Path, *, quick: bool) -> dict[str, Any]:
    import lakenet
    from lakenet.examples.spoken_digits import VOICE_PATTERN, espeak, write_spoken_digits

    if espeak() is None:
        return {"skipped": "espeak-ng is not installed (apt-get install espeak-ng)"}
    _in(root / "voice")
    voices, speeds, pitches = (6, (150,), (50,)) if quick else (30, (130, 175), (35, 65))
    folder = write_spoken_digits(root / "voice" / "wav", voice_count=voices, speeds=speeds, pitches=pitches)
    table = lakenet.ingest(folder, root / "voice" / "spoken").table
    t0 = time.perf_counter()
    fit = lakenet.fit({
        "data": {"table": table, "split": {"train": 0.6, "val": 0.15, "test": 0.25, "group": "path",
                                           "group_pattern": VOICE_PATTERN}},
        "features": {"label": "label", "audio": {"type": "audio", "n_mels": 40}},
        "model": {"width": 32, "depth": 2},
        "trainer": {"epochs": 2 if quick else 20, "batch_size": 32, "learning_rate": 0.003},
        "registry": {"name": "spoken"},
    }, progress=False)  # fmt: skip
    return {
        "clips": voices * len(speeds) * len(pitches) * 10,
        "voices": voices,
        "test_accuracy": fit.metrics["test_accuracy"],
        "fit_s": time.perf_counter() - t0,
    }


def main() -> None:
    args = base_parser(NAME, __doc__.splitlines()[0]).parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    here = Path.cwd()
    root = Path(tempfile.mkdtemp(prefix="lakenet-use-cases-"))
    try:
        anomaly = run_anomaly(root, quick=args.quick)
        rec = run_recommendation(root, quick=args.quick)
        voice = run_voice(root, quick=args.quick)
    finally:
        os.chdir(here)
    a, r, lat = anomaly["figures"], rec["figures"], rec["latency"]
    target = {
        "anomaly_vs_isolation_forest": ">= 1.0 (median test ROC-AUC ratio, both tables, with and without labels)",
        "recommendation_vs_popularity": ">= 2.0 (recall@10 and NDCG@10)",
        "recommend_p99_ms": "<= 10 at c=1, 10,000 items",
        "voice_test_accuracy": ">= 0.9 on held-out voices",
    }
    met = {
        "anomaly": all(a[t][k]["median"] >= 1.0 for t in a for k in ("ratio_labelled", "ratio_unlabelled")),
        "recommendation": r["ratio_recall"]["median"] >= 2.0 and r["ratio_ndcg"]["median"] >= 2.0,
        "latency": lat["served_p99_ms"] <= 10.0,
        "voice": voice.get("test_accuracy", 0.0) >= 0.9 if "skipped" not in voice else None,
    }
    rows = []
    for t, fig in a.items():
        for k in ("lakenet_labelled", "iforest_normals", "ratio_labelled", "lakenet_unlabelled", "iforest_all",
                  "ratio_unlabelled"):  # fmt: skip
            rows.append([f"anomaly {t}", k, fmt_range(fig[k])])
    for k in ("recall_at_10", "popularity_recall_at_10", "ratio_recall", "ndcg_at_10", "popularity_ndcg_at_10",
              "ratio_ndcg"):  # fmt: skip
        rows.append(["recommendation", k, fmt_range(r[k])])
    for k in ("served_p50_ms", "served_p99_ms", "bare_p50_ms", "bare_p99_ms"):
        rows.append([f"/v1/recommend ({lat['items']:,} items)", k, f"{lat[k]:.2f}"])
    rows.append(["voice", "test accuracy (held-out voices)", voice.get("test_accuracy", voice.get("skipped"))])
    print_table("use_cases: median (min–max) over seeds; ratio = lakenet ÷ baseline", ["use", "figure", "value"], rows)
    payload = {
        "settings": {"quick": args.quick},
        "target": {**target, "met": met},
        "figures": {"anomaly": a, "recommendation": r, "recommend_latency": lat, "voice": voice},
        "fixed_costs": {},
        "pairs": anomaly["pairs"] + rec["pairs"],
    }
    print(f"\nwrote {write_result(NAME, args, payload)}")


if __name__ == "__main__":
    main()
