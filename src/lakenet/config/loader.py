"""Read a YAML file once: parse, upgrade old versions, validate into frozen models, explain every error."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lakenet.config.schema import CURRENT_VERSION, Config, Features
from lakenet.errors import ConfigError

__all__ = ["config_hash", "dump_config", "explain", "json_schema", "load_config", "parse_config"]

# version N -> function upgrading a raw dict from N to N+1. Version 1 is the first; the mechanism is here so
# that the first incompatible change ships with its upgrade instead of breaking saved YAML files.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = raw.get("version", CURRENT_VERSION)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(f"version: expected an integer ≥ 1, found {version!r}")
    if version > CURRENT_VERSION:
        raise ConfigError(
            f"version: this file is format {version}, newer than this lakenet understands "
            f"({CURRENT_VERSION}); upgrade lakenet"
        )
    while version < CURRENT_VERSION:
        raw = _MIGRATIONS[version](raw)
        version += 1
        raw["version"] = version
    return raw


_TAGS = {
    "numeric",
    "category",
    "image",
    "vector",
    "text",
    "local",
    "spark",
}  # discriminator values pydantic puts in error paths


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel] = Config) -> list[str]:
    """Valid keys of the model that owns the mapping at `loc` (for 'did you mean' suggestions)."""
    model: type[BaseModel] | None = root
    parts = iter(loc)
    for part in parts:
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            if model is Features:  # an input feature: its schema depends on its type
                from lakenet.config.schema import CategoryFeature, ImageFeature, TextFeature

                keys = [*CategoryFeature.model_fields, *ImageFeature.model_fields, *TextFeature.model_fields]
                return list(dict.fromkeys(keys))
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            for arg in getattr(ann, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
            if model is not None and get_origin(ann) is dict:
                next(parts, None)  # a mapping of name -> model: the next part is a name, not a key
    return list(model.model_fields) if model is not None else []


def explain(
    err: ValidationError,
    source: str,
    *,
    root: type[BaseModel] = Config,
    what: str = "config",
    tags: frozenset[str] = frozenset(),
) -> ConfigError:
    """One line per error, naming the key: an unknown key with the nearest valid one, a missing key, a bad value
    with what was found. Shared by every strict YAML file lakenet reads (the config, the jobs file)."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p in (tags or _TAGS)))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1], root)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"  {key}: unknown key{hint} (valid keys here: {', '.join(valid)})")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
            found = e.get("input")
            found = found.get("type") if isinstance(found, dict) else found
            tags = (e.get("ctx") or {}).get("expected_tags", "")
            lines.append(f"  {key}: 'type' must be one of {tags} (found {found!r})")
        elif e["type"] == "value_error" and not loc:  # a whole-config check: its message names the keys
            lines.append(f"  {(e.get('ctx') or {}).get('error', e['msg'])}")
        else:
            found = e.get("input")
            shown = "" if isinstance(found, dict) else f" (found {found!r})"
            if e["type"] == "literal_error" and isinstance(found, str):
                choices = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
                close = difflib.get_close_matches(found, choices, n=1, cutoff=0.6)
                shown += f"; did you mean '{close[0]}'?" if close else ""
            msg = str((e.get("ctx") or {}).get("error", e["msg"])) if e["type"] == "value_error" else e["msg"]
            lines.append(f"  {key}: {msg}{shown}")
    return ConfigError(f"Invalid {what} {source}:\n" + "\n".join(lines))


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("table"), str):
        table = data["table"]
        if "://" not in table and not Path(table).is_absolute():
            data = {**data, "table": str((base / table).resolve())}
            raw = {**raw, "data": data}
    return raw


def parse_config(raw: Any, *, source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate an already-parsed mapping (from YAML or Python) into a frozen Config."""
    if isinstance(raw, Config):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid config {source}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = _migrate(dict(raw))
    if base_dir is not None:
        raw = _resolve_paths(raw, base_dir)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise explain(err, source) from None


def load_config(path: str | Path | Config | dict[str, Any]) -> Config:
    """Load a YAML file (or accept a Config / mapping) into a validated Config."""
    if isinstance(path, Config):
        return path
    if isinstance(path, dict):
        return parse_config(path, base_dir=Path.cwd())
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} not found; create one with `lakenet init --table <table> --label <col>`")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file {p} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_config(raw if raw is not None else {}, source=str(p), base_dir=p.resolve().parent)


def dump_config(cfg: Config) -> str:
    """The config as YAML, with every default filled in (what actually ran)."""
    return yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False)


def config_hash(cfg: Config) -> str:
    """A short stable hash of the validated config, recorded in lineage."""
    blob = json.dumps(cfg.to_yaml_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "lakenet config"
    return schema
