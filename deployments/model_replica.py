"""ModelReplica deployment: the primary model, batched, on cuda when present else cpu."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.batched_model import BatchedModel
from deployments.errors import ServingError, returned_not_raised
from deployments.telemetry.monitoring import monitored
from deployments.telemetry.tracing import context_of_link, link_from_traceparent, link_to_current


@serve.deployment(name="ModelReplica")
class ModelReplica(BatchedModel):
    @returned_not_raised
    @monitored("predict")
    async def predict(self, features: np.ndarray) -> dict[str, Any]:
        """Outputs, with the version that produced them and the time spent here.

        `infer_ms` (batch wait + compute) is measured where the shadow measures its
        candidate, so the two latencies compare like with like.
        """
        return await self._predict(features, link_to_current())

    async def predict_many(
        self, batch: list[np.ndarray], traceparents: list[str | None]
    ) -> list[dict[str, Any] | ServingError]:
        """One call carrying many requests' features (the ingress batches its callers).

        Each joins the replica's batch queue as if it had come alone, so chunking by memory
        headroom, batch metrics and per-request failure isolation are the same, and the
        forward pass links each one's own trace; answers come back in order, each its own
        outputs or its own typed error.
        """
        return list(
            await asyncio.gather(
                *(
                    self._predict_one(features, link_from_traceparent(traceparent))
                    for features, traceparent in zip(batch, traceparents, strict=True)
                )
            )
        )

    @returned_not_raised
    async def _predict_one(self, features: np.ndarray, link: Any) -> dict[str, Any]:
        # This request's span joins its own trace, not the trace of the call carrying it.
        with self.monitor.call("predict", parent=context_of_link(link)):
            return await self._predict(features, link)

    async def _predict(self, features: np.ndarray, link: Any) -> dict[str, Any]:
        started = time.perf_counter()
        outputs = await self.infer(features, link)
        return {
            "outputs": outputs,
            "model_version": self.metadata.version,
            "infer_ms": (time.perf_counter() - started) * 1000,
        }
