"""The data plane: protocol-neutral inference over every served model, whatever its kind.

The HTTP adapter (`roles/http.py`) parses envelopes and renders answers; everything between
(admission, deadlines, the result cache, batching at the caller, the Validator and
ModelReplica calls, retries, mirroring to the shadow) happens here, once, for every kind.
No torch, no HTTP. The handles are Serve `DeploymentHandle`s in a replica and fakes in unit
tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployments.admission.caller_batch import CallerBatcher
from deployments.admission.inflight import Admission, Deadline, HeldBytes, InflightSlot
from deployments.admission.memory_guard import MemoryGuard
from deployments.admission.rate_limit import RateLimiter
from deployments.admission.resilience import ResultCache, is_transient, retry_transient
from deployments.config import IngressConfig
from deployments.errors import (
    DriftNotConfigured,
    ModelNotFound,
    Overloaded,
    ServingError,
    ShadowNotConfigured,
    raise_if_error,
)
from deployments.kinds.base import Batch, Columns, ModelKind
from deployments.protocol import triton
from deployments.roles.validator import decode
from deployments.shadow.mirror import Mirror
from deployments.telemetry.tracing import current_trace_id, current_traceparent

logger = logging.getLogger("ray.serve")

READY_PROBE_TIMEOUT_S = 2.0
READY_CACHE_S = 1.0
NO_DEADLINE = Deadline(None)


class ReplicasSeen:
    """The model's replicas as this ingress sees them: the distinct ones that answered within
    the last `window_s`. Serve's router spreads calls over every replica it knows, so as the
    deployment scales this follows it without asking the controller."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._last: dict[str, float] = {}

    def saw(self, replica: str) -> None:
        self._last[replica] = time.monotonic()

    def count(self) -> int:
        horizon = time.monotonic() - self.window_s
        for replica in [r for r, at in self._last.items() if at < horizon]:
            del self._last[replica]
        return max(1, len(self._last))


@dataclass
class ServedModel:
    """One model as the data plane serves it: its kind and the handles of its deployments."""

    kind: ModelKind
    versions: list[str]
    model: Any  # ModelReplica handle
    validator: Any | None = None  # None: the kind validates here (validates_at == "ingress")
    mirror: Mirror | None = None
    max_rows: int = 1024
    replicas: ReplicasSeen = field(default_factory=ReplicasSeen)
    # This model's batches on their way (set by the DataPlane).
    batcher: CallerBatcher[Work, Any] | None = None

    @property
    def name(self) -> str:
        return self.kind.metadata.name


@dataclass
class Work:
    """One request's inference, as it waits in the caller batch."""

    protocol: str  # "v1" | "v2"
    payload: Any  # instances, v2 input tensors, or (validated at the ingress) columns
    columns: Columns | None = None
    # This request's own trace, carried through the batch's calls (None when unsampled).
    traceparent: str | None = field(default_factory=current_traceparent)


@dataclass
class Prediction:
    outputs: Columns
    model_version: str
    infer_ms: float


class _Admitted(InflightSlot):
    """`DataPlane.admitted`: the deadline, memory, then the admission's in-flight slot; a
    refusal counted for the model."""

    __slots__ = ("plane", "served", "header")

    def __init__(self, plane: DataPlane, served: ServedModel, header: str | None) -> None:
        super().__init__(plane.admission)
        self.plane, self.served, self.header = plane, served, header

    def __enter__(self) -> Deadline:  # type: ignore[override]
        plane = self.plane
        deadline = Deadline.from_header(self.header, plane.config.max_deadline_ms)
        try:
            plane.memory.check()
            super().__enter__()
        except Overloaded as exc:
            plane._metric("rejections", self.served.name, {"reason": exc.details[0]["reason"]})
            raise
        return deadline


class _Holding(HeldBytes):
    """`DataPlane.holding`: the admission's byte hold; a refusal counted for the model."""

    __slots__ = ("plane", "served")

    def __init__(self, plane: DataPlane, served: ServedModel, size_bytes: int) -> None:
        super().__init__(plane.admission, size_bytes)
        self.plane, self.served = plane, served

    def __enter__(self) -> None:
        try:
            super().__enter__()
        except Overloaded:
            self.plane._metric("rejections", self.served.name, {"reason": "inflight_bytes"})
            raise


class DataPlane:
    def __init__(self, models: dict[str, ServedModel], metrics: Any = None) -> None:
        self.models = models
        self.config = config = IngressConfig()
        self.metrics = metrics
        self.admission = Admission(
            config.max_inflight_requests,
            config.max_retry_after_s,
            max_queue_delay_s=config.max_queue_delay_s,
            min_inflight=config.min_inflight_requests,
            max_inflight_bytes=config.max_inflight_bytes,
        )
        self.cache = self._cache(config)
        self.limiter = RateLimiter(config.rate_limit)
        self._readiness: dict[str, tuple[float, bool]] = {}
        self._probes: dict[str, asyncio.Future[bool]] = {}
        self.memory = MemoryGuard(config.memory)
        for served in models.values():
            served.batcher = self._batcher(served)

    def _batcher(self, served: ServedModel) -> CallerBatcher[Work, Any]:
        """Batching at the caller, the one batching layer: a model's requests in flight go
        to its Validator in one call and to its ModelReplica in one more. The batches on
        their way at once (the pipeline's depth) follow the replicas there are."""
        config = self.config
        tags = {"model": served.name}
        return CallerBatcher(
            lambda works: self._infer_group(served, works),
            config.caller_batch_max_requests,
            config.caller_batch_wait_s,
            config.caller_batch_max_concurrent,
            on_batch=lambda n: self.metrics and self.metrics.caller_batch.observe(n, tags),
            min_overlap=served.kind.caller_batch_min_overlap,
        )

    def reconfigure(self, config: IngressConfig) -> None:
        old = self.config
        self.admission.max_inflight = config.max_inflight_requests
        self.admission.max_queue_delay_s = config.max_queue_delay_s
        self.admission.min_inflight = config.min_inflight_requests
        self.admission.max_retry_after_s = config.max_retry_after_s
        self.admission.max_inflight_bytes = config.max_inflight_bytes
        if self._cache_shape(old) != self._cache_shape(config):
            self.cache = self._cache(config)
        self.cache.mode = config.cache_mode
        self.limiter.reconfigure(config.rate_limit)
        self.memory.config = config.memory
        self.config = config
        for served in self.models.values():
            served.batcher.max_items = config.caller_batch_max_requests
            served.batcher.max_wait_s = config.caller_batch_wait_s
            self._follow_replicas(served)
            if served.mirror is not None:
                served.mirror.reconfigure(config)

    @staticmethod
    def _cache_shape(config: IngressConfig) -> tuple[Any, ...]:
        return (
            config.cache_ttl_s,
            config.cache_max_bytes,
            config.cache_min_hit_ratio,
            config.cache_probe_lookups,
            config.cache_pause_s,
        )

    @staticmethod
    def _cache(config: IngressConfig) -> ResultCache:
        return ResultCache(
            config.cache_mode,
            config.cache_ttl_s,
            config.cache_max_bytes,
            min_hit_ratio=config.cache_min_hit_ratio,
            probe_lookups=config.cache_probe_lookups,
            pause_s=config.cache_pause_s,
        )

    # ---- lookups -----------------------------------------------------------------------

    def served(self, name: str, version: str | None = None) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"model {name!r} is not served here; models: {sorted(self.models)}")
        if version is not None and version not in served.versions:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} here; versions: {served.versions}"
            )
        return served

    async def is_ready(self, served: ServedModel) -> bool:
        """Whether the model's deployments answer. Health paths are open to anyone without a
        token, so each model is asked at most once per READY_CACHE_S however often they are
        called: one probe in flight, shared, and its answer kept that long."""
        now = time.monotonic()
        kept = self._readiness.get(served.name)
        if kept is not None and now - kept[0] < READY_CACHE_S:
            return kept[1]
        probe = self._probes.get(served.name)
        if probe is None:
            probe = asyncio.ensure_future(self._probe_ready(served))
            self._probes[served.name] = probe
            probe.add_done_callback(lambda _: self._probes.pop(served.name, None))
        ready = await asyncio.shield(probe)
        self._readiness[served.name] = (time.monotonic(), ready)
        return ready

    async def _probe_ready(self, served: ServedModel) -> bool:
        try:
            checks = [served.model.ready.remote()]
            if served.validator is not None:
                checks.append(served.validator.ready.remote())
            return all(await asyncio.wait_for(asyncio.gather(*checks), READY_PROBE_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    async def all_ready(self) -> bool:
        return all(await asyncio.gather(*(self.is_ready(m) for m in self.models.values())))

    # ---- inference -----------------------------------------------------------------------

    def admitted(self, served: ServedModel, deadline_header: str | None) -> _Admitted:
        """Deadline, memory and in-flight admission, all before any work is done; entering
        gives the request's Deadline."""
        return _Admitted(self, served, deadline_header)

    def holding(self, served: ServedModel, body_bytes: int) -> _Holding:
        """A received body's bytes held against the ingress's byte budget."""
        return _Holding(self, served, body_bytes)

    async def infer(
        self,
        served: ServedModel,
        protocol: str,
        payload: Any,
        cache_payload: Any,
        deadline: Deadline,
        request_id: str = "",
    ) -> Prediction:
        """Outputs for one request's payload (v1 instances or v2 input tensors)."""
        key = None
        if self.cache.enabled and cache_payload is not None:
            # The key costs a canonical dump and a hash: only when the cache is on.
            key = ResultCache.key(served.name, served.kind.metadata.version, cache_payload)
            cached = self.cache.get(key)
            self._metric("cache", served.name, {"result": "hit" if cached else "miss"})
            if cached is not None:
                return cached
        work = Work(protocol, payload)
        if served.validator is None:
            work.columns = decode(served.kind, protocol, payload, served.max_rows)
        # Past its deadline a request leaves the batch queue (nothing is sent for it); once
        # its batch is on the way, the rows are computed with the others but not awaited.
        columns, prediction = raise_if_error(
            await deadline.run(served.batcher.submit(work), "validation and inference")
        )
        if key is not None:
            self.cache.put(key, prediction)
            if self.metrics is not None:
                self.metrics.cache_bytes.set(self.cache.bytes_used)
        if served.mirror is not None:
            served.mirror.offer(
                {
                    "columns": columns,
                    "primary": prediction.outputs,
                    "primary_latency_ms": prediction.infer_ms,
                    "request_id": request_id,
                    "trace_id": current_trace_id(),
                }
            )
        return prediction

    def _follow_replicas(self, served: ServedModel) -> None:
        """The pipeline's depth: batches on their way per replica, times the replicas seen."""
        served.batcher.max_concurrent = (
            self.config.caller_batch_max_concurrent * served.replicas.count()
        )

    async def _infer_group(self, served: ServedModel, works: list[Work]) -> list[Any]:
        """One caller batch of a model: each request gets back its own `(columns,
        prediction)` or its own typed error; a stage that is down or full fails the members
        it carried with the same retryable 503."""
        answers: list[Any] = [None] * len(works)
        try:
            if served.validator is None:
                valid = list(range(len(works)))
                inputs = Batch.of([w.columns for w in works])  # type: ignore[misc]
            else:
                requests = [(w.protocol, w.payload, w.traceparent) for w in works]
                inputs, valid, failures = await self._call(
                    lambda: served.validator.validate_many.remote(requests),
                    "validation",
                    served.name,
                )
                for i, error in failures.items():
                    answers[i] = error
            if not valid:
                return answers
            traces = [works[i].traceparent for i in valid]
            answer = await self._call(
                lambda: served.model.predict_many.remote(inputs, traces), "inference", served.name
            )
        except ServingError as exc:
            return [exc] * len(works)
        if answer.replica:
            served.replicas.saw(answer.replica)
            self._follow_replicas(served)
        for j, error in answer.failures.items():
            answers[valid[j]] = error
        for k, j in enumerate(answer.answered):
            prediction = Prediction(answer.outputs.part(k), answer.model_version, answer.infer_ms)
            answers[valid[j]] = (inputs.part(j), prediction)
        return answers

    async def _call(self, issue: Callable[[], Any], what: str, model: str) -> Any:
        """One downstream call: idempotent, so retried when its replica died; a full
        downstream queue becomes a 503 whose Retry-After comes from the drain rate."""
        from ray.serve.exceptions import BackPressureError

        try:
            result = await retry_transient(
                lambda: NO_DEADLINE.run(issue(), what),
                self.config.retry_attempts,
                self.config.retry_max_wait_s,
                on_retry=lambda exc: self._metric("retries", model),
            )
        except BackPressureError:
            self._metric("rejections", model, {"reason": "downstream_queue_full"})
            raise Overloaded(
                f"the {what} stage is at capacity (its queue is full)",
                [{"reason": "downstream_queue_full"}],
                self.admission.retry_after_s(),
            ) from None
        except Exception as exc:
            if is_transient(exc):
                raise Overloaded(
                    f"the {what} stage is unavailable ({type(exc).__name__})",
                    [{"reason": "replica_unavailable"}],
                    self.admission.retry_after_s(),
                ) from exc
            raise
        return raise_if_error(result)

    # ---- Triton's model configuration and statistics ---------------------------------------

    async def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        served = self.served(name, version)
        replica = await served.model.describe.remote()
        return triton.model_config(
            served.kind,
            served.max_rows,
            self.config.caller_batch_wait_s,
            self.config.caller_batch_max_requests,
            replica,
            served.replicas.count(),
        )

    async def model_stats(self, name: str | None, version: str | None) -> dict[str, Any]:
        """Triton's `model_stats` of one model, or of every served model."""
        chosen = [self.served(name, version)] if name is not None else list(self.models.values())
        stats = await asyncio.gather(*(s.model.statistics.remote() for s in chosen))
        return {"model_stats": list(stats)}

    # ---- shadow ----------------------------------------------------------------------------

    def named_or_first(self, name: str | None) -> ServedModel:
        """The model a report asks for; with no name, the first served."""
        return self.served(name if name is not None else next(iter(self.models)))

    async def shadow_report(self, name: str | None) -> dict[str, Any]:
        served = self.named_or_first(name)
        if served.mirror is None:
            raise ShadowNotConfigured(f"model {served.name!r} has no candidate in shadow mode")
        report = await served.mirror.shadow.report.remote(served.mirror.counts())
        return {**report, "sample_rate": self.config.shadow_sample_rate}

    async def drain_mirrors(self) -> None:
        """Send what every model's mirror still holds before this replica stops (each bounded
        by its `shadow_timeout_s`, all at once)."""
        mirrors = [m.mirror for m in self.models.values() if m.mirror is not None]
        await asyncio.gather(*(mirror.drain() for mirror in mirrors))

    # ---- drift -----------------------------------------------------------------------------

    async def drift_report(self, name: str | None) -> dict[str, Any]:
        served = self.named_or_first(name)
        if served.validator is None:
            raise DriftNotConfigured(
                f"model {served.name!r} is of a kind ({served.kind.kind}) without drift scores"
            )
        return await served.validator.drift_report.remote()

    def rate_limited(self, client_class: str) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited.inc(1, {"client_class": client_class})

    def _metric(self, name: str, model: str, tags: dict[str, str] | None = None) -> None:
        """Count one event of counter `name` for `model` (when metrics are given)."""
        if self.metrics is not None:
            getattr(self.metrics, name).inc(1, {"model": model, **(tags or {})})
