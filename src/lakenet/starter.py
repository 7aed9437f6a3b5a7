"""`lakenet init`: a short starting config for a table, every decision stated as a comment.

The config uses `features: {include: auto}`: the types written in the comments are inferred again, the same way,
at train time (and the resolved list is recorded with the model); a user overrides one by listing it
(`amount: numeric`). The file stays on one screen whatever the table's width.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from lakenet.config.loader import load_config
from lakenet.data.infer import Inference, feature_name, infer_features
from lakenet.data.sources import open_table
from lakenet.errors import DataError

__all__ = ["init_config"]

_EPOCHS = 20
_IMBALANCED = 1 / 3  # rarest / commonest class below this: say so (the trainer's class weights use the same rule)


def _size_model(inf: Inference) -> dict[str, Any]:
    """Small data, small network: the width and depth from the rows and the input kind."""
    feats = inf.features
    rows = inf.rows
    if any(s["type"] == "audio" for s in feats.values()):
        return {"architecture": "auto", "width": 32, "depth": 3}
    if any(s["type"] == "image" for s in feats.values()):
        size = next(s["size"] for s in feats.values() if s["type"] == "image")
        return {"architecture": "auto", "width": 32, "depth": 2 if size <= 16 else 3}
    width = 32 if rows < 2000 else 64 if rows < 200_000 else 128
    return {"architecture": "auto", "width": width, "depth": 2}


def _trainer(inf: Inference) -> dict[str, Any]:
    """Small residual CNNs with BatchNorm take a higher rate than AdamW's default (the digits reach 0.98+ test
    accuracy in 20 epochs at 3e-3, 0.97 at 1e-3)."""
    images = any(s["type"] in ("image", "audio") for s in inf.features.values())
    return {"epochs": _EPOCHS, **({"learning_rate": 0.003} if images else {})}


def _cost(cfg: Any, inf: Inference) -> str:
    """Rows × epochs × FLOPs per row (forward and backward), measured on the model this config builds."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lakenet.data.encoders import LabelState, Preprocessor
    from lakenet.data.scan import probe_preprocessor, vector_dims
    from lakenet.models.registry import build_model, model_spec

    try:
        snap = open_table(cfg.data.table, cfg.data.version)
        from lakenet.data.infer import resolve_features

        resolved, _ = resolve_features(cfg, snap)
        probe = probe_preprocessor(resolved, vector_dims(resolved, snap))
        classes = list(inf.label.classes) or ["a", "b"]
        label = LabelState(inf.label.column, inf.label.task, classes if inf.label.task != "regression" else None)
        pre = Preprocessor(key=resolved.data.key, label=label, features=probe.features)
        spec = model_spec(resolved, pre)
        model = build_model(spec).train()
        inputs = {k: torch.from_numpy(v) for k, v in pre.example_inputs(2, seed=0).items()}
        with FlopCounterMode(display=False) as counter:
            out = model(inputs)
            out.float().sum().backward()
        per_row = counter.get_total_flops() / 2
    except Exception as err:  # an estimate only: a failure here must not stop init
        return f"# expected cost: not estimated ({type(err).__name__}: {err})"
    train_rows = inf.rows * cfg.data.split.train
    total = per_row * train_rows * cfg.trainer.epochs
    seconds = total / 2e9  # small networks reach ~2 GFLOP/s on one CPU core, with the data pipeline
    return (
        f"# expected cost: {cfg.trainer.epochs} epochs × {train_rows:,.0f} training rows × {_si(per_row)}FLOP per row "
        f"(forward + backward) ≈ {_si(total)}FLOP, about {_duration(seconds)} on a laptop core"
    )


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _label_comment(inf: Inference) -> str:
    lab = inf.label
    text = lab.reason
    if lab.task == "classification" and lab.classes:
        total = sum(lab.classes.values())
        rarest = min(lab.classes, key=lambda c: (lab.classes[c], c))
        if lab.classes[rarest] < _IMBALANCED * max(lab.classes.values()) and lab.minority_share is not None:
            text += (
                f"; imbalanced: {rarest!r} is {lab.minority_share:.1%} of {total:,} rows (class weights, a metric that "
                "suits rare classes for early stopping, and for two classes a decision threshold chosen on validation)"
            )
    return text


def init_config(
    table: str,
    *,
    label: str | None,
    name: str | None = None,
    key: str | None = None,
    config_dir: str | Path | None = None,
    task: str | None = None,
    user: str | None = None,
    item: str | None = None,
) -> str:
    """A starting YAML config for `table`, inferred from its rows; `data.table` is written relative to
    `config_dir` (where the file will be saved; default: the current directory). `task`: anomaly (label
    optional), recommendation (`user` and `item`, found by name if not given; the label, optional, a rating), else
    the label's task is inferred."""
    snap = open_table(table)
    if task == "recommendation":
        return _recommendation_config(snap, table, label=label, name=name, key=key, config_dir=config_dir,
                                      user=user, item=item)  # fmt: skip
    inf = infer_features(snap, label=label, key=key, task=task)
    if not inf.features:
        reasons = "; ".join(f"{d.column}: {d.reason}" for d in inf.left_out)
        raise DataError(f"Table {table} has no usable feature column besides the label {label!r} ({reasons}).")
    base = Path(config_dir).resolve() if config_dir is not None else Path.cwd()
    where = table if "://" in table else os.path.relpath(Path(table).resolve(), base)
    model_name = name or _model_name(table)
    identifiers = [d.column for d in inf.left_out if "identifier" in d.reason and d.column != inf.key]
    features: dict[str, Any] = {"label": {"column": label, "task": inf.label.task}, "include": "auto"}
    if label is None:
        features["label"] = {"task": inf.label.task}
    if identifiers:
        features["exclude"] = identifiers
    # Image tables get their one feature written out: its size is a decision worth seeing and editing.
    for d in inf.decisions:
        if d.spec is not None and d.type == "image":
            spec = dict(d.spec)
            if feature_name(d.column) != d.column:
                spec["column"] = d.column
            features[feature_name(d.column)] = spec
    raw: dict[str, Any] = {
        "version": 1,
        "data": {"table": where, "key": inf.key},
        "features": features,
        "model": _size_model(inf),
        "trainer": _trainer(inf),
        "registry": {"name": model_name, "alias": "champion"},
    }
    absolute = table if "://" in table else str(Path(table).resolve())
    cfg = load_config({**raw, "data": {**raw["data"], "table": absolute}})  # what we print must validate
    lines = [
        f"# lakenet config for {table}, inferred by `lakenet init` from {inf.sampled:,} of {inf.rows:,} rows.",
        "# Types below are inferred again, the same way, at train time; override one by listing it under features",
        "# (e.g. `amount: numeric`). Every key: `lakenet config schema`.",
        _cost(cfg, inf),
    ]
    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=200)
    out = lines + _annotate(body, inf)
    return "\n".join(out) + "\n"


def _model_name(table: str) -> str:
    """A registry name from the table's name: ASCII letters, digits, '_', '.' and '-' (an accented letter or a
    space becomes '_'), starting with a letter or digit, as registry.name requires."""
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "_-." else "_" for c in Path(table).name)
    name = name.lstrip("_.-")
    return name or "model"


def _annotate(body: str, inf: Inference) -> list[str]:
    """The YAML with the key, label and every column's decision as comments."""
    out = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("data:"):
            line += f"  # key: {inf.key_reason}"
        elif stripped.startswith("label:"):
            line += f"  # {_label_comment(inf)}"
        out.append(line)
        if stripped.startswith("include:"):
            width = max(len(d.column) for d in inf.decisions)
            for d in inf.decisions:
                what = d.type or "left out"
                why = d.reason.removeprefix("left out: ")
                out.append(f"  # {d.column:<{width}}  {what}: {why}")
    return out


_RATING = re.compile(r"(^|_)(rating|stars|score|grade|review_score)$", re.I)
_USER = re.compile(r"(^|_)(user|customer|client|member|visitor|account|buyer|reader|listener)(_?id|_?key)?$", re.I)
_ITEM = re.compile(r"(^|_)(item|product|movie|song|track|article|sku|book|video|show|offer)(_?id|_?key)?$", re.I)


def _pick(names: list[str], given: str | None, pattern: re.Pattern[str], role: str, table: str) -> str:
    if given is not None:
        if given not in names:
            raise DataError(f"--{role} {given!r} is not a column of {table} (columns: {', '.join(names)})")
        return given
    found = [n for n in names if pattern.search(n)]
    if not found:
        raise DataError(f"No column of {table} looks like the {role} ({', '.join(names)}); pass --{role} COLUMN.")
    return found[0]


def _recommendation_config(
    snap: Any,
    table: str,
    *,
    label: str | None,
    name: str | None,
    key: str | None,
    config_dir: str | Path | None,
    user: str | None,
    item: str | None,
) -> str:
    """task recommendation: the user and item columns, the interaction time (the first date column), the other
    columns as features, and the item features (columns whose value is the same in every row of an item)."""
    from lakenet.data.infer import SAMPLE_ROWS

    names = snap.schema.names
    user = _pick(names, user, _USER, "user", table)
    item = _pick(names, item, _ITEM, "item", table)
    inf = infer_features(snap, label=label, key=key, task="anomaly")  # types only: no label is inferred here
    time = next((d.column for d in inf.decisions if d.type == "datetime"), None)
    sample = snap.read(snap.fragments[0], names).slice(0, SAMPLE_ROWS).to_pandas() if snap.fragments else None
    features: dict[str, Any] = {"label": {"task": "recommendation", **({"column": label} if label else {})}}
    item_features, notes = [], []
    for d in inf.decisions:
        if label is None and _RATING.search(d.column) and d.type == "numeric":
            notes.append(f"# {d.column}: left out (it looks like a rating of the interaction; pass --label {d.column} "
                         "to learn from it as one)")  # fmt: skip
            continue
        if d.column in (user, item, time, label) or d.spec is None or d.type not in ("numeric", "category", "boolean"):
            if d.column not in (user, item, time, label, inf.key):
                notes.append(f"# {d.column}: left out ({d.reason if d.spec is None else d.type})")
            continue
        fname = feature_name(d.column)
        features[fname] = dict(d.spec) | ({"column": d.column} if fname != d.column else {})
        if sample is not None and _per_item(sample, item, d.column):
            item_features.append(fname)
    base = Path(config_dir).resolve() if config_dir is not None else Path.cwd()
    where = table if "://" in table else os.path.relpath(Path(table).resolve(), base)
    model_name = name or _model_name(table)
    recommend: dict[str, Any] = {"user": user, "item": item, "timestamp": time, "item_features": item_features, "k": 10}
    if label:
        recommend["min_rating"] = None  # set it (e.g. 4) for only well-rated interactions to count as positives
    raw: dict[str, Any] = {
        "version": 1,
        "data": {"table": where, "key": inf.key},
        "features": features,
        "recommend": recommend,
        "trainer": {"epochs": _EPOCHS, "batch_size": 256},
        "registry": {"name": model_name, "alias": "champion"},
    }
    absolute = table if "://" in table else str(Path(table).resolve())
    load_config({**raw, "data": {**raw["data"], "table": absolute}})  # what we print must validate
    lines = [
        f"# lakenet config for {table}: a recommender, inferred by `lakenet init` from {inf.sampled:,} of "
        f"{inf.rows:,} interactions.",
        f"# users: {user}, items: {item}; each user's last interaction"
        + (f" by {time}" if time else " (by key; no date column found)")
        + " is held out for the test split.",
        f"# item features (the same value in every row of an item): {', '.join(item_features) or 'none'}; every "
        "other feature describes the user or the moment.",
        *notes,
    ]
    return "\n".join([*lines, yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=200)])


def _per_item(sample: Any, item: str, column: str) -> bool:
    """The column has one value per item (and more than one across items): it describes the item."""
    values = sample[[item, column]].dropna()
    if values.empty or values[column].nunique() < 2:
        return False
    return bool((values.groupby(item)[column].nunique() <= 1).all())
