"""The live window that drift is scored on, merged across replicas through Ray's KV store.

Every writer (each Validator replica for the inputs, each ModelReplica for the predictions)
adds one batch's bin counts to an in-memory slot of `SLOT_S` seconds: an array addition per
distribution, nothing per row and nothing remote on the request path. A background thread
writes the open slot to the cluster key-value store under its own key
(`<model>/<version>/<slot>/<writer>`) every `flush_s`. The scorer reads every writer's slots
inside the window, sums them (counts add across replicas, so two replicas score exactly as one
would) and computes each distribution's PSI against the training reference. A replica that
dies leaves its slots behind; they age out of the window and are deleted past `RETAIN_S`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deployments.repository.reference import PREDICTION, DriftReference, psi
from deployments.telemetry.cluster_kv import KeyValueStore, RayKeyValueStore

logger = logging.getLogger("ray.serve")

SLOT_S = 10
RETAIN_S = 3600
_NAMESPACE = "ray-serve-inference-drift"

Counts = dict[str, np.ndarray]


def window_store() -> RayKeyValueStore:
    return RayKeyValueStore(_NAMESPACE)


def slot_of(now_s: float) -> int:
    return int(now_s // SLOT_S)


def prefix_of(model: str, version: str) -> str:
    return f"{model}/{version}/"


class WindowWriter:
    """One replica's counts, by slot; `add` on the request path, `flush` off it."""

    def __init__(
        self,
        store: KeyValueStore,
        model: str,
        version: str,
        writer_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.prefix = prefix_of(model, version)
        self.writer_id = writer_id
        self.clock = clock
        self.lock = threading.Lock()
        self.slots: dict[int, Counts] = {}
        self.dirty: set[int] = set()
        self.written: list[int] = []

    def add(self, counts: Counts) -> None:
        slot = slot_of(self.clock())
        with self.lock:
            current = self.slots.setdefault(slot, {})
            for name, values in counts.items():
                held = current.get(name)
                current[name] = values.astype(np.int64) if held is None else held + values
            self.dirty.add(slot)

    def flush(self) -> None:
        """Write every slot that changed since the last flush; forget closed ones."""
        now_slot = slot_of(self.clock())
        with self.lock:
            pending = {s: {n: v.tolist() for n, v in self.slots[s].items()} for s in self.dirty}
            self.dirty.clear()
            for s in [s for s in self.slots if s < now_slot]:
                del self.slots[s]  # closed: what it holds is in `pending` or written already
        for slot, counts in sorted(pending.items()):
            self.store.put(self._key(slot), json.dumps(counts).encode())
            if not self.written or self.written[-1] != slot:
                self.written.append(slot)
        cutoff = now_slot - RETAIN_S // SLOT_S
        while self.written and self.written[0] < cutoff:
            self.store.delete(self._key(self.written.pop(0)))

    def _key(self, slot: int) -> str:
        return f"{self.prefix}{slot:012d}/{self.writer_id}"


@dataclass
class DriftScores:
    """The current window against the reference; NaN scores while it holds too few rows."""

    model: str
    version: str
    window_s: int
    rows: int
    prediction_rows: int
    threshold: float
    min_rows: int
    features: dict[str, float] = field(default_factory=dict)
    prediction: float = float("nan")

    @property
    def enough_rows(self) -> bool:
        return self.rows >= self.min_rows

    def drifted(self) -> list[str]:
        return [name for name, score in self.ranked() if score > self.threshold]

    def ranked(self) -> list[tuple[str, float]]:
        """Features by score, most drifted first (unscored last)."""
        return sorted(
            self.features.items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf
        )

    def as_json(self) -> dict:
        def number(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        prediction_scored = self.prediction_rows >= self.min_rows
        return {
            "model": self.model,
            "version": self.version,
            "window_s": self.window_s,
            "rows": self.rows,
            "min_rows": self.min_rows,
            "threshold": self.threshold,
            "enough_rows": self.enough_rows,
            "features": [
                {"feature": name, "psi": number(score), "drifted": score > self.threshold}
                for name, score in self.ranked()
            ],
            "prediction": {
                "rows": self.prediction_rows,
                "psi": number(self.prediction),
                "drifted": prediction_scored and self.prediction > self.threshold,
            },
        }


class WindowScorer:
    """Merges every writer's slots inside the window and scores them."""

    def __init__(
        self,
        store: KeyValueStore,
        model: str,
        version: str,
        reference: DriftReference,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.model = model
        self.version = version
        self.prefix = prefix_of(model, version)
        self.reference = reference
        self.clock = clock

    def window(self, window_s: int) -> Counts:
        now_slot = slot_of(self.clock())
        first = now_slot - max(1, window_s // SLOT_S) + 1
        stale = now_slot - RETAIN_S // SLOT_S
        merged: Counts = {}
        inside = []
        for key in self.store.keys(self.prefix):
            try:
                slot = int(key[len(self.prefix) :].split("/", 1)[0])
            except ValueError:
                continue
            if slot < stale:
                self.store.delete(key)  # a writer that is gone left it behind
            elif slot >= first:
                inside.append(key)
        for raw in self.store.get_many(inside).values():
            for name, values in json.loads(raw).items():
                held = merged.get(name)
                array = np.asarray(values, dtype=np.int64)
                merged[name] = array if held is None else held + array
        return merged

    def score(
        self, window_s: int, threshold: float, min_rows: int, counts: Counts | None = None
    ) -> DriftScores:
        """Scores of the window (or of `counts`, when given: nothing is read)."""
        counts = self.window(window_s) if counts is None else counts
        features = self.reference.features
        rows = int(counts[next(iter(features))].sum()) if features and counts else 0
        prediction_counts = counts.get(PREDICTION)
        prediction_rows = int(prediction_counts.sum()) if prediction_counts is not None else 0
        scores = DriftScores(
            self.model, self.version, window_s, rows, prediction_rows, threshold, min_rows
        )
        for name, reference in features.items():
            live = counts.get(name)
            usable = live is not None and len(live) == reference.bins and rows >= min_rows
            scores.features[name] = psi(live, reference) if usable else float("nan")
        ref = self.reference.prediction
        scored = prediction_counts is not None and prediction_rows >= min_rows
        if ref is not None and scored and len(prediction_counts) == ref.bins:
            scores.prediction = psi(prediction_counts, ref)
        return scores


class Flusher:
    """A daemon thread that runs `tick` every `interval_s` (flushes, scoring) until closed;
    a failing tick is logged and retried at the next interval, never raised into serving."""

    def __init__(self, tick: Callable[[], None], interval_s: float, name: str) -> None:
        self.tick = tick
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a KV hiccup must not end the thread
                logger.warning("drift window update failed (retrying): %r", exc)

    def close(self) -> None:
        self.stopped.set()
