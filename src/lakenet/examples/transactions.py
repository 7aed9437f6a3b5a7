"""A card-transactions table the way companies have them: a unique transaction id, customers who come back,
ISO timestamps over 90 days, amounts with missing values, a merchant category with missing values, a country,
and a rare fraud label (about 2 %) that depends non-linearly on the amount, the hour of day and the category.

`drift` shifts the mix and the fraud pattern (an appended batch for update and drift examples): more travel, online
and foreign cards, and fraud moves from night-time electronics to daytime high amounts in travel and US cards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CATEGORIES", "transactions_frame", "write_transactions_csv"]

CATEGORIES = ["grocery", "fuel", "restaurants", "electronics", "travel", "jewelry", "online", "pharmacy"]
_COUNTRIES = ["DE", "FR", "IT", "ES", "NL", "PL", "US", "GB"]
_START = pd.Timestamp("2026-01-01T00:00:00Z")


def transactions_frame(
    rows: int = 20_000,
    *,
    seed: int = 0,
    fraud_rate: float = 0.02,
    drift: bool = False,
    start_id: int = 0,
    start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The table as a DataFrame (see the module docstring)."""
    rng = np.random.default_rng(seed)
    customers = max(50, rows // 7)
    customer = rng.integers(0, customers, rows)
    mix = [0.24, 0.14, 0.18, 0.1, 0.07, 0.04, 0.17, 0.06]
    where = [0.3, 0.15, 0.12, 0.1, 0.1, 0.08, 0.08, 0.07]
    if drift:  # the season changed: more travel and online spending, more foreign cards
        mix, where = [0.16, 0.1, 0.14, 0.1, 0.2, 0.04, 0.22, 0.04], [0.2, 0.12, 0.1, 0.08, 0.08, 0.06, 0.24, 0.12]
    category = rng.choice(CATEGORIES, rows, p=mix)
    country = rng.choice(_COUNTRIES, rows, p=where)
    typical = {"grocery": 40, "fuel": 60, "restaurants": 35, "electronics": 300, "travel": 450, "jewelry": 600,
               "online": 50, "pharmacy": 25}  # fmt: skip
    amount = np.array([rng.lognormal(np.log(typical[c]), 0.8) for c in category]).round(2)
    # Activity peaks in the day; a long tail at night.
    hour = rng.choice(24, rows, p=_hour_profile())
    seconds = rng.integers(0, 90, rows) * 86400 + hour * 3600 + rng.integers(0, 3600, rows)
    when = (start or _START) + pd.to_timedelta(np.sort(seconds), unit="s")
    hour = when.hour.to_numpy()
    night = (hour < 5) | (hour >= 23)
    log_amount = np.log1p(amount)
    if not drift:
        risk = (
            2.2 * night * np.isin(category, ["electronics", "jewelry", "online"])
            + 1.6 * (log_amount > np.log1p(800))
            + 1.8 * ((amount < 3) & (category == "online"))  # card testing: tiny online payments
            + 0.9 * np.sin(log_amount * 1.7) * (category == "travel")
            - 0.6 * np.isin(category, ["grocery", "pharmacy"])
        )
    else:
        risk = 2.4 * (~night) * (category == "travel") * (log_amount > np.log1p(300)) + 1.2 * (country == "US")
    score = risk + rng.normal(0, 0.9, rows)
    fraud = score >= np.quantile(score, 1 - fraud_rate)
    amount_col = amount.astype(object)
    amount_col[rng.random(rows) < 0.02] = None  # 2 % missing amounts
    category_col = category.astype(object)
    category_col[rng.random(rows) < 0.01] = None  # 1 % missing categories
    return pd.DataFrame(
        {
            "transaction_id": [f"TX{start_id + i:09d}" for i in range(rows)],
            "customer_id": [f"C{c:06d}" for c in customer],
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": pd.array(amount_col, dtype="Float64"),
            "merchant_category": category_col,
            "country": country,
            "is_fraud": fraud.astype(int),
        }
    )


def _hour_profile() -> np.ndarray:
    hours = np.arange(24)
    day = np.exp(-0.5 * ((hours - 14) / 4.5) ** 2)
    p = 0.03 + day
    return p / p.sum()


def write_transactions_csv(
    path: str | Path, *, rows: int = 20_000, seed: int = 0, drift: bool = False, start_id: int = 0
) -> Path:
    """Write the table as a CSV file (blank cells for missing values)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = _START + pd.Timedelta(days=90) if start_id else None
    transactions_frame(rows, seed=seed, drift=drift, start_id=start_id, start=start).to_csv(out, index=False)
    return out
