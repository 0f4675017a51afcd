"""The shadow side of batched mirroring: many mirrored requests arrive in one call.

The ingress's `Mirror` sends what queued while its previous call was out as one
`mirror_many(payloads)` call. Each payload is compared on its own, as if it had come alone,
inside the trace of the request it copies (its `traceparent`, present only when sampled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context

from deployments.telemetry.tracing import context_from_traceparent


async def mirror_each(
    mirror: Callable[..., Awaitable[None]], payloads: list[dict[str, Any]]
) -> None:
    async def one(payload: dict[str, Any]) -> None:
        payload = dict(payload)
        parent = context_from_traceparent(payload.pop("traceparent", None))
        token = otel_context.attach(parent) if parent is not None else None
        try:
            await mirror(**payload)
        finally:
            if token is not None:
                otel_context.detach(token)

    # Each in its own task (gather), so one payload's context never leaks into another's.
    await asyncio.gather(*(one(p) for p in payloads))
