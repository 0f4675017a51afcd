"""Validator: many requests' v1 instances or v2 tensors in, one `Batch` of arrays out.

The schema that validates requests is the one that travelled with the weights (the kind
reads it from metadata.json). One bad request fails only itself: its error comes back by
index beside the batch of the valid ones. Input distributions (drift) are recorded once per
call, from the arrays.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import serve

from deployments.config import DriftConfig
from deployments.errors import DriftNotConfigured, InvalidInput, ServingError
from deployments.kinds.base import Batch, ModelKind
from deployments.repository.store import load_kind
from deployments.telemetry.drift_watch import InputDrift
from deployments.telemetry.metrics import DriftScoreMetrics, StageMetrics
from deployments.telemetry.monitoring import Monitor, replica_deployment_name
from deployments.telemetry.tracing import (
    child_span,
    context_from_traceparent,
    install_log_correlation,
    install_tracer_provider,
)

logger = logging.getLogger("ray.serve")

Request = tuple[str, Any, str | None]  # (protocol "v1" | "v2", payload, traceparent)


def decode(kind: ModelKind, protocol: str, payload: Any, max_rows: int) -> Any:
    """The kind's columns for one request's payload, by protocol."""
    if protocol == "v1":
        return kind.decode_v1(payload)
    return kind.decode_v2(payload, max_rows)


@serve.deployment(name="Validator")
class Validator:
    def __init__(self, model_dir: str, name: str, version: str, max_rows: int) -> None:
        self.kind = load_kind(model_dir, name, version)
        self.name, self.version = name, version
        self.max_rows = max_rows
        # Spans name the real deployment (Validator-<model>), as the replicas' do.
        self.monitor = Monitor(replica_deployment_name("Validator"), StageMetrics(name, version))
        reference = self.kind.drift_reference(model_dir)
        self.scoring: InputDrift | None = None
        if reference is not None:
            metrics = DriftScoreMetrics(name, version)
            self.scoring = InputDrift(name, version, reference, DriftConfig(), metrics)
        window = self.scoring.window if self.scoring is not None else None
        self.drift = self.kind.drift_recorder(name, version, reference, window)
        install_log_correlation(logger)
        install_tracer_provider(roots=False)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """The model's `drift` settings (Serve calls this at start and on every change)."""
        config = DriftConfig.model_validate(user_config or {})
        if self.scoring is not None:
            self.scoring.reconfigure(config)
            if self.drift is not None:
                self.drift.window = self.scoring.window

    def drift_report(self) -> dict[str, Any]:
        """The current drift scores, merged over every replica's window (any replica answers
        the same); NotFound where the model was packaged without a training reference."""
        if self.scoring is None:
            raise DriftNotConfigured(
                f"model '{self.name}' version '{self.version}' has no drift reference; "
                "package it with reference data (deployments.repository.package "
                "--reference-data) to score drift"
            )
        return self.scoring.current().as_json()

    def __del__(self) -> None:
        if getattr(self, "scoring", None) is not None:
            self.scoring.close()

    async def validate_many(
        self, requests: list[Request]
    ) -> tuple[Batch, list[int], dict[int, ServingError]]:
        """The valid requests' columns as one batch (in the order of the returned indices),
        and every other request's own typed error, by index.

        Timed and counted once per call; a sampled request (one that carries a traceparent)
        also gets its own span in its own trace. A coroutine, so Serve runs it on the
        replica's loop rather than handing each call to a worker thread."""
        started = time.perf_counter()
        parts, valid, failures = [], [], {}
        for i, (protocol, payload, traceparent) in enumerate(requests):
            try:
                if traceparent is None:
                    parts.append(decode(self.kind, protocol, payload, self.max_rows))
                else:
                    parent = context_from_traceparent(traceparent)
                    with child_span(self.monitor.deployment, "validation", parent=parent):
                        parts.append(decode(self.kind, protocol, payload, self.max_rows))
                valid.append(i)
            except ServingError as exc:
                if isinstance(exc, InvalidInput) and self.drift is not None:
                    self.drift.invalid(exc, len(payload) if protocol == "v1" else 1)
                failures[i] = exc
        batch = Batch.of(parts)
        if parts and self.drift is not None:
            self.kind.observe_inputs(batch.columns, self.drift)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if valid:
            self.monitor.record("validation", elapsed_ms)
        for error in failures.values():
            self.monitor.record("validation", elapsed_ms, error.code)
        return batch, valid, failures

    def ready(self) -> bool:
        return True
