"""Comparison maths for shadow mode: agreement, score deltas, confusion, latency, verdict.

A leaf: numpy and the standard library only. The ShadowReplica feeds it one mirrored
request at a time; `report()` turns the running totals into what an operator decides on.
Quantiles come from bounded reservoirs (the most recent `window` values), so memory stays
flat however long the shadow runs.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Thresholds:
    """When the candidate may be promoted. All must hold."""

    min_compared_rows: int = 500
    min_label_agreement: float = 0.95  # against the lower bound of the 95% interval
    max_candidate_failure_rate: float = 0.01  # errors + timeouts + drops per mirrored request
    max_p99_latency_ratio: float = 2.0  # candidate p99 / primary p99


@dataclass(frozen=True)
class RowComparison:
    index: int
    primary_label: Any
    candidate_label: Any
    primary_score: float
    candidate_score: float

    @property
    def agrees(self) -> bool:
        return bool(self.primary_label == self.candidate_label)

    @property
    def abs_delta(self) -> float:
        return abs(self.candidate_score - self.primary_score)


class ShadowStats:
    def __init__(self, score_output: str, window: int = 10_000) -> None:
        self.score_output = score_output
        self.mirrored_requests = 0
        self.compared_requests = 0
        self.compared_rows = 0
        self.agreeing_rows = 0
        self.candidate_errors = 0
        self.candidate_timeouts = 0
        self.confusion: Counter[tuple[str, str]] = Counter()
        self._deltas: deque[float] = deque(maxlen=window)
        self._latency_ms = {"primary": deque(maxlen=window), "candidate": deque(maxlen=window)}

    def compare(
        self,
        primary: dict[str, list[Any]],
        candidate: dict[str, list[Any]],
        primary_latency_ms: float,
        candidate_latency_ms: float,
    ) -> list[RowComparison]:
        """Record one mirrored request; return its rows, for the caller's diff log."""
        if len(primary["label"]) != len(candidate["label"]):
            raise ValueError("primary and candidate answered a different number of rows")
        rows = [
            RowComparison(i, p_label, c_label, float(p_score), float(c_score))
            for i, (p_label, c_label, p_score, c_score) in enumerate(
                zip(
                    primary["label"],
                    candidate["label"],
                    primary[self.score_output],
                    candidate[self.score_output],
                )
            )
        ]
        self.compared_requests += 1
        self.compared_rows += len(rows)
        for row in rows:
            self.agreeing_rows += row.agrees
            self.confusion[(str(row.primary_label), str(row.candidate_label))] += 1
            self._deltas.append(row.abs_delta)
        self._latency_ms["primary"].append(primary_latency_ms)
        self._latency_ms["candidate"].append(candidate_latency_ms)
        return rows

    def report(self, thresholds: Thresholds, drops: dict[str, int]) -> dict[str, Any]:
        dropped = sum(drops.values())
        attempted = self.mirrored_requests + dropped
        failures = self.candidate_errors + self.candidate_timeouts + dropped
        agreement = self.agreeing_rows / self.compared_rows if self.compared_rows else None
        low, high = wilson_interval(self.agreeing_rows, self.compared_rows)
        latency = {
            role: quantiles(values, (0.5, 0.99)) for role, values in self._latency_ms.items()
        }
        p99_ratio = _ratio(latency["candidate"]["p99"], latency["primary"]["p99"])
        failure_rate = failures / attempted if attempted else 0.0

        reasons = []
        if self.compared_rows < thresholds.min_compared_rows:
            reasons.append(
                f"only {self.compared_rows} rows compared; need {thresholds.min_compared_rows}"
            )
        elif low < thresholds.min_label_agreement:
            reasons.append(
                f"label agreement lower bound {low:.4f} < {thresholds.min_label_agreement}"
            )
        if failure_rate > thresholds.max_candidate_failure_rate:
            reasons.append(
                f"candidate failure rate {failure_rate:.4f} > "
                f"{thresholds.max_candidate_failure_rate}"
            )
        if p99_ratio is not None and p99_ratio > thresholds.max_p99_latency_ratio:
            reasons.append(
                f"candidate p99 latency {p99_ratio:.2f}x the primary's > "
                f"{thresholds.max_p99_latency_ratio}x"
            )
        return {
            "mirrored_requests": self.mirrored_requests,
            "compared_requests": self.compared_requests,
            "compared_rows": self.compared_rows,
            "label_agreement": agreement,
            "label_agreement_ci95": [low, high] if self.compared_rows else None,
            "abs_score_delta": quantiles(self._deltas, (0.5, 0.9, 0.99, 1.0)),
            "confusion": [
                {"primary": p, "candidate": c, "rows": n}
                for (p, c), n in sorted(self.confusion.items())
            ],
            "candidate_errors": self.candidate_errors,
            "candidate_timeouts": self.candidate_timeouts,
            "dropped": drops,
            "candidate_failure_rate": failure_rate,
            "latency_ms": {**latency, "p99_ratio": p99_ratio},
            "thresholds": thresholds.__dict__,
            "recommendation": "hold" if reasons else "promote",
            "reasons": reasons,
        }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion: honest at small n and near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def quantiles(values: Any, qs: tuple[float, ...]) -> dict[str, float | None]:
    data = np.fromiter(values, dtype=np.float64)
    names = [("max" if q == 1.0 else f"p{round(q * 100)}") for q in qs]
    if data.size == 0:
        return dict.fromkeys(names)
    return {name: float(np.quantile(data, q)) for name, q in zip(names, qs)}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
