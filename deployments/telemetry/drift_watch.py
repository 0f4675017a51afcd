"""Drift watching as the replicas run it: counts in on the request path, scores out off it.

`InputDrift` lives in each Validator replica: the recorder adds a batch's bin counts to its
window writer, and a background thread writes the window and publishes the merged scores as
gauges every `score_interval_s`. `PredictionDrift` lives in each ModelReplica and only writes
the predictions' window; the Validator scores it with the inputs.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from deployments.config import DriftConfig
from deployments.repository.reference import PREDICTION, DriftReference
from deployments.telemetry.drift_window import (
    DriftScores,
    Flusher,
    KeyValueStore,
    WindowScorer,
    WindowWriter,
    window_store,
)

PREDICTION_FLUSH_S = 5.0


def writer_id(role: str) -> str:
    """`<role>-<Serve replica id>`; a random id outside Serve."""
    try:
        from ray import serve

        return f"{role}-{serve.get_replica_context().replica_id.unique_id}"
    except Exception:  # noqa: BLE001 - outside a replica there is no context
        return f"{role}-{uuid.uuid4().hex[:12]}"


class InputDrift:
    """The Validator's side: the window of validated rows, and the scores of every window."""

    def __init__(
        self,
        model: str,
        version: str,
        reference: DriftReference,
        config: DriftConfig,
        metrics: Any,
        store: KeyValueStore | None = None,
    ) -> None:
        store = store or window_store()
        self.config = config
        self.writer = WindowWriter(store, model, version, writer_id("validator"))
        self.scorer = WindowScorer(store, model, version, reference)
        self.metrics = metrics
        self.flusher = Flusher(self.tick, config.score_interval_s, f"drift-{model}")

    @property
    def window(self) -> WindowWriter | None:
        """Where the recorder adds counts; None while scoring is off."""
        return self.writer if self.config.enabled else None

    def reconfigure(self, config: DriftConfig) -> None:
        self.config = config
        self.flusher.interval_s = config.score_interval_s

    def tick(self) -> None:
        if not self.config.enabled:
            # Gauges keep their last value: scoring turned off must not leave an alert firing
            # on a score nobody computes any more.
            self.metrics.publish(self.unscored())
            return
        self.writer.flush()
        self.metrics.publish(self.current())

    def unscored(self) -> DriftScores:
        c = self.config
        return self.scorer.score(0, c.psi_threshold, c.min_rows, counts={})

    def current(self) -> DriftScores:
        c = self.config
        return self.scorer.score(c.window_s, c.psi_threshold, c.min_rows)

    def close(self) -> None:
        self.flusher.close()


class PredictionDrift:
    """The ModelReplica's side: each forward pass's predictions into the reference's bins."""

    def __init__(
        self, kind: Any, model: str, version: str, reference: DriftReference, store: Any = None
    ) -> None:
        assert reference.prediction is not None
        self.kind = kind
        self.bins = reference.prediction
        self.writer = WindowWriter(store or window_store(), model, version, writer_id("model"))
        self.flusher = Flusher(self.writer.flush, PREDICTION_FLUSH_S, f"drift-{model}")

    @classmethod
    def of(
        cls, kind: Any, model_dir: str | Path, model: str, version: str
    ) -> PredictionDrift | None:
        reference = kind.drift_reference(model_dir)
        if reference is None or reference.prediction is None:
            return None
        return cls(kind, model, version, reference)

    def observe(self, outputs: Any) -> None:
        values = self.kind.prediction_values(outputs)
        if values is not None and len(values):
            self.writer.add({PREDICTION: self.bins.count(values)})

    def close(self) -> None:
        self.flusher.close()
