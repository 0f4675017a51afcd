"""ModelReplica: one model version, batched, on cuda when present else cpu. Every kind.

Requests arrive many at a time as one `Batch` of arrays: the ingress's batcher is the one
batching layer, so nothing here waits for company. The batch is prepared by its kind (e.g.
tokenized) and its rows run in forward passes whose cost (rows, or tokens) fits the batch
size and the memory headroom. If anything fails, each request runs alone so only the culprit
fails. Answers go back as arrays, with failures by request index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray import serve

from deployments.admission.memory_guard import MemoryGuard, memory_guarded
from deployments.config import BatchConfig
from deployments.errors import InferenceFailed, ServingError
from deployments.kinds.base import Answer, Batch, Columns, Failures
from deployments.kinds.devices import gpu_memory_probe
from deployments.kinds.torch_threads import ThreadCount
from deployments.repository.store import load_kind
from deployments.roles.autoscaling import REQUESTS_IN_FLIGHT
from deployments.telemetry.drift_watch import PredictionDrift
from deployments.telemetry.metrics import BatchMetrics, StageMetrics
from deployments.telemetry.model_stats import stats_ledger
from deployments.telemetry.monitoring import (
    Monitor,
    replica_deployment_name,
    replica_unique_id,
)
from deployments.telemetry.tracing import (
    context_of_link,
    install_log_correlation,
    install_tracer_provider,
    link_from_traceparent,
)

logger = logging.getLogger("ray.serve")


class BatchedReplica:
    """What the primary and the shadow share: verified loading, warm-up, batching."""

    def __init__(
        self,
        model_dir: str,
        name: str,
        version: str,
        device: str,
        allowed_architectures: Sequence[str],
        default_batch: dict[str, Any],
        torch_threads: int = 0,
        variant: str | None = None,
        drift_predictions: bool = False,
    ) -> None:
        self.threads = ThreadCount(torch_threads)
        self.threads.apply()  # this thread too: warm-up runs here
        self.kind = load_kind(model_dir, name, version)
        self.metadata = self.kind.metadata
        self.runtime = self.kind.load(model_dir, device, allowed_architectures, variant)
        self.version = version if variant is None else f"{version}-{variant}"
        self.default_batch = default_batch
        self.batch = batch_config(default_batch)
        self.memory_guard = MemoryGuard(self.batch.memory, gpu_memory_probe(self.runtime.device))
        self.runtime.warm_up(self.batch.max_batch_size)
        self.monitor = Monitor(
            replica_deployment_name(type(self).__name__), StageMetrics(name, self.version)
        )
        self.batch_metrics = BatchMetrics(name, self.version, self.kind.cost_unit)
        self.prediction_drift = (
            PredictionDrift.of(self.kind, model_dir, name, version) if drift_predictions else None
        )
        # Requests inside `infer_many`, averaged over time between autoscaling reports: the
        # autoscaling signal (deployments/roles/autoscaling.py).
        self.in_flight = TimeAveraged()
        # One batch computes at a time; the others wait here (measured as queue_wait).
        self._compute_turn = asyncio.Lock()
        self.replica_id = replica_unique_id()
        # Triton's statistics of this version, this replica's share (telemetry/model_stats.py).
        self.stats = stats_ledger(name, self.version, self.replica_id)
        install_log_correlation(logger)
        install_tracer_provider(roots=False)
        logger.info(
            "loaded %s:%s (%s, %s) on %s",
            name,
            self.version,
            self.kind.kind,
            self.runtime.variant,
            self.runtime.device,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new `user_config` (Serve calls this at start and on every config change)."""
        self._apply_batch(batch_config({**self.default_batch, **(user_config or {})}))

    def _apply_batch(self, batch: BatchConfig) -> None:
        self.batch = batch
        self.memory_guard.config = batch.memory
        # Serve routes no traffic to a new replica until this returns: warm the new shape.
        self.runtime.warm_up(batch.max_batch_size)

    def cost_budget(self) -> int:
        """Cost units per forward pass: the batch size, or fewer if memory cannot hold them."""
        fits = self.memory_guard.headroom_bytes() // max(1, self.runtime.bytes_per_cost)
        return max(1, min(self.batch.max_batch_size, fits))

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this for the autoscaling policy (see deployments/roles/autoscaling.py)."""
        return {REQUESTS_IN_FLIGHT: self.in_flight.average_since_last()}

    @memory_guarded(lambda self: self.memory_guard)
    async def infer_many(
        self, batch: Batch, traceparents: Sequence[str | None] | None = None
    ) -> Answer:
        """Outputs for every request of `batch`, computed over the batch's rows at once.

        The batch is the caller's (the ingress gathers its requests): no second batching
        window here. Calls that arrive while one computes wait their turn (`queue_wait`).
        Each sampled request's trace links to the forward passes that served it."""
        arrived = time.perf_counter()
        links = [link for t in traceparents or () if (link := link_from_traceparent(t))]
        self.in_flight.add(len(batch))
        try:
            async with self._compute_turn:
                started = time.perf_counter()
                self.monitor.record("queue_wait", (started - arrived) * 1000)
                with self.monitor.call(
                    "predict",
                    {"batch.requests": len(batch), "batch.rows": batch.rows},
                    links,
                    parent=context_of_link(links[0]) if links else None,
                ):
                    outputs, failures = await self._compute(batch, links)
        finally:
            self.in_flight.add(-len(batch))
        answered = [i for i in range(len(batch)) if i not in failures]
        finished = time.perf_counter()
        self._count(len(batch), answered, outputs.rows, arrived, started, finished)
        elapsed_ms = (finished - started) * 1000
        return Answer(outputs, answered, failures, self.version, elapsed_ms, self.replica_id)

    def _count(
        self,
        requests: int,
        answered: list[int],
        rows: int,
        arrived: float,
        started: float,
        finished: float,
    ) -> None:
        """One call's requests in Triton's statistics (each spent the call's time here)."""
        counts = self.stats.counts
        ns = int((finished - arrived) * 1e9)
        failed = requests - len(answered)
        counts.add("queue", requests, int((started - arrived) * 1e9) * requests)
        counts.add("success", len(answered), ns * len(answered))
        if failed:
            counts.add("fail", failed, ns * failed)
        counts.inference_count += rows
        counts.last_inference_ms = int(time.time() * 1000)
        self.stats.flush()

    def statistics(self) -> dict[str, Any]:
        """Triton's statistics of this version, summed over every replica that served it."""
        return self.stats.totals().triton(self.metadata.name, self.version)

    def __del__(self) -> None:
        # Serve calls this when the replica stops: what was counted since the last write.
        for ledger in self._ledgers():
            try:
                ledger.flush(force=True)
            except Exception as exc:  # noqa: BLE001 - the cluster may be going away too
                logger.warning("counts not written at shutdown: %s", exc)

    def _ledgers(self) -> list[Any]:
        stats = getattr(self, "stats", None)
        return [stats] if stats is not None else []

    async def _compute(self, batch: Batch, links: list[Any]) -> tuple[Batch, Failures]:
        """The batch's outputs (answered requests only) and the others' errors. A failure
        anywhere runs each request alone, so only the culprit fails."""
        try:
            prepare_started = time.perf_counter_ns()
            prepared = self.runtime.prepare(batch.columns)
            self.stats.counts.add("compute_input", 1, time.perf_counter_ns() - prepare_started)
            outputs = await self._forward_chunks(prepared, links, batch.offsets)
        except Exception:  # noqa: BLE001 - isolate the culprit by running requests alone
            return await self._each_alone(batch, links)
        return Batch(outputs, batch.offsets), {}

    async def _forward_chunks(
        self, columns: Columns, links: list[Any], offsets: np.ndarray | None = None
    ) -> Columns:
        """One forward pass per run of rows that fits the cost budget, in order. `offsets`
        (where each request's rows start) count the requests each pass serves; none: one."""
        budget = self.cost_budget()
        self.runtime.cost_budget = budget
        self.threads.apply()
        spans = chunk_spans(self.runtime.row_costs(columns), budget)
        parts = []
        for k, (start, stop, cost) in enumerate(spans):
            if k:  # let the loop breathe between forward passes of a large batch
                await asyncio.sleep(0)
            chunk = columns if len(spans) == 1 else {n: a[start:stop] for n, a in columns.items()}
            with self.monitor.call("compute", {"batch.rows": stop - start}, links):
                pass_started = time.perf_counter_ns()
                outputs = self.runtime.forward(chunk)
                self.stats.counts.add_pass(stop - start, time.perf_counter_ns() - pass_started)
            _check_rows(outputs, stop - start)
            self.batch_metrics.batch(_requests_in(offsets, start, stop), stop - start, cost)
            self.kind.observe_outputs(outputs, self.batch_metrics)
            if self.prediction_drift is not None:
                self.prediction_drift.observe(outputs)
            parts.append(outputs)
        return parts[0] if len(parts) == 1 else Batch.of(parts).columns

    async def _each_alone(self, batch: Batch, links: list[Any]) -> tuple[Batch, Failures]:
        parts, failures = [], {}
        for i in range(len(batch)):
            try:
                parts.append(await self._forward_chunks(self.runtime.prepare(batch.part(i)), links))
            except ServingError as exc:
                failures[i] = exc
            except Exception as exc:  # noqa: BLE001 - becomes this request's typed error
                failures[i] = InferenceFailed(
                    f"model forward pass failed: {type(exc).__name__}: {exc}"
                )
        return Batch.of(parts), failures

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.metadata.name,
            "version": self.version,
            "kind": self.kind.kind,
            "variant": self.runtime.variant,
            "device": str(self.runtime.device),
            "node_id": _node_id(),
            "ready": True,
            "batch": self.batch.model_dump(mode="json"),
            "cost_budget_now": self.cost_budget(),
        }

    def ready(self) -> bool:
        """Answers only once __init__ has loaded and warmed the model."""
        return True

    def check_health(self) -> None:
        # A replica whose device went away (e.g. a CUDA fault) must be replaced.
        self.threads.apply()
        self.runtime.check_health()


class TimeAveraged:
    """A count (requests in flight) and its average over time since the last reading.

    A batch passes through a replica in milliseconds, so the count read at one instant is
    mostly 0 or a whole batch: the time average says how many requests the replica holds."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.value = 0
        self._since = self._changed = clock()
        self._area = 0.0

    def add(self, delta: int) -> None:
        now = self._clock()
        self._area += self.value * (now - self._changed)
        self._changed, self.value = now, self.value + delta

    def average_since_last(self) -> float:
        now = self._clock()
        area = self._area + self.value * (now - self._changed)
        elapsed = now - self._since
        self._since = self._changed = now
        self._area = 0.0
        return area / elapsed if elapsed > 0 else float(self.value)


def batch_config(values: dict[str, Any]) -> BatchConfig:
    """The batching part of a (possibly larger, e.g. shadow) user_config."""
    return BatchConfig.model_validate(
        {k: v for k, v in values.items() if k in BatchConfig.model_fields}
    )


def chunk_spans(costs: np.ndarray, budget: int) -> list[tuple[int, int, int]]:
    """Consecutive row ranges `(start, stop, cost)` of at most `budget` cost each. A row that
    costs more than the budget goes alone (one row cannot be split), counted as the budget."""
    spans, start, used = [], 0, 0
    for row, cost in enumerate(costs.tolist()):
        if row > start and used + cost > budget:
            spans.append((start, row, min(used, budget)))
            start, used = row, 0
        used += cost
    if start < len(costs) or not spans:
        spans.append((start, len(costs), min(used, budget)))
    return spans


def _requests_in(offsets: np.ndarray | None, start: int, stop: int) -> int:
    """Requests with rows in [start, stop), given where each request's rows start."""
    if offsets is None or stop <= start:
        return 1
    first = int(np.searchsorted(offsets, start, side="right")) - 1
    last = int(np.searchsorted(offsets, stop - 1, side="right")) - 1
    return last - first + 1


def _check_rows(outputs: Columns, rows: int) -> None:
    for name, array in outputs.items():
        if len(array) != rows:
            raise InferenceFailed(f"output {name!r} has {len(array)} rows for {rows} inputs")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@serve.deployment(name="ModelReplica")
class ModelReplica(BatchedReplica):
    """The primary: answers the ingress."""

    async def predict_many(
        self, batch: Batch, traceparents: Sequence[str | None] | None = None
    ) -> Answer:
        return await self.infer_many(batch, traceparents)
