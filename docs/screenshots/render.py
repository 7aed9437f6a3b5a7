"""Renders the report fixtures in inputs/ to HTML and takes headless-Chromium screenshots of them.

Usage: python docs/screenshots/render.py OUT_DIR SUFFIX   (e.g. /tmp/shots after -> profile-after.png)
The inputs are real outputs of `lakenet demo` (digits: images, classification), a regression `fit` on a CSV
with missing values (houses) and `lakenet tune` on the wine data, so before/after compare like with like."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from lakenet.data.profile import Profile
from lakenet.evaluation.report import Evaluation
from lakenet.reports import evaluation_html, profile_html, tune_html
from lakenet.tuning.summary import TuneSummary

HERE = Path(__file__).parent
SHOTS = {
    "profile": (lambda d: profile_html(Profile.from_dict(d)), "profile-digits.json"),
    "profile-tabular": (lambda d: profile_html(Profile.from_dict(d)), "profile-houses.json"),
    "evaluation": (lambda d: evaluation_html(Evaluation.from_dict(d)), "evaluation-digits.json"),
    "evaluation-regression": (lambda d: evaluation_html(Evaluation.from_dict(d)), "evaluation-houses.json"),
    "tune": (lambda d: tune_html(TuneSummary.from_dict(d)), "tune-wine.json"),
}


def main(out: Path, suffix: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, (render, fixture) in SHOTS.items():
        html_path = out / f"{name}-{suffix}.html"
        html_path.write_text(render(json.loads((HERE / "inputs" / fixture).read_text())), encoding="utf-8")
        png = out / f"{name}-{suffix}.full.png"
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--hide-scrollbars", f"--screenshot={png}",
             "--window-size=1280,8000", html_path.as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
        _shrink(png, HERE / f"{name}-{suffix}.png")


def _shrink(src: Path, dst: Path) -> None:
    """Crop the empty page bottom, halve the size and quantise: a readable PNG of at most a few hundred KB."""
    img = Image.open(src).convert("RGB")
    bg = img.getpixel((5, img.height - 5))
    rows = [y for y in range(img.height) if any(img.getpixel((x, y)) != bg for x in range(0, img.width, 8))]
    img = img.crop((0, 0, img.width, min(img.height, (rows[-1] if rows else img.height) + 16)))
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
