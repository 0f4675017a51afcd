"""ShadowReplica deployment: the candidate model, fed mirrored traffic after the primary answered.

It answers nobody: it runs the candidate on the same validated features and compares its
outputs with the primary's. The comparison kept here is deliberately small (agreement and
score deltas); the shadow-mode issue grows it into metrics, a diff log and a report.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve

from deployments.batched_model import BatchedModel
from deployments.runner import Outputs

logger = logging.getLogger("ray.serve")


@serve.deployment(name="ShadowReplica")
class ShadowReplica(BatchedModel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mirrored = 0
        self.rows = 0
        self.agreeing_rows = 0
        self.failures = 0
        self.abs_delta_sum = 0.0

    async def mirror(self, features: np.ndarray, primary: Outputs, request_id: str) -> None:
        self.mirrored += 1
        try:
            candidate = await self.infer(features)
        except Exception as exc:  # noqa: BLE001 - a failing candidate is data, not an error
            self.failures += 1
            logger.warning("candidate failed on request %s: %s", request_id, exc)
            return
        score = self.runner.score_output
        agree = np.array(candidate["label"]) == np.array(primary["label"])
        self.rows += len(agree)
        self.agreeing_rows += int(agree.sum())
        self.abs_delta_sum += float(
            np.abs(np.array(candidate[score]) - np.array(primary[score])).sum()
        )

    def stats(self) -> dict[str, Any]:
        return {
            "candidate_version": self.metadata.version,
            "mirrored_requests": self.mirrored,
            "compared_rows": self.rows,
            "label_agreement": self.agreeing_rows / self.rows if self.rows else None,
            "mean_abs_score_delta": self.abs_delta_sum / self.rows if self.rows else None,
            "candidate_failures": self.failures,
        }
