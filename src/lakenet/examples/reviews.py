"""Short product reviews written from templates, labelled positive or negative: a text-classification table
the project makes itself. Some reviews say it with a negation ("not bad at all", "not worth it"), so word
counts alone do not solve it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_reviews_csv"]

_PRODUCTS = [
    "headphones", "coffee maker", "backpack", "phone case", "desk lamp", "blender", "keyboard", "water bottle",
    "running shoes", "tent", "vacuum cleaner", "toaster", "monitor", "office chair", "umbrella", "jacket",
]  # fmt: skip
_POSITIVE = [
    "The {p} is {good}.", "I love this {p}, it is {good}.", "Really {good} {p}, would buy again.",
    "Five stars: the {p} works {well}.", "{Good} quality, the {p} arrived quickly.",
    "Not bad at all, the {p} is {good}.",
    "My old {p} broke, this one is far better and {good}.", "Exceeded my expectations, the {p} works {well}.",
    "Worth every penny, a {good} {p}.", "No complaints, the {p} does the job {well}.",
]  # fmt: skip
_NEGATIVE = [
    "The {p} is {bad}.", "I regret buying this {p}, it is {bad}.", "Really {bad} {p}, returned it.",
    "One star: the {p} works {badly}.", "{Bad} quality, the {p} broke in a week.", "Not worth it, the {p} is {bad}.",
    "Not great, the {p} stopped working.", "The {p} arrived damaged and {bad}.", "Would not recommend this {p}.",
    "Waste of money, the {p} performs {badly}.",
]  # fmt: skip
_GOOD = ["great", "excellent", "sturdy", "comfortable", "reliable", "fantastic", "well made", "solid"]
_WELL = ["well", "perfectly", "flawlessly", "great"]
_BAD = ["terrible", "flimsy", "awful", "noisy", "disappointing", "cheap", "useless", "poorly made"]
_BADLY = ["badly", "poorly", "terribly", "inconsistently"]


def write_reviews_csv(path: str | Path, *, rows: int = 600, seed: int = 0) -> Path:
    """A CSV with columns key, product, review, sentiment (positive/negative), balanced."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        positive = i % 2 == 0
        template = str(rng.choice(_POSITIVE if positive else _NEGATIVE))
        p = str(rng.choice(_PRODUCTS))
        good, bad = str(rng.choice(_GOOD)), str(rng.choice(_BAD))
        text = template.format(
            p=p, good=good, Good=good.capitalize(), well=str(rng.choice(_WELL)), bad=bad, Bad=bad.capitalize(),
            badly=str(rng.choice(_BADLY)),
        )  # fmt: skip
        out.append(
            {"key": f"r{i:05d}", "product": p, "review": text, "sentiment": "positive" if positive else "negative"}
        )
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(out).to_csv(dest, index=False)
    return dest
