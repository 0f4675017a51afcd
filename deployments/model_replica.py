"""ModelReplica deployment: the primary model, batched, on cuda when present else cpu."""

from __future__ import annotations

import numpy as np
from ray import serve

from deployments.batched_model import BatchedModel
from deployments.runner import Outputs


@serve.deployment(name="ModelReplica")
class ModelReplica(BatchedModel):
    async def predict(self, features: np.ndarray) -> Outputs:
        return await self.infer(features)
