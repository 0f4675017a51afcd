"""Baselines on Ray Serve's own fast path (the launcher's environment, HAProxy in front), one
deployment each, answering over a raw ASGI handler (no FastAPI):

- `fair`: the same per-request validation and model code as the other baselines, in-process:
  what one well-configured Serve deployment does with the model.
- `ceiling`: reads the body and returns a constant: the most requests/s any Ray Serve app
  can answer on this machine, the bound the service's own ratio is read against.
- `hops`: this service's graph with nothing in it (the same caller batching, then a Validator
  call and a model call per batch, each stage a no-op): what the graph's shape costs, the
  throughput and latency bound of any code put in it.
"""

import inspect
from typing import Any

import orjson
from ray import serve

from benchmarks.baselines.tabular import PREDICT_PATH, READY_PATH, TabularModel
from deployments.admission.caller_batch import CallerBatcher
from deployments.config import IngressConfig
from deployments.kinds.tabular import TabularKind

_JSON = [(b"content-type", b"application/json")]
_READY = orjson.dumps({"ready": True})
_CONSTANT = orjson.dumps(
    {"predictions": [{"label": "legit", "fraud_probability": 0.5}], "model_name": "fraud-risk"}
)


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _respond(send: Any, status: int, content: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _asgi(predict: Any) -> Any:
    """`predict(body)` returns `(status, content)`, or an awaitable of it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == READY_PATH:
            await _respond(send, 200, _READY)
        elif scope["path"] == PREDICT_PATH and scope["method"] == "POST":
            answer = predict(await _read_body(receive))
            await _respond(send, *(await answer if inspect.isawaitable(answer) else answer))
        else:
            await _respond(send, 404, b'{"error": "not found"}')

    return app


@serve.deployment(max_ongoing_requests=1024)
@serve.ingress()
class FairModel:
    def __init__(self) -> None:
        self.model = TabularModel()

    def __serve_build_asgi_app__(self) -> Any:
        def predict(body: bytes) -> tuple[int, bytes]:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return 400, b'{"error": "body is not JSON", "code": "bad_request"}'
            status, answer = self.model.predict(parsed)
            return status, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

        return _asgi(predict)


@serve.deployment(max_ongoing_requests=1024)
@serve.ingress()
class Ceiling:
    def __serve_build_asgi_app__(self) -> Any:
        return _asgi(lambda body: (200, _CONSTANT))


fair = FairModel.bind()
ceiling = Ceiling.bind()


def tabular_batcher(flush: Any) -> CallerBatcher[bytes, bytes]:
    """The caller batching ours gives a tabular model, from the same defaults."""
    config = IngressConfig()
    return CallerBatcher(
        flush,
        config.caller_batch_max_requests,
        config.caller_batch_wait_s,
        config.caller_batch_max_concurrent,
        min_overlap=TabularKind.caller_batch_min_overlap,
    )


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
class NoopValidator:
    def validate(self, bodies: list[bytes]) -> list[Any]:
        return [orjson.loads(body) for body in bodies]


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
class NoopModel:
    def predict(self, rows: list[Any]) -> list[bytes]:
        return [_CONSTANT for _ in rows]


@serve.deployment(max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Hops:
    """This service's graph with nothing in it: each caller batch of bodies goes to a
    Validator that only parses JSON, then to a model that answers a constant."""

    def __init__(self, validator: Any, model: Any) -> None:
        self.validator, self.model = validator, model
        self.batcher = tabular_batcher(self._flush)

    async def _flush(self, bodies: list[bytes]) -> list[bytes]:
        rows = await self.validator.validate.remote(bodies)
        return await self.model.predict.remote(rows)

    def __serve_build_asgi_app__(self) -> Any:
        async def predict(body: bytes) -> tuple[int, bytes]:
            return 200, await self.batcher.submit(body)

        return _asgi(predict)


hops = Hops.bind(NoopValidator.bind(), NoopModel.bind())
