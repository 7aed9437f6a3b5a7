"""Config: the pydantic schema (single source of truth), YAML loading, migrations and the JSON Schema."""

from lakenet.config.loader import config_hash, dump_config, json_schema, load_config, parse_config
from lakenet.config.schema import (
    CategoryFeature,
    Config,
    Features,
    ImageFeature,
    LabelSpec,
    NumericFeature,
)

__all__ = [
    "CategoryFeature",
    "Config",
    "Features",
    "ImageFeature",
    "LabelSpec",
    "NumericFeature",
    "config_hash",
    "dump_config",
    "json_schema",
    "load_config",
    "parse_config",
]
