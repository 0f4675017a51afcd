"""Every failure as one typed `ServingError`, for both protocols: the one place that decides
what a failure is (a client's mistake, a refusal, a server fault) and logs only the server's.
`roles/http.py` renders the result as an HTTP answer, `roles/grpc_front.py` as a gRPC status
(each error class carries both, `deployments/errors.py`)."""

from __future__ import annotations

import asyncio
import logging

from ray import exceptions as ray_exceptions
from starlette.requests import ClientDisconnect

from deployments.errors import (
    ClientClosedRequest,
    DeadlineExceeded,
    NotReady,
    Overloaded,
    ServingError,
)

logger = logging.getLogger("ray.serve")


def logged_error(exc: BaseException) -> ServingError:
    """The typed error for `exc`; a server fault (never a client's) is logged with its trace."""
    error = as_serving_error(exc)
    if error.status_code >= 500 and not isinstance(error, (NotReady, Overloaded, DeadlineExceeded)):
        logger.error("request failed: %s", error.message, exc_info=exc)
    return error


def as_serving_error(exc: BaseException) -> ServingError:
    # Ray re-raises a replica's exception as a class deriving from both RayTaskError and
    # the original, so typed errors from the Validator or ModelReplica match here too.
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, (ClientDisconnect, asyncio.CancelledError)):
        return ClientClosedRequest("client disconnected before the answer")
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ServingError):
        return cause
    from ray.serve import exceptions as serve_exc

    if isinstance(exc, serve_exc.BackPressureError):
        return Overloaded("the model is at capacity; retry after the indicated delay")
    if isinstance(exc, ray_exceptions.TaskCancelledError):
        # Serve cancels a request's downstream work when its client disconnects.
        return ClientClosedRequest("request cancelled: the client disconnected")
    if isinstance(
        exc,
        (
            ray_exceptions.ActorDiedError,
            ray_exceptions.ActorUnavailableError,
            serve_exc.DeploymentUnavailableError,
        ),
    ):
        return Overloaded(
            f"a replica is unavailable ({type(exc).__name__}); retry shortly", retry_after_s=2.0
        )
    return ServingError(f"internal error ({type(exc).__name__}); see the server log")
