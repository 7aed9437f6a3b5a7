"""Built-in architectures, the architecture registry and the model bundle."""

from lakenet.models.bundle import Bundle
from lakenet.models.registry import ARCHITECTURES, build_model, model_spec
from lakenet.models.spec import ModelSpec

__all__ = ["ARCHITECTURES", "Bundle", "ModelSpec", "build_model", "model_spec"]
