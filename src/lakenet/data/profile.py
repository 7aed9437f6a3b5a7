"""The data profile a scan builds (`lakenet.data.scan`), typed: the table, every column, the splits, the label,
missing values, duplicates and leakage, bad rows and images. `Profile.to_dict()` is profile.json; the profile
report (`lakenet.reports.profile_html`) reads the dataclasses themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BadRowExample",
    "BadRows",
    "ColumnProfile",
    "Duplicates",
    "ImagesProfile",
    "LabelProfile",
    "LabelStats",
    "LeakExample",
    "Leakage",
    "MissingProfile",
    "Profile",
    "Scalar",
    "TableInfo",
    "Unlabelled",
]

Scalar = bool | int | float | str | None  # a JSON scalar (a column's min and max, as profile.json holds them)


@dataclass(frozen=True)
class TableInfo:
    uri: str
    version: int | None  # None for a table without versions (CSV, Parquet)
    rows: int  # every row, bad ones included
    format: str


@dataclass(frozen=True)
class ColumnProfile:
    """One column over every row."""

    name: str
    type: str  # the Arrow type
    nulls: int  # null, or blank text
    missing_rate: float
    min: Scalar
    max: Scalar
    distinct: int | str | None  # a count, ">10000" past the cap, None for binary and nested columns
    mean: float | None  # numbers only


@dataclass(frozen=True)
class Unlabelled:
    """Rows without a label: not used for training or evaluation, still scored."""

    total: int
    by_split: dict[str, int]


@dataclass(frozen=True)
class MissingProfile:
    """One input feature's missing values over the whole table and what is done about them."""

    column: str
    missing: int
    rate: float
    rule: str  # impute, constant, zeros or quarantine
    action: str  # the rule in words


@dataclass(frozen=True)
class LabelStats:
    """A regression label's values over the usable rows."""

    min: float
    max: float
    mean: float
    std: float


@dataclass(frozen=True)
class LabelProfile:
    """Classification: the count per class, overall and per split. Regression: the target's statistics (absent
    when no row has a finite label)."""

    column: str | None  # None: an anomaly model without labels
    task: str
    counts: dict[str, int] | None = None
    by_split: dict[str, dict[str, int]] | None = None
    stats: LabelStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Duplicates:
    rows: int  # rows whose content another row already has
    groups: int
    examples: list[list[str]]  # keys of one group each
    sample_fraction: float = 1.0  # below 1: counted on this consistent sample of contents and scaled up


@dataclass(frozen=True)
class LeakExample:
    keys: list[str]
    splits: list[str]


@dataclass(frozen=True)
class Leakage:
    """Rows with the same content as a row in another split."""

    rows: int
    examples: list[LeakExample]
    sample_fraction: float = 1.0  # below 1: counted on this consistent sample of contents and scaled up


@dataclass(frozen=True)
class BadRowExample:
    key: str | None
    reason: str
    column: str | None
    source: str | None


@dataclass(frozen=True)
class BadRows:
    """The rows quarantined (the quarantine table has them all; these are the figures)."""

    total: int
    fraction: float
    by_reason: dict[str, int]
    examples: list[BadRowExample]


@dataclass(frozen=True)
class ImagesProfile:
    column: str
    count: int
    undecodable: int
    sizes: list[list[int]]  # [width, height, count], the most common first
    modes: dict[str, int]
    samples: dict[str, list[str]]  # base64 PNG thumbnails of training rows per class


@dataclass(frozen=True)
class Profile:
    table: TableInfo
    columns: list[ColumnProfile]
    splits: dict[str, int]  # usable rows per split
    unlabelled: Unlabelled
    missing: dict[str, MissingProfile]  # per input feature
    label: LabelProfile
    duplicates: Duplicates
    leakage: Leakage
    bad_rows: BadRows
    images: ImagesProfile | None  # with an image feature
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """profile.json: every section, `images` only with an image feature."""
        out = asdict(self)
        out["label"] = self.label.to_dict()
        if self.images is None:
            del out["images"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """A profile.json read back: the inverse of `to_dict`."""
        label, leak, bad, images = data["label"], data["leakage"], data["bad_rows"], data.get("images")
        return cls(
            table=TableInfo(**data["table"]),
            columns=[ColumnProfile(**c) for c in data["columns"]],
            splits=dict(data["splits"]),
            unlabelled=Unlabelled(**data["unlabelled"]),
            missing={name: MissingProfile(**m) for name, m in data["missing"].items()},
            label=LabelProfile(**{**label, "stats": LabelStats(**label["stats"]) if "stats" in label else None}),
            duplicates=Duplicates(**data["duplicates"]),
            leakage=Leakage(rows=leak["rows"], examples=[LeakExample(**e) for e in leak["examples"]]),
            bad_rows=BadRows(**{**bad, "examples": [BadRowExample(**e) for e in bad["examples"]]}),
            images=ImagesProfile(**images) if images is not None else None,
            warnings=list(data["warnings"]),
        )
