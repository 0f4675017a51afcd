"""Per-client rate limiting at the ingress: one token bucket per client id.

In-flight admission (inflight.py) protects the service as a whole, but it is first come,
first served: one client sending as fast as it can fills every slot and everyone else gets
503s. A bucket per client caps each client's share, so one client must not take the whole
service, and a client over its share gets a 429 that tells only that client to slow down.

Bucket math: a bucket holds at most `burst` tokens and refills at `requests_per_s`. Rather
than a timer per bucket, each check adds `elapsed * rate` since the client's last check
(capped at `burst`), then takes `cost` tokens if they are there. A client can therefore send
`burst` requests at once, then `requests_per_s` on average.

Retry-After comes from the bucket: `(cost - tokens) / rate` is exactly when the refused
request would be admitted, rounded up to whole seconds (the header's unit) and at least 1.
A client that honours it is admitted when it comes back, unless it spent the tokens on
other requests meanwhile.

Memory is bounded: at most `max_clients` buckets (least recently used evicted first) and
none unused for `idle_s` (cachetools.TTLCache does both). A forgotten client starts again
with a full bucket, which is exact once `idle_s >= burst / requests_per_s`: by then its
bucket would have refilled anyway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from cachetools import TTLCache
from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import RateLimited

# Refill is float arithmetic on clock readings: a client coming back exactly when
# Retry-After said could compute 0.9999999999 tokens and be refused for nothing.
_EPSILON = 1e-9


class ClientLimit(BaseModel):
    """One client's own limits, replacing the defaults for that client id."""

    model_config = ConfigDict(extra="forbid")

    requests_per_s: float = Field(gt=0, description="Sustained requests per second (refill).")
    burst: int = Field(ge=1, description="Bucket capacity: requests admitted at once.")


class RateLimitConfig(BaseModel):
    """Per-client token buckets at the ingress (see deployments/admission/rate_limit.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Off by default: a service behind a gateway that already limits clients "
        "needs no second limit.",
    )
    requests_per_s: float = Field(
        default=100.0, gt=0, description="Sustained requests per second per client (refill)."
    )
    burst: int = Field(
        default=200,
        ge=1,
        description="Bucket capacity: how many requests a client that has been quiet may send "
        "at once.",
    )
    max_clients: int = Field(
        default=10_000,
        ge=1,
        description="Buckets kept; beyond it the least recently used is forgotten (that client "
        "starts again with a full bucket). Bounds memory whatever the number of client ids.",
    )
    idle_s: float = Field(
        default=600,
        gt=0,
        description="A bucket unused this long is dropped. Exact when idle_s >= burst / "
        "requests_per_s (it would have refilled anyway); shorter trades accuracy for memory.",
    )
    clients: dict[str, ClientLimit] = Field(
        default_factory=dict,
        description="Per-client-id overrides of requests_per_s and burst; keys are client ids "
        "(never API keys).",
    )


# (tokens, stamp): tokens held at clock reading `stamp`. A tuple, replaced on every check,
# because the cache must see a write anyway to restart the bucket's idle clock.
_Bucket = tuple[float, float]


class RateLimiter:
    """Token buckets keyed by client id. Single-threaded (the ingress's event loop)."""

    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rejected = 0
        self._clock = clock
        self._set_limits(config)
        self._buckets = self._new_buckets(config)

    def check(self, client_id: str, cost: float = 1.0) -> None:
        """Take `cost` (>= 0) tokens from `client_id`'s bucket, or raise RateLimited."""
        if not self._enabled:
            return
        rate, burst = self._limits.get(client_id, self._default)
        now = self._clock()
        # Indexing, not .get(): TTLCache.get is a membership test and then an index, and
        # this line runs on every request; a KeyError costs once per new client.
        try:
            held, stamp = self._buckets[client_id]
        except KeyError:
            tokens = float(burst)
        else:
            tokens = min(burst, held + (now - stamp) * rate)
        # More than the bucket holds would be refused forever: admit it on a full bucket and
        # charge it all, so the debt keeps the client's long-run rate where it should be.
        need = cost if cost <= burst else burst
        if tokens + _EPSILON >= need:
            self._buckets[client_id] = (tokens - cost, now)
            return
        # Written back even when refused: a client retrying in a tight loop must not outlive
        # idle_s and come back to a full bucket.
        self._buckets[client_id] = (tokens, now)
        self.rejected += 1
        retry_after_s = max(1, math.ceil((need - tokens) / rate))
        raise RateLimited(
            f"client {client_id!r} is over its rate limit of {rate:g} requests/s "
            f"(burst {burst}); retry after {retry_after_s} s",
            [
                {
                    "reason": "rate_limited",
                    "client": client_id,
                    "requests_per_s": rate,
                    "burst": burst,
                }
            ],
            float(retry_after_s),
        )

    def reconfigure(self, config: RateLimitConfig) -> None:
        """New limits from now on. Every bucket keeps the tokens it holds (up to the new
        burst): a change neither forgives a client's debt nor hands out a fresh burst."""
        now = self._clock()
        old_limits, old_default = self._limits, self._default
        # Least recently used first, so that a smaller max_clients evicts the right ones.
        held = list(self._buckets.items())
        self._set_limits(config)
        self._buckets = self._new_buckets(config)
        for client_id, (tokens, stamp) in held:
            old_rate, old_burst = old_limits.get(client_id, old_default)
            burst = self._limits.get(client_id, self._default)[1]
            tokens = min(old_burst, burst, tokens + (now - stamp) * old_rate)
            # Settled at the old rate up to now, so the new rate applies from here on. Its
            # idle clock restarts, which only keeps it longer: never more permissive.
            self._buckets[client_id] = (tokens, now)

    def __len__(self) -> int:
        """Buckets held now (expired ones excluded)."""
        return len(self._buckets)

    def _set_limits(self, config: RateLimitConfig) -> None:
        # The hot path reads plain attributes and one dict, not the pydantic model.
        self.config = config
        self._enabled = config.enabled
        self._default = (config.requests_per_s, config.burst)
        self._limits = {
            client_id: (limit.requests_per_s, limit.burst)
            for client_id, limit in config.clients.items()
        }

    def _new_buckets(self, config: RateLimitConfig) -> TTLCache[str, _Bucket]:
        # A TTLCache's size and TTL are fixed when it is made.
        return TTLCache(maxsize=config.max_clients, ttl=config.idle_s, timer=self._clock)
