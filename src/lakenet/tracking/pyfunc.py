"""The MLflow pyfunc flavour of a lakenet bundle: no pickle, the bundle is an artifact directory."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

__all__ = ["LakenetPyfunc"]


class LakenetPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Loads the bundle with the Predictor; predict() takes and returns a pandas DataFrame."""

    def load_context(self, context: Any) -> None:
        from lakenet.inference.predictor import Predictor

        self.predictor = Predictor(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # No type hints on purpose: MLflow would try to derive a schema from them.
        import pandas as pd
        import pyarrow as pa

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        table = pa.Table.from_pandas(model_input, preserve_index=False)
        return pa.Table.from_batches([self.predictor(table)]).to_pandas()
