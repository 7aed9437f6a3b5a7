"""`lakenet update CONFIG`: the model follows its table.

The champion's lineage says which table version it learned from. The update checks drift on the rows added
since, trains a challenger on the current version (warm start from the champion on the new rows plus a replay of
older ones, or a retrain from scratch, or both), evaluates champion and challenger on the same current test split
(the split is a hash of the key, so old test rows stay test rows), on the new rows and on the old rows, and moves
`@champion` to the challenger only if it wins by `update.min_improvement` without losing more than
`update.max_regression` on the old rows. Otherwise the challenger is registered as `@challenger` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakenet.config.loader import config_hash, load_config
from lakenet.config.schema import Config
from lakenet.data.changes import Changes, table_changes
from lakenet.data.delta_io import app_id, commit_once
from lakenet.data.sources import PIECE_ROWS, Snapshot, open_table
from lakenet.data.split import TEST, VAL
from lakenet.errors import ConfigError, ModelError
from lakenet.workflows.common import scratch_dir

if TYPE_CHECKING:
    from lakenet.evaluation.report import Evaluation
    from lakenet.training.job import TrainOutcome

__all__ = ["UpdateResult", "run_update"]


@dataclass(frozen=True)
class UpdateResult:
    name: str
    promoted: bool
    verdict: str  # why it was (not) promoted
    strategy: str  # the strategy of the challenger that was kept
    champion_version: str
    version: str | None  # the challenger's registered version (None: nothing new to learn from)
    alias: str | None
    table_versions: tuple[int | None, int]  # (the champion's, now)
    metric: str
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model -> slice -> headline metric
    drift: str | None = None
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the MLflow run that registered the challenger


def _update_table(cfg: Config, snap: Snapshot, changes: Changes, wd: Path, name: str) -> str:
    """The warm start's rows, as a small Delta table: every added row (all splits), and the older rows whose key
    hash falls under update.replay_fraction. Rows keep their keys, so they keep their splits."""
    import numpy as np
    import pandas as pd

    key = cfg.data.key
    added = {f.path for f in changes.added.fragments}
    fraction = cfg.update.replay_fraction
    uri = str(wd / ".lakenet" / "update" / name / f"v{snap.version}")

    def tables() -> Any:
        for frag in snap.fragments:
            table = snap.read(frag)
            if frag.path not in added:
                keys = np.asarray(table.column(key).cast(pa.string()).to_pylist(), dtype=object)
                u = pd.util.hash_array(keys, hash_key="lakenet-replay-0", categorize=False) / float(2**64)
                table = table.filter(pa.array(u < fraction))
            yield table

    def batches() -> Any:
        """The filtered fragments gathered into batches of PIECE_ROWS: a replay of many small row groups would
        otherwise be written as as many tiny fragments, each a fixed cost to scan and to train from."""
        held: list[pa.Table] = []
        rows = 0
        for table in tables():
            held.append(table)
            rows += table.num_rows
            if rows >= PIECE_ROWS:
                yield from pa.concat_tables(held).combine_chunks().to_batches()
                held, rows = [], 0
        if held:
            yield from pa.concat_tables(held).combine_chunks().to_batches()

    reader = pa.RecordBatchReader.from_batches(snap.schema, batches())
    commit_once(uri, reader, txn=app_id("update-rows", snap.uri, snap.version, fraction), mode="overwrite")
    return uri


def _train(
    cfg: Config, wd: Path, *, plan: Any, job_overrides: dict[str, Any], spark: Any, progress: bool
) -> tuple[dict[str, Any], TrainOutcome]:
    """Run the training loop on the engine for a plan, in scratch folders; (weights, outcome)."""
    from lakenet.workflows.train import train_on_engine

    scratch = scratch_dir(wd)
    out_dir = Path(tempfile.mkdtemp(prefix="update-", dir=scratch))
    ckpt = Path(tempfile.mkdtemp(prefix="update-ckpt-", dir=scratch))
    try:
        job = dataclasses.replace(plan.job(output_dir=out_dir, checkpoint_dir=ckpt), **job_overrides)
        return train_on_engine(cfg, job, spark=spark, progress=progress)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(ckpt, ignore_errors=True)


def _warm_start(
    cfg: Config, champion: Any, snap: Snapshot, changes: Changes, wd: Path, *, spark: Any, progress: bool
) -> Any:
    """The challenger from the champion: grown preprocessing and head, shrunk and perturbed weights, trained on
    the new rows plus a replay of older ones."""
    import torch
    from safetensors.torch import save_file

    from lakenet.models.bundle import Bundle
    from lakenet.models.registry import build_model, config_trust, model_spec
    from lakenet.training.plan import plan_training
    from lakenet.training.warm_start import grow_preprocessor, grow_weights, shrink_perturb

    base = load_config(champion.training.get("config") or cfg.to_yaml_dict())
    rows_uri = _update_table(cfg, snap, changes, wd, cfg.registry.name)
    epochs = cfg.update.epochs or max(1, cfg.trainer.epochs // 2)
    overrides: dict[str, Any] = {"data.table": rows_uri, "data.version": None, "trainer.epochs": epochs}
    if (patience := _warm_patience(cfg, base, epochs)) is not None:
        overrides["trainer.early_stopping.patience"] = patience
    ws_cfg = base.with_overrides(overrides)
    plan = plan_training(ws_cfg)
    train_tables = (snap.read(f, champion.preprocessor.columns(with_label=True)) for f in changes.added.fragments)
    grown, growth = grow_preprocessor(champion.preprocessor, train_tables)
    spec = model_spec(ws_cfg, grown)
    trust = config_trust(ws_cfg)
    torch.manual_seed(ws_cfg.trainer.seed + 7919)  # fresh weights for the perturbation, reproducible
    model = build_model(spec, trusted=trust)
    fresh = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights = grow_weights(champion.weights, champion.preprocessor, grown, model)
    sp = cfg.update.shrink_perturb
    if sp is not None:
        weights = shrink_perturb(weights, fresh, shrink=sp.shrink, perturb=sp.perturb)
    init = wd / ".lakenet" / "tmp" / f"warm-{cfg.registry.name}.safetensors"
    init.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(init))
    plan.scan.preprocessor = grown
    overrides = {"preprocessor": grown, "spec": spec, "init_weights": str(init)}
    t0 = time.perf_counter()
    trained, outcome = _train(ws_cfg, wd, plan=plan, job_overrides=overrides, spark=spark, progress=progress)
    seconds = time.perf_counter() - t0
    init.unlink(missing_ok=True)
    bundle = Bundle(
        spec,
        grown,
        trained,
        training={
            **_training(outcome),
            "config": base.to_yaml_dict(),
            "split": base.data.split.model_dump(),
            "growth": dataclasses.asdict(growth),
        },
    )
    return bundle, seconds, plan


def _warm_patience(cfg: Config, base: Config, epochs: int) -> int | None:
    """The warm start's early-stopping patience: update.patience, else the champion's patience scaled to the warm
    schedule's share of the full one, rounded down (a 10-epoch warm start of a 20-epoch, patience-5 config waits 2
    epochs), at least 2. A warm start adapts a trained model: it stops at the first lasting lack of progress, and
    the best epoch's weights are kept. None: the champion's config trains without early stopping."""
    es = base.trainer.early_stopping
    if es is None:
        return None
    if cfg.update.patience is not None:
        return cfg.update.patience
    return max(2, min(es.patience, es.patience * epochs // max(1, base.trainer.epochs)))


def _retrain(cfg: Config, snap: Snapshot, wd: Path, *, spark: Any, progress: bool) -> Any:
    from lakenet.models.bundle import Bundle
    from lakenet.training.plan import plan_training

    plan = plan_training(cfg, version=snap.version)
    t0 = time.perf_counter()
    weights, outcome = _train(plan.config, wd, plan=plan, job_overrides={}, spark=spark, progress=progress)
    seconds = time.perf_counter() - t0
    resolved = plan.config
    bundle = Bundle(
        plan.spec,
        plan.scan.preprocessor,
        weights,
        training={**_training(outcome), "config": resolved.to_yaml_dict(), "split": resolved.data.split.model_dump()},
    )
    return bundle, seconds, plan


def _training(outcome: TrainOutcome) -> dict[str, Any]:
    return {k: v for k, v in outcome.summary().items() if k in ("history", "best_epoch", "stopped_early", "step")}


def _headline(cfg: Config, bundle: Any) -> str:
    from lakenet.evaluation.baseline import headline_metric

    return headline_metric(bundle.preprocessor.label.task, len(bundle.preprocessor.label.classes or []))


def _evaluate(bundle: Any, snap: Snapshot, cfg: Config, split: int, trust: tuple[str, ...]) -> Evaluation | None:
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor

    if not snap.fragments:
        return None
    prefix = "val" if split == VAL else "test"
    return evaluate_split(snap, Predictor(bundle, trust_modules=trust), cfg.data.split, split=split, prefix=prefix)


def _evaluate_slices(
    bundle: Any, snap: Snapshot, added: set[str], cfg: Config, trust: tuple[str, ...]
) -> dict[str, Evaluation | None]:
    """The test split as a whole (current), its appended rows (new) and the rest (old, or None where the table
    has no such rows): one scoring pass."""
    from lakenet.evaluation.evaluate import evaluate_split
    from lakenet.inference.predictor import Predictor

    report = evaluate_split(
        snap,
        Predictor(bundle, trust_modules=trust),
        cfg.data.split,
        split=TEST,
        prefix="test",
        parts=lambda f: "new" if f.path in added else "old",
    )
    parts = report.parts or {}
    return {"current": dataclasses.replace(report, parts=None), "new": parts.get("new"), "old": parts.get("old")}


def _confusion(report: Evaluation | None) -> tuple[list[str] | None, list[list[int]] | None]:
    return (report.classes, report.confusion_matrix) if report is not None else (None, None)


def _score(bundle: Any, snap: Snapshot, cfg: Config, metric: str, split: int, trust: tuple[str, ...]) -> float | None:
    prefix = "val" if split == VAL else "test"
    report = _evaluate(bundle, snap, cfg, split, trust)
    value = report.metrics.get(f"{prefix}_{metric}") if report is not None else None
    return None if value is None else float(value)


def _champion(cfg: Config, wd: Path) -> tuple[Any, Any]:
    """The registered champion (registry.name@alias) to update: (its resolved reference, its bundle)."""
    from lakenet.models.bundle import Bundle
    from lakenet.workflows.common import resolve

    name, alias = cfg.registry.name, cfg.registry.alias
    try:
        resolved = resolve(f"models:/{name}@{alias}", wd, cfg.tracking)
    except ModelError as err:
        raise ModelError(f"{err} `lakenet update` needs a champion to start from: run `lakenet train` first.") from None
    return resolved, Bundle.load(resolved.bundle_dir)


def _challenger(
    cfg: Config, champion: Any, snap: Snapshot, changes: Changes, wd: Path, *, chosen: str, spark: Any, progress: bool
) -> tuple[str, Any, dict[str, float], Config]:
    """Train the strategy's candidates; with `both`, keep the better on the current validation split.
    (kept strategy, its bundle, training seconds per candidate, the config with features resolved)."""
    from lakenet.data.infer import resolve_features
    from lakenet.models.registry import config_trust

    candidates: dict[str, tuple[Any, float, Any]] = {}
    if chosen in ("warm_start", "both"):
        candidates["warm_start"] = _warm_start(cfg, champion, snap, changes, wd, spark=spark, progress=progress)
    if chosen in ("retrain", "both"):
        candidates["retrain"] = _retrain(cfg, snap, wd, spark=spark, progress=progress)
    resolved_cfg, _ = resolve_features(cfg, snap)
    metric, trust = _headline(cfg, champion), config_trust(cfg)
    if len(candidates) > 1:
        val = {k: _score(b, snap, resolved_cfg, metric, VAL, trust) for k, (b, _, _) in candidates.items()}
        kept = max(val, key=lambda k: float("-inf") if val[k] is None else float(val[k]))  # type: ignore[arg-type]
    else:
        (kept,) = candidates
    seconds = {f"{k}_train_s": v[1] for k, v in candidates.items()}
    return kept, candidates[kept][0], seconds, resolved_cfg


def run_update(
    config: Config, wd: Path, *, strategy: str | None = None, spark: Any = None, progress: bool = True
) -> UpdateResult:
    from lakenet.inference.predictor import Predictor
    from lakenet.models.registry import config_trust
    from lakenet.monitoring.workflow import run_drift
    from lakenet.tracking.store import setup_tracking
    from lakenet.workflows.train import choose_threshold  # the same rule as training

    cfg = config
    setup_tracking(cfg.tracking, workdir=wd)
    name, alias = cfg.registry.name, cfg.registry.alias
    resolved, champion = _champion(cfg, wd)
    if champion.preprocessor.label.task == "recommendation":
        raise ConfigError(
            "lakenet update does not update recommendation models yet (their catalogue and users grow with the "
            "table); train a new version with `lakenet train`: predict then replaces the recommendations"
        )
    trust = config_trust(cfg)
    v0 = champion.lineage.get("table_version")
    v0 = v0 if isinstance(v0, int) else None
    snap = open_table(cfg.data.table)
    metric = _headline(cfg, champion)
    if v0 is not None and snap.version is not None and v0 >= snap.version:
        verdict = f"up to date: the champion learned from version {snap.version}"
        return UpdateResult(name, False, verdict, "none", str(resolved.version), None, None, (v0, snap.version), metric)
    reports = wd / "reports" / name / "update"
    champ_predictor = Predictor(champion, model_name=name, model_version=resolved.version, trust_modules=trust)
    drift = run_drift(
        champ_predictor, model=f"models:/{name}@{alias}", table=None, version=None, since=None, cfg=cfg.monitor,
        out_dir=reports,
    )  # fmt: skip
    changes = table_changes(cfg.data.table, v0, cfg.data.key, snap.version)
    kept, bundle, seconds, resolved_cfg = _challenger(
        cfg, champion, snap, changes, wd, chosen=strategy or cfg.update.strategy, spark=spark, progress=progress
    )
    threshold = choose_threshold(resolved_cfg, snap, bundle, trust)
    added = {f.path for f in changes.added.fragments}
    evaluations = {
        who: _evaluate_slices(b, snap, added, resolved_cfg, trust)
        for who, b in (("champion", champion), ("challenger", bundle))
    }
    scores: dict[str, dict[str, float | None]] = {
        who: {k: r.metrics.get(f"test_{metric}") if r is not None else None for k, r in parts.items()}
        for who, parts in evaluations.items()
    }
    confusion = {who: _confusion(parts["current"]) for who, parts in evaluations.items()}
    promoted, verdict = _gate(cfg, scores, metric)
    return _register(
        cfg, wd, bundle=bundle, parent=resolved, champion=champion, snap=snap, parent_table_version=v0,
        strategy=kept, promoted=promoted, verdict=verdict, scores=scores, confusion=confusion, metric=metric,
        drift=drift, threshold=threshold, seconds=seconds, reports=reports,
    )  # fmt: skip


def _gate(cfg: Config, scores: dict[str, dict[str, float | None]], metric: str) -> tuple[bool, str]:
    u = cfg.update
    champ, chal = scores["champion"], scores["challenger"]
    if chal["current"] is None or champ["current"] is None:
        return False, f"no {metric} on the current test split to compare"
    gain = chal["current"] - champ["current"]
    if gain < u.min_improvement:
        return False, (
            f"not promoted: test {metric} {chal['current']:.4f} against the champion's {champ['current']:.4f} "
            f"(needs +{u.min_improvement:g})"
        )
    if chal["old"] is not None and champ["old"] is not None and champ["old"] - chal["old"] > u.max_regression:
        return False, (
            f"not promoted: it loses {champ['old'] - chal['old']:.4f} {metric} on the old rows (at most "
            f"{u.max_regression:g} allowed)"
        )
    return True, f"promoted: test {metric} {chal['current']:.4f} against the champion's {champ['current']:.4f}"


def _register(
    cfg: Config,
    wd: Path,
    *,
    bundle: Any,
    parent: Any,
    champion: Any,
    snap: Snapshot,
    parent_table_version: int | None,
    strategy: str,
    promoted: bool,
    verdict: str,
    scores: dict[str, dict[str, float | None]],
    confusion: dict[str, Any],
    metric: str,
    drift: Any,
    threshold: dict[str, float],
    seconds: dict[str, float],
    reports: Path,
) -> UpdateResult:
    """Register the challenger (as @champion when promoted, else @challenger) with the chain in its lineage."""
    from lakenet._version import __version__
    from lakenet.tracking.store import start_run

    name = cfg.registry.name
    alias = cfg.registry.alias if promoted else cfg.update.challenger_alias
    lineage = {
        "lakenet.table": snap.uri,
        "lakenet.table_version": snap.version,
        "lakenet.table_fingerprint": snap.fingerprint,
        "lakenet.config_hash": config_hash(cfg),
        "lakenet.version": __version__,
        "lakenet.engine": cfg.engine.type,
        "lakenet.parent_version": parent.version,
        "lakenet.parent_table_version": parent_table_version,
        "lakenet.update_strategy": strategy,
        "lakenet.update_verdict": verdict,
        "lakenet.drift": drift.verdict,
    }
    bundle.lineage = {k[len("lakenet.") :]: v for k, v in lineage.items()}
    flat = {f"{model}_{part}_{metric}": v for model, parts in scores.items() for part, v in parts.items()}
    bundle.metrics = {**{k: v for k, v in flat.items() if v is not None}, **threshold}
    report = _write_report(reports, name, parent.version, champion, bundle, scores, confusion, metric, verdict, drift)
    experiment = cfg.tracking.experiment or name
    with start_run(experiment, f"update-{name}", tags=lineage) as run:
        bundle_dir = bundle.save(wd / ".lakenet" / "bundles" / run.run_id)
        run.log_metrics({**bundle.metrics, **seconds})
        run.log_artifact(report, "reports")
        version = run.register_bundle(
            bundle_dir,
            name=name,
            alias=alias,
            signature=bundle.signature(),
            requirements=bundle.requirements(),
            tags={
                **lineage,
                "lakenet.metrics": json.dumps(bundle.metrics),
                "lakenet.run_id": run.run_id,
                "lakenet.task": bundle.preprocessor.label.task,
                "lakenet.signature": json.dumps(bundle.signature()),
            },
            allow_incompatible=True,  # the gate decided; an update keeps the champion's inputs
        )
    return UpdateResult(
        name,
        promoted,
        verdict,
        strategy,
        str(parent.version),
        version,
        alias,
        (parent_table_version, snap.version or 0),
        metric,
        scores,
        drift.verdict,
        report,
        seconds,
        run.run_id,
    )


def _write_report(
    out: Path,
    name: str,
    champion_version: Any,
    champion: Any,
    challenger: Any,
    scores: dict[str, Any],
    confusion: dict[str, Any],
    metric: str,
    verdict: str,
    drift: Any,
) -> Path:
    """Champion against challenger: the headline metric on each slice, learning curves, the verdict."""
    import jinja2

    out.mkdir(parents=True, exist_ok=True)
    curves = _curves_svg(champion, challenger)
    template = jinja2.Environment(autoescape=True).from_string(
        """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Update: {{ name }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}
table{border-collapse:collapse}</style></head><body><h1>Update of {{ name }} (champion version {{ cv }})</h1>
<p><b>{{ verdict }}</b>. Drift on the new rows: {{ drift }}.</p>
<table><tr><th>model</th><th>current test rows</th><th>new rows</th><th>old rows</th></tr>
{% for model, parts in scores.items() %}<tr><td>{{ model }}</td>{% for part in ["current", "new", "old"] %}
<td>{{ "—" if parts[part] is none else "%.4f"|format(parts[part]) }}</td>{% endfor %}</tr>{% endfor %}
</table><p>Metric: test {{ metric }} on each slice of the current table.</p>
<h2>Learning curves</h2>{{ curves }}
{% for model, (classes, cm) in confusion.items() if cm %}<h2>Confusion matrix: {{ model }} (current test rows)</h2>
<table><tr><th>true \\ predicted</th>{% for c in classes %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in cm %}<tr><th>{{ classes[loop.index0] }}</th>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}</body></html>"""
    )
    path = out / "update.html"
    path.write_text(
        template.render(
            name=name,
            cv=champion_version,
            verdict=verdict,
            drift=drift.verdict,
            scores=scores,
            confusion=confusion,
            metric=metric,
            curves=curves,
        ),
        encoding="utf-8",
    )
    return path


def _curves_svg(champion: Any, challenger: Any) -> Any:
    """Validation loss per epoch of both models: an inline SVG in the reports' style, with fixed margins (a tight
    layout draws the figure twice)."""
    from matplotlib.figure import Figure

    from lakenet.reports.charts import PALETTE, figure_svg, styled

    with styled():
        fig = Figure(figsize=(6, 3))
        ax = fig.subplots()
        for i, (label, b) in enumerate((("champion", champion), ("challenger", challenger))):
            hist = b.training.get("history", [])
            if hist:
                ax.plot([h["epoch"] for h in hist], [h.get("val_loss", float("nan")) for h in hist], marker="o",
                        color=PALETTE[i], label=f"{label} val_loss")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.12, right=0.98, top=0.95, bottom=0.17)
        return figure_svg(fig)
