"""Ingress-side mirroring: sample, queue (bounded), send, and never let the shadow hurt.

- Sampling happens after the primary has answered; offering a mirror never blocks.
- The queue is bounded: when it is full the mirror is dropped and counted, so a slow
  shadow can never make the ingress hold memory.
- Sender tasks are created in a fresh `contextvars.Context`, outside any request. Serve
  cancels a request's child calls when that request is cancelled (client gone, timeout);
  mirrors sent from these tasks are nobody's children, so they outlive their request.
- Each mirror carries the `traceparent` of the request it copies (when sampled), so the
  shadow's spans join that request's trace even though the sender task is nobody's child.
- Mirrors leave in batches, one `mirror_many` call each (each mirror is still compared and
  counted on its own): one sender at a time gathers, for `shadow_batch_wait_s` after the
  first mirror or until the batch is full, while the others' calls are out. Without the
  wait, idle senders would each take one mirror, and every mirror would cost a handle call
  in the ingress and a call in the shadow.
- Every failure (timeout, the shadow's own queue full, replica gone) is counted by reason
  and swallowed: the primary's status and latency do not depend on the shadow.
- A replica that stops (a rollout, scaling down) first drains what it queued, for at most
  `shadow_timeout_s`; what is still left then is counted as dropped (`shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections import Counter
from typing import Any

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.config import IngressConfig
from deployments.telemetry.tracing import current_traceparent

logger = logging.getLogger("ray.serve")


class Mirror:
    def __init__(
        self, shadow: DeploymentHandle, config: IngressConfig, metrics: Any = None
    ) -> None:
        self.shadow = shadow
        self.config = config
        self.metrics = metrics
        self.sent = 0
        self.drops: Counter[str] = Counter()
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._gathering = asyncio.Lock()
        # Mirrors queued or on their way, and an event set whenever there are none.
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def reconfigure(self, config: IngressConfig) -> None:
        resize = self._queue is not None and (
            config.shadow_queue_size != self.config.shadow_queue_size
            or config.shadow_concurrency != self.config.shadow_concurrency
        )
        self.config = config
        if resize:
            self._stop_senders()

    def offer(self, payload: dict[str, Any]) -> bool:
        """Maybe mirror this request. Returns whether it was queued."""
        if random.random() >= self.config.shadow_sample_rate:
            return False
        queue = self._ensure_senders()
        try:
            # The request's own trace travels with its copy (None when it is not sampled).
            queue.put_nowait({**payload, "traceparent": current_traceparent()})
        except asyncio.QueueFull:
            self._drop("queue_full")
            return False
        self._pending += 1
        self._idle.clear()
        return True

    async def drain(self, timeout_s: float | None = None) -> int:
        """Wait until every queued mirror has been sent (or failed and been counted), at most
        `timeout_s` (default `shadow_timeout_s`); then stop the senders. Returns how many were
        still pending and are counted as dropped (`shutdown`)."""
        limit_s = self.config.shadow_timeout_s if timeout_s is None else timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), limit_s)
        left = self._pending
        if left:
            self._drop("shutdown", left)
        for task in self._senders:
            task.cancel()
        self._queue, self._senders = None, []
        self._settled(left)
        return left

    def counts(self) -> dict[str, int]:
        return dict(self.drops)

    def _ensure_senders(self) -> asyncio.Queue[dict[str, Any]]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.config.shadow_queue_size)
            loop = asyncio.get_running_loop()
            detached = contextvars.Context()
            self._senders = [
                loop.create_task(self._send_forever(self._queue), context=detached.copy())
                for _ in range(self.config.shadow_concurrency)
            ]
        return self._queue

    def _stop_senders(self) -> None:
        # Queued mirrors are given up on a resize; the counters say how many.
        if self._queue is not None:
            queued = self._queue.qsize()
            if queued:
                self._drop("reconfigured", queued)
            self._settled(queued)
        for task in self._senders:
            task.cancel()
        self._queue, self._senders = None, []

    async def _send_forever(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            # Settled however it ends: a sender cancelled while it gathers (a resize) holds
            # mirrors that are in neither the queue nor a call, and must not stay pending.
            batch: list[dict[str, Any]] = []
            try:
                async with self._gathering:
                    await self._gather(queue, batch)
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a sender must never die
                logger.exception("shadow mirror sender failed")
            finally:
                self._settled(len(batch))

    async def _gather(
        self, queue: asyncio.Queue[dict[str, Any]], batch: list[dict[str, Any]]
    ) -> None:
        """Fill `batch`: the first mirror to arrive, and what joins it within the wait."""
        batch.append(await queue.get())
        limit = self.config.shadow_batch_max_requests
        if len(batch) + queue.qsize() < limit and self.config.shadow_batch_wait_s > 0:
            await asyncio.sleep(self.config.shadow_batch_wait_s)
        while len(batch) < limit and not queue.empty():
            batch.append(queue.get_nowait())

    def _settled(self, count: int) -> None:
        self._pending = max(0, self._pending - count)
        if self._pending == 0:
            self._idle.set()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        response = self.shadow.mirror_many.remote(batch)
        try:
            await asyncio.wait_for(_result(response), self.config.shadow_timeout_s)
        except TimeoutError:
            response.cancel()
            self._drop("timeout", len(batch))
        except BackPressureError:
            self._drop("shadow_queue_full", len(batch))
        except Exception as exc:  # noqa: BLE001 - replica died, unavailable, ...
            self._drop("unavailable", len(batch))
            logger.warning("mirror to shadow failed: %s: %s", type(exc).__name__, exc)
        else:
            self.sent += len(batch)
            if self.metrics:
                self.metrics.sent.inc(len(batch))

    def _drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] += count
        if self.metrics:
            self.metrics.dropped.inc(count, {"reason": reason})


async def _result(response: Any) -> Any:
    return await response
