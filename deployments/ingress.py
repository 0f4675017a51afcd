"""Ingress deployment: the only module that knows HTTP.

Thin adapters over the graph: read and bound the body, parse the protocol envelope, ask the
Validator for features and the ModelReplica for outputs, mirror a sample to the shadow after
answering, and map every failure to a status in one place (`error_response`).

No `from __future__ import annotations`: FastAPI must see the real `Request` class on the
methods Serve wraps. Exception handlers are registered before `@serve.ingress(app)` runs.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import exceptions as ray_exceptions
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from deployments.admission.auth import BearerAuth, load_token
from deployments.admission.caller_batch import CallerBatcher
from deployments.admission.inflight import DEADLINE_HEADER, Admission, Deadline
from deployments.admission.memory_guard import MemoryGuard
from deployments.admission.resilience import ResultCache, is_transient, retry_transient
from deployments.config import AppArgs, IngressConfig
from deployments.errors import (
    BadRequest,
    ClientClosedRequest,
    DeadlineExceeded,
    MethodNotAllowed,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RouteNotFound,
    ServingError,
    ShadowNotConfigured,
    raise_if_error,
)
from deployments.metadata import ModelMetadata, read_metadata
from deployments.protocol import text as text_protocol
from deployments.protocol import v1, v2
from deployments.protocol.common import ErrorBody
from deployments.schema import build_instance_model
from deployments.shadow.mirror import Mirror
from deployments.telemetry.metrics import IngressMetrics, MirrorMetrics, RequestMetrics
from deployments.telemetry.node_metrics import NodeMetrics
from deployments.telemetry.request_telemetry import RequestTelemetry, TelemetryTarget
from deployments.telemetry.tracing import (
    current_trace_id,
    current_traceparent,
    install_log_correlation,
)

logger = logging.getLogger("ray.serve")

READY_PROBE_TIMEOUT_S = 2.0
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503, 504)}
_DEADLINE_PARAM = {
    "name": DEADLINE_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "Time budget in ms; past it the work is cancelled and the answer is 504.",
}

app = FastAPI(
    title="Ray Serve inference service",
    description="KServe v1 and Open Inference Protocol v2 over a validated, batched, "
    "shadowed torch model. Every response carries `x-request-id` (an incoming one is kept). "
    'Errors are JSON `{"error": ..., "code": ...}`.',
    version="0.1.0",
    # FastAPI's own OpenTelemetry instrumentation switches itself on once Ray Serve installs
    # a tracer provider: a second server span per request plus spans around dependency
    # resolution, the endpoint and serialization, all on the hot path. RequestTelemetry is
    # the one place requests are traced and counted.
    telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
)
app.add_middleware(RequestTelemetry)


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
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    if isinstance(exc, serve_exc.BackPressureError):
        # Normally mapped in Ingress._call with a drain-rate Retry-After; this is the fallback.
        return Overloaded("the model is at capacity; retry after the indicated delay")
    if isinstance(exc, ray_exc.TaskCancelledError):
        # Serve cancels a request's downstream work when its client disconnects.
        return ClientClosedRequest("request cancelled: the client disconnected")
    if isinstance(
        exc,
        (
            ray_exc.ActorDiedError,
            ray_exc.ActorUnavailableError,
            serve_exc.DeploymentUnavailableError,
        ),
    ):
        return Overloaded(
            f"a replica is unavailable ({type(exc).__name__}); retry shortly", retry_after_s=2.0
        )
    return ServingError(f"internal error ({type(exc).__name__}); see the server log")


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
        message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(MethodNotAllowed(message))
    error = ServingError(str(exc.detail))
    error.status_code = exc.status_code
    return error_response(error)


@app.exception_handler(ClientDisconnect)
@app.exception_handler(ray_exceptions.TaskCancelledError)
async def _client_gone(_: Request, exc: Exception) -> JSONResponse:
    # Registered by class: Starlette re-raises whatever reaches the catch-all below (so the
    # server logs it); a client hanging up is routine and must not log a traceback.
    return error_response(exc)


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


@dataclass
class ServedModel:
    metadata: ModelMetadata
    versions: list[str]
    input_schema: dict[str, Any]
    validator: DeploymentHandle
    model: DeploymentHandle
    mirror: Mirror | None


@dataclass
class Work:
    """One request's inference, as it waits in the ingress's caller batch."""

    model: str
    kind: str  # "v1": instances; "v2": OIP v2 input tensors; "text": a list of strings
    payload: Any
    # This request's own trace, carried through the batch's calls (None when unsampled).
    traceparent: str | None = field(default_factory=current_traceparent)


NO_DEADLINE = Deadline(None)


@dataclass
class ServedText:
    """A text-embedding model: validated here (a string's length is cheaper to check than a
    hop to another actor), tokenized and encoded by its TextEncoder replicas."""

    metadata: Any
    schema: text_protocol.TextSchema
    versions: list[str]
    encoder: DeploymentHandle
    mirror: Mirror | None


async def _by_model(
    batch: list[Work], send: Callable[[str, list[Work]], Awaitable[list[Any]]]
) -> list[Any]:
    """Answers for a caller batch, in order, sending each model's members together.

    Defined above the class: `@serve.ingress(app)` pickles the app, routes and all, when it
    runs, so a module global defined below it is missing in the replica (NameError).
    """
    answers: list[Any] = [None] * len(batch)
    groups: dict[str, list[int]] = {}
    for i, work in enumerate(batch):
        groups.setdefault(work.model, []).append(i)
    for name, members in groups.items():
        for i, answer in zip(members, await send(name, [batch[i] for i in members])):
            answers[i] = answer
    return answers


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        args: AppArgs,
        validator: DeploymentHandle,
        model: DeploymentHandle,
        shadow: DeploymentHandle | None,
        text_encoder: DeploymentHandle | None = None,
        text_shadow: DeploymentHandle | None = None,
    ) -> None:
        self.args = args
        self.config = config = IngressConfig()
        self.auth = BearerAuth(load_token(args.auth_token_env, args.auth_token_file))
        self.metrics = IngressMetrics(args.model_name)
        self.node_metrics = NodeMetrics()
        install_log_correlation(logger)
        self.admission = Admission(
            config.max_inflight_requests,
            config.max_retry_after_s,
            max_queue_delay_s=config.max_queue_delay_s,
            min_inflight=config.min_inflight_requests,
        )
        self.cache = ResultCache(config.cache_enabled, config.cache_ttl_s, config.cache_max_entries)
        self.memory = MemoryGuard(config.memory)
        self.batcher: CallerBatcher[Work, Any] = CallerBatcher(
            self._infer_batch,
            config.caller_batch_max_requests,
            config.caller_batch_wait_s,
            config.caller_batch_max_concurrent,
            on_batch=lambda n: self.metrics.caller_batch.observe(n),
        )
        self.text_batcher: CallerBatcher[Work, Any] = CallerBatcher(
            self._embed_batch,
            config.caller_batch_max_requests,
            config.caller_batch_wait_s,
            config.caller_batch_max_concurrent,
        )
        metadata = read_metadata(args.model_dir, args.model_name, args.primary_version)
        mirror = None
        if shadow is not None:
            mirror = Mirror(shadow, self.config, MirrorMetrics(args.model_name))
        self.models = {
            args.model_name: ServedModel(
                metadata=metadata,
                versions=[args.primary_version],
                input_schema=build_instance_model(metadata).model_json_schema(),
                validator=validator,
                model=model,
                mirror=mirror,
            )
        }
        self.text_models: dict[str, ServedText] = {}
        if text_encoder is not None:
            from deployments.text.metadata import read_text_metadata

            spec = args.text_model
            text_meta = read_text_metadata(args.model_dir, spec.model_name, spec.version)
            text_mirror = None
            if text_shadow is not None:
                text_mirror = Mirror(text_shadow, self.config, MirrorMetrics(spec.model_name))
            self.text_models[spec.model_name] = ServedText(
                text_meta,
                text_protocol.TextSchema(text_meta),
                [spec.version],
                text_encoder,
                text_mirror,
            )
        versions = {name: m.metadata.version for name, m in self.models.items()}
        versions.update({name: m.metadata.version for name, m in self.text_models.items()})
        app.state.telemetry = TelemetryTarget(RequestMetrics(), versions)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        old, config = self.config, IngressConfig.model_validate(user_config or {})
        self.admission.max_inflight = config.max_inflight_requests
        self.admission.max_queue_delay_s = config.max_queue_delay_s
        self.admission.min_inflight = config.min_inflight_requests
        self.admission.max_retry_after_s = config.max_retry_after_s
        if (old.cache_ttl_s, old.cache_max_entries) != (
            config.cache_ttl_s,
            config.cache_max_entries,
        ):
            self.cache = ResultCache(
                config.cache_enabled, config.cache_ttl_s, config.cache_max_entries
            )
        self.cache.enabled = config.cache_enabled
        self.memory.config = config.memory
        for batcher in (self.batcher, self.text_batcher):
            batcher.max_items = config.caller_batch_max_requests
            batcher.max_wait_s = config.caller_batch_wait_s
            batcher.max_concurrent = config.caller_batch_max_concurrent
        self.config = config
        for served in [*self.models.values(), *self.text_models.values()]:
            if served.mirror is not None:
                served.mirror.reconfigure(self.config)

    # ---- KServe v1 -------------------------------------------------------------------

    @app.get("/v1/models", response_model=v1.ModelList, responses=_ERRORS)
    async def list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"models": sorted([*self.models, *self.text_models])}

    @app.get("/v1/models/{name}", response_model=v1.ModelInfo, responses=_ERRORS)
    async def model_info(self, name: str, request: Request) -> dict[str, Any]:
        self._authorize(request)
        text = self._text(name)
        if text is not None:
            return {
                "name": name,
                "version": text.metadata.version,
                "ready": await self._text_ready(text),
                "input_schema": text.schema.json_schema(),
            }
        served = self._served(name)
        return {
            "name": name,
            "version": served.metadata.version,
            "ready": await self._is_ready(served),
            "input_schema": served.input_schema,
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
    async def predict(self, name: str, request: Request) -> JSONResponse:
        text = self._text(name)
        if text is not None:
            with self._admitted(request) as deadline:
                body = await self._json_body(request)
                limit = self.args.text_model.max_texts_per_request
                texts = text.schema.texts(v1.parse_predict(body, limit))
                answer = await self._embed(text, texts, deadline, request)
            return JSONResponse(
                {
                    "predictions": text_protocol.v1_predictions(answer["embeddings"]),
                    "model_name": name,
                    "model_version": answer["model_version"],
                }
            )
        served = self._served(name)
        with self._admitted(request) as deadline:
            body = await self._json_body(request)
            instances = v1.parse_predict(body, self.args.max_instances_per_request)
            prediction = await self._predict(
                served, Work(served.metadata.name, "v1", instances), instances, deadline, request
            )
        return JSONResponse(
            {
                "predictions": v1.predictions(prediction["outputs"]),
                "model_name": name,
                "model_version": prediction["model_version"],
            }
        )

    # ---- shadow mode -------------------------------------------------------------------

    @app.get("/v1/shadow/report", responses=_ERRORS)
    async def shadow_report(self, request: Request, model: str | None = None) -> dict[str, Any]:
        """How the candidate compares with the primary, and whether to promote it."""
        self._authorize(request)
        name = model if model is not None else next(iter(self.models))
        text = self._text(name)
        mirror = text.mirror if text is not None else self._served(name).mirror
        if mirror is None:
            raise ShadowNotConfigured(f"model {name!r} has no candidate in shadow mode")
        report = await mirror.shadow.report.remote(mirror.counts())
        return {**report, "sample_rate": self.config.shadow_sample_rate}

    # ---- operations --------------------------------------------------------------------

    # Not part of the inference contract in /openapi.json: an operations endpoint whose
    # answer is Prometheus text, documented in the README.
    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def metrics(self, request: Request) -> PlainTextResponse:
        """Prometheus text from this node's Ray metrics agent: every Ray, Serve and service
        metric of the processes on this node (all of them under `serve run`)."""
        self._authorize(request)
        text = await self.node_metrics.scrape()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- Open Inference Protocol v2 ----------------------------------------------------

    @app.get("/v2")
    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "ray-serve-inference", "version": app.version, "extensions": []}

    @app.get("/v2/health/live")
    async def live(self) -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready", responses=_ERRORS)
    async def ready(self) -> dict[str, Any]:
        states = await asyncio.gather(
            *(self._is_ready(m) for m in self.models.values()),
            *(self._text_ready(t) for t in self.text_models.values()),
        )
        if not all(states):
            raise NotReady("models are still loading or warming up")
        return {"ready": True}

    @app.get("/v2/models/{name}", response_model=v2.ModelMetadataResponse, responses=_ERRORS)
    @app.get(
        "/v2/models/{name}/versions/{version}",
        response_model=v2.ModelMetadataResponse,
        responses=_ERRORS,
    )
    async def v2_model_metadata(
        self, name: str, request: Request, version: str | None = None
    ) -> dict[str, Any]:
        self._authorize(request)
        text = self._text(name, version)
        if text is not None:
            return text_protocol.v2_metadata(text.metadata, text.versions)
        served = self._served(name, version)
        return v2.model_metadata(served.metadata, served.versions)

    @app.get("/v2/models/{name}/ready", responses=_ERRORS)
    @app.get("/v2/models/{name}/versions/{version}/ready", responses=_ERRORS)
    async def v2_model_ready(self, name: str, version: str | None = None) -> dict[str, Any]:
        text = self._text(name, version)
        if text is not None:
            if not await self._text_ready(text):
                raise NotReady(f"model {name!r} is still loading or warming up")
            return {"name": name, "ready": True}
        served = self._served(name, version)
        if not await self._is_ready(served):
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
    async def v2_infer(
        self, name: str, request: Request, version: str | None = None
    ) -> JSONResponse:
        text = self._text(name, version)
        if text is not None:
            with self._admitted(request) as deadline:
                infer = v2.parse_infer(await self._json_body(request))
                limit = self.args.text_model.max_texts_per_request
                texts = text.schema.texts_from_tensors(infer.inputs, limit)
                answer = await self._embed(text, texts, deadline, request)
            return JSONResponse(
                text_protocol.v2_response(
                    text.metadata,
                    answer["embeddings"],
                    answer["model_version"],
                    infer.id,
                    infer.outputs,
                )
            )
        served = self._served(name, version)
        with self._admitted(request) as deadline:
            infer = v2.parse_infer(await self._json_body(request))
            prediction = await self._predict(
                served,
                Work(served.metadata.name, "v2", infer.inputs),
                [tensor.model_dump() for tensor in infer.inputs] if self.cache.enabled else None,
                deadline,
                request,
            )
        return JSONResponse(v2.infer_response(served.metadata, prediction, infer.id, infer.outputs))

    # ---- helpers -----------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        self.auth.check(request.headers.get("authorization"))

    @contextmanager
    def _admitted(self, request: Request) -> Iterator[Deadline]:
        """Auth, deadline, memory and in-flight admission: all before any work is done."""
        self._authorize(request)
        deadline = Deadline.from_header(
            request.headers.get(DEADLINE_HEADER), self.config.max_deadline_ms
        )
        with ExitStack() as stack:
            try:
                self.memory.check()
                stack.enter_context(self.admission.admit())
            except Overloaded as exc:
                self.metrics.rejections.inc(1, {"reason": exc.details[0]["reason"]})
                raise
            yield deadline

    async def _predict(
        self,
        served: ServedModel,
        work: Work,
        cache_payload: Any,
        deadline: Deadline,
        request: Request,
    ) -> dict[str, Any]:
        key = None
        if self.cache.enabled:  # the key costs a canonical dump and a hash: only when used
            key = ResultCache.key(served.metadata.name, served.metadata.version, cache_payload)
            cached = self.cache.get(key)
            self.metrics.cache.inc(1, {"result": "hit" if cached is not None else "miss"})
            if cached is not None:
                return cached
        # Past its deadline a request leaves the batch queue (nothing is sent for it); once
        # its batch is on the way, the rows are computed with the others but not awaited.
        features, prediction = raise_if_error(
            await deadline.run(self.batcher.submit(work), "validation and inference")
        )
        if key is not None:
            self.cache.put(key, prediction)
        if served.mirror is not None:
            served.mirror.offer(
                {
                    "features": features,
                    "primary": prediction["outputs"],
                    "primary_latency_ms": prediction["infer_ms"],
                    "request_id": request.headers.get("x-request-id", ""),
                    "trace_id": current_trace_id(),
                }
            )
        return prediction

    async def _infer_batch(self, batch: list["Work"]) -> list[Any]:
        """Batching at the caller (`self.batcher`): the requests in flight here go to the
        Validator in one call and to the ModelReplica in one more, instead of two calls each.

        Each request gets back its own `(features, prediction)` or its own typed error: one
        bad request fails only itself; a stage that is down or full fails the batch's members
        with the same retryable 503.
        """
        return await _by_model(
            batch, lambda name, works: self._infer_group(self.models[name], works)
        )

    async def _infer_group(self, served: ServedModel, batch: list["Work"]) -> list[Any]:
        requests = [(work.kind, work.payload, work.traceparent) for work in batch]
        try:
            answers: list[Any] = await self._call(
                lambda: served.validator.features_many.remote(requests), NO_DEADLINE, "validation"
            )
            valid = [i for i, f in enumerate(answers) if not isinstance(f, ServingError)]
            if not valid:
                return answers
            rows = [answers[i] for i in valid]
            traces = [batch[i].traceparent for i in valid]
            predictions = await self._call(
                lambda: served.model.predict_many.remote(rows, traces), NO_DEADLINE, "inference"
            )
        except ServingError as exc:
            return [exc] * len(batch)
        for i, prediction in zip(valid, predictions):
            ok = not isinstance(prediction, ServingError)
            answers[i] = (answers[i], prediction) if ok else prediction
        return answers

    async def _embed_batch(self, batch: list["Work"]) -> list[Any]:
        """Batching at the caller for text: one TextEncoder call per batch of requests."""
        return await _by_model(batch, lambda name, works: self._embed_group(name, works))

    async def _embed_group(self, name: str, batch: list["Work"]) -> list[Any]:
        encoder = self.text_models[name].encoder
        texts = [work.payload for work in batch]
        traces = [work.traceparent for work in batch]
        try:
            return await self._call(
                lambda: encoder.embed_many.remote(texts, traces), NO_DEADLINE, "inference"
            )
        except ServingError as exc:
            return [exc] * len(batch)

    async def _embed(
        self, text: ServedText, texts: list[str], deadline: Deadline, request: Request
    ) -> dict[str, Any]:
        key = None
        if self.cache.enabled:
            key = ResultCache.key(text.metadata.name, text.metadata.version, texts)
            cached = self.cache.get(key)
            self.metrics.cache.inc(1, {"result": "hit" if cached is not None else "miss"})
            if cached is not None:
                return cached
        work = Work(text.metadata.name, "text", texts)
        answer = raise_if_error(await deadline.run(self.text_batcher.submit(work), "inference"))
        if key is not None:
            self.cache.put(key, answer)
        if text.mirror is not None:
            text.mirror.offer(
                {
                    "features": texts,
                    "primary": {"embedding": answer["embeddings"]},
                    "primary_latency_ms": answer["infer_ms"],
                    "request_id": request.headers.get("x-request-id", ""),
                    "trace_id": current_trace_id(),
                }
            )
        return answer

    async def _call(self, issue: Callable[[], Any], deadline: Deadline, what: str) -> Any:
        """One downstream call: idempotent, so retried when its replica died; a full
        downstream queue becomes a 503 whose Retry-After comes from the drain rate; a typed
        error the replica returned (see `returned_not_raised`) is raised here."""
        from ray.serve.exceptions import BackPressureError

        try:
            result = await retry_transient(
                lambda: deadline.run(issue(), what),
                self.config.retry_attempts,
                self.config.retry_max_wait_s,
                on_retry=lambda exc: self.metrics.retries.inc(),
            )
        except BackPressureError:
            self.metrics.rejections.inc(1, {"reason": "downstream_queue_full"})
            raise Overloaded(
                f"the {what} stage is at capacity (its queue is full)",
                [{"reason": "downstream_queue_full"}],
                self.admission.retry_after_s(),
            ) from None
        except Exception as exc:
            if is_transient(exc):
                raise Overloaded(
                    f"the {what} stage is unavailable ({type(exc).__name__})",
                    [{"reason": "replica_unavailable"}],
                    self.admission.retry_after_s(),
                ) from exc
            raise
        return raise_if_error(result)

    def _text(self, name: str, version: str | None = None) -> ServedText | None:
        text = self.text_models.get(name)
        if text is not None and version is not None and version not in text.versions:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} here; versions: {text.versions}"
            )
        return text

    def _served(self, name: str, version: str | None = None) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            names = sorted([*self.models, *self.text_models])
            raise ModelNotFound(f"model {name!r} is not served here; models: {names}")
        if version is not None and version not in served.versions:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} here; versions: {served.versions}"
            )
        return served

    async def _json_body(self, request: Request) -> Any:
        limit = self.args.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if not body.strip():
            raise BadRequest("request body is empty; expected a JSON object")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None

    async def _text_ready(self, text: ServedText) -> bool:
        try:
            return bool(await asyncio.wait_for(text.encoder.ready.remote(), READY_PROBE_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    async def _is_ready(self, served: ServedModel) -> bool:
        try:
            checks = [served.validator.ready.remote(), served.model.ready.remote()]
            return all(await asyncio.wait_for(asyncio.gather(*checks), READY_PROBE_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False
