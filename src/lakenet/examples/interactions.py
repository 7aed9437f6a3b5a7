"""A synthetic interaction log with latent tastes, for `task: recommendation`: users and items live in a small
latent space (each item belongs to a genre, a region of it); a user picks items whose vectors match their taste,
with a pull toward popular items and some noise; each pick has a time (a user's history runs forward) and a
1–5 rating that follows the match. Items carry a genre and a price, users a country and an age band. A model
that learns the tastes recommends much better than the popularity ranking; a popularity model alone cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["interactions_frame", "write_interactions_csv"]

_START = pd.Timestamp("2026-01-01T00:00:00Z")
_COUNTRIES = ["DE", "FR", "IT", "ES", "NL", "PL", "US", "GB"]


def interactions_frame(
    users: int = 1000,
    items: int = 500,
    *,
    per_user: tuple[int, int] = (8, 40),
    dim: int = 8,
    genres: int = 12,
    seed: int = 0,
    start_user: int = 0,
) -> pd.DataFrame:
    """The log as a DataFrame, one row per interaction, in time order (see the module docstring)."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(10_000 + seed // 1000)  # items are the same across batches of one world
    centers = world.normal(size=(genres, dim))
    genre = world.integers(0, genres, items)
    item_vec = centers[genre] + 0.35 * world.normal(size=(items, dim))
    popularity = world.lognormal(0.0, 1.0, items)
    price = np.round(world.lognormal(3.0, 0.6, items) * (1 + 0.15 * (genre % 3)), 2)
    rows = []
    for u in range(start_user, start_user + users):
        liked = rng.choice(genres, 2, replace=False)
        taste = centers[liked].mean(0) + 0.3 * rng.normal(size=dim)
        country = _COUNTRIES[int(rng.integers(0, len(_COUNTRIES)))]
        age = ["18-24", "25-34", "35-49", "50+"][int(rng.integers(0, 4))]
        n = int(rng.integers(per_user[0], per_user[1] + 1))
        logits = 1.6 * item_vec @ taste / np.sqrt(dim) + 0.5 * np.log(popularity)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        picks = rng.choice(items, size=min(n, items), replace=False, p=p)
        t0 = rng.uniform(0, 60 * 86400)
        gaps = rng.exponential(2 * 86400, len(picks))
        for i, when in zip(picks, t0 + np.cumsum(gaps), strict=True):
            match = float(item_vec[i] @ taste / np.sqrt(dim))
            rating = int(np.clip(np.round(3 + 1.2 * match + rng.normal(0, 0.7)), 1, 5))
            rows.append((f"U{u:05d}", f"I{i:04d}", _START + pd.Timedelta(seconds=float(when)), rating,
                         f"g{genre[i]:02d}", float(price[i]), country, age))  # fmt: skip
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "genre", "price", "country", "age"])
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    df.insert(0, "event_id", [f"E{seed:03d}-{i:07d}" for i in range(len(df))])
    df["timestamp"] = df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return df


def write_interactions_csv(path: str | Path, users: int = 1000, items: int = 500, *, seed: int = 0) -> Path:
    """Write the log to a CSV file; its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    interactions_frame(users, items, seed=seed).to_csv(out, index=False)
    return out
