"""lakenet on Apache Spark for Python users: sessions and models as Spark SQL functions.

import lakenet.spark
lakenet.spark.register_udf(spark, "digit", "models:/digits@champion")
spark.sql("SELECT key, digit(image) FROM pets")
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lakenet.config.schema import SparkEngineConfig

__all__ = ["register_udf", "session"]


def session(master: str | None = None, *, remote: str | None = None, **conf: Any) -> Any:
    """A SparkSession with lakenet's local defaults (loopback driver, quiet, Arrow on); with `remote`
    (sc://host:15002, or local[N] to start a server here) a Spark Connect session."""
    from lakenet.engines.spark import get_or_create_session

    return get_or_create_session(SparkEngineConfig(master=master, remote=remote, conf=conf))


def register_udf(
    spark: Any,
    name: str,
    model: str,
    *,
    runtime: str = "torch",
    trust_modules: Sequence[str] = (),
    workdir: str | Path | None = None,
) -> Any:
    """Register `model` as the SQL function `name(<input columns in signature order>)` → prediction (an anomaly
    model: the calibrated score).

    Works on classic and Spark Connect sessions. The bundle is shipped to executors as an artifact (unless they
    run in the driver's JVM) and loaded once per Python worker;
    `runtime="onnx"` runs it in ONNX Runtime. `trust_modules`: custom architectures the model may import.
    """
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import DoubleType, StringType

    from lakenet.engines.spark import worker_predictor
    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import check_buildable
    from lakenet.tracking.store import resolve_model, setup_tracking

    wd = Path(workdir).resolve() if workdir else Path.cwd()
    if model.startswith(("models:/", "runs:/")):
        setup_tracking(None, workdir=wd)
    resolved = resolve_model(model, cache_dir=wd / ".lakenet" / "models")
    bundle = Bundle.load(resolved.bundle_dir)
    trust = tuple(trust_modules)
    check_buildable(bundle.spec, trusted=trust, where=f"Model {model}")
    columns = bundle.preprocessor.input_columns()
    task = bundle.preprocessor.label.task
    # what the function returns: the class, the value, or an anomaly model's calibrated score
    column, kind = {"classification": ("prediction", StringType()), "anomaly": ("score", DoubleType())}.get(
        task, ("prediction", DoubleType())
    )
    shipped = _ship(spark, Path(resolved.bundle_dir))
    version = resolved.version

    def score(*cols: pd.Series) -> pd.Series:
        import pyarrow as pa

        pred = worker_predictor(shipped, resolved.name, version, runtime, trust)
        table = pa.table({c: pa.array(s.tolist()) for c, s in zip(columns, cols, strict=True)})
        return pa.Table.from_batches([pred(table)]).column(column).to_pandas()

    udf = pandas_udf(score, kind)  # type: ignore[call-overload]
    spark.udf.register(name, udf)
    return udf


def _ship(spark: Any, bundle: Path) -> str:
    """What the workers load the bundle from: its path when they run in the driver's JVM (local[N]); on a
    cluster or over Spark Connect, a zip of the bundle directory added as an archive artifact (Spark cannot ship
    a directory), which every executor unpacks under the archive's name where SparkFiles.get finds it, or the
    single file as a file artifact."""
    from lakenet.engines.spark_tasks import Cluster

    if not Cluster(spark).own_executor_jvms:
        return str(bundle)
    if bundle.is_file():
        spark.addArtifacts(str(bundle), file=True)
        return bundle.name
    import shutil
    import tempfile

    from lakenet.models.bundle import Bundle

    name = f"lakenet-bundle-{Bundle.digest(bundle)[:20]}"
    archive = Path(tempfile.mkdtemp(prefix="lakenet-ship-")) / name
    zipped = shutil.make_archive(str(archive), "zip", root_dir=bundle)
    try:
        spark.addArtifacts(zipped, archive=True)
    except Exception as err:  # the same bundle (same digest, same name) was shipped before in this session
        if "already" not in str(err).lower() and "exists" not in str(err).lower():
            raise
    return Path(zipped).name
