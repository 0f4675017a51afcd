"""The one door every request passes (HTTP here; the `Door` it keeps is gRPC's too): authentication,
deny by default, then the caller's own rate limit. Routes and RPCs never check either
themselves, so one added later cannot forget.

Open without a token: only the exact paths in `open_paths` (health probes, which a load
balancer or kubelet calls without credentials), compared as routing sees them (without a
route prefix). Everything else, /docs, /openapi.json and WebSockets included, needs a key
when auth is on; a failed key costs its sender's address a token of its bucket.

The client a rate limit counts: the authenticated client id; without auth, the caller's
address. A peer on loopback is a proxy on this node (HAProxy, or Ray's proxy), so the last
address it appended to `X-Forwarded-For` is the client's; a forwarded header from any other
peer is the client's own claim and ignored. Metrics name the client's class (a configured
override, or the default limit), never a key or an address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette._utils import get_route_path

from deployments.admission.auth import BearerAuth
from deployments.admission.door import Door, client_address
from deployments.admission.rate_limit import RateLimiter
from deployments.roles.http_inference import Receive, Scope, Send, send_whole

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        auth: BearerAuth,
        limiter: RateLimiter,
        error_parts: Callable[[BaseException], tuple[int, list[tuple[bytes, bytes]], bytes]],
        open_paths: Iterable[str] = OPEN_PATHS,
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.door = Door(auth, limiter, on_limited)
        self.open_paths = frozenset(open_paths)
        self._error_parts = error_parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and route_path(scope) in self.open_paths):
            await self.app(scope, receive, send)
            return
        try:
            self.admit(scope)
        except Exception as exc:  # noqa: BLE001 - every refusal is answered, typed
            if kind != "http":
                # No WebSocket route exists; one added later is behind the same door.
                await send({"type": "websocket.close", "code": 1008})
                return
            # Counted by RequestTelemetry, which reads the app's state from the scope.
            scope["app"] = self.app
            await send_whole(send, *self._error_parts(exc))
            return
        await self.app(scope, receive, send)

    def admit(self, scope: Scope) -> None:
        """Raises Unauthorized or RateLimited; returns when the request may go on."""
        authorization = forwarded = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-forwarded-for":
                forwarded = value
        peer = (scope.get("client") or ("unknown", 0))[0]
        self.door.check(authorization, lambda: client_address(peer, forwarded))


def route_path(scope: Scope) -> str:
    """The path routes match on: without Serve's route prefix or a proxy's root_path."""
    return get_route_path(scope)
