"""The config schema: the single source of every key, default, constraint and description a YAML file may use."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CURRENT_VERSION",
    "CategoryFeature",
    "Config",
    "DataConfig",
    "EarlyStoppingConfig",
    "EngineConfig",
    "FeatureSpec",
    "Features",
    "ImageFeature",
    "LabelSpec",
    "LocalEngineConfig",
    "ModelConfig",
    "NumericFeature",
    "RegistryConfig",
    "SparkEngineConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainerConfig",
]

CURRENT_VERSION = 1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SplitConfig(_Strict):
    """Fractions of rows per split; a row's split is a hash of its key, so appends never move existing rows."""

    train: float = Field(0.8, gt=0.0, lt=1.0, description="Fraction of rows used for training.")
    val: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction for validation (early stopping, tuning).")
    test: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction held out for the final evaluation only.")
    seed: int = Field(0, ge=0, description="Salt of the key hash: change it to draw a different split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must sum to 1 (train {self.train} + val {self.val} + test {self.test} "
                f"= {total:g}); adjust data.split"
            )
        return self


class DataConfig(_Strict):
    """Where the rows come from."""

    table: str = Field(
        ...,
        min_length=1,
        description="Table to learn from: a Delta table directory, a Parquet file or directory, or a CSV file. "
        "Relative paths are resolved against the config file's directory.",
    )
    version: int | None = Field(
        None, ge=0, description="Delta table version to read (time travel); default: the latest."
    )
    key: str = Field(
        "key",
        min_length=1,
        description="Column that identifies a row; it drives the split and is copied to predictions.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/validation/test split.")
    max_bad_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Stop before training when more than this fraction of rows is quarantined.",
    )
    cache_mb: int = Field(
        2048,
        ge=0,
        description="Keep decoded training batches in memory up to this size (MiB) after the first epoch.",
    )


class NumericFeature(_Strict):
    """A numeric column, standardised with the training split's mean and standard deviation."""

    type: Literal["numeric"] = Field("numeric", description="Feature type.")
    column: str | None = Field(None, description="Source column; default: the feature's name.")


class CategoryFeature(_Strict):
    """A categorical column, mapped through a vocabulary learned on the training split (index 0 = unknown)."""

    type: Literal["category"] = Field("category", description="Feature type.")
    column: str | None = Field(None, description="Source column; default: the feature's name.")
    max_categories: int = Field(
        1000, ge=1, description="Keep at most this many most frequent values; the rest map to 'unknown'."
    )
    min_count: int = Field(1, ge=1, description="Values seen fewer times than this in training map to 'unknown'.")
    embedding_dim: int | None = Field(
        None, ge=1, le=512, description="Embedding width; default: min(32, 1.6 * categories ** 0.56)."
    )


class ImageFeature(_Strict):
    """An encoded image (PNG, JPEG, ...) stored as bytes, decoded with Pillow, resized and normalised."""

    type: Literal["image"] = Field("image", description="Feature type.")
    column: str | None = Field(None, description="Source column holding the image bytes; default: the name.")
    size: int = Field(32, ge=4, le=1024, description="Images are resized to size × size pixels.")
    channels: Literal[1, 3] = Field(1, description="1 = greyscale, 3 = RGB.")


FeatureSpec = Annotated[NumericFeature | CategoryFeature | ImageFeature, Field(discriminator="type")]


class LabelSpec(_Strict):
    """The column to predict."""

    column: str = Field("label", min_length=1, description="Column holding the target.")
    task: Literal["classification", "regression"] = Field(
        "classification", description="classification (a class per row) or regression (a number per row)."
    )


class Features(BaseModel):
    """Input features by name, plus the reserved entry `label`. Every other key is an input feature."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, FeatureSpec] = Field(init=False)

    label: LabelSpec = Field(..., description="The target column and the task.")

    @model_validator(mode="after")
    def _has_inputs(self) -> Features:
        if not self.inputs:
            raise ValueError("no input features: add at least one entry besides 'label', e.g. image: {type: image}")
        for name in self.inputs:
            if not _NAME.match(name):
                raise ValueError(f"feature name {name!r} must be letters, digits, '_', '.' or '-'")
        return self

    @property
    def inputs(self) -> dict[str, NumericFeature | CategoryFeature | ImageFeature]:
        """Input features by name, in YAML order."""
        return dict(self.__pydantic_extra__ or {})

    def column_of(self, name: str) -> str:
        spec = self.inputs[name]
        return spec.column or name


class ModelConfig(_Strict):
    """The network: a built-in architecture or your own torch.nn.Module."""

    architecture: Literal["auto", "mlp", "resnet"] = Field(
        "auto", description="Built-in architecture; auto = resnet when there is an image feature, else mlp."
    )
    module: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="Your own nn.Module as 'package.module:Class'; built as Class(spec=ModelSpec, **options).",
    )
    width: int = Field(64, ge=1, le=4096, description="Hidden width (MLP units, or CNN base channels).")
    depth: int = Field(2, ge=1, le=32, description="Hidden layers (MLP) or residual stages (CNN).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    options: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="Extra keyword arguments for a custom module."
    )


class EarlyStoppingConfig(_Strict):
    """Stop when the validation metric has not improved for `patience` epochs; the best weights are kept."""

    metric: str = Field(
        "val_loss",
        pattern=r"^val_\w+$",
        description="Validation metric to watch, e.g. val_loss, val_accuracy.",
    )
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class TrainerConfig(_Strict):
    """The optimisation loop."""

    epochs: int = Field(20, ge=1, le=100_000, description="Maximum number of passes over the training split.")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="Global batch size (split across workers).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="Learning-rate schedule over the epochs."
    )
    step_epochs: int = Field(10, ge=1, description="step schedule: multiply the rate by gamma every N epochs.")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step schedule: multiplicative factor.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this value; null = off.")
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig,
        description="Early stopping on a validation metric; null = train all epochs.",
    )
    checkpoint_every_steps: int = Field(
        200, ge=0, description="Write a checkpoint every N optimizer steps (0 = only at epoch end)."
    )
    max_nonfinite_steps: int = Field(
        3, ge=1, description="Stop after this many consecutive steps with a non-finite loss or gradient."
    )
    seed: int = Field(0, ge=0, description="Seed for weights, data order and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available.")


class LocalEngineConfig(_Strict):
    """Run on this machine: in-process for one worker, torch.distributed processes for several."""

    type: Literal["local"] = Field("local", description="Engine type.")
    workers: int = Field(1, ge=1, le=256, description="Training processes (DistributedDataParallel over gloo/nccl).")
    score_workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Processes for batch scoring; default: one per core, capped by the data.",
    )


class SparkEngineConfig(_Strict):
    """Run on Apache Spark: training as a barrier stage of `workers` tasks, scoring as Arrow UDFs."""

    type: Literal["spark"] = Field("spark", description="Engine type.")
    master: str | None = Field(
        None,
        description="Spark master: local[2], spark://host:7077, yarn, k8s://...; default: the active "
        "SparkSession, else local[*].",
    )
    workers: int = Field(1, ge=1, le=4096, description="Training replicas = barrier tasks (one slot each).")
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs requested per training task (0 = CPU).")
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Spark configuration passed through to the session builder."
    )


EngineConfig = Annotated[LocalEngineConfig | SparkEngineConfig, Field(discriminator="type")]


class RegistryConfig(_Strict):
    """Where the trained model is registered."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Registered model name in MLflow.")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="Alias pointed at the new version.")


class TrackingConfig(_Strict):
    """MLflow tracking; MLFLOW_TRACKING_URI in the environment wins over these."""

    uri: str | None = Field(None, description="Tracking URI; default: sqlite file mlflow.db in the working directory.")
    experiment: str | None = Field(None, description="Experiment name; default: the registry name.")


class Config(_Strict):
    """A lakenet job: data, features, model, trainer, engine, registry."""

    version: int = Field(CURRENT_VERSION, ge=1, le=CURRENT_VERSION, description="Config format version.")
    data: DataConfig = Field(..., description="The table to learn from and how to split it.")
    features: Features = Field(..., description="Input features and the label.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The network.")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="The optimisation loop.")
    engine: EngineConfig = Field(
        default_factory=LocalEngineConfig,
        description="Where the work runs; local (this machine) is the default.",
    )
    registry: RegistryConfig = Field(..., description="Registered model name and alias.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        images = [n for n, f in self.features.inputs.items() if isinstance(f, ImageFeature)]
        if self.model.architecture == "mlp" and images and self.model.module is None:
            raise ValueError(f"model.architecture 'mlp' cannot take image feature(s) {images}; use resnet or auto")
        if self.model.architecture == "resnet" and not images and self.model.module is None:
            raise ValueError("model.architecture 'resnet' needs an image feature; use mlp or auto")
        if len(images) > 1:
            raise ValueError(f"at most one image feature is supported, found {images}")
        label_col = self.features.label.column
        for name in self.features.inputs:
            if self.features.column_of(name) == label_col:
                raise ValueError(f"feature {name!r} reads the label column {label_col!r}; that would leak it")
        if self.trainer.early_stopping and self.data.split.val == 0:
            raise ValueError("trainer.early_stopping needs a validation split: set data.split.val > 0")
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict that round-trips through load_config (features flattened back to one mapping)."""
        return self.model_dump(mode="json")
