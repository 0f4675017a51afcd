"""Per-request telemetry at the ingress, as plain ASGI middleware (no extra task per request).

For every HTTP request: one server span named for the Ingress deployment and the matched
route (continuing the caller's W3C `traceparent`, or starting a trace at the target's
`trace_sampling_ratio`: `tracing.request_parent`), the trace id in the `x-trace-id` response
header, and the request counted and timed by model, version, endpoint and status. The route
template, not the raw path, is the endpoint label, and a model name nobody serves is
recorded as "_unknown", so clients cannot grow the number of series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from deployments.telemetry.tracing import (
    TRACE_ID_HEADER,
    child_span,
    format_trace_id,
    request_parent,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CLIENT_CLOSED_REQUEST = 499


@dataclass
class TelemetryTarget:
    """What the middleware records into; set on `app.state.telemetry` by the Ingress."""

    metrics: Any  # deployments.telemetry.metrics.RequestMetrics
    versions: dict[str, str]  # served model name -> primary version
    # Share of requests without a caller's traceparent that start a recorded trace.
    trace_sampling_ratio: float = 0.0


class RequestTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The wrapped app's state (where the Ingress sets `telemetry`), reachable from here.
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        traceparent = None
        for key, value in scope.get("headers") or ():
            if key == b"traceparent":
                traceparent = value.decode("latin-1")
                break
        status, responded = 500, False
        target = getattr(self.state, "telemetry", None)
        ratio = target.trace_sampling_ratio if target is not None else 0.0
        with child_span(
            "Ingress",
            scope.get("method", "HTTP"),
            parent=request_parent(traceparent, ratio),
            kind=SpanKind.SERVER,
        ) as span:
            ctx = span.get_span_context()
            trace_id = format_trace_id(ctx.trace_id).encode() if ctx.is_valid else None

            async def send_with_trace_id(message: Message) -> None:
                nonlocal status, responded
                if message["type"] == "http.response.start":
                    status, responded = message["status"], True
                    if trace_id is not None:
                        headers = list(message.get("headers") or [])
                        headers.append((TRACE_ID_HEADER.encode(), trace_id))
                        message["headers"] = headers
                await send(message)

            try:
                await self.app(scope, receive, send_with_trace_id)
            except asyncio.CancelledError:
                # The client went away before the answer (wrk closing its connections, a
                # load balancer's timeout): 499 as the error mapping says, not a server error.
                if not responded:
                    status = CLIENT_CLOSED_REQUEST
                raise
            finally:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"
                if span.is_recording():
                    span.update_name(f"Ingress {scope.get('method', 'HTTP')} {endpoint}")
                    span.set_attribute("http.route", endpoint)
                    span.set_attribute("http.response.status_code", status)
                self._record(scope, endpoint, status, (time.perf_counter() - started) * 1000)

    @staticmethod
    def _record(scope: Scope, endpoint: str, status: int, elapsed_ms: float) -> None:
        app = scope.get("app")
        target: TelemetryTarget | None = getattr(getattr(app, "state", None), "telemetry", None)
        if target is None:
            return
        name = (scope.get("path_params") or {}).get("name")
        if name is None and len(target.versions) == 1:
            name = next(iter(target.versions))
        version = target.versions.get(name or "", "")
        model = name if name in target.versions else "_unknown"
        target.metrics.answered(model, version, endpoint, status, elapsed_ms)
