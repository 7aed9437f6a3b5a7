"""score_vs_peers: lakenet's Spark scoring ÷ MLflow's `mlflow.pyfunc.spark_udf`, ÷ PySpark's
`predict_batch_udf` and ÷ Ray Data's `map_batches`, same model, same Delta version, same N slots, interleaved.
Targets: ≥ 1.2 vs spark_udf (the earlier 2.0 assumed a model reload per task that MLflow 3 no longer does),
≥ 1.0 vs predict_batch_udf, ≥ 1.0 vs Ray Data.

What each side does inside its timed span (the same end-to-end work, from the table to rows on disk):
- lakenet: `lakenet.predict(model_uri, table, out, engine="spark")`, exactly what `lakenet predict --engine
  spark` runs: resolve the model in the registry, pin the Delta version and list its files, read them, decode
  and score every row, write Parquet from the tasks and commit them to a new Delta table (one commit, with
  the exactly-once transaction id). It writes every output column: key, prediction, confidence,
  probabilities (a map), error, model name and version.
- Spark peers: list the same Delta version's files (delta-rs), `spark.read.parquet(...)`, add the UDF's
  prediction column and write key + prediction as Parquet: a full action that materialises every prediction.
  They write fewer columns and no Delta log; that favours them.
- Ray Data (when `ray[data]` is installed: `make bench` installs it): `ray.data.read_parquet` of the same files,
  `map_batches` with a callable class that builds the same Predictor once per actor (N actors of 1 CPU, the
  same slots as Spark's N tasks), `write_parquet` of key + prediction. Ray starts once (`ray.init`, not
  timed); its actors start inside each timed job, as they do for a Ray Data job.
All three call the same lakenet Predictor per batch (the pyfunc model MLflow loads is lakenet's, and the
`predict_batch_udf` function builds one), so decoding and the forward pass (same chunk size, channels_last,
one torch thread per Spark task, N tasks on N cores) cost the same per row on every side: what differs is how
each gets rows to and from it. Models load once per Python worker on every side (worker reuse on; MLflow 3's
`spark_udf` with `env_manager="local"` caches its model per worker), and a warm-up job per side, not timed,
starts the workers. The default table has 1000 rows, so per-row work dominates each job; --quick uses 48
tiny images, a smoke test of the plumbing only.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # Python workers inherit it: torch threads × tasks ≤ cores

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import base_parser, cache_root, fmt_range, print_table, summary, write_result
from bench._scoring import ScoringSetup, make_setup

NAME = "score_vs_peers"


def _register(setup: ScoringSetup, workdir: Path) -> str:
    from lakenet.models.bundle import Bundle
    from lakenet.tracking.store import setup_tracking, start_run

    setup_tracking(None, workdir=workdir)
    bundle = Bundle.load(setup.bundle_dir)
    with start_run("bench", "score-vs-peers") as run:
        run.register_bundle(setup.bundle_dir, name="bench_cnn", alias="champion", signature=bundle.signature(), tags={})
    return "models:/bench_cnn@champion"


def _predict_fn_factory(bundle_dir: str) -> Any:
    def make_predict_fn() -> Any:
        import numpy as np
        import pyarrow as pa
        import torch

        from lakenet.inference.predictor import Predictor

        torch.set_num_threads(1)
        pred = Predictor(bundle_dir)

        def predict(images: Any) -> Any:
            out = pred(pa.table({"image": pa.array(list(images), pa.binary())}))
            return np.asarray(out.column("prediction").to_pylist(), dtype=object)

        return predict

    return make_predict_fn


def _start_ray(slots: int) -> str | None:
    """Ray on this machine with `slots` CPUs (no dashboard, loopback only); a note instead when not installed."""
    try:
        import ray
    except ImportError:
        return "ray is not installed (make bench installs ray[data]): no Ray Data side"
    if not ray.is_initialized():
        root = str(Path(__file__).resolve().parents[1])  # Ray's workers import bench._RayScorer by name
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=slots, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=1 << 30, log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
    return None


class _RayScorer:
    """Ray Data's callable class: the Predictor built once per actor, applied to each Arrow batch."""

    def __init__(self, bundle_dir: str) -> None:
        import torch

        from lakenet.inference.predictor import Predictor

        torch.set_num_threads(1)
        self.pred = Predictor(bundle_dir)

    def __call__(self, batch: Any) -> Any:
        out = self.pred(batch)
        return out.select(["key", "prediction"])


def _run_ray(files: list[str], bundle_dir: str, slots: int, scratch: Path, rows: int) -> float:
    import pyarrow.parquet as pq
    import ray

    out = scratch / f"ray-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    ds = ray.data.read_parquet(files, columns=["key", "image"])
    ds = ds.map_batches(_RayScorer, fn_constructor_args=(bundle_dir,), batch_format="pyarrow", batch_size=64,
                        concurrency=slots, num_cpus=1)  # fmt: skip
    ds.write_parquet(str(out))
    dt = time.perf_counter() - t
    written = pq.read_table(str(out))  # not timed
    assert written.num_rows == rows and written.column("prediction").null_count == 0
    shutil.rmtree(out, ignore_errors=True)
    return rows / dt


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    p.add_argument("--pairs", type=int, default=None, help="measurement rounds (default 5, quick 3)")
    p.add_argument("--rows", type=int, default=None, help="rows in the table to score (default 1000, quick 48)")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="leave out the lakenet --runtime onnx side")
    args = p.parse_args(argv)
    quick = args.quick
    rows, size, width, blocks = (48, 64, 16, 1) if quick else (1000, 224, 64, 2)
    rows = args.rows or rows
    rounds = args.pairs or (3 if quick else 5)
    root = cache_root(args.cache_dir) / "scoring"
    setup = make_setup(root, rows=rows, size=size, width=width, blocks=blocks, decode=False)
    scratch = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    model_uri = _register(setup, scratch)

    import mlflow.pyfunc
    from deltalake import DeltaTable
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import StringType

    import lakenet
    import lakenet.spark
    from lakenet.engines.spark import last_score_phases

    fixed: dict[str, float] = {}
    t0 = time.perf_counter()
    spark = lakenet.spark.session(f"local[{args.threads}]")
    fixed["spark_session_start_s"] = time.perf_counter() - t0

    def frame() -> Any:
        return spark.read.parquet(*DeltaTable(str(setup.table)).file_uris()).select("key", "image")

    phases: list[dict[str, float]] = []

    def run_lakenet(runtime: str = "torch") -> float:
        out = scratch / f"lakenet-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        res = lakenet.predict(
            model_uri, str(setup.table), str(out), engine="spark", spark=spark, workdir=scratch, runtime=runtime
        )
        dt = time.perf_counter() - t
        assert res.committed and res.rows == rows and res.bad_rows == 0, res
        if runtime == "torch":
            inner = last_score_phases()
            # api: registry lookup, bundle and table metadata, transaction check, before the engine's own phases
            phases.append({"total": dt, "api": dt - sum(inner.values()), **inner})
        shutil.rmtree(out, ignore_errors=True)
        return rows / dt

    mlflow_udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="string", env_manager="local")
    batch_udf = predict_batch_udf(_predict_fn_factory(str(setup.bundle_dir)), return_type=StringType(), batch_size=64)

    def run_peer(udf: Any) -> float:
        out = scratch / f"peer-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        frame().withColumn("prediction", udf("image")).select("key", "prediction").write.parquet(str(out))
        dt = time.perf_counter() - t
        written = spark.read.parquet(str(out))
        assert written.count() == rows and written.filter("prediction IS NULL").count() == 0  # not timed
        shutil.rmtree(out, ignore_errors=True)
        return rows / dt

    sides = {
        "lakenet": run_lakenet,
        "mlflow_spark_udf": lambda: run_peer(mlflow_udf),
        "predict_batch_udf": lambda: run_peer(batch_udf),
    }
    ray_note = _start_ray(args.threads)
    if ray_note is None:
        files = DeltaTable(str(setup.table)).file_uris()
        sides["ray_data"] = lambda: _run_ray(files, str(setup.bundle_dir), args.threads, scratch, rows)
    if args.onnx:  # lakenet with --runtime onnx: the same bundle exported to ONNX Runtime (peers stay on torch)
        sides["lakenet_onnx"] = lambda: run_lakenet("onnx")
    for name, fn in sides.items():  # warm-up: Python workers started, models loaded where they get cached
        t = time.perf_counter()
        fn()
        fixed[f"{name}_first_job_s"] = time.perf_counter() - t
    phases.clear()
    peer_partitions = frame().rdd.getNumPartitions()
    series: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(rounds):
        order = list(sides)
        order = order[r % len(order) :] + order[: r % len(order)]
        for name in order:
            series[name].append(sides[name]())
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} rows/s" for k, v in series.items()))
    ratios = {
        f"{ours}_vs_{peer}": summary([a / b for a, b in zip(series[ours], series[peer], strict=True)])
        for ours in ("lakenet", "lakenet_onnx")
        if ours in series
        for peer in ("mlflow_spark_udf", "predict_batch_udf", "ray_data")
        if peer in series
    }
    print_table(
        "lakenet on Spark ÷ peers (median, min–max; targets ≥ 1.2 vs spark_udf, ≥ 1.0 vs predict_batch_udf and Ray)",
        ["ratio", "value"],
        [[k, fmt_range(v)] for k, v in ratios.items()],
    )
    print_table("throughput", ["side", "rows/s"], [[k, fmt_range(summary(v), 1)] for k, v in series.items()])
    print_table("fixed costs", ["what", "seconds"], [[k, f"{v:.2f}"] for k, v in fixed.items()])
    driver = {k: summary([ph[k] for ph in phases]) for k in phases[0]}
    print_table(
        "lakenet job phases, seconds (median, min–max): api = registry + table metadata; spark_job = the tasks",
        ["phase", "seconds"],
        [[k, fmt_range(v)] for k, v in driver.items()],
    )
    figures = {**ratios, **{f"rows_per_s_{k}": summary(v) for k, v in series.items()}}
    floors = {"mlflow_spark_udf": 1.2, "predict_batch_udf": 1.0, "ray_data": 1.0}
    targets = [
        {"figure": f"lakenet_vs_{peer}", "op": ">=", "value": v, "met": ratios[f"lakenet_vs_{peer}"]["median"] >= v}
        for peer, v in floors.items() if f"lakenet_vs_{peer}" in ratios
    ]  # fmt: skip
    payload = {
        "settings": {
            "rows": rows,
            "image_size": size,
            "width": width,
            "blocks": blocks,
            "rounds": rounds,
            "spark_master": f"local[{args.threads}]",
            "torch_threads_per_task": 1,
            "forward_chunk_rows": setup.chunk,
            "peer_partitions": peer_partitions,
        },
        "target": targets[0],
        "targets": targets,
        "figures": figures,
        "fixed_costs": fixed,
        "lakenet_phases_s": driver,
        "pairs": [{k: v[i] for k, v in series.items()} for i in range(rounds)],
        "method": "same registered model and Delta version for all, rounds interleaved with the order rotated; "
        "lakenet.predict(engine='spark') reads the version's files, scores every row and writes one Delta commit "
        "(all output columns); peers read the same files with spark.read.parquet, add the UDF column and write "
        "key + prediction as Parquet (a full action); all sides run the same Predictor (torch), except "
        "lakenet_onnx: lakenet.predict(runtime='onnx'), the same bundle exported to ONNX Runtime; ray_data: "
        "ray.data.read_parquet of the same files, map_batches with a callable class holding the same Predictor "
        "(N actors x 1 CPU, batch 64), write_parquet of key + prediction.",
        "notes": [ray_note] if ray_note else [],
    }
    path = write_result(NAME, args, payload)
    print(f"\nwrote {path}")
    shutil.rmtree(scratch, ignore_errors=True)
    return payload


if __name__ == "__main__":
    main()
