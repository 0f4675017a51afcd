"""The one place that times, logs and counts a call: `Monitor` and the `@monitored` decorator.

A stage (validation, queue wait, compute, shadow comparison) is timed once, and that one
measurement feeds the stage-latency histogram, the outcome counter, the stage's span and the
slow-call log line, so the dashboards, the traces and the logs can never disagree about it.

    class Validator:
        def __init__(self, ...):
            self.monitor = Monitor("Validator", StageMetrics(model, version))

        @returned_not_raised          # outermost: turns a typed error into a return value
        @monitored("validation")      # sees the raised error, so counts it by its code
        def features(self, instances): ...
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import Link

from deployments.errors import ServingError
from deployments.telemetry.tracing import child_span

logger = logging.getLogger("ray.serve")
F = TypeVar("F", bound=Callable[..., Any])


class StageSink(Protocol):
    def record(self, stage: str, elapsed_ms: float, outcome: str) -> None: ...


class Monitor:
    def __init__(self, deployment: str, sink: StageSink, slow_call_ms: float = 1000.0) -> None:
        self.deployment = deployment
        self.sink = sink
        # A call slower than this is logged at WARNING; the rest only at DEBUG, because a
        # line per call costs real CPU at thousands of requests per second.
        self.slow_call_ms = slow_call_ms

    @contextmanager
    def call(
        self,
        stage: str,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        parent: Context | None = None,
    ) -> Iterator[Any]:
        started = time.perf_counter()
        outcome = "ok"
        with child_span(self.deployment, stage, attributes, links=links, parent=parent) as span:
            try:
                yield span
            except ServingError as exc:
                outcome = exc.code
                raise
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                elapsed_ms = (time.perf_counter() - started) * 1000
                self.record(stage, elapsed_ms, outcome)

    def record(self, stage: str, elapsed_ms: float, outcome: str = "ok") -> None:
        """A measurement taken elsewhere (e.g. a batch's queue wait): counted and logged here."""
        self.sink.record(stage, elapsed_ms, outcome)
        if elapsed_ms >= self.slow_call_ms:
            logger.warning(
                "%s %s took %.1f ms (%s)",
                self.deployment,
                stage,
                elapsed_ms,
                outcome,
                extra={"stage": stage, "elapsed_ms": round(elapsed_ms, 3), "outcome": outcome},
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s %.2f ms (%s)",
                self.deployment,
                stage,
                elapsed_ms,
                outcome,
                extra={"stage": stage, "elapsed_ms": round(elapsed_ms, 3), "outcome": outcome},
            )


def monitored(stage: str) -> Callable[[F], F]:
    """Run a method under `self.monitor.call(stage)`; sync and async methods alike."""

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                with self.monitor.call(stage):
                    return await fn(self, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self.monitor.call(stage):
                return fn(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def replica_deployment_name(default: str) -> str:
    """The deployment this replica belongs to, or `default` outside a replica (unit tests)."""
    from ray import serve

    try:
        return serve.get_replica_context().deployment
    except Exception:  # noqa: BLE001 - not a replica
        return default


def replica_unique_id() -> str:
    """This replica's unique id, or "local" outside a replica (unit tests)."""
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not a replica
        return "local"
