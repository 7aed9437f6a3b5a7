"""Type inference for `lakenet init` and `features: {include: auto}`: identifiers, constants, dates, booleans,
names, free text, the label's task, the key, and a config that fits on one screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lakenet.config import load_config
from lakenet.data.infer import infer_features, resolve_features
from lakenet.data.sources import open_table


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    words = ["great", "bad", "fine", "broken", "love", "awful", "ok", "returned"]
    table = pa.table(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],  # unique, never null: the key
            "order_no": np.arange(1000, 1000 + n),  # a running number
            "account_id": rng.integers(0, 60, n),  # repeats, but named like an identifier
            "constant": ["EUR"] * n,
            "empty": pa.nulls(n, pa.string()),
            "amount": np.where(rng.random(n) < 0.05, np.nan, rng.gamma(2, 30, n)),
            "flag": rng.integers(0, 2, n).astype(float),
            "yes_no": rng.choice(["yes", "no"], n),
            "when": [f"2026-0{1 + i % 9}-1{i % 10}T0{i % 10}:15:00Z" for i in range(n)],
            "day": pa.array(np.datetime64("2026-01-01") + np.arange(n) % 30, pa.date32()),
            "country": rng.choice(["DE", "FR", "IT", "", "  "], n),
            "name": [
                f"{rng.choice(['Anna', 'Ben', 'Chloe', 'Dev'])} {rng.choice(['Smith', 'Lee', 'Rossi'])} {i}"
                for i in range(n)
            ],
            "review": [" ".join(rng.choice(words, 7)) for _ in range(n)],
            "city_code": [f"Z{rng.integers(0, 3000)}" for _ in range(n)],
            "label": rng.choice([0.0, 1.0], n, p=[0.9, 0.1]),  # a 0/1 float label
        }
    )
    path = tmp_path / "messy.parquet"
    pq.write_table(table, path)
    return path


def test_every_column_gets_a_decision_with_a_reason(messy: Path) -> None:
    inf = infer_features(open_table(str(messy)), label="label")
    decided = {d.column: (d.type, d.reason) for d in inf.decisions}
    assert inf.key == "customer_id" and "unique" in inf.key_reason
    assert decided["customer_id"][0] is None and "key" in decided["customer_id"][1]
    assert decided["order_no"][0] is None and "identifier" in decided["order_no"][1]
    assert decided["account_id"][0] is None and "identifier" in decided["account_id"][1]
    assert decided["constant"][0] is None and "constant" in decided["constant"][1]
    assert decided["empty"][0] is None and "missing" in decided["empty"][1]
    assert decided["amount"][0] == "numeric" and "missing" in decided["amount"][1]
    assert decided["flag"][0] == "boolean" and decided["yes_no"][0] == "boolean"
    assert decided["when"][0] == "datetime" and decided["day"][0] == "datetime"
    assert decided["country"][0] == "category"  # blanks are missing, not a category of their own
    assert decided["name"][0] == "text"  # nearly unique short strings: words, not one category per row
    assert decided["review"][0] == "text"
    assert decided["city_code"][0] is None or decided["city_code"][0] == "category"
    assert inf.label.task == "classification" and inf.label.minority_share is not None
    assert inf.label.minority_share < 0.2 and set(inf.label.classes) == {"0", "1"}


def test_init_writes_a_short_config_that_trains_unedited(messy: Path, tmp_path: Path) -> None:
    from lakenet.starter import init_config

    text = init_config(str(messy), label="label", config_dir=tmp_path / "conf")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) <= 15
    raw = yaml.safe_load(text)
    assert raw["data"]["table"] == "../messy.parquet"  # relative to where the file will be saved
    assert raw["features"]["include"] == "auto" and "account_id" in raw["features"]["exclude"]
    assert "expected cost" in text and "# account_id" in text
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "c.yaml"
    path.write_text(text)
    cfg = load_config(path)
    resolved, inf = resolve_features(cfg, open_table(cfg.data.table))
    assert inf is not None
    types = {n: f.type for n, f in resolved.features.inputs.items()}
    assert types["amount"] == "numeric" and types["when"] == "datetime" and "account_id" not in types
    assert resolved.features.include is None  # explicit now: what the run records


def test_include_auto_takes_explicit_overrides(messy: Path) -> None:
    cfg = load_config(
        {
            "data": {"table": str(messy), "key": "customer_id"},
            "features": {"label": "label", "include": "auto", "exclude": ["review"], "flag": "numeric"},
            "registry": {"name": "m"},
        }
    )
    resolved, _ = resolve_features(cfg, open_table(str(messy)))
    inputs = resolved.features.inputs
    assert inputs["flag"].type == "numeric" and "review" not in inputs and "customer_id" not in inputs
    with pytest.raises(Exception, match="not columns"):
        resolve_features(
            load_config(
                {
                    **cfg.to_yaml_dict(),
                    "features": {"label": {"column": "label"}, "include": "auto", "exclude": ["nope"]},
                }
            ),
            open_table(str(messy)),
        )


def test_a_numeric_label_with_many_values_is_regression(tmp_path: Path) -> None:
    from lakenet.data.infer import infer_label

    t = pa.table({"y": np.linspace(0, 1, 100), "k": np.repeat([1, 2, 3, 4], 25), "s": ["a", "b"] * 50})
    assert infer_label(t, "y").task == "regression"
    assert infer_label(t, "k").task == "classification"
    assert infer_label(t, "s").task == "classification"


def test_the_registry_name_init_writes_is_ascii_whatever_the_table_is_called() -> None:
    from lakenet.config import parse_config
    from lakenet.starter import _model_name

    for table, name in (("data/tâble ü", "t_ble__"), ("ümlaut", "mlaut"), ("___", "model"), ("fraud.v2", "fraud.v2")):
        assert _model_name(table) == name
        parse_config({"data": {"table": "t"}, "features": {"label": "y", "x": "numeric"}, "registry": {"name": name}})
