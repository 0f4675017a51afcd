"""The shadow report, one schema for every kind, computed from summable counts.

A leaf: numpy and the standard library. `report()` turns merged `ShadowCounts` into what an
operator decides on: agreement with its 95% interval, the comparison metric's distribution
(|score delta| for classifiers, |delta| for regressors, cosine for embeddings), failures,
latency, and promote or hold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from deployments.shadow.ledger import LATENCY_EDGES_MS, ShadowCounts


@dataclass(frozen=True)
class Thresholds:
    """When the candidate may be promoted. All must hold."""

    min_compared_rows: int = 500
    min_agreement: float = 0.95  # against the lower bound of the 95% interval
    max_candidate_failure_rate: float = 0.01  # errors + timeouts + drops per mirrored request
    max_p99_latency_ratio: float = 2.0  # candidate p99 / primary p99


def report(
    counts: ShadowCounts,
    metric: str,
    agreement_rule: str,
    thresholds: Thresholds,
    drops: dict[str, int],
) -> dict[str, Any]:
    dropped = sum(drops.values())
    attempted = counts.mirrored_requests + dropped
    failures = counts.candidate_errors + counts.candidate_timeouts + dropped
    n, agreeing = counts.compared_rows, counts.agreeing_rows
    low, high = wilson_interval(agreeing, n)
    latency = {
        role: histogram_quantiles(LATENCY_EDGES_MS, values, (0.5, 0.99))
        for role, values in counts.latency_counts.items()
    }
    p99_ratio = _ratio(latency["candidate"]["p99"], latency["primary"]["p99"])
    failure_rate = failures / attempted if attempted else 0.0

    reasons = []
    if n < thresholds.min_compared_rows:
        reasons.append(f"only {n} rows compared; need {thresholds.min_compared_rows}")
    elif low < thresholds.min_agreement:
        reasons.append(f"agreement lower bound {low:.4f} < {thresholds.min_agreement}")
    if failure_rate > thresholds.max_candidate_failure_rate:
        reasons.append(
            f"candidate failure rate {failure_rate:.4f} > {thresholds.max_candidate_failure_rate}"
        )
    if p99_ratio is not None and p99_ratio > thresholds.max_p99_latency_ratio:
        reasons.append(
            f"candidate p99 latency {p99_ratio:.2f}x the primary's > "
            f"{thresholds.max_p99_latency_ratio}x"
        )
    return {
        "mirrored_requests": counts.mirrored_requests,
        "compared_requests": counts.compared_requests,
        "compared_rows": n,
        "agreement_rule": agreement_rule,
        "agreement": agreeing / n if n else None,
        "agreement_ci95": [low, high] if n else None,
        "metric": metric,
        "metric_quantiles": histogram_quantiles(
            counts.metric_edges, counts.metric_counts, (0.01, 0.5, 0.9, 0.99)
        ),
        "metric_histogram": {
            "edges": list(counts.metric_edges),
            "counts": list(counts.metric_counts),
        },
        "confusion": [
            {"primary": p, "candidate": c, "rows": rows}
            for (p, c), rows in sorted(
                (tuple(k.split("\u2192", 1)), v) for k, v in counts.confusion.items()
            )
        ],
        "candidate_errors": counts.candidate_errors,
        "candidate_timeouts": counts.candidate_timeouts,
        "dropped": drops,
        "candidate_failure_rate": failure_rate,
        "latency_ms": {**latency, "p99_ratio": p99_ratio},
        "thresholds": asdict(thresholds),
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


def histogram_quantiles(
    edges: tuple[float, ...], counts: list[int], qs: tuple[float, ...]
) -> dict[str, float | None]:
    """Quantiles of a histogram (bucket i holds values <= edges[i], the last one the rest),
    each given as its bucket's upper edge (the last bucket: the last edge): an upper bound
    that merges across replicas, as Prometheus's histogram_quantile does."""
    names = [f"p{round(q * 100)}" for q in qs]
    total = sum(counts)
    if total == 0:
        return dict.fromkeys(names)
    out: dict[str, float | None] = {}
    for name, q in zip(names, qs):
        rank, seen = q * total, 0
        for i, n in enumerate(counts):
            seen += n
            if seen >= rank and n:
                out[name] = float(edges[min(i, len(edges) - 1)])
                break
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
