"""Config validation: typos, wrong types and missing sections name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakenet.config import dump_config, json_schema, load_config, parse_config
from lakenet.config.schema import ImageFeature, NumericFeature
from lakenet.errors import ConfigError

BASE = {
    "data": {"table": "t"},
    "features": {"label": {"column": "y"}, "x": {"type": "numeric"}},
    "registry": {"name": "m"},
}


def with_(**sections: object) -> dict[str, object]:
    return {**BASE, **sections}


def test_minimal_config_fills_defaults() -> None:
    cfg = parse_config(BASE)
    assert cfg.engine.type == "local" and cfg.engine.workers == 1
    assert cfg.trainer.optimizer == "adamw"
    assert cfg.registry.alias == "champion"
    assert isinstance(cfg.features.inputs["x"], NumericFeature)
    assert cfg.version == 1


def test_config_is_frozen() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(Exception, match="frozen"):
        cfg.trainer.epochs = 3  # type: ignore[misc]


def test_typo_suggests_nearest_key() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(with_(trainer={"learnig_rate": 0.1}))
    assert "trainer.learnig_rate" in str(e.value)
    assert "did you mean 'learning_rate'" in str(e.value)


def test_typo_in_feature_and_label() -> None:
    raw = with_(features={"label": {"colum": "y"}, "img": {"type": "image", "sise": 3}})
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    msg = str(e.value)
    assert "features.label.colum" in msg and "did you mean 'column'" in msg
    assert "features.img.sise" in msg and "did you mean 'size'" in msg


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(with_(trainer={"epochs": "ten"}))
    assert "trainer.epochs" in str(e.value) and "'ten'" in str(e.value)


def test_unknown_feature_type() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(with_(features={"label": {"column": "y"}, "x": {"type": "numerc"}}))
    assert "features.x" in str(e.value) and "'numerc'" in str(e.value)


def test_missing_sections_are_named() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"data": {"table": "t"}})
    assert "features: required key is missing" in str(e.value)
    assert "registry: required key is missing" in str(e.value)


def test_constraints() -> None:
    with pytest.raises(ConfigError, match=r"split fractions must sum to 1"):
        parse_config(with_(data={"table": "t", "split": {"train": 0.5}}))
    with pytest.raises(ConfigError, match=r"trainer.learning_rate"):
        parse_config(with_(trainer={"learning_rate": -1}))
    with pytest.raises(ConfigError, match=r"no input features"):
        parse_config(with_(features={"label": {"column": "y"}}))
    with pytest.raises(ConfigError, match=r"leak"):
        parse_config(with_(features={"label": {"column": "y"}, "y": {"type": "numeric"}}))
    with pytest.raises(ConfigError, match=r"resnet"):
        parse_config(with_(model={"architecture": "resnet"}))


def test_engine_type_rejected() -> None:
    with pytest.raises(ConfigError, match=r"engine"):
        parse_config(with_(engine={"type": "ray"}))


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  table: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML line \d+"):
        load_config(bad)
    newer = tmp_path / "newer.yaml"
    newer.write_text("version: 99\n")
    with pytest.raises(ConfigError, match=r"upgrade lakenet"):
        load_config(newer)


def test_relative_table_resolved_against_config_dir(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "job.yaml"
    f.parent.mkdir()
    f.write_text("data: {table: ../data/t}\nfeatures: {label: {column: y}, img: {type: image}}\nregistry: {name: m}\n")
    cfg = load_config(f)
    assert cfg.data.table == str((tmp_path / "data" / "t").resolve())
    assert isinstance(cfg.features.inputs["img"], ImageFeature)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = parse_config(with_(data={"table": str(tmp_path / "t")}, trainer={"epochs": 7}))
    f = tmp_path / "c.yaml"
    f.write_text(dump_config(cfg))
    assert load_config(f) == cfg


def test_json_schema_describes_every_field() -> None:
    schema = json_schema()
    assert schema["title"] == "lakenet config"
    defs = schema["$defs"]
    for name in ("TrainerConfig", "DataConfig", "ModelConfig", "LocalEngineConfig", "RegistryConfig"):
        for field, spec in defs[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    assert defs["TrainerConfig"]["additionalProperties"] is False


# ---- tune: search-space validation happens when the config is read, before any trial runs ----------------
def _tune(space: dict[str, object], **tune: object) -> dict[str, object]:
    return with_(tune={"metric": "val_accuracy", "space": space, **tune})


@pytest.mark.parametrize(
    ("space", "tune", "message"),
    [
        (
            {"trainer.learnin_rate": {"log_uniform": [1e-4, 0.1]}},
            {},
            r"tune.space\['trainer.learnin_rate'\]: no such "
            r"config key; did you mean 'trainer.learning_rate'\?",
        ),
        (
            {"trainer.learning_rate": {"log_uniform": [1e-4, 20]}},
            {},
            r"value 20.0 is invalid for "
            r"trainer.learning_rate: Input should be less than or equal to 10",
        ),
        ({"model.dropout": {"uniform": [0.0, 1.0]}}, {}, r"value 1.0 is invalid for model.dropout"),
        ({"model.width": {"choice": [32, 0]}}, {}, r"value 0 is invalid for model.width"),
        ({"model.width": {"uniform": [8, 64]}}, {}, r"model.width.*fractional part; use int_uniform"),
        ({"trainer.early_stopping.patience": {"choice": [1, 2]}}, {}, None),
        ({"registry.alias": {"choice": ["a", "b"]}}, {}, r"registry cannot be tuned"),
        ({"model.width": {"uniform": [3, 1]}}, {}, r"tune.space.model.width: uniform: low must be below high"),
        ({"model.width": {"int_uniform": [1, 3], "choice": [1]}}, {}, r"give exactly one of"),
        ({"trainer.learning_rate": {"log_uniform": [0, 1]}}, {}, r"a log scale needs low > 0"),
        ({"trainer.learning_rate": {"uniform": [0.01, 0.1]}}, {"sampler": "grid"}, r"grid needs finite dimensions"),
        ({"model.width": {"choice": [8]}}, {"time_budget": "soon"}, r"tune.time_budget: expected a duration"),
        ({"model.width": {"choice": [8]}}, {"metric": "accuracy"}, r"tune.metric: String should match pattern"),
    ],
)
def test_search_space_errors_name_the_key(
    space: dict[str, object], tune: dict[str, object], message: str | None
) -> None:
    if message is None:  # a path under an optional section that is on by default is fine
        assert parse_config(_tune(space, **tune)).tune is not None
        return
    with pytest.raises(ConfigError, match=message):
        parse_config(_tune(space, **tune))


def test_a_null_section_cannot_be_tuned_into() -> None:
    raw = _tune({"trainer.early_stopping.patience": {"choice": [1, 2]}})
    raw["trainer"] = {"early_stopping": None}
    with pytest.raises(ConfigError, match=r"trainer.early_stopping is null in this config"):
        parse_config(raw)


def test_tune_section_round_trips_and_durations_parse(tmp_path: Path) -> None:
    cfg = parse_config(
        _tune(
            {"trainer.learning_rate": {"log_uniform": [1e-4, 0.1]}, "model.width": {"choice": [32, 64]}},
            time_budget="1.5h",
        )
        | {"data": {"table": str(tmp_path / "t")}}
    )
    assert cfg.tune is not None and cfg.tune.time_budget == 5400.0
    assert cfg.tune.space["model.width"].grid_values() == [32, 64]
    assert cfg.tune.space["trainer.learning_rate"].grid_values() is None
    f = tmp_path / "c.yaml"
    f.write_text(dump_config(cfg))
    assert load_config(f) == cfg
    assert "tune" not in parse_config(with_(data={"table": str(tmp_path / "t")})).to_yaml_dict()


def test_backbone_shorthand_and_options() -> None:
    cfg = parse_config(with_(model={"backbone": "models:/shapes@champion"}))
    assert cfg.model.backbone is not None and cfg.model.backbone.source == "models:/shapes@champion"
    assert cfg.model.backbone.freeze == "none" and cfg.model.backbone.learning_rate is None
    cfg = parse_config(with_(model={"backbone": {"source": "x.onnx", "freeze": "all", "mean": [0.5], "std": [0.2]}}))
    assert cfg.model.backbone is not None and cfg.model.backbone.mean == [0.5]
    with pytest.raises(ConfigError, match="give both mean and std"):
        parse_config(with_(model={"backbone": {"source": "x.onnx", "mean": [0.5]}}))
    with pytest.raises(ConfigError, match=r"model.backbone.fraeze: unknown key; did you mean 'freeze'"):
        parse_config(with_(model={"backbone": {"source": "x.onnx", "fraeze": "all"}}))


def test_text_and_vector_features() -> None:
    cfg = parse_config(
        with_(features={"label": {"column": "y"}, "t": {"type": "text"}, "v": {"type": "vector", "column": "emb"}})
    )
    t = cfg.features.inputs["t"]
    assert t.type == "text" and t.encoder == "bag" and t.freeze and t.max_length == 64  # type: ignore[union-attr]
    assert cfg.features.column_of("v") == "emb"
    with pytest.raises(ConfigError, match=r"features.t.max_length: Input should be less than or equal to 512"):
        parse_config(with_(features={"label": {"column": "y"}, "t": {"type": "text", "max_length": 1000}}))
    with pytest.raises(ConfigError, match=r"'type' must be one of .*'vector', 'text' \(found 'sound'\)"):
        parse_config(with_(features={"label": {"column": "y"}, "t": {"type": "sound"}}))


# ---- Config.with_overrides -----------------------------------------------------------------------------------
def test_with_overrides_sets_dotted_paths_and_revalidates() -> None:
    cfg = parse_config(BASE)
    new = cfg.with_overrides({"trainer.epochs": 5, "model.width": 64, "features.x.type": "category"})
    assert (new.trainer.epochs, new.model.width) == (5, 64)
    assert new.features.inputs["x"].type == "category"  # re-validated into the other feature model
    assert (cfg.trainer.epochs, cfg.model.width) != (5, 64)  # the original is unchanged (and frozen)
    assert new.with_overrides({}) is new
    assert cfg.with_overrides({"trainer.early_stopping": None}).trainer.early_stopping is None


def test_with_overrides_refuses_unknown_paths_with_the_nearest_key() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(ConfigError, match=r"'trainer.epoch'.*did you mean 'trainer.epochs'\?"):
        cfg.with_overrides({"trainer.epoch": 5})
    with pytest.raises(ConfigError, match="valid keys under model: "):
        cfg.with_overrides({"model.zzz": 1})
    with pytest.raises(ConfigError, match=r"trainer\.epochs is a value, not a section"):
        cfg.with_overrides({"trainer.epochs.max": 5})


def test_with_overrides_explains_invalid_values_like_the_loader() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(ConfigError) as e:
        cfg.with_overrides({"trainer.epochs": "ten"})
    assert "trainer.epochs" in str(e.value) and "'ten'" in str(e.value)
    with pytest.raises(ConfigError, match=r"trainer\.learnig_rate: unknown key; did you mean 'learning_rate'"):
        cfg.with_overrides({"trainer": {"learnig_rate": 0.1}})


def test_with_overrides_can_drop_the_tune_section_and_configs_pickle() -> None:
    import pickle

    cfg = parse_config(_tune({"model.width": {"choice": [4, 8]}}))
    trial = cfg.with_overrides({"tune": None, "model.width": 8})
    assert trial.tune is None and trial.model.width == 8
    for c in (cfg, trial):
        assert pickle.loads(pickle.dumps(c)) == c


def test_the_label_is_optional_only_for_anomaly_and_recommendation() -> None:
    cfg = parse_config(with_(features={"label": {"task": "anomaly"}, "x": "numeric"}))
    assert cfg.features.label.column is None and cfg.features.label.task == "anomaly"
    assert cfg.anomaly.contamination == "auto" and cfg.anomaly.labelled == "push"
    with pytest.raises(ConfigError, match="only anomaly and recommendation work without"):
        parse_config(with_(features={"label": {"column": None}, "x": "numeric"}))
    with pytest.raises(ConfigError, match="does not fit task anomaly"):
        parse_config(with_(features={"label": {"task": "anomaly"}, "x": "numeric"}, model={"architecture": "mlp"}))
    with pytest.raises(ConfigError, match="autoencoder is only for task anomaly"):
        parse_config(with_(model={"architecture": "autoencoder"}))
    with pytest.raises(ConfigError, match="contamination"):
        parse_config(with_(features={"label": {"task": "anomaly"}, "x": "numeric"}, anomaly={"contamination": 0.7}))


def test_recommendation_adds_its_ids_and_checks_its_features() -> None:
    cfg = parse_config(
        with_(
            features={"label": {"task": "recommendation"}, "genre": "category", "age": "numeric"},
            recommend={"user": "u", "item": "i", "item_features": ["genre"]},
        )
    )
    u, i = cfg.features.inputs["u"], cfg.features.inputs["i"]
    assert u.type == i.type == "category" and u.missing == "quarantine"
    assert i.max_categories == cfg.recommend.max_items  # the catalogue's size
    with pytest.raises(ConfigError, match="are not features"):
        parse_config(with_(features={"label": {"task": "recommendation"}, "x": "numeric"},
                           recommend={"item_features": ["genre"]}))  # fmt: skip
    with pytest.raises(ConfigError, match="must be a category with a vocabulary"):
        parse_config(with_(features={"label": {"task": "recommendation"}, "user": {"type": "category", "buckets": 64}}))
    with pytest.raises(ConfigError, match="features listed"):
        parse_config(with_(features={"label": {"task": "recommendation"}, "include": "auto"}))
