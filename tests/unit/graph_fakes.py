"""In-process stand-ins for the graph's deployment handles: the real kinds, validation and
forward passes, without Ray. A handle's `method.remote(...)` returns an awaitable, as a
Serve `DeploymentHandle`'s does; what crosses it is what crosses a real hop (a `Batch`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from deployments.admission.auth import BearerAuth
from deployments.kinds.base import Answer, Batch
from deployments.repository.store import load_kind
from deployments.roles.dataplane import DataPlane, ServedModel
from deployments.roles.http import build_http_app
from deployments.roles.validator import decode
from deployments.telemetry.model_stats import ModelStatistics


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            await asyncio.sleep(0)  # a real hop yields the event loop
            return self.fn(*args)

        return call()


class FakeHandle:
    """Exposes a target's methods as `handle.<method>.remote(...)`; counts calls."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> _Method:
        fn = getattr(self._target, name)

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return fn(*args)

        return _Method(counted)


class InProcessValidator:
    def __init__(self, kind: Any, max_rows: int) -> None:
        self.kind, self.max_rows = kind, max_rows

    def validate_many(self, requests: list[Any]) -> Any:
        parts, valid, failures = [], [], {}
        for i, (protocol, payload, _trace) in enumerate(requests):
            try:
                parts.append(decode(self.kind, protocol, payload, self.max_rows))
                valid.append(i)
            except Exception as exc:  # noqa: BLE001 - the real validator returns these too
                failures[i] = exc
        return Batch.of(parts), valid, failures

    def ready(self) -> bool:
        return True


class InProcessReplica:
    """A ModelReplica deployment of `replicas` replicas: calls are answered by each in turn,
    as Serve's router spreads them."""

    def __init__(self, kind: Any, runtime: Any, version: str, replicas: int = 1) -> None:
        self.kind, self.runtime, self.version = kind, runtime, version
        self.replicas = replicas
        self.batches: list[int] = []
        self.stats = ModelStatistics()

    def predict_many(self, batch: Batch, traceparents: Any = None) -> Answer:
        self.batches.append(len(batch))
        parts = [self.runtime.forward(self.runtime.prepare(p)) for p in batch.parts()]
        replica = f"replica-{len(self.batches) % self.replicas}"
        self.stats.add("success", len(batch), 0)
        self.stats.inference_count += batch.rows
        return Answer(Batch.of(parts), list(range(len(batch))), {}, self.version, 1.0, replica)

    def ready(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu", "batch": {"max_batch_size": 64}}

    def statistics(self) -> dict[str, Any]:
        return self.stats.triton(self.kind.metadata.name, self.version)


class RecordingMetrics:
    """IngressMetrics' shape; records every (metric, tags) it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class _Counter:
            def __init__(self, name: str) -> None:
                self.name = name

            def inc(self, value: float = 1, tags: dict[str, str] | None = None) -> None:
                outer.seen.append((self.name, dict(tags or {})))

            def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
                outer.seen.append((self.name, dict(tags or {})))

            def set(self, value: float, tags: dict[str, str] | None = None) -> None:
                outer.seen.append((self.name, dict(tags or {})))

        names = ("cache", "rejections", "retries", "caller_batch", "rate_limited", "cache_bytes")
        for name in names:
            setattr(self, name, _Counter(name))


def served_model(model_dir: Any, name: str, version: str, allowed: Any = ()) -> ServedModel:
    kind = load_kind(model_dir, name, version)
    runtime = kind.load(str(model_dir), "cpu", list(allowed))
    validator = None
    if kind.validates_at == "validator":
        validator = FakeHandle(InProcessValidator(kind, 1024))
    return ServedModel(
        kind=kind,
        versions=[version],
        model=FakeHandle(InProcessReplica(kind, runtime, version)),
        validator=validator,
    )


def http_app(
    models: dict[str, ServedModel],
    token: str | None = None,
    metrics: Any = None,
    keys: dict[str, str] | None = None,
) -> Any:
    """The ingress's HTTP app; `token` is one key (client id "test-client"), `keys` several."""
    plane = DataPlane(models, metrics)
    keys = dict(keys or {})
    if token:
        keys[token] = "test-client"
    return build_http_app(plane, BearerAuth(keys), 1 << 20), plane
