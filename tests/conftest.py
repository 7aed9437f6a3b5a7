"""Shared fixtures: small real tables (Delta, CSV) made from scikit-learn's bundled datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def seed() -> int:
    return 1234


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with its own MLflow sqlite store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Delta table of 240 digit PNGs plus 3 corrupt files (empty, not an image, truncated)."""
    from lakenet.data.ingest import ingest
    from lakenet.demo import write_digits_folder

    root = tmp_path_factory.mktemp("digits")
    write_digits_folder(root / "images", limit=240, corrupt=3)
    ingest(root / "images", root / "table")
    return root / "table"


def digits_config(table: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"table": str(table), "max_bad_fraction": 0.05},
        "features": {"label": {"column": "label"}, "image": {"type": "image", "size": 8}},
        "model": {"architecture": "resnet", "width": 8, "depth": 2},
        "trainer": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01, "checkpoint_every_steps": 3},
        "registry": {"name": "digits"},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.fixture(scope="session")
def wine_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's wine data as a CSV with a string class label and a categorical column."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    df = data.frame.rename(columns={"target": "cultivar"})
    df["cultivar"] = df["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    df["region"] = np.where(df["alcohol"] > 13.0, "north", "south")
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def regression_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic regression table: y = 3·x1 − 2·x2 + 5·[color = red] + noise."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 600
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    y = 3 * x1 - 2 * x2 + 5 * (color == "red") + rng.normal(scale=0.1, size=n)
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x1": x1, "x2": x2, "color": color, "y": y})
    path = tmp_path_factory.mktemp("reg") / "houses.csv"
    df.to_csv(path, index=False)
    return path
