"""The transfer-learning proof: a model trained on plenty of rendered shapes, fine-tuned on a different set of
shapes with few labelled rows, against the same network trained from scratch on those rows. Both are scored on
the target task's untouched test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TransferOutcome", "run_transfer_example"]


@dataclass(frozen=True)
class TransferOutcome:
    source_test_accuracy: float
    scratch_test_accuracy: float
    finetuned_test_accuracy: float
    linear_probe_test_accuracy: float
    target_train_rows: int
    target_test_rows: int

    @property
    def gain(self) -> float:
        return self.finetuned_test_accuracy - self.scratch_test_accuracy


def run_transfer_example(
    directory: str | Path, *, quick: bool = False, seed: int = 0, log: Any = print
) -> TransferOutcome:
    """Generate both tasks, train the source model, then the target model from scratch, fine-tuned and as a
    linear probe (frozen backbone). `quick` uses fewer rows and epochs (a CI-sized run)."""
    from lakenet import api
    from lakenet.examples.shapes import SOURCE_SHAPES, TARGET_SHAPES, write_shapes_folder

    root = Path(directory).resolve()
    per_class, src_epochs = (200, 6) if quick else (400, 8)
    write_shapes_folder(root / "source_images", SOURCE_SHAPES, per_class=per_class, seed=seed)
    write_shapes_folder(root / "target_images", TARGET_SHAPES, per_class=100 if quick else 150, seed=seed + 1)
    api.ingest(root / "source_images", str(root / "shapes"))
    api.ingest(root / "target_images", str(root / "target"))
    model = {"architecture": "resnet", "width": 16, "depth": 3, "dropout": 0.1}
    features = {"label": {"column": "label"}, "image": {"type": "image", "size": 32, "channels": 1}}
    source = api.fit(
        {
            "data": {"table": str(root / "shapes")},
            "features": features,
            "model": model,
            "trainer": {
                "epochs": src_epochs,
                "batch_size": 64,
                "learning_rate": 3e-3,
                "early_stopping": None,
                "seed": seed,
            },
            "registry": {"name": "shapes"},
        },
        progress=False,
        workdir=root,
    )
    log(f"source task ({', '.join(SOURCE_SHAPES)}): test accuracy {source.metrics['test_accuracy']:.3f}")
    # Few labels: 10 % of the target rows train, 10 % validate, 80 % test.
    target_data = {"table": str(root / "target"), "split": {"train": 0.1, "val": 0.1, "test": 0.8, "seed": seed}}
    trainer = {"epochs": 40, "batch_size": 16, "learning_rate": 3e-3, "seed": seed,
               "early_stopping": {"metric": "val_accuracy", "patience": 10}}  # fmt: skip
    runs: dict[str, Any] = {}
    for name, backbone in (
        ("scratch", None),
        ("finetuned", {"source": "models:/shapes@champion", "freeze": "none", "learning_rate": 3e-4}),
        ("linear_probe", {"source": "models:/shapes@champion", "freeze": "all"}),
    ):
        runs[name] = api.fit(
            {
                "data": target_data,
                "features": features,
                "model": {**model, "backbone": backbone},
                "trainer": trainer,
                "registry": {"name": f"target_{name}"},
            },
            progress=False,
            workdir=root,
        )
        log(
            f"target task ({', '.join(TARGET_SHAPES)}), {name}: test accuracy {runs[name].metrics['test_accuracy']:.3f}"
        )
    profile = runs["scratch"]
    bundle_profile = _splits(profile.bundle_dir)
    return TransferOutcome(
        source_test_accuracy=source.metrics["test_accuracy"],
        scratch_test_accuracy=runs["scratch"].metrics["test_accuracy"],
        finetuned_test_accuracy=runs["finetuned"].metrics["test_accuracy"],
        linear_probe_test_accuracy=runs["linear_probe"].metrics["test_accuracy"],
        target_train_rows=bundle_profile.get("train", 0),
        target_test_rows=bundle_profile.get("test", 0),
    )


def _splits(bundle_dir: Path) -> dict[str, int]:
    from lakenet.models.bundle import Bundle

    return dict(Bundle.load(bundle_dir).profile.get("splits", {}))
