"""Triton's `inference.GRPCInferenceService` over the data plane: the gRPC twin of the HTTP
adapter, on the same terms.

Ray Serve's gRPC ingress calls the Ingress deployment's methods named as the RPCs; each one
hands its request here. Every RPC passes the same `Door` as HTTP (API key from the
`authorization` metadata, deny by default, the same per-client buckets; the health RPCs are
open when their HTTP paths are), then the same admission, deadline
(`x-request-deadline-ms` metadata), validation, caller batch (gRPC and HTTP requests share
batches), shadow and metrics. A request's `x-request-id` and `traceparent` metadata are
honoured and its ids come back in the trailing metadata. Every failure is the same typed
error as over HTTP (`roles/failures.py`), sent as its gRPC status code with the message as
details and, for a refusal, `retry-after` (seconds) in the trailing metadata.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind
from tritonclient.grpc import service_pb2 as pb

from deployments.admission.door import Door, client_address
from deployments.admission.inflight import DEADLINE_HEADER
from deployments.errors import ComeBackLater, NotReady, PayloadTooLarge
from deployments.protocol import v2_grpc
from deployments.roles.dataplane import DataPlane
from deployments.roles.failures import logged_error
from deployments.roles.http_inference import Inference
from deployments.telemetry.request_telemetry import CLIENT_CLOSED_REQUEST, TelemetryTarget
from deployments.telemetry.tracing import child_span, format_trace_id, request_parent

# The RPCs served, with the message each answers (an empty one goes with an error status).
RESPONSES: dict[str, type] = {
    "ServerLive": pb.ServerLiveResponse,
    "ServerReady": pb.ServerReadyResponse,
    "ModelReady": pb.ModelReadyResponse,
    "ServerMetadata": pb.ServerMetadataResponse,
    "ModelMetadata": pb.ModelMetadataResponse,
    "ModelInfer": pb.ModelInferResponse,
    "ModelConfig": pb.ModelConfigResponse,
    "ModelStatistics": pb.ModelStatisticsResponse,
}
# An RPC is open without a key when the HTTP path it mirrors is (`auth_open_paths`).
HTTP_EQUIVALENT = {"ServerLive": "/v2/health/live", "ServerReady": "/v2/health/ready"}


class GrpcFront:
    def __init__(
        self,
        plane: DataPlane,
        inference: Inference,
        door: Door,
        server_metadata: dict[str, Any],
        open_paths: Iterable[str],
        telemetry: TelemetryTarget | None = None,
    ) -> None:
        self.plane = plane
        self.inference = inference
        self.door = door
        self.server = server_metadata
        paths = frozenset(open_paths)
        self.open = frozenset(rpc for rpc, path in HTTP_EQUIVALENT.items() if path in paths)
        self.telemetry = telemetry
        self._handlers: dict[str, Callable[[Any, dict[str, str]], Awaitable[Any]]] = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ModelReady": self._model_ready,
            "ServerMetadata": self._server_metadata,
            "ModelMetadata": self._model_metadata,
            "ModelInfer": self._model_infer,
            "ModelConfig": self._model_config,
            "ModelStatistics": self._model_statistics,
        }

    async def call(self, rpc: str, request: Any, context: Any) -> Any:
        """Answer one RPC: its response, or an empty one with the error's status set on
        `context` (Ray Serve's `RayServegRPCContext`)."""
        started = time.perf_counter()
        metadata = {key.lower(): value for key, value in context.invocation_metadata()}
        request_id = metadata.get("x-request-id") or context.request_id() or uuid.uuid4().hex
        metadata["x-request-id"] = request_id
        trailing = [("x-request-id", request_id)]
        status = 500
        with child_span(
            "Ingress",
            f"gRPC {rpc}",
            parent=request_parent(
                metadata.get("traceparent"),
                self.telemetry.trace_sampling_ratio if self.telemetry is not None else 0.0,
            ),
            kind=SpanKind.SERVER,
        ) as span:
            ctx = span.get_span_context()
            if ctx.is_valid:
                trailing.append(("x-trace-id", format_trace_id(ctx.trace_id)))
            try:
                if rpc not in self.open:
                    self.door.check(
                        metadata.get("authorization"),
                        lambda: client_address(
                            _peer_host(context.peer()),
                            metadata.get("x-forwarded-for", "").encode() or None,
                        ),
                    )
                response = await self._handlers[rpc](request, metadata)
                status = 200
            except asyncio.CancelledError:
                status = CLIENT_CLOSED_REQUEST
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is answered, typed
                error = logged_error(exc)
                status = error.status_code
                context.set_code(grpc.StatusCode[error.grpc_code])
                context.set_details(error.message)
                if isinstance(error, (ComeBackLater, NotReady)):
                    trailing.append(("retry-after", error.headers()["Retry-After"]))
                response = RESPONSES[rpc]()
            finally:
                if span.is_recording():
                    span.set_attribute("rpc.system", "grpc")
                    span.set_attribute("rpc.method", rpc)
                    span.set_attribute("http.response.status_code", status)
                context.set_trailing_metadata(trailing)
                self._record(rpc, request, status, (time.perf_counter() - started) * 1000)
        return response

    def _record(self, rpc: str, request: Any, status: int, elapsed_ms: float) -> None:
        target = self.telemetry
        if target is None:
            return
        name = getattr(request, "model_name", None) or getattr(request, "name", None)
        if not name and len(target.versions) == 1:
            name = next(iter(target.versions))
        model = name if name in target.versions else "_unknown"
        target.metrics.answered(
            model, target.versions.get(model, ""), f"grpc {rpc}", status, elapsed_ms
        )

    # ---- the RPCs ---------------------------------------------------------------------------

    async def _server_live(self, _request: Any, _metadata: dict[str, str]) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, _request: Any, _metadata: dict[str, str]) -> Any:
        return pb.ServerReadyResponse(ready=await self.plane.all_ready())

    async def _model_ready(self, request: Any, _metadata: dict[str, str]) -> Any:
        if request.name not in self.plane.models:
            return pb.ModelReadyResponse(ready=False)  # as over HTTP: not ready, not an error
        served = self.plane.served(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=await self.plane.is_ready(served))

    async def _server_metadata(self, _request: Any, _metadata: dict[str, str]) -> Any:
        return v2_grpc.server_metadata(self.server)

    async def _model_metadata(self, request: Any, _metadata: dict[str, str]) -> Any:
        served = self.plane.served(request.name, request.version or None)
        return v2_grpc.model_metadata(served.kind.v2_metadata(served.versions))

    async def _model_infer(self, request: Any, metadata: dict[str, str]) -> Any:
        plane = self.plane
        served = plane.served(request.model_name, request.model_version or None)
        with plane.admitted(served, metadata.get(DEADLINE_HEADER)) as deadline:
            size = request.ByteSize()
            limit = self.inference.max_request_bytes
            if size > limit:
                raise PayloadTooLarge(f"request of {size} bytes exceeds the limit of {limit}")
            with plane.holding(served, size):
                parsed = v2_grpc.infer_request(request)
                _, answer = await self.inference.answer_v2(
                    served, parsed, deadline, metadata["x-request-id"]
                )
        return v2_grpc.infer_response(answer)

    async def _model_config(self, request: Any, _metadata: dict[str, str]) -> Any:
        return v2_grpc.model_config(
            await self.plane.model_config(request.name, request.version or None)
        )

    async def _model_statistics(self, request: Any, _metadata: dict[str, str]) -> Any:
        stats = await self.plane.model_stats(request.name or None, request.version or None)
        return v2_grpc.model_statistics(stats)


def _forward(rpc: str) -> Callable[..., Awaitable[Any]]:
    async def method(self: Any, request: Any, grpc_context: Any) -> Any:
        return await self.grpc.call(rpc, request, grpc_context)

    method.__name__ = method.__qualname__ = rpc
    return method


# The Ingress's methods named as the RPCs, which Ray Serve's gRPC ingress calls (with its
# `grpc_context` keyword); each hands the call to the Ingress's `GrpcFront` (`self.grpc`).
GrpcMethods: type = type("GrpcMethods", (), {rpc: _forward(rpc) for rpc in RESPONSES})


def _peer_host(peer: str) -> str:
    """The host of a gRPC peer string: `ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer
