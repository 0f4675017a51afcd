"""Validator deployment: records in, normalised feature matrix out (CPU replicas).

The per-instance pydantic model is built from the model's metadata.json, so the schema
that validates requests is the one that travelled with the weights.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve

from deployments.errors import InvalidInput, ServingError, returned_not_raised
from deployments.metadata import read_metadata
from deployments.protocol import v2
from deployments.schema import InputSchema
from deployments.telemetry.drift import DriftRecorder
from deployments.telemetry.metrics import DriftMetrics, StageMetrics
from deployments.telemetry.monitoring import Monitor, monitored
from deployments.telemetry.tracing import context_from_traceparent, install_log_correlation

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Validator")
class Validator:
    def __init__(self, model_dir: str, model_name: str, version: str, max_instances: int) -> None:
        self.metadata = read_metadata(model_dir, model_name, version)
        self.schema = InputSchema(self.metadata)
        self.max_instances = max_instances
        self.monitor = Monitor("Validator", StageMetrics(model_name, version))
        self.drift = DriftRecorder(self.metadata, DriftMetrics(model_name, version))
        install_log_correlation(logger)

    @returned_not_raised
    @monitored("validation")
    def features(self, instances: list[Any]) -> np.ndarray:
        """Validate KServe v1 instances; InvalidInput names every bad field."""
        return self._features(lambda: instances, len(instances))

    @returned_not_raised
    @monitored("validation")
    def features_from_tensors(self, inputs: list[v2.RequestInput]) -> np.ndarray:
        """Validate OIP v2 input tensors (one per feature) and vectorise their rows."""
        rows = max((len(t.data) for t in inputs), default=0)
        return self._features(
            lambda: v2.records_from_tensors(inputs, self.metadata, self.max_instances), rows
        )

    def features_many(
        self, requests: list[tuple[str, Any, str | None]]
    ) -> list[np.ndarray | ServingError]:
        """Validate many requests in one call (the ingress batches its callers).

        One `(kind, payload, traceparent)` per request: kind "v1" with a list of instances or
        "v2" with OIP v2 input tensors; the traceparent puts this request's validation span in
        its own trace. Answered in order, each with its own matrix or its own typed error, so
        one bad request fails only itself. The valid rows' input distributions are recorded
        once for the whole call: a dozen metric updates per call rather than per request.
        """
        answers: list[np.ndarray | ServingError] = []
        records: list[Any] = []
        matrices: list[np.ndarray] = []
        for kind, payload, traceparent in requests:
            checked = self._validate_one(kind, payload, context_from_traceparent(traceparent))
            if isinstance(checked, ServingError):
                answers.append(checked)
            else:
                records.extend(checked[0])
                matrices.append(checked[1])
                answers.append(checked[1])
        if records:
            self.drift.valid(records, np.concatenate(matrices))
        return answers

    @returned_not_raised
    def _validate_one(self, kind: str, payload: Any, parent: Any) -> tuple[list[Any], np.ndarray]:
        with self.monitor.call("validation", parent=parent):
            if kind == "v1":
                return self._checked(lambda: payload, len(payload))
            rows = max((len(t.data) for t in payload), default=0)
            return self._checked(
                lambda: v2.records_from_tensors(payload, self.metadata, self.max_instances), rows
            )

    def _features(self, records: Any, instances: int) -> np.ndarray:
        validated, matrix = self._checked(records, instances)
        self.drift.valid(validated, matrix)
        return matrix

    def _checked(self, records: Any, instances: int) -> tuple[list[Any], np.ndarray]:
        """Validated records and their feature matrix; a refusal is counted as drift here."""
        try:
            validated = self.schema.validate(records())
        except InvalidInput as exc:
            self.drift.invalid(exc, instances)
            raise
        return validated, self.schema.vectorize(validated)

    def ready(self) -> bool:
        return True
