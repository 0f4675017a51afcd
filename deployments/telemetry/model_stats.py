"""Triton's per-model statistics, counted by each ModelReplica and summed over replicas.

What Triton's statistics extension reports, measured where the work happens: requests that
succeeded or failed and their time in the replica, time waiting for the replica's compute
turn (`queue`), preparing the batch (`compute_input`, e.g. tokenizing) and in forward passes
(`compute_infer`, also by rows per pass). Each replica keeps its totals in a
`cluster_ledger.Ledger` (counts and nanoseconds add up), so any replica answers for all.
Output encoding happens at the ingress and is not timed here (`compute_output` stays 0).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from deployments.telemetry.cluster_kv import RayKeyValueStore
from deployments.telemetry.cluster_ledger import Ledger

_NAMESPACE = "ray-serve-inference-stats"
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class ModelStatistics:
    inference_count: int = 0  # rows answered
    execution_count: int = 0  # forward passes
    last_inference_ms: int = 0  # wall clock, ms since the epoch
    # name -> [count, total ns]
    durations: dict[str, list[int]] = field(default_factory=dict)
    # rows in one forward pass -> [count, total compute_infer ns]
    batches: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in DURATIONS:
            self.durations.setdefault(name, [0, 0])

    def add(self, name: str, count: int, ns: int) -> None:
        entry = self.durations[name]
        entry[0] += count
        entry[1] += ns

    def add_pass(self, rows: int, ns: int) -> None:
        self.execution_count += 1
        self.add("compute_infer", 1, ns)
        entry = self.batches.setdefault(str(rows), [0, 0])
        entry[0] += 1
        entry[1] += ns

    def merged(self, other: ModelStatistics) -> ModelStatistics:
        out = ModelStatistics(
            self.inference_count + other.inference_count,
            self.execution_count + other.execution_count,
            max(self.last_inference_ms, other.last_inference_ms),
        )
        for source in (self, other):
            for name, (count, ns) in source.durations.items():
                out.add(name, count, ns)
            for rows, (count, ns) in source.batches.items():
                entry = out.batches.setdefault(rows, [0, 0])
                entry[0] += count
                entry[1] += ns
        return out

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> ModelStatistics:
        return cls(**json.loads(blob))

    def triton(self, name: str, version: str) -> dict[str, Any]:
        """One entry of Triton's `model_stats`, as `GET /v2/models/{m}/stats` answers it."""

        def duration(key: str) -> dict[str, int]:
            count, ns = self.durations[key]
            return {"count": count, "ns": ns}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {key: duration(key) for key in DURATIONS},
            "batch_stats": [
                {
                    "batch_size": int(rows),
                    "compute_input": {"count": 0, "ns": 0},
                    "compute_infer": {"count": count, "ns": ns},
                    "compute_output": {"count": 0, "ns": 0},
                }
                for rows, (count, ns) in sorted(self.batches.items(), key=lambda kv: int(kv[0]))
            ],
        }


def stats_ledger(model: str, version: str, replica_id: str) -> Ledger[ModelStatistics]:
    return Ledger(RayKeyValueStore(_NAMESPACE), f"{model}/{version}", replica_id, ModelStatistics())
