"""Rendered shapes: grey 32×32 images of geometric figures at random positions, sizes, rotations, contrasts
and noise, as a folder of PNGs with one sub-folder per class (what `lakenet ingest` reads)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["SOURCE_SHAPES", "TARGET_SHAPES", "render_shape", "write_shapes_folder"]

# The source task has plenty of rows; the target task's classes are different shapes, with few labels.
SOURCE_SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
TARGET_SHAPES = ("hexagon", "diamond", "arrow", "crescent")

_SCALE = 4  # drawn at 4× and downsampled: anti-aliased edges


def _polygon(n: int, r: float, rot: float, cx: float, cy: float, *, stretch: float = 1.0) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / n), cy + stretch * r * math.sin(rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _rotate(points: list[tuple[float, float]], rot: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def render_shape(shape: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One (size, size) uint8 image of `shape`."""
    from PIL import Image, ImageDraw

    big = size * _SCALE
    bg, fg = int(rng.integers(0, 90)), int(rng.integers(150, 256))
    im = Image.new("L", (big, big), bg)
    d = ImageDraw.Draw(im)
    r = float(rng.uniform(0.25, 0.38)) * big
    cx, cy = (big / 2 + float(rng.uniform(-0.1, 0.1)) * big for _ in range(2))
    rot = float(rng.uniform(0, 2 * math.pi))
    w = max(2, int(r * 0.3))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=w)
    elif shape == "square":
        d.polygon(_polygon(4, r, rot, cx, cy), fill=fg)
    elif shape == "triangle":
        d.polygon(_polygon(3, r, rot, cx, cy), fill=fg)
    elif shape == "hexagon":
        d.polygon(_polygon(6, r, rot, cx, cy), fill=fg)
    elif shape == "diamond":
        pts = [(0.0, -r), (0.55 * r, 0.0), (0.0, r), (-0.55 * r, 0.0)]
        d.polygon(_rotate(pts, rot, cx, cy), fill=fg)
    elif shape == "star":
        pts = [
            (
                (r if i % 2 == 0 else 0.45 * r) * math.cos(math.pi * i / 5),
                (r if i % 2 == 0 else 0.45 * r) * math.sin(math.pi * i / 5),
            )
            for i in range(10)
        ]
        d.polygon(_rotate(pts, rot, cx, cy), fill=fg)
    elif shape == "cross":
        t = 0.3 * r
        pts = [
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]
        d.polygon(_rotate(pts, rot, cx, cy), fill=fg)
    elif shape == "arrow":
        t = 0.22 * r
        pts = [(-r, -t), (0.1 * r, -t), (0.1 * r, -0.6 * r), (r, 0.0), (0.1 * r, 0.6 * r), (0.1 * r, t), (-r, t)]
        d.polygon(_rotate(pts, rot, cx, cy), fill=fg)
    elif shape == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        ox, oy = cx + 0.45 * r * math.cos(rot), cy + 0.45 * r * math.sin(rot)
        d.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=bg)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    arr = np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    arr += rng.normal(0, 10, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def write_shapes_folder(
    root: str | Path, shapes: Sequence[str], *, per_class: int, seed: int = 0, size: int = 32
) -> Path:
    """`root/<shape>/<shape>-00000.png` ...; returns `root`."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for shape in shapes:
        d = root / shape
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(render_shape(shape, rng, size), mode="L").save(d / f"{shape}-{i:05d}.png")
    return root
