"""Synthetic card transactions with a known, documented fraud-generating process.

Each transaction is drawn independently:

- `merchant_category` ~ Categorical(CATEGORY_SHARES).
- `amount_usd` ~ LogNormal(mu = CATEGORY_LOG_AMOUNT[category], sigma = 1.0), clipped to
  [0.5, 50,000] USD.
- `hour_of_day`: with p = 0.85 a daytime hour ~ round(Normal(14, 4)) mod 24, else uniform.
- `account_age_days` ~ round(Exponential(mean 900)), clipped to [0, 36,500].
- `txn_count_24h` (velocity) ~ Poisson(2), plus Poisson(12) with p = 0.04 (bursts).
- `distance_from_home_km` ~ LogNormal(1.5, 1.3), clipped to [0, 20,000].
- `card_present` ~ Bernoulli(0.75), Bernoulli(0.05) for `online_gaming` and `electronics`
  bought online (half of electronics).
- `foreign_transaction` ~ Bernoulli(0.03), Bernoulli(0.7) when distance > 1,500 km.
- `merchant_risk_score` ~ Beta(2, 8) (an upstream score; optional at serving time).

Fraud ~ Bernoulli(sigmoid(z)) with
    z = -5.6 + 0.45 * log1p(amount) + 1.1 * [hour < 6] + 1.4 * [age < 30 days]
        + 0.18 * min(velocity, 20) - 1.2 * card_present + 0.9 * foreign
        + 0.6 * log1p(distance) / log1p(20000) * 3 + 2.5 * (risk - 0.2)
        + CATEGORY_RISK[category]
        + 1.0 * [amount > 1000 and not card_present and age < 90]   (an interaction)
which gives a fraud rate of a few percent, like real card portfolios.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CATEGORIES = [
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "jewelry",
    "online_gaming",
    "other",
]
CATEGORY_SHARES = [0.26, 0.2, 0.12, 0.07, 0.1, 0.03, 0.06, 0.16]
CATEGORY_LOG_AMOUNT = {
    "grocery": 3.6,
    "restaurant": 3.4,
    "fuel": 3.7,
    "travel": 5.8,
    "electronics": 5.2,
    "jewelry": 6.0,
    "online_gaming": 3.2,
    "other": 4.0,
}
CATEGORY_RISK = {
    "grocery": -0.6,
    "restaurant": -0.4,
    "fuel": -0.2,
    "travel": 0.3,
    "electronics": 0.7,
    "jewelry": 0.9,
    "online_gaming": 0.8,
    "other": 0.0,
}

FEATURES: list[dict[str, Any]] = [
    {
        "name": "amount_usd",
        "type": "float",
        "unit": "USD",
        "minimum": 0.0,
        "maximum": 50000.0,
        "transform": "log1p",
        "description": "Transaction amount",
    },
    {
        "name": "hour_of_day",
        "type": "int",
        "unit": "hour",
        "minimum": 0,
        "maximum": 23,
        "description": "Local hour of the transaction",
    },
    {
        "name": "merchant_category",
        "type": "category",
        "categories": CATEGORIES,
        "description": "Merchant category",
    },
    {
        "name": "account_age_days",
        "type": "int",
        "unit": "day",
        "minimum": 0,
        "maximum": 36500,
        "description": "Age of the card account",
    },
    {
        "name": "txn_count_24h",
        "type": "int",
        "unit": "count",
        "minimum": 0,
        "maximum": 1000,
        "description": "Transactions on this card in the previous 24 hours (velocity)",
    },
    {
        "name": "distance_from_home_km",
        "type": "float",
        "unit": "km",
        "minimum": 0.0,
        "maximum": 20000.0,
        "transform": "log1p",
        "description": "Distance between the merchant and the cardholder's home",
    },
    {"name": "card_present", "type": "bool", "description": "Card physically present"},
    {
        "name": "foreign_transaction",
        "type": "bool",
        "description": "Merchant country differs from the card's",
    },
    {
        "name": "merchant_risk_score",
        "type": "float",
        "unit": "probability",
        "minimum": 0.0,
        "maximum": 1.0,
        "required": False,
        "default": 0.2,
        "description": "Upstream merchant risk score; defaults to the portfolio mean",
    },
]


def generate(n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Draw `n` transactions and their fraud labels (1 = fraud)."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARES)
    cat_names = np.array(CATEGORIES)[cat]
    log_mu = np.array([CATEGORY_LOG_AMOUNT[c] for c in CATEGORIES])[cat]
    amount = np.clip(rng.lognormal(log_mu, 1.0), 0.5, 50000.0).round(2)
    daytime = rng.random(n) < 0.85
    hour = np.where(daytime, np.round(rng.normal(14, 4, n)) % 24, rng.integers(0, 24, n))
    hour = hour.astype(np.int64)
    age = np.clip(np.round(rng.exponential(900, n)), 0, 36500).astype(np.int64)
    velocity = rng.poisson(2, n) + (rng.random(n) < 0.04) * rng.poisson(12, n)
    distance = np.clip(rng.lognormal(1.5, 1.3, n), 0, 20000).round(1)
    online = np.isin(cat_names, ["online_gaming"]) | (
        np.isin(cat_names, ["electronics"]) & (rng.random(n) < 0.5)
    )
    card_present = np.where(online, rng.random(n) < 0.05, rng.random(n) < 0.75)
    foreign = np.where(distance > 1500, rng.random(n) < 0.7, rng.random(n) < 0.03)
    risk = rng.beta(2, 8, n).round(3)

    z = (
        -5.6
        + 0.45 * np.log1p(amount)
        + 1.1 * (hour < 6)
        + 1.4 * (age < 30)
        + 0.18 * np.minimum(velocity, 20)
        - 1.2 * card_present
        + 0.9 * foreign
        + 0.6 * np.log1p(distance) / np.log1p(20000) * 3
        + 2.5 * (risk - 0.2)
        + np.array([CATEGORY_RISK[c] for c in CATEGORIES])[cat]
        + 1.0 * ((amount > 1000) & ~card_present & (age < 90))
    )
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    records = [
        {
            "amount_usd": float(amount[i]),
            "hour_of_day": int(hour[i]),
            "merchant_category": str(cat_names[i]),
            "account_age_days": int(age[i]),
            "txn_count_24h": int(velocity[i]),
            "distance_from_home_km": float(distance[i]),
            "card_present": bool(card_present[i]),
            "foreign_transaction": bool(foreign[i]),
            "merchant_risk_score": float(risk[i]),
        }
        for i in range(n)
    ]
    return records, labels
