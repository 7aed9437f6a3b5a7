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


def session(master: str | None = None, **conf: Any) -> Any:
    """A SparkSession with lakenet's local defaults (loopback driver, quiet, Arrow on)."""
    from lakenet.engines.spark import get_or_create_session

    return get_or_create_session(SparkEngineConfig(master=master, conf=conf))


def register_udf(
    spark: Any,
    name: str,
    model: str,
    *,
    runtime: str = "torch",
    trust_modules: Sequence[str] = (),
    workdir: str | Path | None = None,
) -> Any:
    """Register `model` as the SQL function `name(<input columns in signature order>)` → prediction.

    The bundle is shipped to executors with SparkContext.addFile and loaded once per Python worker;
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
    classification = bundle.preprocessor.label.task == "classification"
    shipped = _ship(spark, Path(resolved.bundle_dir))
    version = resolved.version

    def score(*cols: pd.Series) -> pd.Series:
        import pyarrow as pa

        pred = worker_predictor(shipped, resolved.name, version, runtime, trust)
        table = pa.table({c: pa.array(s.tolist()) for c, s in zip(columns, cols, strict=True)})
        return pa.Table.from_batches([pred(table)]).column("prediction").to_pandas()

    udf = pandas_udf(score, StringType() if classification else DoubleType())  # type: ignore[call-overload]
    spark.udf.register(name, udf)
    return udf


def _is_local(spark: Any) -> bool:
    """Executors in the driver's JVM (local[N]); local-cluster[...] has its own executor JVMs, like a cluster."""
    master = str(spark.sparkContext.master)
    return master.startswith("local") and not master.startswith("local-cluster")


def _ship(spark: Any, bundle: Path) -> str:
    """What the workers load the bundle from: its path when they run in the driver's JVM; on a cluster, a zip of
    the bundle directory (Spark cannot ship a local directory) added with addArchive, which every executor
    unpacks into its working directory under the archive's name, or the single file with addFile."""
    if _is_local(spark):
        return str(bundle)
    sc = spark.sparkContext
    if bundle.is_file():
        sc.addFile(str(bundle))
        return bundle.name
    import shutil
    import tempfile

    from lakenet.models.bundle import Bundle

    name = f"lakenet-bundle-{Bundle.digest(bundle)[:20]}"
    archive = Path(tempfile.mkdtemp(prefix="lakenet-ship-")) / name
    zipped = shutil.make_archive(str(archive), "zip", root_dir=bundle)
    sc.addArchive(zipped)
    return Path(zipped).name
