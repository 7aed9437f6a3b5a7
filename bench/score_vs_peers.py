"""score_vs_peers: lakenet's Spark scoring ÷ MLflow's `mlflow.pyfunc.spark_udf` and ÷ PySpark's
`predict_batch_udf`, same registered model, same Delta version, same Spark local[N] session, interleaved.
Targets: ≥ 2.0 vs spark_udf, ≥ 1.0 vs predict_batch_udf.

Every side ends with its rows written (lakenet: one Delta commit; peers: a Parquet directory), so each pays
for reading, decoding, the forward pass and writing. Threads are pinned for all: one torch thread per Spark
task, N tasks on N cores.
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    p.add_argument("--pairs", type=int, default=None, help="measurement rounds (default 5, quick 3)")
    args = p.parse_args(argv)
    quick = args.quick
    rows, size, width, blocks = (48, 64, 16, 1) if quick else (160, 224, 64, 2)
    rounds = args.pairs or (3 if quick else 5)
    setup = make_setup(cache_root(args.cache_dir) / "scoring", rows=rows, size=size, width=width, blocks=blocks)
    scratch = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    model_uri = _register(setup, scratch)

    import mlflow.pyfunc
    from deltalake import DeltaTable
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import StringType

    import lakenet
    import lakenet.spark

    fixed: dict[str, float] = {}
    t0 = time.perf_counter()
    spark = lakenet.spark.session(f"local[{args.threads}]")
    fixed["spark_session_start_s"] = time.perf_counter() - t0
    files = DeltaTable(str(setup.table)).file_uris()

    def frame() -> Any:
        return spark.read.parquet(*files).select("key", "image")

    def run_lakenet() -> float:
        out = scratch / f"lakenet-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        res = lakenet.predict(model_uri, str(setup.table), str(out), engine="spark", spark=spark, workdir=scratch)
        dt = time.perf_counter() - t
        assert res.committed and res.rows == rows
        shutil.rmtree(out, ignore_errors=True)
        return rows / dt

    mlflow_udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="string", env_manager="local")
    batch_udf = predict_batch_udf(_predict_fn_factory(str(setup.bundle_dir)), return_type=StringType(), batch_size=64)

    def run_peer(udf: Any) -> float:
        out = scratch / f"peer-{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        frame().withColumn("prediction", udf("image")).select("key", "prediction").write.parquet(str(out))
        dt = time.perf_counter() - t
        shutil.rmtree(out, ignore_errors=True)
        return rows / dt

    sides = {
        "lakenet": run_lakenet,
        "mlflow_spark_udf": lambda: run_peer(mlflow_udf),
        "predict_batch_udf": lambda: run_peer(batch_udf),
    }
    for name, fn in sides.items():  # warm-up: Python workers started, models loaded where they get cached
        t = time.perf_counter()
        fn()
        fixed[f"{name}_first_job_s"] = time.perf_counter() - t
    series: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(rounds):
        order = list(sides)
        order = order[r % len(order) :] + order[: r % len(order)]
        for name in order:
            series[name].append(sides[name]())
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} rows/s" for k, v in series.items()))
    ratios = {
        f"lakenet_vs_{peer}": summary([a / b for a, b in zip(series["lakenet"], series[peer], strict=True)])
        for peer in ("mlflow_spark_udf", "predict_batch_udf")
    }
    print_table(
        "lakenet on Spark ÷ peers (median, min–max; targets ≥ 2.0 vs spark_udf, ≥ 1.0 vs predict_batch_udf)",
        ["ratio", "value"],
        [[k, fmt_range(v)] for k, v in ratios.items()],
    )
    print_table("throughput", ["side", "rows/s"], [[k, fmt_range(summary(v), 1)] for k, v in series.items()])
    print_table("fixed costs", ["what", "seconds"], [[k, f"{v:.2f}"] for k, v in fixed.items()])
    figures = {**ratios, **{f"rows_per_s_{k}": summary(v) for k, v in series.items()}}
    targets = [
        {"figure": "lakenet_vs_mlflow_spark_udf", "op": ">=", "value": 2.0,
         "met": ratios["lakenet_vs_mlflow_spark_udf"]["median"] >= 2.0},
        {"figure": "lakenet_vs_predict_batch_udf", "op": ">=", "value": 1.0,
         "met": ratios["lakenet_vs_predict_batch_udf"]["median"] >= 1.0},
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
        },
        "target": targets[0],
        "targets": targets,
        "figures": figures,
        "fixed_costs": fixed,
        "pairs": [{k: v[i] for k, v in series.items()} for i in range(rounds)],
        "method": "same registered model and Delta version for all; lakenet.predict(engine='spark') writes one "
        "Delta commit, peers write Parquet; ray is not installed here, so there is no Ray Data side.",
    }
    path = write_result(NAME, args, payload)
    print(f"\nwrote {path}")
    shutil.rmtree(scratch, ignore_errors=True)
    return payload


if __name__ == "__main__":
    main()
