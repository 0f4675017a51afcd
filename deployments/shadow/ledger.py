"""Shadow counters that survive a replica restart and add up across replicas.

Each shadow replica keeps its running totals (counts and fixed-edge histograms, nothing that
cannot be summed) in a `telemetry.cluster_ledger.Ledger`, under its own key in Ray's cluster
key-value store; the report merges every replica's counts of one (model, primary, candidate).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deployments.telemetry.cluster_kv import KeyValueStore, RayKeyValueStore
from deployments.telemetry.cluster_ledger import Ledger

LATENCY_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_NAMESPACE = "ray-serve-inference-shadow"


@dataclass
class ShadowCounts:
    metric_edges: tuple[float, ...]
    mirrored_requests: int = 0
    compared_requests: int = 0
    compared_rows: int = 0
    agreeing_rows: int = 0
    candidate_errors: int = 0
    candidate_timeouts: int = 0
    metric_counts: list[int] = field(default_factory=list)
    latency_counts: dict[str, list[int]] = field(default_factory=dict)
    confusion: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.metric_counts:
            self.metric_counts = [0] * (len(self.metric_edges) + 1)
        for role in ("primary", "candidate"):
            self.latency_counts.setdefault(role, [0] * (len(LATENCY_EDGES_MS) + 1))
        self.confusion = Counter(self.confusion)

    def add_rows(
        self, agree: np.ndarray, metric: np.ndarray, labels: Any = None, requests: int = 1
    ) -> None:
        """The compared rows of `requests` mirrored requests."""
        self.compared_requests += requests
        self.compared_rows += len(agree)
        self.agreeing_rows += int(np.count_nonzero(agree))
        bins = np.searchsorted(self.metric_edges, metric, side="left")
        for i, n in enumerate(np.bincount(bins, minlength=len(self.metric_counts))):
            self.metric_counts[i] += int(n)
        if labels is not None:
            pairs = Counter(f"{p}\u2192{c}" for p, c in zip(*labels))
            self.confusion.update(pairs)

    def add_latency(self, role: str, ms: float) -> None:
        self.latency_counts[role][int(np.searchsorted(LATENCY_EDGES_MS, ms, side="left"))] += 1

    def merged(self, other: ShadowCounts) -> ShadowCounts:
        out = ShadowCounts(self.metric_edges)
        for name in (
            "mirrored_requests",
            "compared_requests",
            "compared_rows",
            "agreeing_rows",
            "candidate_errors",
            "candidate_timeouts",
        ):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.metric_counts = [a + b for a, b in zip(self.metric_counts, other.metric_counts)]
        out.latency_counts = {
            role: [a + b for a, b in zip(self.latency_counts[role], other.latency_counts[role])]
            for role in self.latency_counts
        }
        out.confusion = self.confusion + other.confusion
        return out

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "confusion": dict(self.confusion)}).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> ShadowCounts:
        raw = json.loads(blob)
        raw["metric_edges"] = tuple(raw["metric_edges"])
        return cls(**raw)


def shadow_ledger(
    key_prefix: str,
    replica_id: str,
    edges: tuple[float, ...],
    store: KeyValueStore | None = None,
) -> Ledger[ShadowCounts]:
    """The shadow's counts of one (model, primary, candidate), summed over its replicas."""
    return Ledger(
        store or RayKeyValueStore(_NAMESPACE), key_prefix, replica_id, ShadowCounts(edges)
    )
