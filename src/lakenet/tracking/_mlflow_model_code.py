"""MLflow "model from code" entry: MLflow runs this file to load a lakenet model, so nothing is pickled."""

import mlflow.models

from lakenet.tracking.pyfunc import LakenetPyfunc

mlflow.models.set_model(LakenetPyfunc())
