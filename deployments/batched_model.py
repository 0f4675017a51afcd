"""What the primary and shadow replicas share: verified loading, warm-up, dynamic batching.

Not a deployment itself. Requests are split into chunks of at most `max_batch_size` rows
(fewer when memory headroom is short: rows x estimated bytes per row must fit) before they
join a batch, so one large request can neither exceed a forward pass's size, nor be refused
by the batch queue, nor run the replica out of memory. `infer` is memory-guarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from deployments.admission.memory_guard import MemoryGuard, memory_guarded
from deployments.artifacts import load_artifact
from deployments.config import BatchConfig
from deployments.errors import ServingError
from deployments.roles.autoscaling import REQUESTS_IN_FLIGHT
from deployments.runner import ModelRunner, Outputs, resolve_device
from deployments.telemetry.metrics import BatchMetrics, StageMetrics
from deployments.telemetry.monitoring import Monitor, replica_deployment_name
from deployments.telemetry.tracing import context_of_link, install_log_correlation, link_to_current

logger = logging.getLogger("ray.serve")


@dataclass
class BatchItem:
    """One request (or chunk of one) waiting for a forward pass, with what the batch span
    needs from it: when it joined the queue and a link to its own trace."""

    features: np.ndarray
    enqueued_at: float = field(default_factory=time.perf_counter)
    link: Any = field(default_factory=link_to_current)

    @property
    def rows(self) -> int:
        f = self.features
        return len(f) if isinstance(f, np.ndarray) and f.ndim == 2 else 1


def _rows(items: list[BatchItem]) -> int:
    return sum(item.rows for item in items)


class BatchedModel:
    def __init__(self, model_dir: str, model_name: str, version: str, device: str) -> None:
        artifact = load_artifact(model_dir, model_name, version)
        self.metadata = artifact.metadata
        self.runner = ModelRunner(artifact, resolve_device(device))
        self.batch = BatchConfig()
        self.memory_guard = MemoryGuard(self.batch.memory, self.runner.gpu_memory_probe())
        self.runner.warm_up(self.batch.max_batch_size)
        self.monitor = Monitor(
            replica_deployment_name(type(self).__name__), StageMetrics(model_name, version)
        )
        self.batch_metrics = BatchMetrics(model_name, version, self.metadata.task.labels)
        # Requests inside `infer` now: the autoscaling signal (deployments/roles/autoscaling.py).
        self.requests_in_flight = 0
        install_log_correlation(logger)
        logger.info("loaded %s:%s on %s", model_name, version, self.runner.device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new `user_config` (Serve calls this at start and on every config change)."""
        self.batch = BatchConfig.model_validate(user_config or {})
        self.memory_guard.config = self.batch.memory
        self._run_batch.set_max_batch_size(self.batch.max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(self.batch.batch_wait_timeout_s)
        # Serve routes no traffic to a new replica until this returns: warm the new shape.
        self.runner.warm_up(self.batch.max_batch_size)

    def chunk_rows(self) -> int:
        """Rows per chunk: the batch size, or fewer if memory headroom cannot hold them."""
        fits = self.memory_guard.headroom_bytes() // self.runner.bytes_per_row
        return max(1, min(self.batch.max_batch_size, fits))

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this for the autoscaling policy (see deployments/roles/autoscaling.py)."""
        return {REQUESTS_IN_FLIGHT: float(self.requests_in_flight)}

    @memory_guarded(lambda self: self.memory_guard)
    async def infer(self, features: np.ndarray, link: Any = None) -> Outputs:
        """Outputs for one request; `link` is its trace (default: the current one)."""
        self.requests_in_flight += 1
        try:
            return await self._infer(features, link_to_current() if link is None else link)
        finally:
            self.requests_in_flight -= 1

    async def _infer(self, features: np.ndarray, link: Any) -> Outputs:
        size = self.chunk_rows()
        if not isinstance(features, np.ndarray) or len(features) <= size:
            return self._unwrap(await self._run_batch(BatchItem(features, link=link)))
        chunks = [
            BatchItem(features[i : i + size], link=link) for i in range(0, len(features), size)
        ]
        parts = [self._unwrap(p) for p in await asyncio.gather(*map(self._run_batch, chunks))]
        return {name: [v for part in parts for v in part[name]] for name in parts[0]}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=_rows)
    async def _run_batch(self, items: list[BatchItem]) -> list[Outputs | ServingError]:
        started = time.perf_counter()
        for item in items:
            self.monitor.record("queue_wait", (started - item.enqueued_at) * 1000)
        rows = _rows(items)
        self.batch_metrics.batch(len(items), rows)
        # One forward pass serves many traces: its span lives in the first sampled member's
        # trace and links to every sampled member's.
        links = [item.link for item in items if item.link is not None]
        attributes = {"batch.requests": len(items), "batch.rows": rows}
        parent = context_of_link(links[0]) if links else None
        with self.monitor.call("compute", attributes, links, parent=parent):
            results = self.runner.run_batch([item.features for item in items])
        self._record_predictions(results)
        return results

    def _record_predictions(self, results: list[Outputs | ServingError]) -> None:
        score_name = self.runner.score_output
        for result in results:
            if not isinstance(result, ServingError):
                self.batch_metrics.predicted(result[score_name], result["label"])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.metadata.name,
            "version": self.metadata.version,
            "device": str(self.runner.device),
            "node_id": _node_id(),
            "ready": True,
            "batch": self.batch.model_dump(),
        }

    def ready(self) -> bool:
        """Answers only once __init__ has loaded and warmed the model."""
        return True

    def check_health(self) -> None:
        # A replica whose device went away (e.g. a CUDA fault) must be replaced.
        self.runner.scores(np.zeros((1, self.runner.width), dtype=np.float32))

    @staticmethod
    def _unwrap(result: Outputs | ServingError) -> Outputs:
        if isinstance(result, ServingError):
            raise result
        return result


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
