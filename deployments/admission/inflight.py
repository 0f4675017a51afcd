"""Admission at the ingress: a bounded number of requests in flight, a Retry-After computed
from how fast requests are actually draining, and per-request deadlines.

The in-flight limit follows a queueing-delay budget: admit while the requests already in
flight would drain within `max_queue_delay_s` at the rate they have been finishing over the
last `window_s` (Little's law: limit = drain rate x delay), never fewer than `min_inflight`
(so a quiet service takes a burst) and never more than `max_inflight` (a hard memory bound).
A fixed cap is wrong both ways: below capacity it refuses work the service would answer in
time, and every refused client comes straight back, so on a small machine the flood of
rejections costs more goodput than it saves (benchmarks/overload.py; docs/benchmarks.md).

Requests are also weighed by their bytes: a body turns into Python objects several times
its size, so a few hundred large text requests could exhaust the replica's memory well
under the request cap. The bodies in flight stay within `max_inflight_bytes`.

`Retry-After` is `in_flight / drain_rate`: the time the requests already admitted need to
finish, clamped to [1, max_retry_after_s]. A client that honours it comes back roughly when
there is room.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from deployments.errors import BadRequest, DeadlineExceeded, Overloaded

T = TypeVar("T")
DEADLINE_HEADER = "x-request-deadline-ms"


class Admission:
    def __init__(
        self,
        max_inflight: int,
        max_retry_after_s: float = 30.0,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_queue_delay_s: float | None = None,
        min_inflight: int = 1,
        max_inflight_bytes: int = 1 << 62,
    ) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0
        self.max_queue_delay_s = max_queue_delay_s
        self.min_inflight = min_inflight
        self.max_retry_after_s = max_retry_after_s
        self.window_s = window_s
        self.inflight = 0
        self.rejected = 0
        self._clock = clock
        self._done: deque[float] = deque(maxlen=100_000)

    def drain_rate_per_s(self) -> float:
        now = self._clock()
        while self._done and now - self._done[0] > self.window_s:
            self._done.popleft()
        if not self._done:
            return 0.0
        span = max(now - self._done[0], 1.0)
        return len(self._done) / span

    def limit(self) -> int:
        """Requests this replica admits at once right now (see the module docstring)."""
        if self.max_queue_delay_s is None:
            return self.max_inflight
        by_delay = int(self.drain_rate_per_s() * self.max_queue_delay_s)
        return min(self.max_inflight, max(self.min_inflight, by_delay))

    def retry_after_s(self) -> float:
        rate = self.drain_rate_per_s()
        if rate <= 0:
            return self.max_retry_after_s
        return min(self.max_retry_after_s, max(1.0, math.ceil(self.inflight / rate)))

    def admit(self) -> InflightSlot:
        """A request's place among those in flight, while the block runs; entering raises
        Overloaded when there is none."""
        return InflightSlot(self)

    def enter(self) -> None:
        limit = self.limit()
        if self.inflight >= limit:
            self.rejected += 1
            raise Overloaded(
                f"{self.inflight} requests in flight, the limit of this ingress replica; "
                f"draining at {self.drain_rate_per_s():.0f}/s",
                [{"reason": "inflight_limit", "inflight": self.inflight, "limit": limit}],
                self.retry_after_s(),
            )
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        self._done.append(self._clock())

    def hold_bytes(self, size_bytes: int) -> HeldBytes:
        """A received body's bytes, held against the budget while the block runs.

        Charged once the body has arrived, not from its declared length: a client trickling
        a body would otherwise hold budget it never sent. A body alone is always admitted
        (one over max_request_bytes was refused while it was read)."""
        return HeldBytes(self, size_bytes)

    def take_bytes(self, size_bytes: int) -> None:
        if self.inflight_bytes and self.inflight_bytes + size_bytes > self.max_inflight_bytes:
            self.rejected += 1
            raise Overloaded(
                f"{self.inflight_bytes} request bytes in flight, the byte budget of this "
                f"ingress replica ({self.max_inflight_bytes})",
                [
                    {
                        "reason": "inflight_bytes",
                        "inflight_bytes": self.inflight_bytes,
                        "limit_bytes": self.max_inflight_bytes,
                    }
                ],
                self.retry_after_s(),
            )
        self.inflight_bytes += size_bytes

    def release_bytes(self, size_bytes: int) -> None:
        self.inflight_bytes -= size_bytes


# Classes rather than generator context managers: entered on every request (the data plane
# extends them with its per-model rejection counts).


class InflightSlot:
    """`Admission.admit()`."""

    __slots__ = ("admission",)

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def __enter__(self) -> None:
        self.admission.enter()

    def __exit__(self, *_: object) -> None:
        self.admission.leave()


class HeldBytes:
    """`Admission.hold_bytes()`."""

    __slots__ = ("admission", "size_bytes")

    def __init__(self, admission: Admission, size_bytes: int) -> None:
        self.admission, self.size_bytes = admission, size_bytes

    def __enter__(self) -> None:
        self.admission.take_bytes(self.size_bytes)

    def __exit__(self, *_: object) -> None:
        self.admission.release_bytes(self.size_bytes)


class Deadline:
    """A per-request time budget from the `x-request-deadline-ms` header, or none."""

    def __init__(self, budget_ms: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.budget_ms = budget_ms
        self.expires_at = None if budget_ms is None else clock() + budget_ms / 1000

    @classmethod
    def from_header(cls, value: str | None, max_ms: int) -> Deadline:
        if value is None:
            return cls(None)
        try:
            budget = int(value)
        except ValueError:
            raise BadRequest(
                f"{DEADLINE_HEADER} must be an integer number of milliseconds, got {value!r}"
            ) from None
        if not 1 <= budget <= max_ms:
            raise BadRequest(f"{DEADLINE_HEADER} must be between 1 and {max_ms}, got {budget}")
        return cls(budget)

    def remaining_s(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - self._clock()

    async def run(self, response: Any, what: str) -> Any:
        """Await a DeploymentResponse (or a coroutine) within the budget; cancel it and 504
        when it runs out."""
        remaining = self.remaining_s()
        if remaining is None:
            return await response
        if remaining <= 0:
            _cancel(response)
            raise DeadlineExceeded(f"deadline of {self.budget_ms} ms passed before {what}")
        try:
            return await asyncio.wait_for(_awaited(response), remaining)
        except TimeoutError:
            _cancel(response)
            raise DeadlineExceeded(
                f"deadline of {self.budget_ms} ms passed during {what}; the work was cancelled"
            ) from None


async def _awaited(response: Awaitable[T]) -> T:
    return await response


def _cancel(work: Any) -> None:
    # A DeploymentResponse cancels its request; a coroutine never started is closed (one that
    # started was already cancelled by wait_for).
    if inspect.iscoroutine(work):
        work.close()
    else:
        work.cancel()
