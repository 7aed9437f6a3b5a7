"""From a validated config to a TrainJob: pin the table version, resolve a pretrained backbone, scan the table
once, size the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakenet.config.schema import Config, ImageFeature
from lakenet.data.catalog import learn_catalog
from lakenet.data.holdout import learn_holdout
from lakenet.data.infer import Inference, resolve_features
from lakenet.data.scan import ScanResult, check_schema, scan_table
from lakenet.data.sources import Snapshot, open_table
from lakenet.errors import ConfigError
from lakenet.models.backbone import ResolvedBackbone, resolve_backbone
from lakenet.models.registry import model_spec
from lakenet.models.spec import ModelSpec
from lakenet.training.loop import TrainJob
from lakenet.training.transfer import PretrainedInit, plan_pretrained

__all__ = ["BackboneResolver", "TrainPlan", "TrainingPolicy", "plan_training", "training_policy"]

# A registered backbone (models:/…, runs:/…) → (its local bundle directory, its version): the caller's registry.
BackboneResolver = Callable[[str], tuple[Path, str | None]]

_INIT_FILE = "pretrained.safetensors"


@dataclass(frozen=True)
class TrainPlan:
    """One scan of one table version for one config: what every training job of that config needs."""

    config: Config
    snapshot: Snapshot
    scan: ScanResult
    spec: ModelSpec
    backbone: ResolvedBackbone | None = None
    pretrained: PretrainedInit | None = None
    lineage: dict[str, Any] = field(default_factory=dict)  # lakenet.* tags: backbone, embedding provenance
    inference: Inference | None = None  # features: {include: auto}: what was inferred, and what was left out
    split: Any = None  # a recommender's per-user holdout (None: the config's key hash)
    catalog: Any = None  # a recommender's item catalogue (its features and popularity per item)

    def job(
        self,
        *,
        output_dir: str | Path,
        checkpoint_dir: str | Path,
        resume: bool = False,
        refit: bool = False,
        config: Config | None = None,
    ) -> TrainJob:
        """A TrainJob; `config` may differ from the planned one in anything but data and features (a tuning
        trial's learning rate, a refit's epochs), which the scan does not depend on."""
        cfg = config or self.config
        pre = self.scan.preprocessor
        spec = model_spec(cfg, pre, self.backbone.spec if self.backbone else None)
        pretrained = self.pretrained if config is None else plan_pretrained(cfg, spec, pre, self.backbone)
        init_path = None
        initial = dict(pretrained.weights) if pretrained is not None else {}
        if self.catalog is not None:
            initial.update(self.catalog.tensors())
        if initial:
            init_path = Path(checkpoint_dir) / _INIT_FILE
            if not resume:  # a resumed run starts from its checkpoint, which holds every weight
                from safetensors.torch import save_file

                init_path.parent.mkdir(parents=True, exist_ok=True)
                save_file({k: v.detach().cpu().contiguous().clone() for k, v in initial.items()}, init_path)
        policy = training_policy(cfg, self.scan)
        return TrainJob(
            config=cfg,
            snapshot=self.snapshot,
            preprocessor=pre,
            spec=spec,
            fragment_counts=self.scan.fragment_counts,
            output_dir=str(output_dir),
            checkpoint_dir=str(checkpoint_dir),
            resume=resume,
            refit=refit,
            init_weights=str(init_path) if init_path is not None else None,
            frozen=pretrained.frozen if pretrained else (),
            param_lrs=dict(pretrained.lrs) if pretrained else {},
            watch=policy.watch,
            min_epochs=policy.min_epochs,
            class_weights=policy.class_weights,
            split=self.split,
        )


@dataclass(frozen=True)
class TrainingPolicy:
    """What the training split says about how to train: the early-stopping metric, the epochs always trained,
    the classes' loss weights, and why (for the run's tags and the console)."""

    watch: str | None
    min_epochs: int
    class_weights: tuple[float, ...] | None
    notes: tuple[str, ...] = ()


_RARE = 1 / 3  # rarest class / commonest class below this: the classes are imbalanced
_SMALL_VAL = 200


def training_policy(cfg: Config, scan: ScanResult) -> TrainingPolicy:
    """Early stopping on a metric that means something for the task (not raw loss for a rare class), not before
    a sensible minimum of epochs on a small validation split, and class weights for rare classes."""
    t = cfg.trainer
    notes = []
    pre = scan.preprocessor
    if pre.label.task == "anomaly":
        return _anomaly_policy(cfg, scan)
    counts = (scan.profile.label.by_split or {}).get("train", {})
    classes = pre.label.classes or []
    present = [counts.get(c, 0) for c in classes]
    rare = bool(classes) and min(present) < _RARE * max(present)
    weights: tuple[float, ...] | None = None
    if classes and isinstance(t.class_weights, dict):
        unknown = [c for c in t.class_weights if c not in classes]
        if unknown:
            raise ConfigError(f"trainer.class_weights names {unknown}, not classes of the label ({classes})")
        weights = tuple(float(t.class_weights.get(c, 1.0)) for c in classes)
    elif classes and t.class_weights == "auto" and rare:
        total = sum(present)
        weights = tuple(total / (len(classes) * max(n, 1)) for n in present)  # scikit-learn's "balanced"
        notes.append(
            "class weights "
            + ", ".join(f"{c}: {w:.3g}" for c, w in zip(classes, weights, strict=True))
            + " (the rarest class is under a third of the commonest)"
        )
    auto = ("val_pr_auc" if len(classes) == 2 else "val_balanced_accuracy") if rare else "val_loss"
    watch, min_epochs, stop_notes = _stopping(cfg, scan, auto)
    return TrainingPolicy(watch, min_epochs, weights, (*notes, *stop_notes))


def _stopping(cfg: Config, scan: ScanResult, auto: str) -> tuple[str | None, int, tuple[str, ...]]:
    """The early-stopping metric (`auto` where the config says auto) and the epochs always trained."""
    t, es = cfg.trainer, cfg.trainer.early_stopping
    if es is None:
        return None, 1, ()
    watch = auto if es.metric == "auto" else es.metric
    val_rows = scan.profile.splits.get("val", 0)
    if es.min_epochs == "auto":
        min_epochs = max(1, t.epochs // (2 if val_rows < _SMALL_VAL else 4))
    else:
        min_epochs = min(es.min_epochs, t.epochs)
    return (
        watch,
        min_epochs,
        (f"early stopping on {watch}, not before epoch {min_epochs} ({val_rows} validation rows)",),
    )


def _anomaly_policy(cfg: Config, scan: ScanResult) -> TrainingPolicy:
    """An anomaly model stops on the precision of finding the validation split's known anomalies where it has
    some, else on its reconstruction loss; no class weights."""
    positive = scan.preprocessor.label.positive
    val_counts = (scan.profile.label.by_split or {}).get("val", {})
    # both kinds of known rows: the figure is about telling them apart
    labelled = positive is not None and val_counts.get(positive, 0) > 0 and any(v != positive for v in val_counts)
    watch, min_epochs, notes = _stopping(cfg, scan, "val_pr_auc" if labelled else "val_loss")
    return TrainingPolicy(watch, min_epochs, None, notes)


def _backbone(cfg: Config, resolve_ref: BackboneResolver | None) -> ResolvedBackbone | None:
    b = cfg.model.backbone
    if b is None:
        return None
    if cfg.model.module is not None:
        raise ConfigError("model.backbone and model.module cannot be combined: load pretrained weights in your module")
    bundle_dir, version = None, None
    if b.source.startswith(("models:/", "runs:/")):
        if resolve_ref is None:
            raise ConfigError(f"model.backbone {b.source} is a registry reference, and no registry was given to plan")
        bundle_dir, version = resolve_ref(b.source)
    resolved = resolve_backbone(b, bundle_dir=bundle_dir, version=version)
    images = {n: f for n, f in cfg.features.inputs.items() if isinstance(f, ImageFeature)}
    if resolved.image is not None:
        if not images:
            raise ConfigError(
                f"model.backbone {b.source} is an image model, but the config has no image feature: add one, "
                "e.g. features: {image: {type: image}}"
            )
        name, feat = next(iter(images.items()))
        want_size, want_ch = resolved.image["size"], resolved.image["channels"]
        if feat.size != want_size or feat.channels != want_ch:
            raise ConfigError(
                f"model.backbone {b.source} expects {want_size}×{want_size} images with {want_ch} channel(s), but "
                f"features.{name} is {feat.size}×{feat.size} with {feat.channels}: set features.{name}.size: "
                f"{want_size} and channels: {want_ch}"
            )
    elif images and resolved.kind in ("lakenet", "weights") and resolved.spec.get("architecture") == "mlp":
        raise ConfigError(f"model.backbone {b.source} is a tabular (mlp) model; it cannot read image features")
    return resolved


def _embedding_lineage(snap: Snapshot) -> dict[str, Any]:
    """Where an embedding table's vectors came from (recorded by `lakenet featurize` in its commits)."""
    if snap.format != "delta":
        return {}
    try:
        from deltalake import DeltaTable

        for commit in DeltaTable(snap.uri, version=snap.version).history():
            if "lakenet.featurizer" in commit:
                return {
                    "lakenet.features_from": commit.get("lakenet.input"),
                    "lakenet.features_from_version": commit.get("lakenet.input_version"),
                    "lakenet.featurizer": commit.get("lakenet.featurizer"),
                }
    except Exception:  # lineage is best effort; the table itself was readable
        return {}
    return {}


def plan_training(
    cfg: Config,
    *,
    version: int | None = None,
    min_fragments: int | None = None,
    engine: Any = None,
    resolve_backbone: BackboneResolver | None = None,
) -> TrainPlan:
    """Open the table at `version` (default: the config's, else the latest), cut it into at least
    `min_fragments` pieces (default: 4 per training worker) and scan it: profile, bad rows, preprocessor; and
    resolve the pretrained backbone (a registered one through `resolve_backbone`) and text encoders, if any."""
    snap = open_table(cfg.data.table, version if version is not None else cfg.data.version)
    cfg, inference = resolve_features(cfg, snap)
    backbone = _backbone(cfg, resolve_backbone)
    # Enough fragments for every worker to get a share, even of a table stored as one big row group.
    snap = snap.subdivided(min_fragments if min_fragments is not None else 4 * cfg.engine.workers)
    # The whole-table pass runs where the engine runs work (Spark: on the executors), partial results merged.
    where = engine.map_fragments if engine is not None else None
    split = None
    if cfg.features.label.task == "recommendation":
        check_schema(cfg, snap)  # before the holdout pass reads the user and time columns
        rec = cfg.recommend
        split = learn_holdout(snap, user=rec.user, time=rec.timestamp, key=cfg.data.key, holdout=rec.holdout,
                              map_fragments=where)  # fmt: skip
    result = scan_table(cfg, snap, map_fragments=where, split=split)
    if backbone is not None:
        # The normalisation the backbone was trained with (the config's, if given), not this table's.
        b, own = cfg.model.backbone, backbone.image or {}
        assert b is not None
        mean, std = (b.mean, b.std) if b.mean is not None else (own.get("mean"), own.get("std"))
        if mean is not None and std is not None:
            result.preprocessor = result.preprocessor.with_image_normalisation(mean, std)
    spec = model_spec(cfg, result.preprocessor, backbone.spec if backbone else None)
    catalog = None
    if spec.recommend is not None and split is not None:
        r = spec.recommend
        catalog = learn_catalog(snap, result.preprocessor, split, time=cfg.recommend.timestamp,
                                categories=r.item_categories, numeric=r.item_numeric, map_fragments=where)  # fmt: skip
    pretrained = plan_pretrained(cfg, spec, result.preprocessor, backbone)
    lineage = {f"lakenet.{k}": v for k, v in (backbone.lineage if backbone else {}).items()}
    lineage.update(_embedding_lineage(snap))
    if inference is not None:
        lineage["lakenet.features"] = ",".join(f"{n}:{f.type}" for n, f in cfg.features.inputs.items())
    return TrainPlan(cfg, snap, result, spec, backbone, pretrained, lineage, inference, split, catalog)
