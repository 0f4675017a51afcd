"""The two inference routes over HTTP, and the ASGI front that serves them without FastAPI.

`Inference` is what `POST /v1/models/{m}:predict` and `POST /v2/models/{m}[/versions/{v}]/infer`
do, over raw headers and a body stream: admission, bounded parsing, the data plane, the
answer as JSON bytes (auth and rate limits are the `Gate`'s, in front of both). The
FastAPI routes in `roles/http.py` (which document the contract in /openapi.json) call it,
and so does `HotRoutes`, an ASGI app in front of FastAPI that dispatches these two routes
itself: FastAPI's routing, middleware stack and request objects cost more per request than
the rest of the ingress (docs/benchmarks.md). Everything else goes on to FastAPI. Either
way a request gets the same answer, errors included.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette._utils import get_route_path

from deployments.admission.inflight import DEADLINE_HEADER, Deadline
from deployments.errors import MethodNotAllowed, PayloadTooLarge
from deployments.protocol import v1, v2, v2_binary
from deployments.protocol.json_body import JsonLimits, json_response_bytes, parse_json
from deployments.roles.dataplane import DataPlane, ServedModel

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = Mapping[str, str]

_JSON = [(b"content-type", b"application/json")]


class Inference:
    def __init__(self, plane: DataPlane, max_request_bytes: int) -> None:
        self.plane = plane
        self.max_request_bytes = max_request_bytes
        self.limits = JsonLimits()

    async def predict_v1(self, name: str, headers: Headers, body: AsyncIterator[bytes]) -> bytes:
        plane = self.plane
        served = plane.served(name)
        with plane.admitted(served, headers.get(DEADLINE_HEADER)) as deadline:
            raw = await self.read_body(headers, body)
            with plane.holding(served, len(raw)):
                instances = v1.parse_predict(parse_json(raw, self.limits), served.max_rows)
                prediction = await plane.infer(
                    served, "v1", instances, instances, deadline, headers.get("x-request-id", "")
                )
        return json_response_bytes(
            {
                "predictions": served.kind.encode_v1(prediction.outputs),
                "model_name": name,
                "model_version": prediction.model_version,
            }
        )

    async def infer_v2(
        self, name: str, version: str | None, headers: Headers, body: AsyncIterator[bytes]
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The answer's body and its headers: JSON, or JSON and binary tensors when the
        request asks for binary outputs (protocol/v2_binary.py)."""
        plane = self.plane
        served = plane.served(name, version)
        with plane.admitted(served, headers.get(DEADLINE_HEADER)) as deadline:
            raw = await self.read_body(headers, body)
            with plane.holding(served, len(raw)):
                header_length = headers.get(v2_binary.HEADER)
                if header_length is None:
                    parsed = parse_json(raw, self.limits)
                else:
                    header, binary = v2_binary.split_body(raw, header_length)
                    parsed = parse_json(header, self.limits)
                    v2_binary.attach_inputs(parsed, binary)
                infer, answer = await self.answer_v2(
                    served, parsed, deadline, headers.get("x-request-id", "")
                )
        choice = v2_binary.BinaryChoice(infer.parameters, infer.outputs)
        if not choice.any:
            return json_response_bytes(answer), _JSON
        content, json_length = v2_binary.encode_answer(answer, choice)
        if json_length is None:
            return content, _JSON
        return content, [
            (b"content-type", v2_binary.CONTENT_TYPE),
            (v2_binary.HEADER.encode(), str(json_length).encode()),
        ]

    async def answer_v2(
        self, served: ServedModel, parsed: Any, deadline: Deadline, request_id: str
    ) -> tuple[v2.InferenceRequest, dict[str, Any]]:
        """A v2 request body (parsed; binary tensors already in `data`) answered, whatever
        carried it (HTTP JSON, HTTP binary, gRPC): the envelope and its answer, outputs
        still arrays."""
        plane = self.plane
        infer = v2.parse_infer(parsed)
        cache_key = [t.model_dump() for t in infer.inputs] if plane.cache.enabled else None
        prediction = await plane.infer(served, "v2", infer.inputs, cache_key, deadline, request_id)
        requested = [o.name for o in infer.outputs] if infer.outputs else None
        answer: dict[str, Any] = {
            "model_name": served.name,
            "model_version": prediction.model_version,
            "outputs": served.kind.encode_v2(prediction.outputs, requested),
        }
        if infer.id is not None:
            answer["id"] = infer.id
        return infer, answer

    async def read_body(self, headers: Headers, body: AsyncIterator[bytes]) -> bytes:
        limit = self.max_request_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
        received = bytearray()
        async for chunk in body:
            received += chunk
            if len(received) > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return bytes(received)


class _Route:
    """What `RequestTelemetry` reads from `scope["route"]`: the route's template."""

    def __init__(self, path: str) -> None:
        self.path = path


_V1 = _Route("/v1/models/{name}:predict")
_V2 = _Route("/v2/models/{name}/infer")
_V2_VERSION = _Route("/v2/models/{name}/versions/{version}/infer")
_PATTERN = re.compile(
    r"^/v(?:1/models/(?P<v1>[^/]+):predict|2/models/(?P<v2>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+))?/infer)$"
)


class HotRoutes:
    """ASGI: the inference routes served here, everything else by `app` (FastAPI).

    `state` is the FastAPI app's, so `app.state.telemetry` set on this object is the one
    `RequestTelemetry` finds in `scope["app"]`."""

    def __init__(self, app: Any, inference: Inference, error_parts: Callable) -> None:
        self.app = app
        self.state = app.state
        self.inference = inference
        self._error_parts = error_parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATTERN.match(get_route_path(scope)) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        v1_name = match["v1"]
        if v1_name is not None:
            scope["route"], scope["path_params"] = _V1, {"name": v1_name}
        elif match["version"] is None:
            scope["route"], scope["path_params"] = _V2, {"name": match["v2"]}
        else:
            scope["route"] = _V2_VERSION
            scope["path_params"] = {"name": match["v2"], "version": match["version"]}
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(
                    f"{scope['method']} is not allowed on {scope['path']}; use POST", allow="POST"
                )
            if v1_name is not None:
                content = await self.inference.predict_v1(v1_name, headers, _body(receive))
                extra = _JSON
            else:
                content, extra = await self.inference.infer_v2(
                    match["v2"], match["version"], headers, _body(receive)
                )
            status = 200
        except Exception as exc:  # noqa: BLE001 - every failure is answered, typed
            status, extra, content = self._error_parts(exc)
        await send_whole(send, status, extra, content)


async def send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """One complete ASGI response: start (with its length) and body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            from starlette.requests import ClientDisconnect

            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
