"""lakenet: deep learning on the tables you already have.

import lakenet
result = lakenet.fit("pets.yaml")
lakenet.predict(result.model_uri, "data/pets_new", "data/pets_scored")

`import lakenet` loads nothing heavy (no torch, pyspark, mlflow, pandas): each public name is imported from its
module the first time it is used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from lakenet._version import __version__

if TYPE_CHECKING:  # what type checkers and editors see; at run time `__getattr__` below imports them
    from lakenet.api import (
        ExplainResult,
        ExportResult,
        FeaturizeResult,
        FitResult,
        PredictResult,
        ProfileResult,
        TuneResult,
        drift,
        evaluate,
        explain,
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
]

# Public name -> the module that defines it.
_API = (
    "ExplainResult ExportResult FeaturizeResult FitResult PredictResult ProfileResult TuneResult drift evaluate "
    "explain export featurize fit ingest init_config models predict profile promote serve tune update"
)
_HOME = {
    **dict.fromkeys(_API.split(), "lakenet.api"),
    "Config": "lakenet.config",
    "load_config": "lakenet.config",
    "LakenetError": "lakenet.errors",
    "Predictor": "lakenet.inference.predictor",
    "DriftResult": "lakenet.monitoring.workflow",
    "UpdateResult": "lakenet.workflows.update",
}
assert set(_HOME) | {"__version__"} == set(__all__)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'lakenet' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    if name != "models":
        globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """`lakenet.models` is the façade's function, also once the subpackage `lakenet.models` is imported (which
    would otherwise bind the subpackage to that attribute): the subpackage stays in sys.modules."""

    @property
    def models(self) -> Any:
        return __getattr__("models")

    @models.setter
    def models(self, value: Any) -> None:
        pass  # the import system binding the subpackage lakenet.models


sys.modules[__name__].__class__ = _Package
