"""The config schema: the single source of every key, default, constraint and description a YAML file may use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

__all__ = [
    "CURRENT_VERSION",
    "AnomalyConfig",
    "AudioFeature",
    "BackboneConfig",
    "BooleanFeature",
    "CategoryFeature",
    "Config",
    "DataConfig",
    "DatetimeFeature",
    "EarlyStoppingConfig",
    "EngineConfig",
    "FeatureSpec",
    "Features",
    "ImageFeature",
    "LabelSpec",
    "LocalEngineConfig",
    "ModelConfig",
    "MonitorConfig",
    "NumericFeature",
    "RecommendConfig",
    "RegistryConfig",
    "SearchParam",
    "SparkEngineConfig",
    "SplitConfig",
    "TextFeature",
    "TrackingConfig",
    "TrainerConfig",
    "TuneConfig",
    "UpdateConfig",
    "VectorFeature",
    "parse_duration",
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
    group: str | None = Field(
        None,
        min_length=1,
        description="A column whose value keeps rows together: rows of one speaker, customer or patient land in the "
        "same split (the hash is of this value instead of the key), so the test split holds groups training never "
        "saw. A row without a group value falls back to its key.",
    )
    group_pattern: str | None = Field(
        None,
        min_length=1,
        description="A regular expression with one capture group, applied to the group column's text: the group is "
        "the captured part (e.g. the speaker in a file path, '/([^/_]+)_[^/]*$'). Needs split.group.",
    )

    @model_validator(mode="after")
    def _group(self) -> SplitConfig:
        if self.group_pattern is not None:
            if self.group is None:
                raise ValueError("data.split.group_pattern needs data.split.group (the column it reads)")
            try:
                compiled = re.compile(self.group_pattern)
            except re.error as err:
                raise ValueError(f"data.split.group_pattern is not a regular expression: {err}") from None
            if compiled.groups != 1:
                raise ValueError(f"data.split.group_pattern needs exactly one capture group, it has {compiled.groups}")
        return self

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


class ConstantFill(_Strict):
    """Fill missing values with this constant (and, for numbers, flag them with an indicator input)."""

    constant: float | int | str | bool = Field(..., description="The value a missing cell is read as.")


Missing = Annotated[
    Literal["impute", "quarantine"] | ConstantFill,
    Field(
        description="What a missing (null or blank) value becomes: impute (the rule learned on the training split, "
        "stored in the model: median + indicator for numbers, a 'missing' category, empty text), {constant: v}, or "
        "quarantine (the row is set aside as bad)."
    ),
]
RawMissing = Annotated[
    Literal["zeros", "quarantine"],
    Field(description="What a missing image or vector becomes: zeros (with an indicator input), or quarantine."),
]


class NumericFeature(_Strict):
    """A numeric column, standardised with the training split's mean and standard deviation."""

    type: Literal["numeric"] = Field("numeric", description="Feature type.")
    column: str | None = Field(None, description="Source column; default: the feature's name.")
    missing: Missing = "impute"


class BooleanFeature(_Strict):
    """A yes/no column (booleans, 0/1, true/false, yes/no, y/n, t/f), fed to the model as 0 or 1."""

    type: Literal["boolean"] = Field("boolean", description="Feature type.")
    column: str | None = Field(None, description="Source column; default: the feature's name.")
    missing: Missing = "impute"


class DatetimeFeature(_Strict):
    """A date or time (Arrow dates and timestamps, or ISO 8601 strings), encoded as cyclical hour of day, day of
    week and month of year, plus the time elapsed since a reference date learned on the training split."""

    type: Literal["datetime"] = Field("datetime", description="Feature type.")
    column: str | None = Field(None, description="Source column; default: the feature's name.")
    missing: Missing = "impute"
    timezone: str = Field(
        "UTC",
        min_length=1,
        description="Hour, weekday and month are read in this IANA time zone (e.g. Europe/Berlin): values that carry "
        "an offset or zone are converted to it; values without one are taken as local times there.",
    )


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
    buckets: int | None = Field(
        None,
        ge=2,
        le=2**22,
        description="Hash values into this many buckets instead of learning a vocabulary (for columns with very many "
        "distinct values: new values need no retraining); null = a vocabulary.",
    )
    missing: Missing = "impute"


class ImageFeature(_Strict):
    """An encoded image (PNG, JPEG, ...) stored as bytes, decoded with Pillow, resized and normalised."""

    type: Literal["image"] = Field("image", description="Feature type.")
    column: str | None = Field(None, description="Source column holding the image bytes; default: the name.")
    size: int = Field(32, ge=4, le=1024, description="Images are resized to size × size pixels.")
    channels: Literal[1, 3] = Field(1, description="1 = greyscale, 3 = RGB.")
    missing: RawMissing = Field(
        "quarantine",
        description="A row without an image: quarantine (default: an image model has little else to go on), or "
        "zeros (a blank image plus an indicator input).",
    )


class AudioFeature(_Strict):
    """Encoded audio (WAV, FLAC, OGG) stored as bytes: decoded, mixed to mono, resampled, padded or cropped to a
    fixed length and turned into a log-mel spectrogram that a small CNN reads."""

    type: Literal["audio"] = Field("audio", description="Feature type.")
    column: str | None = Field(None, description="Source column holding the audio bytes; default: the name.")
    seconds: float = Field(
        1.0, gt=0.0, le=60.0, description="Clips are padded with silence or cropped (the middle) to this length."
    )
    sample_rate: int = Field(16_000, ge=4_000, le=96_000, description="Clips are resampled to this rate (Hz).")
    n_mels: int = Field(64, ge=8, le=256, description="Mel bands of the spectrogram.")
    missing: RawMissing = Field(
        "quarantine",
        description="A row without audio: quarantine (default), or zeros (silence plus an indicator input).",
    )


class VectorFeature(_Strict):
    """A fixed-length list of numbers per row (an embedding written by `lakenet featurize`, or your own),
    fed to the model as is. Rows with a wrong-length or non-finite vector are quarantined."""

    type: Literal["vector"] = Field("vector", description="Feature type.")
    column: str | None = Field(None, description="Source column (a list of numbers); default: the feature's name.")
    missing: RawMissing = Field(
        "quarantine",
        description="A row without a vector: quarantine (default: a missing embedding usually means its featurizer "
        "failed on that row, as `lakenet featurize` marks it), or zeros plus an indicator input.",
    )


class TextFeature(_Strict):
    """Free text, tokenised and encoded into one vector per row: by a small trainable bag of hashed words and
    bigrams (`encoder: bag`), or by a pretrained sentence encoder (a name such as all-MiniLM-L6-v2, a Hugging
    Face model id, or a local model directory), frozen or fine-tuned."""

    type: Literal["text"] = Field("text", description="Feature type.")
    column: str | None = Field(None, description="Source column holding the text; default: the feature's name.")
    encoder: str = Field(
        "bag",
        min_length=1,
        description="bag (trainable, from scratch), or a pretrained encoder: all-MiniLM-L6-v2, a Hugging Face "
        "id (org/name; offline with HF_HUB_OFFLINE=1 from the local cache) or a local model directory.",
    )
    max_length: int = Field(64, ge=1, le=512, description="Tokens kept per text (longer texts are truncated).")
    freeze: bool = Field(True, description="Pretrained encoders: keep the encoder's weights fixed (false = fine-tune).")
    learning_rate: float = Field(
        2e-5, gt=0.0, le=1.0, description="Pretrained encoders with freeze: false: the encoder's learning rate."
    )
    buckets: int = Field(
        2**16, ge=16, le=2**22, description="bag: hash buckets for words and bigrams (the vocabulary size)."
    )
    embedding_dim: int = Field(64, ge=1, le=1024, description="bag: width of the learned token embeddings.")
    missing: Missing = "impute"


FeatureSpec = Annotated[
    NumericFeature
    | CategoryFeature
    | BooleanFeature
    | DatetimeFeature
    | ImageFeature
    | AudioFeature
    | VectorFeature
    | TextFeature,
    Field(discriminator="type"),
]
InputFeature = (
    NumericFeature
    | CategoryFeature
    | BooleanFeature
    | DatetimeFeature
    | ImageFeature
    | AudioFeature
    | VectorFeature
    | TextFeature
)


class LabelSpec(_Strict):
    """The column to predict, and the task."""

    column: str | None = Field(
        "label",
        min_length=1,
        description="Column holding the target. task anomaly: optional (null, the default there: no labels); where "
        "some rows carry one, it says which rows are known anomalies.",
    )
    task: Literal["classification", "regression", "anomaly", "recommendation"] = Field(
        "classification",
        description="classification (a class per row), regression (a number per row), anomaly (a model of normal "
        "rows scores how unusual each row is; labels optional, see the anomaly: section) or recommendation (rows "
        "are interactions of users with items; see the recommend: section; the label, optional, is a rating).",
    )

    @model_validator(mode="before")
    @classmethod
    def _label_optional(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task") in _OPTIONAL_LABEL and "column" not in data:
            return {**data, "column": None}
        return data

    @model_validator(mode="after")
    def _column_needed(self) -> LabelSpec:
        if self.column is None and self.task not in _OPTIONAL_LABEL:
            raise ValueError(
                f"features.label.column is required for task {self.task} (only anomaly and recommendation work without)"
            )
        return self


_OPTIONAL_LABEL = ("anomaly", "recommendation")


_RESERVED = {"label", "include", "exclude"}


class Features(BaseModel):
    """Input features by name, plus the reserved entries `label`, `include` and `exclude`. Every other key is an
    input feature: a mapping, or just its type (`amount: numeric`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, FeatureSpec] = Field(init=False)

    label: LabelSpec = Field(..., description="The target column and the task (or just the column's name).")
    include: Literal["auto"] | None = Field(
        None,
        description="auto: every other column of the table is a feature, its type inferred at train time exactly as "
        "`lakenet init` infers it (identifiers, constants and empty columns left out); features listed here "
        "override the inferred type. The resolved list is recorded with the model.",
    )
    exclude: list[str] = Field(default_factory=list, description="Columns left out of include: auto.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`label: is_fraud` and `amount: numeric` are the one-line forms of the mappings."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if isinstance(out.get("label"), str):
            out["label"] = {"column": out["label"]}
        for k, v in data.items():
            if k not in _RESERVED and isinstance(v, str):
                out[k] = {"type": v}
        return out

    @model_validator(mode="after")
    def _has_inputs(self) -> Features:
        if not self.inputs and self.include != "auto":
            raise ValueError(
                "no input features: add at least one entry besides 'label', e.g. image: {type: image}, or include: auto"
            )
        for name in self.inputs:
            if not _NAME.match(name):
                raise ValueError(f"feature name {name!r} must be letters, digits, '_', '.' or '-'")
        return self

    @property
    def inputs(self) -> dict[str, InputFeature]:
        """Input features by name, in YAML order."""
        return dict(self.__pydantic_extra__ or {})

    def column_of(self, name: str) -> str:
        spec = self.inputs[name]
        return spec.column or name


def _backbone_shorthand(value: object) -> object:
    return {"source": value} if isinstance(value, str) else value


class BackboneConfig(_Strict):
    """A pretrained network to start from (transfer learning); its head is replaced by a new one sized from
    this table's labels."""

    source: str = Field(
        ...,
        min_length=1,
        description="models:/name@alias or models:/name/N (a registered lakenet model), a lakenet bundle "
        "directory, a .safetensors file of weights for the built-in architecture, an .onnx file exported from any "
        "framework (a frozen image feature extractor run in ONNX Runtime), or a Hugging Face image model (id or "
        "local directory).",
    )
    freeze: str = Field(
        "none",
        min_length=1,
        description="all (train only the new head), none (fine-tune everything), or a layer name such as "
        "stages.1: that layer and every layer before it stay fixed. ONNX backbones are always frozen.",
    )
    learning_rate: float | None = Field(
        None, gt=0.0, le=10.0, description="Learning rate of the backbone's trainable layers; default: the trainer's."
    )
    output: str | None = Field(
        None, description="ONNX backbones: the output to use as features; default: the graph's first output."
    )
    mean: list[float] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Per-channel pixel mean (0-1 scale) the backbone expects; default: the backbone's own "
        "(lakenet models, Hugging Face preprocessor config, lakenet ONNX exports), else this table's.",
    )
    std: list[float] | None = Field(
        None, min_length=1, max_length=3, description="Per-channel pixel standard deviation, like mean."
    )

    @model_validator(mode="after")
    def _mean_std(self) -> BackboneConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("model.backbone: give both mean and std, or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError("model.backbone: mean and std need one value per channel each")
            if min(self.std) <= 0:
                raise ValueError("model.backbone.std: values must be > 0")
        return self


class ModelConfig(_Strict):
    """The network: a built-in architecture or your own torch.nn.Module, optionally from a pretrained backbone."""

    architecture: Literal["auto", "mlp", "resnet", "audiocnn", "autoencoder"] = Field(
        "auto",
        description="Built-in architecture; auto = autoencoder for task anomaly, else resnet when there is an image "
        "feature, audiocnn when there is an audio feature, else mlp.",
    )
    backbone: Annotated[BackboneConfig | None, BeforeValidator(_backbone_shorthand)] = Field(
        None,
        description="Start from a pretrained network (a source string, or a mapping with source, freeze, "
        "learning_rate, ...); null = random initialisation.",
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
        "auto",
        pattern=r"^(auto|val_\w+)$",
        description="Validation metric to watch, e.g. val_loss, val_accuracy, val_pr_auc. auto: val_loss, except "
        "for a rare class: val_pr_auc (two classes) or val_balanced_accuracy (more).",
    )
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")
    min_epochs: int | Literal["auto"] = Field(
        "auto",
        description="Epochs always trained, and before which no weights are kept as best (a lucky first epoch on a "
        "small validation split is noise). auto: a quarter of the epochs, half when the validation split has fewer "
        "than 200 rows.",
    )

    @model_validator(mode="after")
    def _min_epochs(self) -> EarlyStoppingConfig:
        if isinstance(self.min_epochs, int) and self.min_epochs < 1:
            raise ValueError("trainer.early_stopping.min_epochs must be ≥ 1 or auto")
        return self


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
    class_weights: Literal["auto", "none"] | dict[str, float] = Field(
        "auto",
        description="Weights of the classes in the loss. auto: inversely proportional to their frequency in the "
        "training split when the rarest class is under a third of the commonest, else none; or {class: weight}.",
    )
    threshold: Literal["auto", "none"] | float = Field(
        "auto",
        description="Two classes: the probability of the rarer class from which it is predicted. auto: the one that "
        "maximises its F1 on the validation split (stored with the model, used by predict and serve); none: the most "
        "probable class; or a number in (0, 1).",
    )
    baseline: Literal["auto", "none"] = Field(
        "auto",
        description="auto: also fit scikit-learn's HistGradientBoosting on the same split (tabular features only) "
        "and report it next to the deep model; none: skip it.",
    )
    importance_repeats: int = Field(
        5,
        ge=0,
        le=100,
        description="The evaluation's global view: shuffles per input column for permutation importance on the test "
        "split (with a 95 % interval over them); 0: skip it. Image models also get the mean attribution map per class.",
    )
    importance_rows: int = Field(
        500, ge=10, le=1_000_000, description="Test rows the permutation importance scores (the first ones, by key)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainerConfig:
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"trainer.threshold must be auto, none or a number in (0, 1), not {self.threshold}")
        if isinstance(self.class_weights, dict) and any(w <= 0 for w in self.class_weights.values()):
            raise ValueError("trainer.class_weights: every weight must be > 0")
        return self


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float | None:
    """'90s', '20m', '1.5h', '2d' or a number of seconds -> seconds."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None if value is None else float(value)
    if isinstance(value, str):
        m = _DURATION.match(value.lower())
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError("expected a duration such as 90s, 20m, 1.5h or a number of seconds")


Duration = Annotated[
    float | None,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}, {"type": "null"}]}),
]

_Number = int | float
_Choice = int | float | str | bool | None


class SearchParam(_Strict):
    """One dimension of the search space: exactly one of the keys below."""

    uniform: tuple[float, float] | None = Field(None, description="A float drawn uniformly from [low, high].")
    log_uniform: tuple[float, float] | None = Field(
        None, description="A float drawn log-uniformly from [low, high] (both > 0); for rates and decays."
    )
    int_uniform: tuple[int, int] | None = Field(None, description="An integer drawn uniformly from [low, high].")
    log_int_uniform: tuple[int, int] | None = Field(
        None, description="An integer drawn log-uniformly from [low, high] (both ≥ 1); for widths and sizes."
    )
    choice: list[_Choice] | None = Field(None, min_length=1, description="One of these values.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchParam:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(type(self).model_fields)} (found {', '.join(given) or 'none'})"
            )
        rng = self.range
        if rng is not None:
            lo, hi = rng
            if not lo < hi:
                raise ValueError(f"{given[0]}: low must be below high (found [{lo}, {hi}])")
            if (self.log_uniform or self.log_int_uniform) and lo <= 0:
                raise ValueError(f"{given[0]}: a log scale needs low > 0 (found {lo})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def range(self) -> tuple[_Number, _Number] | None:
        r = self.uniform or self.log_uniform or self.int_uniform or self.log_int_uniform
        return (r[0], r[1]) if r is not None else None

    def probe_values(self) -> list[_Choice]:
        """The values that must all be valid for the whole range to be: the ends of a range, or every choice."""
        if self.choice is not None:
            return list(self.choice)
        lo, hi = self.range or (0, 0)
        # A float range also probes a fractional midpoint: it catches a float range on an integer field.
        mid = (
            [lo * (hi / lo) ** (1 / 3) if self.log_uniform else lo + (hi - lo) / 3]
            if self.uniform or self.log_uniform
            else []
        )
        return [lo, *mid, hi]

    def grid_values(self) -> list[_Choice] | None:
        """Every value of a finite dimension (choices, integer ranges up to 100 values); None for a float range."""
        if self.choice is not None:
            return list(self.choice)
        r = self.int_uniform or self.log_int_uniform
        if r is not None and r[1] - r[0] < 100:
            return list(range(r[0], r[1] + 1))
        return None


class TuneConfig(_Strict):
    """Hyperparameter search (`lakenet tune`): an Optuna study over dotted config paths, with early stopping of
    unpromising trials, stored in a database so an interrupted search continues where it stopped."""

    metric: str = Field(
        "val_loss",
        pattern=r"^val_\w+$",
        description="Validation metric to optimise, reported every epoch: val_loss, val_accuracy, val_macro_f1, "
        "val_rmse, val_mae, val_r2, ...",
    )
    direction: Literal["auto", "minimize", "maximize"] = Field(
        "auto", description="auto = minimize losses and errors, maximize everything else."
    )
    trials: int = Field(20, ge=1, le=100_000, description="Trials in the study (finished, pruned and failed).")
    parallel: int = Field(
        1,
        ge=1,
        le=1024,
        description="Concurrent trials: local processes (torch threads pinned so trials × threads ≤ cores), or "
        "Spark tasks with engine: spark. Each trial trains with one worker.",
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="How trials are proposed; grid needs finite dimensions (choice or integer ranges)."
    )
    pruner: Literal["asha", "hyperband", "median", "none"] = Field(
        "asha", description="Early stopping of unpromising trials, on the per-epoch metric."
    )
    min_epochs: int = Field(1, ge=1, description="Epochs every trial gets before it can be pruned (ASHA min resource).")
    reduction_factor: int = Field(3, ge=2, le=16, description="ASHA/Hyperband: keep 1 in N trials at each rung.")
    time_budget: Duration = Field(
        None, description="Stop proposing trials after this long (e.g. 20m); running trials stop at their next epoch."
    )
    space: dict[str, SearchParam] = Field(
        ..., min_length=1, description="Dotted config path -> distribution, e.g. trainer.learning_rate."
    )
    seed: int = Field(0, ge=0, description="Seed of the sampler.")
    storage: str | None = Field(
        None,
        description="Study storage as an SQLAlchemy URL; default: sqlite file optuna.db next to the MLflow store. "
        "Spark trials on a cluster need a database every executor can reach.",
    )
    study: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Study name; default: the registry name plus a hash of the config and search space, so a "
        "rerun of the same file continues the same study.",
    )
    refit: bool = Field(
        False,
        description="Retrain the best configuration on train+validation for its best number of epochs before "
        "the test evaluation and registration; otherwise the best trial's weights are registered.",
    )
    heartbeat_seconds: int = Field(
        10, ge=1, le=3600, description="A running trial that misses 3 heartbeats is deemed dead and retried."
    )


class MonitorConfig(_Strict):
    """Drift checks (`lakenet drift`, and the first step of `lakenet update`): the rows a model learned from
    against newer rows, per input feature, label and prediction."""

    psi: float = Field(
        0.2, gt=0.0, le=10.0, description="Population stability index from which a feature has drifted (0.1: a small "
        "shift, 0.2: a real one)."
    )  # fmt: skip
    pvalue: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="A numeric feature drifts when its PSI is over `psi` and the Kolmogorov-Smirnov test rejects "
        "'same distribution' at this level (Bonferroni-corrected over the features); embeddings use it too.",
    )
    unseen_rate: float = Field(
        0.05, ge=0.0, le=1.0, description="A category drifts when more of its values than this were never seen."
    )
    min_rows: int = Field(50, ge=1, description="Fewer new rows than this: no verdict (too few to tell).")
    sample_rows: int = Field(
        20_000, ge=100, description="Rows sampled from each side (deterministically, by key hash) for the tests."
    )
    table: str | None = Field(
        None, description="Delta table the checks are appended to (one row per check); default <table>_monitoring."
    )


class ShrinkPerturb(_Strict):
    """Warm start from λ·(champion's weights) + σ·(fresh random weights): fixes the worse generalisation of a
    plain warm start (Ash & Adams, 2020)."""

    shrink: float = Field(0.6, gt=0.0, le=1.0, description="λ: the share of the champion's weights kept.")
    perturb: float = Field(0.1, ge=0.0, le=1.0, description="σ: the share of fresh initial weights added.")


class UpdateConfig(_Strict):
    """`lakenet update`: a challenger trained on what changed since the champion's table version, promoted only
    when it beats the champion on the current test split without losing on the old rows."""

    strategy: Literal["warm_start", "retrain", "both"] = Field(
        "warm_start",
        description="warm_start: from the champion's weights, on the new rows plus a replay of older ones; retrain: "
        "from scratch on every row; both: train both and keep the better on validation.",
    )
    replay_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="Share of the older rows replayed in a warm start (so it does not forget)."
    )
    epochs: int | None = Field(None, ge=1, description="Warm-start epochs; default: half of trainer.epochs.")
    patience: int | None = Field(
        None,
        ge=1,
        description="Warm-start early-stopping patience; default: trainer.early_stopping.patience scaled to the warm "
        "start's share of trainer.epochs, rounded down (at least 2), since its schedule is that much shorter. The "
        "best epoch's weights are kept either way.",
    )
    shrink_perturb: ShrinkPerturb | None = Field(
        default_factory=ShrinkPerturb, description="Shrink and perturb the champion's weights; null: plain warm start."
    )
    min_improvement: float = Field(
        0.0,
        ge=0.0,
        description="The challenger must beat the champion on the current test split by this much (headline metric: "
        "ROC-AUC for two classes, macro-F1 for more, R² for regression).",
    )
    max_regression: float = Field(
        0.01, ge=0.0, description="… and may lose at most this much on the old rows' test split."
    )
    challenger_alias: str = Field(
        "challenger", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", description="Alias of a challenger that was not promoted."
    )


class AnomalyConfig(_Strict):
    """task: anomaly — an autoencoder learns what normal rows look like; a row's anomaly score is how badly it is
    reconstructed, calibrated on the validation split into the share of validation rows that look more normal."""

    contamination: float | Literal["auto"] = Field(
        "auto",
        description="Share of rows to flag as anomalies (is_anomaly): the threshold is the (1 - contamination) "
        "quantile of the validation rows' scores. auto: where validation has at least 5 known anomalies and 5 known "
        "normal rows, the threshold that maximises the F1 of finding them; with fewer, the known anomalies' share of "
        "the labelled training and validation rows; without labels, 0.05.",
    )
    positive: str | None = Field(
        None,
        min_length=1,
        description="The label value that marks a known anomaly (e.g. '1', 'fraud'); default: the rarer of the "
        "label's values. Every other present value marks a known normal row; a missing label, an unknown one.",
    )
    code_dim: int = Field(8, ge=1, le=1024, description="Width of the autoencoder's bottleneck (the row's code).")
    noise: float = Field(
        0.1, ge=0.0, le=2.0, description="Denoising: standard deviation of the noise added to numbers in training."
    )
    labelled: Literal["push", "ignore"] = Field(
        "push",
        description="Known anomalies in the training split: push (trained to be reconstructed badly, as in Deep SAD, "
        "Ruff et al. 2020) or ignore (left out of training). Unlabelled and normal rows are always trained on.",
    )

    @model_validator(mode="after")
    def _range(self) -> AnomalyConfig:
        if isinstance(self.contamination, float) and not 0.0 < self.contamination < 0.5:
            raise ValueError(f"anomaly.contamination must be auto or a share in (0, 0.5), not {self.contamination}")
        return self


class RecommendConfig(_Strict):
    """task: recommendation — rows are interactions (a user, an item, a time, maybe a rating). A two-tower model
    (a user tower and an item tower whose dot product scores a pair) is trained with a softmax over the item
    catalogue; each user's last interactions are held out for the evaluation (recall@k and NDCG@k beside a
    popularity ranking)."""

    user: str = Field("user", min_length=1, description="Column naming the user.")
    item: str = Field("item", min_length=1, description="Column naming the item.")
    timestamp: str | None = Field(
        None,
        min_length=1,
        description="Column with the interaction's time (a date, a timestamp or an ISO string): each user's last "
        "`holdout` interactions are the test split and the ones before them validation. Without it, the rows' "
        "keys order a user's interactions.",
    )
    holdout: int = Field(
        1, ge=1, le=100, description="Interactions per user held out for test (and as many for validation)."
    )
    min_rating: float | None = Field(
        None,
        description="With a rating label: interactions rated below this are not positives (they are left out of "
        "training and evaluation); default: every interaction is a positive.",
    )
    item_features: list[str] = Field(
        default_factory=list,
        description="Features that describe the item (genre, price): read per item from its latest training "
        "interaction, into the item tower. Every other feature describes the user or the moment (user tower).",
    )
    k: int = Field(10, ge=1, le=1000, description="Items recommended per user (predict, serve) and the k of recall@k.")
    dim: int = Field(
        32, ge=2, le=512, description="Width of the user and item vectors whose dot product scores a pair."
    )
    max_items: int = Field(
        100_000,
        ge=2,
        le=10_000_000,
        description="The catalogue: at most this many most frequent items; rarer items are not recommended.",
    )
    negatives: int | Literal["auto", "all"] = Field(
        "auto",
        description="Training: all (a softmax over the whole catalogue), or N items drawn uniformly per batch as "
        "negatives beside the batch's own items (a sampled softmax with the logQ correction: the cost of a step no "
        "longer grows with the catalogue). auto: all up to 4,096 items, else 1,024.",
    )
    max_users: int = Field(
        1_000_000, ge=1, description="Users with a vector of their own (the most active); others are cold start."
    )
    exclude_seen: bool = Field(
        True,
        description="Leave out of a user's recommendations the items they already interacted with (predict: in the "
        "table scored; evaluation: in training).",
    )
    eval_users: int = Field(
        10_000, ge=10, description="Users sampled (by hash) for the test evaluation, and their interactions kept."
    )


class LocalEngineConfig(_Strict):
    """Run on this machine: in-process for one worker, torch.distributed processes for several."""

    type: Literal["local"] = Field("local", description="Engine type.")
    workers: int = Field(1, ge=1, le=256, description="Training processes (DistributedDataParallel over gloo/nccl).")
    score_workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Processes for batch scoring; default: one per core, capped by the data, and none (this "
        "process) for a job whose first batch says it would take under 1.5 s here.",
    )


class SparkEngineConfig(_Strict):
    """Run on Apache Spark: training as a barrier stage of `workers` tasks, scoring as Arrow UDFs."""

    type: Literal["spark"] = Field("spark", description="Engine type.")
    master: str | None = Field(
        None,
        description="Spark master: local[2], spark://host:7077, yarn, k8s://...; default: the active "
        "SparkSession, else local[*]. sc://host:port means a Spark Connect server (as `remote`).",
    )
    remote: str | None = Field(
        None,
        description="A Spark Connect session instead of a classic one: sc://host:15002 for a running Connect "
        "server, or local[N] to start one on this machine. Training, scoring, featurize, explain, tuning and the "
        "SQL function all run over Connect; the server's master decides where the tasks run.",
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
    allow_incompatible: bool = Field(
        False,
        description="Move the alias even when the new version's task or input signature differs from the version it "
        "points to now (clients of the alias would break); otherwise such a version is registered without the alias.",
    )


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
    tune: TuneConfig | None = Field(None, description="Hyperparameter search for `lakenet tune`; optional.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Drift thresholds.")
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="Model updates on new rows.")
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig, description="task: anomaly — scores and threshold.")
    recommend: RecommendConfig = Field(
        default_factory=RecommendConfig, description="task: recommendation — users, items and the holdout."
    )

    @model_validator(mode="before")
    @classmethod
    def _recommendation_ids(cls, data: Any) -> Any:
        """task: recommendation reads the user and item columns as category features (added when not listed)."""
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            return data
        label = data["features"].get("label")
        if not (isinstance(label, dict) and label.get("task") == "recommendation"):
            return data
        given = data.get("recommend")
        rec: dict[str, Any] = given if isinstance(given, dict) else {}
        features = dict(data["features"])
        for role, size in (("user", "max_users"), ("item", "max_items")):
            column = rec.get(role, role)
            if not isinstance(column, str) or column in features:
                continue
            default = RecommendConfig.model_fields[size].default
            features[column] = {"type": "category", "max_categories": rec.get(size, default), "missing": "quarantine"}
        return {**data, "features": features}

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        images = [n for n, f in self.features.inputs.items() if isinstance(f, ImageFeature)]
        anomaly = self.features.label.task == "anomaly"
        if anomaly != (self.model.architecture == "autoencoder") and self.model.architecture != "auto":
            raise ValueError(
                f"model.architecture {self.model.architecture!r} does not fit task {self.features.label.task}: task "
                "anomaly takes autoencoder (or auto), and autoencoder is only for task anomaly"
            )
        if anomaly and self.model.backbone is not None:
            raise ValueError("model.backbone is not supported with task anomaly yet; remove it")
        if self.features.label.task == "recommendation":
            self._check_recommend()
        if self.model.architecture == "mlp" and images and self.model.module is None:
            raise ValueError(f"model.architecture 'mlp' cannot take image feature(s) {images}; use resnet or auto")
        if self.model.architecture == "resnet" and not images and self.model.module is None:
            raise ValueError("model.architecture 'resnet' needs an image feature; use mlp or auto")
        if len(images) > 1:
            raise ValueError(f"at most one image feature is supported, found {images}")
        audio = [n for n, f in self.features.inputs.items() if isinstance(f, AudioFeature)]
        if len(audio) > 1 or (audio and images):
            raise ValueError(
                f"at most one audio feature, and not next to an image, is supported; found {audio + images}"
            )
        if audio and anomaly:
            raise ValueError("task anomaly does not read audio features yet; remove them or use classification")
        if self.model.architecture == "audiocnn" and not audio and self.model.module is None:
            raise ValueError("model.architecture 'audiocnn' needs an audio feature; use mlp or auto")
        if audio and self.model.architecture in ("mlp", "resnet") and self.model.module is None:
            raise ValueError(f"model.architecture {self.model.architecture!r} cannot take audio feature {audio[0]!r}; "
                             "use audiocnn or auto")  # fmt: skip
        label_col = self.features.label.column
        for name in self.features.inputs:
            if self.features.column_of(name) == label_col:
                raise ValueError(f"feature {name!r} reads the label column {label_col!r}; that would leak it")
        if self.trainer.early_stopping and self.data.split.val == 0:
            raise ValueError("trainer.early_stopping needs a validation split: set data.split.val > 0")
        if self.tune is not None:
            self._check_tune(self.tune)
        return self

    def _check_recommend(self) -> None:
        rec, inputs = self.recommend, self.features.inputs
        for role in ("user", "item"):
            column = getattr(rec, role)
            spec = inputs.get(column)
            if not isinstance(spec, CategoryFeature) or spec.buckets is not None:
                raise ValueError(f"recommend.{role}: feature {column!r} must be a category with a vocabulary (it names "
                                 "who or what; an index per value)")  # fmt: skip
        unknown = [f for f in rec.item_features if f not in inputs]
        if unknown:
            raise ValueError(f"recommend.item_features {unknown} are not features (features: {', '.join(inputs)})")
        bad = [f for f in rec.item_features if inputs[f].type not in ("numeric", "category", "boolean")]
        if bad:
            raise ValueError(f"recommend.item_features {bad}: item features may be numbers, categories or booleans")
        odd = [n for n, f in inputs.items() if f.type in ("image", "audio", "text")]
        if odd:
            raise ValueError(f"task recommendation reads numbers, categories, booleans, dates and vectors; not {odd}")
        if self.model.architecture not in ("auto",) or self.model.module or self.model.backbone:
            raise ValueError("task recommendation trains its own two-tower model: leave model.architecture auto")
        if self.features.include == "auto":
            raise ValueError("task recommendation needs its features listed (user, item and their features), not "
                             "include: auto")  # fmt: skip

    def _check_tune(self, tune: TuneConfig) -> None:
        """Every search path must exist and every value of its range must pass that field's own constraints,
        before any trial runs."""
        if self.data.split.val == 0:
            raise ValueError(f"tune.metric {tune.metric!r} is a validation metric: set data.split.val > 0")
        if tune.sampler == "grid":
            infinite = [k for k, p in tune.space.items() if p.grid_values() is None]
            if infinite:
                raise ValueError(
                    f"tune.sampler grid needs finite dimensions; tune.space {', '.join(infinite)} "
                    "is a float range: use choice, or sampler tpe/random"
                )
        base = self.to_yaml_dict()
        base.pop("tune", None)
        for path, param in tune.space.items():
            where = f"tune.space[{path!r}]"
            if path.split(".")[0] in {"tune", "version", "registry", "tracking", "monitor", "update"}:
                raise ValueError(f"{where}: {path.split('.')[0]} cannot be tuned")
            if not _path_exists(base, path):
                raise ValueError(f"{where}: no such config key; {_path_hint(base, path)}")
            for value in param.probe_values():
                try:
                    Config.model_validate(set_path(base, path, value))
                except ValidationError as err:
                    msg = err.errors()[0]["msg"]
                    if "valid integer" in msg:
                        msg += "; use int_uniform, log_int_uniform or choice for an integer key"
                    raise ValueError(f"{where}: value {value!r} is invalid for {path}: {msg}") from None

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict that round-trips through load_config (features flattened back to one mapping)."""
        d = self.model_dump(mode="json")
        if d.get("tune") is None:
            d.pop("tune", None)
        else:  # only the keys that were set in each search dimension
            d["tune"]["space"] = {k: {p.kind: d["tune"]["space"][k][p.kind]} for k, p in self.tune.space.items()}  # type: ignore[union-attr]
        return d

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with each dotted path set to its value, e.g. `{"trainer.epochs": 5, "model.width": 64}`,
        validated again as a whole (errors explained as for a loaded file). Every path must name a key the config
        has: an unknown one is refused with the nearest valid key, and a section that is null here (such as
        trainer.early_stopping) is set as a whole, not key by key."""
        from lakenet.config.loader import parse_config  # the loader imports this module
        from lakenet.errors import ConfigError

        if not overrides:
            return self
        raw = self.to_yaml_dict()
        raw.setdefault("tune", None)  # to_yaml_dict leaves an unset tune section out; it is still a key
        for path, value in overrides.items():
            if not _path_exists(raw, path):
                raise ConfigError(f"Invalid config override {path!r}: no such config key; {_path_hint(raw, path)}")
            raw = set_path(raw, path, value)
        return parse_config(raw, source=f"with overrides of {', '.join(overrides)}")


def _path_exists(d: dict[str, Any], path: str) -> bool:
    node: Any = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            # Optional sections that are off (early_stopping: null) still have keys that exist in the schema.
            return False
        node = node[part]
        if node is None and i < len(parts) - 1:
            return False
    return True


def _path_hint(d: dict[str, Any], path: str) -> str:
    import difflib

    node: Any = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:i])} is a value, not a section"
        if part not in node:
            close = difflib.get_close_matches(part, list(node), n=1, cutoff=0.6)
            prefix = ".".join(parts[:i])
            full = f"{prefix}.{close[0]}" if prefix and close else (close[0] if close else None)
            return (
                f"did you mean {full!r}?"
                if full
                else f"valid keys under {prefix or 'the top level'}: {', '.join(node)}"
            )
        if node[part] is None and i < len(parts) - 1:
            return f"{'.'.join(parts[: i + 1])} is null in this config; set it to tune keys under it"
        node = node[part]
    return ""


def set_path(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the nested dict `d` with the dotted `path` set to `value` (intermediate dicts copied)."""
    head, _, rest = path.partition(".")
    out = dict(d)
    out[head] = set_path(d[head], rest, value) if rest else value
    return out
