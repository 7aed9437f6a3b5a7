"""The MLflow pyfunc flavour of a lakenet bundle: no pickle, the bundle is an artifact directory."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

__all__ = ["LakenetPyfunc"]


class LakenetPyfunc(PythonModel):
    """Loads the bundle with the Predictor; predict() takes and returns a pandas DataFrame."""

    def load_context(self, context: Any) -> None:
        from lakenet.inference.predictor import Predictor

        self.predictor = Predictor(context.artifacts["bundle"])

    # The DataFrame hint tells MLflow not to derive a schema from type hints: the model is logged with an
    # explicit signature (the bundle's input columns).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import pyarrow as pa

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        table = pa.Table.from_pandas(model_input, preserve_index=False)
        return pa.Table.from_batches([self.predictor(table)]).to_pandas()
