"""The end-to-end demo: scikit-learn's handwritten digits as a PNG folder (plus corrupt files) → Delta →
profile → CNN on 2 DDP workers → evaluate → register → score into a predictions table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["DemoResult", "run_demo", "write_digits_folder"]


def write_digits_folder(root: Path, *, corrupt: int = 3, limit: int | None = None) -> int:
    """Write sklearn's 8×8 digits as PNGs in root/<digit>/, plus `corrupt` broken files; returns images written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images if limit is None else digits.images[:limit]
    for i, (img, target) in enumerate(zip(images, digits.target, strict=False)):
        d = root / str(int(target))
        d.mkdir(parents=True, exist_ok=True)
        px = (np.asarray(img) * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 → 0..255
        Image.fromarray(px, mode="L").save(d / f"{i:05d}.png")
    # Deliberately bad inputs: quarantined with a reason, never a crash.
    bad = [b"", b"this is not an image", None]
    for j in range(corrupt):
        d = root / str(j % 10)
        d.mkdir(parents=True, exist_ok=True)
        blob = bad[j % len(bad)]
        if blob is None:  # a truncated PNG
            good = next(root.rglob("*.png")).read_bytes()
            blob = good[: len(good) // 2]
        (d / f"corrupt-{j}.png").write_bytes(blob)
    return len(images)


@dataclass(frozen=True)
class DemoResult:
    config: Path
    model_uri: str
    version: str
    metrics: dict[str, float]
    reports: dict[str, Path]
    predictions: str
    predicted_rows: int
    quarantine: str | None


def run_demo(workdir: Path, *, workers: int = 2, epochs: int = 15, limit: int | None = None,
             log: Any = print) -> DemoResult:  # fmt: skip
    from lakenet import api

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    images = workdir / "digits_images"
    if not images.exists():
        n = write_digits_folder(images, limit=limit)
        log(f"wrote {n} digit images (+3 corrupt files) to {images}")
    table = workdir / "data" / "digits"
    res = api.ingest(images, table)
    log(f"ingested {res.rows_written} new rows into Delta table {res.table} (version {res.version})")
    raw = yaml.safe_load(api.init_config(str(table), label="label", name="digits", config_dir=workdir))
    raw["features"]["image"].update(size=16, channels=1)
    raw["model"].update(architecture="resnet", width=32, depth=2, dropout=0.1)
    raw["trainer"].update(epochs=epochs, batch_size=64, learning_rate=0.003)
    raw["engine"] = {"type": "local", "workers": workers}
    config = workdir / "digits.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    log(f"config: {config}")
    prof = api.profile(config, workdir=workdir)
    log(f"profile: {prof.html_path} ({prof.profile.bad_rows.total} bad rows → {prof.quarantine})")
    fit = api.fit(config, workdir=workdir)
    log(
        f"registered {fit.model_uri} (version {fit.version}); test metrics: "
        + ", ".join(f"{k} {v:.4f}" for k, v in sorted(fit.metrics.items()) if k.startswith("test_"))
    )
    out = workdir / "data" / "digits_scored"
    pred = api.predict(fit.model_uri, str(table), str(out), workdir=workdir)
    log(f"scored {pred.rows} rows into {pred.table} ({pred.bad_rows} unreadable rows kept with their error)")
    return DemoResult(config, fit.model_uri, fit.version, fit.metrics, fit.reports, pred.table, pred.rows,
                      prof.quarantine)  # fmt: skip
