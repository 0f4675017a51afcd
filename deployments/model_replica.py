"""ModelReplica deployment: the primary model, batched, on cuda when present else cpu."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ray import serve

from deployments.batched_model import BatchedModel
from deployments.errors import returned_not_raised
from deployments.monitoring import monitored


@serve.deployment(name="ModelReplica")
class ModelReplica(BatchedModel):
    @returned_not_raised
    @monitored("predict")
    async def predict(self, features: np.ndarray) -> dict[str, Any]:
        """Outputs, with the version that produced them and the time spent here.

        `infer_ms` (batch wait + compute) is measured where the shadow measures its
        candidate, so the two latencies compare like with like.
        """
        started = time.perf_counter()
        outputs = await self.infer(features)
        return {
            "outputs": outputs,
            "model_version": self.metadata.version,
            "infer_ms": (time.perf_counter() - started) * 1000,
        }
