"""Shadow counters that survive a replica restart and add up across replicas.

Each shadow replica keeps its running totals (counts and fixed-edge histograms, nothing that
cannot be summed) and writes them to Ray's cluster key-value store (GCS) under its own key.
The report merges every key of one (model, primary, candidate): a replica that restarts, or
a second one added by scaling, changes nothing in the totals.

Writes are rate-limited to one per `flush_s`; a change that falls inside that interval is
written when it ends (a timer on the replica's loop), and a replica that stops writes what
it has (`ShadowReplica.__del__`), so no count is left only in a replica's memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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


class Ledger:
    """This replica's counts, flushed to the cluster's KV store at most every `flush_s`."""

    def __init__(self, key_prefix: str, replica_id: str, edges: tuple[float, ...]) -> None:
        self.prefix = key_prefix
        self.key = f"{key_prefix}/{replica_id}"
        self.counts = ShadowCounts(edges)
        self.flush_s = 1.0
        self._flushed_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        stored = _get(self.key)
        if stored is not None:  # the same replica id restarting: carry on from its totals
            self.counts = ShadowCounts.from_json(stored)

    def flush(self, force: bool = False) -> None:
        """Write the counts now if `force` or `flush_s` has passed since the last write;
        otherwise (on a running loop) when it has."""
        now = time.monotonic()
        if force or now - self._flushed_at >= self.flush_s:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            _put(self.key, self.counts.to_json())
            self._flushed_at = now
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (offline use): the next flush writes it
                return
            delay_s = self._flushed_at + self.flush_s - now
            self._timer = loop.call_later(delay_s, self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._timer = None
        self.flush(force=True)

    def totals(self) -> ShadowCounts:
        """Every replica's counts for this (model, primary, candidate), this one's current."""
        self.flush(force=True)
        total = ShadowCounts(self.counts.metric_edges)
        for key in _list(self.prefix + "/"):
            blob = _get(key)
            if blob is not None:
                total = total.merged(ShadowCounts.from_json(blob))
        return total


def _put(key: str, value: bytes) -> None:
    from ray.experimental import internal_kv

    if internal_kv._internal_kv_initialized():
        internal_kv._internal_kv_put(key, value, overwrite=True, namespace=_NAMESPACE)


def _get(key: str) -> bytes | None:
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return None
    return internal_kv._internal_kv_get(key, namespace=_NAMESPACE)


def _list(prefix: str) -> list[str]:
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return []
    keys = internal_kv._internal_kv_list(prefix, namespace=_NAMESPACE)
    return [k.decode() if isinstance(k, bytes) else k for k in keys]
