"""What the primary and shadow replicas share: verified loading, warm-up, dynamic batching.

Not a deployment itself. Requests are split into chunks of at most `max_batch_size` rows
(fewer when memory headroom is short: rows x estimated bytes per row must fit) before they
join a batch, so one large request can neither exceed a forward pass's size, nor be refused
by the batch queue, nor run the replica out of memory. `infer` is memory-guarded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from ray import serve

from deployments.artifacts import load_artifact
from deployments.config import BatchConfig
from deployments.errors import ServingError
from deployments.memory_guard import MemoryGuard, memory_guarded
from deployments.runner import ModelRunner, Outputs, resolve_device

logger = logging.getLogger("ray.serve")


def _rows(items: list[np.ndarray]) -> int:
    return sum(
        len(item) if isinstance(item, np.ndarray) and item.ndim == 2 else 1 for item in items
    )


class BatchedModel:
    def __init__(self, model_dir: str, model_name: str, version: str, device: str) -> None:
        artifact = load_artifact(model_dir, model_name, version)
        self.metadata = artifact.metadata
        self.runner = ModelRunner(artifact, resolve_device(device))
        self.batch = BatchConfig()
        self.memory_guard = MemoryGuard(self.batch.memory, self.runner.gpu_memory_probe())
        self.runner.warm_up(self.batch.max_batch_size)
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

    @memory_guarded(lambda self: self.memory_guard)
    async def infer(self, features: np.ndarray) -> Outputs:
        size = self.chunk_rows()
        if not isinstance(features, np.ndarray) or len(features) <= size:
            return self._unwrap(await self._run_batch(features))
        chunks = [features[i : i + size] for i in range(0, len(features), size)]
        parts = [self._unwrap(p) for p in await asyncio.gather(*map(self._run_batch, chunks))]
        return {name: [v for part in parts for v in part[name]] for name in parts[0]}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=_rows)
    async def _run_batch(self, items: list[np.ndarray]) -> list[Outputs | ServingError]:
        return self.runner.run_batch(items)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.metadata.name,
            "version": self.metadata.version,
            "device": str(self.runner.device),
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
