"""The HTTP adapter: KServe v1 and OIP v2 routes over the data plane. The only module that
knows HTTP; no torch, no per-kind branches (kinds decode and encode themselves).

`build_http_app(plane)` returns the FastAPI app; the Ingress deployment serves it, and unit
tests drive it over httpx's ASGI transport with fake handles. Every failure becomes a status
in one place (`error_response`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import exceptions as ray_exceptions
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from deployments.admission.auth import BearerAuth
from deployments.admission.inflight import DEADLINE_HEADER
from deployments.errors import (
    BadRequest,
    ClientClosedRequest,
    DeadlineExceeded,
    MethodNotAllowed,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RouteNotFound,
    ServingError,
)
from deployments.protocol import v1, v2
from deployments.protocol.common import ErrorBody
from deployments.protocol.json_body import JsonLimits, json_response_bytes, parse_json
from deployments.roles.dataplane import DataPlane
from deployments.telemetry.request_telemetry import RequestTelemetry

logger = logging.getLogger("ray.serve")

VERSION = "0.2.0"
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 405, 413, 422, 503, 504)}
_DEADLINE_PARAM = {
    "name": DEADLINE_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Time budget in ms; past it the work is cancelled and the answer is 504.",
}


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json_response_bytes(content)


# ---- error mapping: the one place failures become statuses --------------------------------


def error_response(exc: BaseException) -> JSONResponse:
    error = as_serving_error(exc)
    if error.status_code >= 500 and not isinstance(error, (NotReady, Overloaded, DeadlineExceeded)):
        logger.error("request failed: %s", error.message, exc_info=exc)
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers())


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


def _method_not_allowed(request: Request, allow: str) -> JSONResponse:
    response = error_response(
        MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}; use {allow}")
    )
    response.headers["Allow"] = allow
    return response


def build_http_app(
    plane: DataPlane, auth: BearerAuth, max_request_bytes: int, metrics_scrape: Any = None
) -> FastAPI:
    app = FastAPI(
        title="Ray Serve inference service",
        description="KServe v1 and Open Inference Protocol v2 over validated, batched, "
        "shadowed torch models. Every response carries `x-request-id` (an incoming one is "
        'kept). Errors are JSON `{"error": ..., "code": ...}`.',
        version=VERSION,
        # FastAPI's own OpenTelemetry instrumentation switches itself on once Ray Serve
        # installs a tracer provider: a second server span per request plus spans around
        # dependency resolution, all on the hot path. RequestTelemetry is the one place
        # requests are traced and counted.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.add_middleware(RequestTelemetry)
    limits = JsonLimits()

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["/".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]
        return error_response(BadRequest("; ".join(parts)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(RouteNotFound(f"no route {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return _method_not_allowed(request, (exc.headers or {}).get("Allow", ""))
        error = ServingError(str(exc.detail))
        error.status_code = exc.status_code
        return error_response(error)

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(ray_exceptions.TaskCancelledError)
    async def _client_gone(_: Request, exc: Exception) -> JSONResponse:
        # Registered by class: a client hanging up is routine and must not log a traceback.
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    def authorize(request: Request) -> None:
        auth.check(request.headers.get("authorization"))

    async def json_body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            raise PayloadTooLarge(
                f"request body of {declared} bytes exceeds the limit of {max_request_bytes}"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_request_bytes:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {max_request_bytes} bytes"
                )
        return parse_json(bytes(body), limits)

    # ---- KServe v1 -------------------------------------------------------------------------

    @app.get("/v1/models", response_model=v1.ModelList, responses=_ERRORS)
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"models": sorted(plane.models)}

    @app.get("/v1/models/{name}", response_model=v1.ModelInfo, responses=_ERRORS)
    async def model_info(name: str, request: Request) -> Any:
        if name.endswith(":predict"):
            return _method_not_allowed(request, "POST")
        authorize(request)
        served = plane.served(name)
        return {
            "name": name,
            "kind": served.kind.kind,
            "version": served.kind.metadata.version,
            "ready": await plane.is_ready(served),
            "input_schema": served.kind.instance_json_schema(),
        }

    @app.post(
        "/v1/models/{name}:predict",
        response_model=v1.PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": v1.PredictRequest.model_json_schema()}},
            },
            "parameters": [_DEADLINE_PARAM],
        },
    )
    async def predict(name: str, request: Request) -> Response:
        authorize(request)
        served = plane.served(name)
        with plane.admitted(served, request.headers.get(DEADLINE_HEADER)) as deadline:
            instances = v1.parse_predict(await json_body(request), served.max_rows)
            prediction = await plane.infer(
                served,
                "v1",
                instances,
                instances,
                deadline,
                request.headers.get("x-request-id", ""),
            )
        return FastJSONResponse(
            {
                "predictions": served.kind.encode_v1(prediction.outputs),
                "model_name": name,
                "model_version": prediction.model_version,
            }
        )

    # ---- shadow mode -----------------------------------------------------------------------

    @app.get("/v1/shadow/report", responses=_ERRORS)
    async def shadow_report(request: Request, model: str | None = None) -> dict[str, Any]:
        """How the candidate compares with the primary, and whether to promote it."""
        authorize(request)
        return await plane.shadow_report(model)

    # ---- operations ------------------------------------------------------------------------

    # Not part of the inference contract in /openapi.json: Prometheus text, documented in docs/.
    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus text from this node's Ray metrics agent."""
        authorize(request)
        text = await metrics_scrape() if metrics_scrape is not None else ""
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- Open Inference Protocol v2 --------------------------------------------------------

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "ray-serve-inference", "version": VERSION, "extensions": []}

    @app.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", responses=_ERRORS)
    async def ready() -> dict[str, Any]:
        if not await plane.all_ready():
            raise NotReady("models are still loading or warming up")
        return {"ready": True}

    @app.get("/v2/models/{name}", response_model=v2.ModelMetadataResponse, responses=_ERRORS)
    @app.get(
        "/v2/models/{name}/versions/{version}",
        response_model=v2.ModelMetadataResponse,
        responses=_ERRORS,
    )
    async def v2_model_metadata(
        name: str, request: Request, version: str | None = None
    ) -> dict[str, Any]:
        authorize(request)
        served = plane.served(name, version)
        return served.kind.v2_metadata(served.versions)

    @app.get("/v2/models/{name}/ready", responses=_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}/ready", responses=_ERRORS)
    async def v2_model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        served = plane.served(name, version)
        if not await plane.is_ready(served):
            raise NotReady(f"model {name!r} is still loading or warming up")
        return {"name": name, "ready": True}

    @app.post(
        "/v2/models/{name}/infer",
        response_model=v2.InferenceResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": v2.InferenceRequest.model_json_schema()}
                },
            },
            "parameters": [_DEADLINE_PARAM],
        },
    )
    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=v2.InferenceResponse,
        responses=_ERRORS,
        include_in_schema=False,
    )
    async def v2_infer(name: str, request: Request, version: str | None = None) -> Response:
        authorize(request)
        served = plane.served(name, version)
        with plane.admitted(served, request.headers.get(DEADLINE_HEADER)) as deadline:
            infer = v2.parse_infer(await json_body(request))
            cache_key = [t.model_dump() for t in infer.inputs] if plane.cache.enabled else None
            prediction = await plane.infer(
                served,
                "v2",
                infer.inputs,
                cache_key,
                deadline,
                request.headers.get("x-request-id", ""),
            )
        requested = [o.name for o in infer.outputs] if infer.outputs else None
        body: dict[str, Any] = {
            "model_name": name,
            "model_version": prediction.model_version,
            "outputs": served.kind.encode_v2(prediction.outputs, requested),
        }
        if infer.id is not None:
            body["id"] = infer.id
        return FastJSONResponse(body)

    return app
