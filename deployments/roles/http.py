"""The HTTP adapter: KServe v1 and OIP v2 routes over the data plane. The only module that
knows HTTP; no torch, no per-kind branches (kinds decode and encode themselves).

`build_http_app(plane)` returns the ASGI app: request telemetry around the inference routes'
fast front (`roles/http_inference.py`) around the FastAPI app that serves the rest and
documents everything in /openapi.json. The Ingress deployment serves it, and unit tests drive
it over httpx's ASGI transport with fake handles. Every failure becomes a status in one place
(`logged_error`, rendered by `error_response` or `error_parts`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
    MethodNotAllowed,
    NotReady,
    RouteNotFound,
    ServingError,
)
from deployments.protocol import v1, v2
from deployments.protocol.common import ErrorBody
from deployments.protocol.json_body import json_response_bytes
from deployments.roles.dataplane import DataPlane
from deployments.roles.failures import logged_error
from deployments.roles.http_gate import OPEN_PATHS, Gate
from deployments.roles.http_inference import HotRoutes, Inference
from deployments.telemetry.request_telemetry import RequestTelemetry

logger = logging.getLogger("ray.serve")

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 405, 413, 422, 429, 503, 504)}
_DEADLINE_PARAM = {
    "name": DEADLINE_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Time budget in ms; past it the work is cancelled and the answer is 504.",
}


# ---- error mapping: failures as HTTP answers (the typing is roles/failures.py) ------------


def error_response(exc: BaseException) -> JSONResponse:
    error = logged_error(exc)
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers())


def error_parts(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """`error_response` as raw ASGI parts: status, headers, JSON body."""
    error = logged_error(exc)
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers().items()
    ]
    return (
        error.status_code,
        [(b"content-type", b"application/json"), *headers],
        json_response_bytes(error.to_body()),
    )


def _method_not_allowed(request: Request, allow: str) -> JSONResponse:
    return error_response(
        MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}; use {allow}", allow=allow
        )
    )


def build_http_app(
    plane: DataPlane,
    auth: BearerAuth,
    max_request_bytes: int,
    metrics_scrape: Any = None,
    open_paths: Iterable[str] = OPEN_PATHS,
) -> RequestTelemetry:
    app = FastAPI(
        title="Ray Serve inference service",
        description="KServe v1 and Open Inference Protocol v2 over validated, batched, "
        "shadowed torch models. Every response carries `x-request-id` (an incoming one is "
        'kept). Errors are JSON `{"error": ..., "code": ...}`.',
        version=v2.SERVER_VERSION,
        # FastAPI's own OpenTelemetry instrumentation switches itself on once Ray Serve
        # installs a tracer provider: a second server span per request plus spans around
        # dependency resolution, all on the hot path. RequestTelemetry is the one place
        # requests are traced and counted.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    inference = Inference(plane, max_request_bytes)

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

    # ---- KServe v1 -------------------------------------------------------------------------

    @app.get("/v1/models", response_model=v1.ModelList, responses=_ERRORS)
    async def list_models() -> dict[str, Any]:
        return {"models": sorted(plane.models)}

    @app.get("/v1/models/{name}", response_model=v1.ModelInfo, responses=_ERRORS)
    async def model_info(name: str) -> Any:
        # Any method on `<name>:predict` is HotRoutes' (roles/http_inference.py), 405 included.
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
        return Response(
            await inference.predict_v1(name, request.headers, request.stream()),
            media_type="application/json",
        )

    # ---- shadow mode -----------------------------------------------------------------------

    @app.get("/v1/shadow/report", responses=_ERRORS)
    async def shadow_report(model: str | None = None) -> dict[str, Any]:
        """How the candidate compares with the primary, and whether to promote it."""
        return await plane.shadow_report(model)

    @app.get("/v1/drift/report", responses=_ERRORS)
    async def drift_report(model: str | None = None) -> dict[str, Any]:
        """Each feature's drift score (PSI of the live window against the training
        reference), most drifted first, and the prediction's."""
        return await plane.drift_report(model)

    # ---- operations ------------------------------------------------------------------------

    # Not part of the inference contract in /openapi.json: Prometheus text, documented in docs/.
    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        """Prometheus text from this node's Ray metrics agent."""
        text = await metrics_scrape() if metrics_scrape is not None else ""
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- Open Inference Protocol v2 --------------------------------------------------------

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return v2.server_metadata()

    @app.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", responses=_ERRORS)
    async def ready() -> dict[str, Any]:
        if not await plane.all_ready():
            raise NotReady("models are still loading or warming up")
        return {"ready": True}

    # Before `/v2/models/{name}`, which would take "stats" for a model's name.
    @app.get("/v2/models/stats", responses=_ERRORS)
    async def v2_all_stats() -> dict[str, Any]:
        """Triton's statistics extension, every served model."""
        return await plane.model_stats(None, None)

    @app.get("/v2/models/{name}/stats", responses=_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}/stats", responses=_ERRORS)
    async def v2_model_stats(name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension: request, queue and compute counts and times."""
        return await plane.model_stats(name, version)

    @app.get("/v2/models/{name}/config", responses=_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}/config", responses=_ERRORS)
    async def v2_model_config(name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration extension (`model_config.proto` as JSON)."""
        return await plane.model_config(name, version)

    @app.get("/v2/models/{name}", response_model=v2.ModelMetadataResponse, responses=_ERRORS)
    @app.get(
        "/v2/models/{name}/versions/{version}",
        response_model=v2.ModelMetadataResponse,
        responses=_ERRORS,
    )
    async def v2_model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
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
        content, headers = await inference.infer_v2(
            name, version, request.headers, request.stream()
        )
        return Response(content, headers={k.decode(): v.decode() for k, v in headers})

    gate = Gate(
        HotRoutes(app, inference, error_parts),
        auth,
        plane.limiter,
        error_parts,
        open_paths,
        on_limited=plane.rate_limited,
    )
    return RequestTelemetry(gate)
