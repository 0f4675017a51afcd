"""Who may come in, for any protocol: the API key, then the caller's own rate limit.

`Door.check` takes the `Authorization` value (an HTTP header or gRPC metadata) and the
caller's address (asked only when a limit needs it). The HTTP `Gate` and the gRPC front
both hold a door over the same keys and the same buckets, so a client's rate is one rate
whichever protocol it speaks.
"""

from __future__ import annotations

from collections.abc import Callable

from deployments.admission.auth import BearerAuth, is_loopback
from deployments.admission.rate_limit import RateLimiter
from deployments.errors import RateLimited, Unauthorized


class Door:
    def __init__(
        self,
        auth: BearerAuth,
        limiter: RateLimiter,
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self.auth = auth
        self.limiter = limiter
        self._on_limited = on_limited

    def check(self, authorization: str | None, address: Callable[[], str]) -> None:
        """Raises Unauthorized or RateLimited; returns when the request may go on."""
        limiter = self.limiter
        try:
            client = self.auth.identify(authorization)
        except Unauthorized:
            # Guessing keys costs the guesser its address's bucket, like any request.
            if limiter.config.enabled:
                self._check(address())
            raise
        if limiter.config.enabled:
            self._check(client if client is not None else address())

    def _check(self, client: str) -> None:
        try:
            self.limiter.check(client)
        except RateLimited:
            if self._on_limited is not None:
                self._on_limited("override" if client in self.limiter.config.clients else "default")
            raise


def client_address(peer: str, forwarded: bytes | None) -> str:
    """The client's address: the peer's or, where the peer is a proxy on this node (HAProxy,
    Ray's proxy), the last address that proxy appended to X-Forwarded-For; a forwarded header
    from any other peer is the client's own claim and ignored."""
    if forwarded and is_loopback(peer):
        last = forwarded.rsplit(b",", 1)[-1].strip()
        if last:
            return last.decode("latin-1")
    return peer
