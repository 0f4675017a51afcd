"""ModelReplica: one model version, batched, on cuda when present else cpu. Every kind.

Requests arrive many at a time (the ingress batches its callers) as one `Batch` of arrays.
Each request is prepared by its kind (e.g. tokenized), split into chunks whose cost (rows,
or tokens) fits one forward pass and the memory headroom, and joins the replica's one
`@serve.batch` queue, whose size is counted in cost units. A forward pass runs over the
chunks' rows concatenated; if it fails, each chunk is retried alone so only the culprit
fails. Answers go back as arrays, with failures by request index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from deployments.admission.memory_guard import MemoryGuard, memory_guarded
from deployments.config import BatchConfig
from deployments.errors import InferenceFailed, ServingError
from deployments.kinds.base import Batch, Columns, Failures, rows_of
from deployments.kinds.devices import gpu_memory_probe
from deployments.kinds.torch_threads import ThreadCount
from deployments.repository.store import load_kind
from deployments.roles.autoscaling import REQUESTS_IN_FLIGHT
from deployments.telemetry.metrics import BatchMetrics, StageMetrics
from deployments.telemetry.monitoring import Monitor, replica_deployment_name
from deployments.telemetry.tracing import (
    context_of_link,
    install_log_correlation,
    link_from_traceparent,
    link_to_current,
)

logger = logging.getLogger("ray.serve")


@dataclass
class Chunk:
    """Rows of one request waiting for a forward pass, with what the batch span needs."""

    columns: Columns
    cost: int
    link: Any = None
    enqueued_at: float = field(default_factory=time.perf_counter)


def _cost(chunks: list[Chunk]) -> int:
    return sum(chunk.cost for chunk in chunks)


@dataclass
class Answer:
    """Outputs of the answered requests (in order of `answered`), and the others' errors."""

    outputs: Batch
    answered: list[int]
    failures: Failures
    model_version: str
    infer_ms: float


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
        # Requests inside `infer` now: the autoscaling signal (deployments/roles/autoscaling.py).
        self.requests_in_flight = 0
        install_log_correlation(logger)
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
        self._run_batch.set_max_batch_size(batch.max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(batch.batch_wait_timeout_s)
        # Serve routes no traffic to a new replica until this returns: warm the new shape.
        self.runtime.warm_up(batch.max_batch_size)

    def cost_budget(self) -> int:
        """Cost units per forward pass: the batch size, or fewer if memory cannot hold them."""
        fits = self.memory_guard.headroom_bytes() // max(1, self.runtime.bytes_per_cost)
        return max(1, min(self.batch.max_batch_size, fits))

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this for the autoscaling policy (see deployments/roles/autoscaling.py)."""
        return {REQUESTS_IN_FLIGHT: float(self.requests_in_flight)}

    async def infer_many(
        self, batch: Batch, traceparents: Sequence[str | None] | None = None
    ) -> Answer:
        """Outputs for every request of `batch`; each request's span joins its own trace."""
        started = time.perf_counter()
        links = [link_from_traceparent(t) for t in traceparents or [None] * len(batch)]
        results = await asyncio.gather(
            *(self._infer_request(batch.part(i), links[i]) for i in range(len(batch)))
        )
        answered = [i for i, r in enumerate(results) if not isinstance(r, ServingError)]
        failures = {i: r for i, r in enumerate(results) if isinstance(r, ServingError)}
        return Answer(
            Batch.of([results[i] for i in answered]),
            answered,
            failures,
            self.version,
            (time.perf_counter() - started) * 1000,
        )

    async def _infer_request(self, columns: Columns, link: Any) -> Columns | ServingError:
        try:
            with self.monitor.call("predict", parent=context_of_link(link) if link else None):
                return await self.infer(columns, link)
        except ServingError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - becomes this request's typed error
            return InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")

    @memory_guarded(lambda self: self.memory_guard)
    async def infer(self, columns: Columns, link: Any = None) -> Columns:
        """Outputs for one request's rows."""
        self.requests_in_flight += 1
        try:
            prepared = self.runtime.prepare(columns)
            costs = self.runtime.row_costs(prepared)
            chunks = _chunks(prepared, costs, self.cost_budget(), link or link_to_current())
            parts = await asyncio.gather(*map(self._run_batch, chunks))
        finally:
            self.requests_in_flight -= 1
        for part in parts:
            if isinstance(part, ServingError):
                raise part
        return Batch.of(parts).columns

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=_cost)
    async def _run_batch(self, chunks: list[Chunk]) -> list[Columns | ServingError]:
        started = time.perf_counter()
        for chunk in chunks:
            self.monitor.record("queue_wait", (started - chunk.enqueued_at) * 1000)
        try:
            batch = Batch.of([chunk.columns for chunk in chunks])
        except Exception:  # noqa: BLE001 - chunks that do not stack (shapes): each alone
            return [self._forward_alone(chunk) for chunk in chunks]
        self.batch_metrics.batch(len(chunks), batch.rows, _cost(chunks))
        # One forward pass serves many traces: its span lives in the first sampled member's
        # trace and links to every sampled member's.
        links = [chunk.link for chunk in chunks if chunk.link is not None]
        attributes = {"batch.requests": len(chunks), "batch.rows": batch.rows}
        parent = context_of_link(links[0]) if links else None
        self.runtime.cost_budget = self.cost_budget()
        self.threads.apply()
        with self.monitor.call("compute", attributes, links, parent=parent):
            try:
                outputs = self.runtime.forward(batch.columns)
                _check_rows(outputs, batch.rows)
            except Exception:  # noqa: BLE001 - isolate the culprit by running chunks alone
                return [self._forward_alone(chunk) for chunk in chunks]
        self.kind.observe_outputs(outputs, self.batch_metrics)
        return Batch(outputs, batch.offsets).parts()

    def _forward_alone(self, chunk: Chunk) -> Columns | ServingError:
        try:
            outputs = self.runtime.forward(chunk.columns)
            _check_rows(outputs, rows_of(chunk.columns))
        except ServingError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - becomes this chunk's typed error
            return InferenceFailed(f"model forward pass failed: {type(exc).__name__}: {exc}")
        self.kind.observe_outputs(outputs, self.batch_metrics)
        return outputs

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


def batch_config(values: dict[str, Any]) -> BatchConfig:
    """The batching part of a (possibly larger, e.g. shadow) user_config."""
    return BatchConfig.model_validate(
        {k: v for k, v in values.items() if k in BatchConfig.model_fields}
    )


def _chunks(columns: Columns, costs: np.ndarray, budget: int, link: Any) -> list[Chunk]:
    """Consecutive rows of one request in chunks of at most `budget` cost. A row that costs
    more than the budget goes alone, counted as the budget: the batch queue refuses an item
    larger than its whole batch, and one row cannot be split."""
    chunks, start, used = [], 0, 0
    for row, cost in enumerate(costs.tolist()):
        if row > start and used + cost > budget:
            chunks.append(
                Chunk({k: v[start:row] for k, v in columns.items()}, min(used, budget), link)
            )
            start, used = row, 0
        used += cost
    if start < len(costs) or not chunks:
        chunks.append(Chunk({k: v[start:] for k, v in columns.items()}, min(used, budget), link))
    return chunks


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
