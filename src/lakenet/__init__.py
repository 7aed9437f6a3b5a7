"""lakenet: deep learning on the tables you already have.

import lakenet
result = lakenet.fit("pets.yaml")
lakenet.predict(result.model_uri, "data/pets_new", "data/pets_scored")
"""

from lakenet._version import __version__
from lakenet.api import (
    ExportResult,
    FeaturizeResult,
    FitResult,
    PredictResult,
    ProfileResult,
    TuneResult,
    drift,
    evaluate,
    export,
    featurize,
    fit,
    ingest,
    init_config,
    models,
    predict,
    profile,
    promote,
    serve,
    tune,
    update,
)
from lakenet.config import Config, load_config
from lakenet.errors import LakenetError
from lakenet.inference.predictor import Predictor
from lakenet.monitoring.workflow import DriftResult
from lakenet.workflows.update import UpdateResult

__all__ = [
    "Config",
    "DriftResult",
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
]
