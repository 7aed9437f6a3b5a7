"""The public surface is small and explicit: a test fails if something becomes public by accident."""

from __future__ import annotations

import lakenet

EXPECTED = {
    "Config",
    "DriftResult",
    "ExplainResult",
    "ExportResult",
    "FeaturizeResult",
    "FitResult",
    "LakenetError",
    "PredictResult",
    "Predictor",
    "ProfileResult",
    "TuneResult",
    "UpdateResult",
    "__version__",
    "drift",
    "evaluate",
    "explain",
    "export",
    "featurize",
    "fit",
    "ingest",
    "init_config",
    "load_config",
    "models",
    "predict",
    "profile",
    "promote",
    "serve",
    "tune",
    "update",
}


def test_all_is_the_documented_surface() -> None:
    assert set(lakenet.__all__) == EXPECTED
    for name in lakenet.__all__:
        assert hasattr(lakenet, name)


def test_no_pyspark_mlflow_or_fastapi_on_import() -> None:
    import subprocess
    import sys

    heavy = "('pyspark', 'mlflow', 'fastapi', 'uvicorn', 'optuna', 'transformers', 'onnxruntime', 'onnx')"
    code = f"import sys, lakenet; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
