"""The MLflow pyfunc flavour of a lakenet bundle: no pickle, the bundle is an artifact directory."""

from __future__ import annotations

import warnings
from typing import Any

import mlflow.pyfunc

__all__ = ["LakenetPyfunc"]

# MLflow asks for type hints on predict() at every log and load; the bundle's signature is explicit instead.
warnings.filterwarnings("ignore", message=r".*type hint.*", category=UserWarning)

with warnings.catch_warnings():
    # MLflow asks for type hints on predict() to derive a schema; ours is explicit (the bundle's signature).
    warnings.simplefilter("ignore", UserWarning)

    class _Base(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError


class LakenetPyfunc(_Base):
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
