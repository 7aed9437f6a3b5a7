"""The MLflow pyfunc flavour of a lakenet bundle: no pickle, the bundle is an artifact directory."""

from __future__ import annotations

import warnings
from typing import Any

from mlflow.pyfunc import PythonModel

__all__ = ["LakenetPyfunc"]

with warnings.catch_warnings():
    # MLflow inspects predict() when the class is created and asks for type hints to derive a schema; the
    # model is logged with an explicit signature (the bundle's input columns) instead.
    warnings.simplefilter("ignore", UserWarning)

    class LakenetPyfunc(PythonModel):
        """Loads the bundle with the Predictor; predict() takes and returns a pandas DataFrame."""

        def load_context(self, context: Any) -> None:
            from lakenet.inference.predictor import Predictor

            self.predictor = Predictor(context.artifacts["bundle"])

        def predict(self, context, model_input, params=None):
            import pandas as pd
            import pyarrow as pa

            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            table = pa.Table.from_pandas(model_input, preserve_index=False)
            return pa.Table.from_batches([self.predictor(table)]).to_pandas()
