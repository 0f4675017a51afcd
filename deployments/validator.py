"""Validator deployment: records in, normalised feature matrix out (CPU replicas).

The per-instance pydantic model is built from the model's metadata.json, so the schema
that validates requests is the one that travelled with the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from deployments.errors import returned_not_raised
from deployments.metadata import read_metadata
from deployments.protocol import v2
from deployments.schema import InputSchema


@serve.deployment(name="Validator")
class Validator:
    def __init__(self, model_dir: str, model_name: str, version: str, max_instances: int) -> None:
        self.metadata = read_metadata(model_dir, model_name, version)
        self.schema = InputSchema(self.metadata)
        self.max_instances = max_instances

    @returned_not_raised
    def features(self, instances: list[Any]) -> np.ndarray:
        """Validate KServe v1 instances; InvalidInput names every bad field."""
        return self.schema.to_features(instances)

    @returned_not_raised
    def features_from_tensors(self, inputs: list[v2.RequestInput]) -> np.ndarray:
        """Validate OIP v2 input tensors (one per feature) and vectorise their rows."""
        records = v2.records_from_tensors(inputs, self.metadata, self.max_instances)
        return self.schema.to_features(records)

    def ready(self) -> bool:
        return True
