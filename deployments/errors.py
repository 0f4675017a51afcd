"""Typed serving errors, one class per failure, each carrying its HTTP status and its gRPC
status code (the name of a `grpc.StatusCode`), so both protocols map failures the same way.

The ingress types every failure in one function (`roles/failures.py`). Everything
here is a leaf: it imports nothing of ours and nothing heavy, so any deployment can raise
these and the ingress can catch them after they cross a process boundary.

Why positional-only constructors and `__reduce__`: Ray pickles exceptions raised in a
replica and re-raises them in the caller. Exceptions with keyword-only arguments fail to
unpickle there and arrive as a generic error that has lost its status.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base of every error this service answers with on purpose."""

    status_code: int = 500
    code: str = "internal_error"
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.details))

    def headers(self) -> dict[str, str]:
        return {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(ServingError):
    """The request is well-formed JSON but its content violates the model's schema."""

    status_code = 422
    code = "invalid_input"
    grpc_code = "INVALID_ARGUMENT"


class BadRequest(ServingError):
    """The request body cannot be read at all: empty, not JSON, wrong envelope."""

    status_code = 400
    code = "bad_request"
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ServingError):
    status_code = 404
    code = "model_not_found"
    grpc_code = "NOT_FOUND"


class RouteNotFound(ServingError):
    status_code = 404
    code = "not_found"
    grpc_code = "NOT_FOUND"


class MethodNotAllowed(ServingError):
    """A route asked with a method it does not take; `allow` lists the ones it does."""

    status_code = 405
    code = "method_not_allowed"
    grpc_code = "UNIMPLEMENTED"

    def __init__(
        self, message: str, details: list[dict[str, Any]] | None = None, allow: str = ""
    ) -> None:
        super().__init__(message, details)
        self.allow = allow

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.details, self.allow))

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class ShadowNotConfigured(ServingError):
    status_code = 404
    code = "shadow_not_configured"
    grpc_code = "NOT_FOUND"


class DriftNotConfigured(ServingError):
    """Drift scores asked of a model packaged without a training reference."""

    status_code = 404
    code = "drift_not_configured"
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServingError):
    status_code = 413
    code = "payload_too_large"
    grpc_code = "INVALID_ARGUMENT"


class Unauthorized(ServingError):
    status_code = 401
    code = "unauthorized"
    grpc_code = "UNAUTHENTICATED"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ClientClosedRequest(ServingError):
    """The client went away before we answered (nginx's 499); nobody reads this answer."""

    status_code = 499
    code = "client_closed_request"
    grpc_code = "CANCELLED"


class DeadlineExceeded(ServingError):
    """The request's own deadline (x-request-deadline-ms) passed; its work was cancelled."""

    status_code = 504
    code = "deadline_exceeded"
    grpc_code = "DEADLINE_EXCEEDED"


class NotReady(ServingError):
    """The model is still loading or warming up."""

    status_code = 503
    code = "not_ready"
    grpc_code = "UNAVAILABLE"
    retry_after_s: float = 5.0

    def headers(self) -> dict[str, str]:
        return {"Retry-After": _seconds(self.retry_after_s)}


class ComeBackLater(ServingError):
    """A refusal that tells the client when to retry: `Retry-After` and `retry_after_s`."""

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.details, self.retry_after_s))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": _seconds(self.retry_after_s)}

    def to_body(self) -> dict[str, Any]:
        return {**super().to_body(), "retry_after_s": self.retry_after_s}


class Overloaded(ComeBackLater):
    """Admission refused the request; the client should come back after `retry_after_s`."""

    status_code = 503
    code = "overloaded"
    grpc_code = "UNAVAILABLE"


class RateLimited(ComeBackLater):
    """This client is over its own rate limit (the service may be idle); back off for
    `retry_after_s`. 429, not 503: only this client should slow down. Not an Overloaded:
    admission's rejection count and metrics are the service's, not one client's."""

    status_code = 429
    code = "rate_limited"
    grpc_code = "RESOURCE_EXHAUSTED"


class InferenceFailed(ServingError):
    """The model could not produce a valid answer for an item (e.g. non-finite output)."""

    status_code = 500
    code = "inference_failed"
    grpc_code = "INTERNAL"


class ArtifactError(Exception):
    """A model artifact on disk is unusable. Raised at startup, never per request."""


def _seconds(value: float) -> str:
    """Retry-After is whole seconds (RFC 9110); never 0, which would invite a stampede."""
    return str(max(1, int(-(-value // 1))))


def returned_not_raised(fn):  # type: ignore[no-untyped-def]
    """Make a replica method return its ServingError instead of raising it.

    A client's mistake or a refusal is an answer, not a replica failure: raised, Serve logs
    it as an ERROR with a traceback in the replica, for every bad request. Returned, it
    crosses the boundary as a value and the ingress raises it (`raise_if_error`).
    """
    import functools
    import inspect

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return await fn(*args, **kwargs)
            except ServingError as exc:
                return exc

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except ServingError as exc:
            return exc

    return wrapper


def raise_if_error(result: Any) -> Any:
    if isinstance(result, ServingError):
        raise result
    return result
