"""Resilience decorators on well-kept libraries: retry (tenacity) and a TTL result cache
(cachetools). Leaves: they know nothing of HTTP or models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cachetools import TTLCache
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A replica died or is briefly unavailable: another try may land on a healthy one.

    Overload (BackPressureError) is deliberately not transient here: the answer to a full
    queue is a fast 503, not more load.
    """
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    return isinstance(
        exc,
        (
            ray_exc.ActorDiedError,
            ray_exc.ActorUnavailableError,
            ray_exc.RayActorError,
            serve_exc.DeploymentUnavailableError,
        ),
    )


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    attempts: int,
    max_wait_s: float,
    retryable: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `call()` (which must issue a fresh request each time) with exponential backoff
    and full jitter between attempts; non-retryable errors surface at once."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.05, max=max_wait_s),
        retry=retry_if_exception(retryable),
        before_sleep=(lambda state: on_retry(state.outcome.exception())) if on_retry else None,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")


class ResultCache:
    """A bounded TTL cache of results keyed by model, version and canonical input."""

    def __init__(self, enabled: bool, ttl_s: float, max_entries: int) -> None:
        self.enabled = enabled
        self._cache: TTLCache[str, Any] = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: str, version: str, payload: Any) -> str:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(f"{model}\0{version}\0{canonical}".encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        value = self._cache.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        if self.enabled:
            self._cache[key] = value

    def __len__(self) -> int:
        return len(self._cache)
