"""Triton's gRPC service without Ray: the gRPC front over the data plane and the real kinds
(in-process handles, tests/unit/graph_fakes.py), served by a real grpc.aio server on
loopback and spoken to by tritonclient.grpc. The servicer stands in for Ray Serve's gRPC
ingress only as far as Ray goes: it wraps the call's context in Ray's own
`RayServegRPCContext` and applies it afterwards, as Ray does."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from ray.serve.grpc_util import RayServegRPCContext
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from deployments.admission.auth import BearerAuth
from deployments.admission.door import Door
from deployments.admission.rate_limit import RateLimitConfig
from deployments.protocol.v2 import server_metadata
from deployments.roles.grpc_front import RESPONSES, GrpcFront
from deployments.roles.http_gate import OPEN_PATHS
from deployments.roles.http_inference import Inference
from tests.support import MODELS, free_port, sample_transactions
from tests.unit.graph_fakes import http_app, served_model
from tests.unit.test_v2_binary import FEATURE_TYPES

TOKEN = "grpc-test-token-0123456789"


class _Unset:
    """grpcio's synchronous context, whose `trailing_metadata()` is None until set (the
    asyncio context's, which Ray wraps, is empty)."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def trailing_metadata(self) -> Any:
        return self._context.trailing_metadata() or ()


def _servicer(front: GrpcFront, loop: asyncio.AbstractEventLoop) -> Any:
    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
        pass

    def rpc(name: str) -> Any:
        def method(self: Any, request: Any, context: Any) -> Any:
            ray_context = RayServegRPCContext(_Unset(context))
            call = front.call(name, request, ray_context)
            response = asyncio.run_coroutine_threadsafe(call, loop).result(timeout=60)
            ray_context._set_on_grpc_context(context)
            return response

        return method

    for name in RESPONSES:
        setattr(Servicer, name, rpc(name))
    return Servicer()


class Server:
    """A gRPC server on loopback serving one GrpcFront, whose data plane runs on an event
    loop of its own thread. grpcio's synchronous server, so that no grpc.aio poller outlives
    the test in this process (a test process that later runs Ray)."""

    def __init__(self, token: str | None = None, rate_limit: dict | None = None) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.token = token
        self.rate_limit = rate_limit
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.clients: list[Any] = []

    def __enter__(self) -> Server:
        self.thread.start()
        front = asyncio.run_coroutine_threadsafe(self._front(), self.loop).result(timeout=60)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            _servicer(front, self.loop), self.server
        )
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()
        return self

    async def _front(self) -> GrpcFront:
        models = {
            "fraud-risk": served_model(MODELS, "fraud-risk", "1"),
            "minilm": served_model(MODELS, "minilm", "1"),
        }
        _app, plane = http_app(models)
        if self.rate_limit:
            plane.limiter.reconfigure(RateLimitConfig.model_validate(self.rate_limit))
        auth = BearerAuth({self.token: "grpc-client"} if self.token else {})
        return GrpcFront(
            plane,
            Inference(plane, 1 << 20),
            Door(auth, plane.limiter, plane.rate_limited),
            server_metadata(),
            OPEN_PATHS,
        )

    def __exit__(self, *exc: Any) -> None:
        for client in self.clients:
            client.close()
        self.server.stop(None).wait(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def client(self) -> Any:
        client = triton.InferenceServerClient(f"127.0.0.1:{self.port}")
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def fraud_inputs(records: list[dict[str, Any]]) -> list[Any]:
    inputs = []
    for name, dtype in FEATURE_TYPES.items():
        array = np.array([r[name] for r in records], dtype=dtype)
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_health_metadata_config_and_statistics(server: Server) -> None:
    client = server.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud-risk") and not client.is_model_ready("nope")
    assert set(client.get_server_metadata(as_json=True)["extensions"]) >= {
        "binary_tensor_data",
        "model_configuration",
        "statistics",
    }
    metadata = client.get_model_metadata("fraud-risk", as_json=True)
    assert [o["name"] for o in metadata["outputs"]] == ["label", "fraud_probability"]
    config = client.get_model_config("minilm").config  # parsed into Triton's ModelConfig
    assert config.name == "minilm" and list(config.output[0].dims) == [384]
    client.infer("fraud-risk", fraud_inputs(sample_transactions(3, seed=41)))
    (stats,) = client.get_inference_statistics("fraud-risk").model_stats
    assert stats.name == "fraud-risk" and stats.inference_stats.success.count >= 1


def test_infer_answers_as_http_does(server: Server) -> None:
    records = sample_transactions(4, seed=42)
    result = server.client().infer(
        "fraud-risk", fraud_inputs(records), request_id="g-1", headers={"x-request-id": "rid-9"}
    )
    response = result.get_response()
    assert response.id == "g-1" and response.model_version == "1"
    labels = [v.decode() for v in result.as_numpy("label")]
    assert set(labels) <= {"legit", "fraud"} and len(labels) == 4
    assert result.as_numpy("fraud_probability").dtype == np.float32

    texts = triton.InferInput("text", [2], "BYTES")
    texts.set_data_from_numpy(np.array([b"a cat", b"a dog"], dtype=np.object_))
    embedding = server.client().infer("minilm", [texts]).as_numpy("embedding")
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32


def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_each_kind_of_bad_request_gets_its_status_code(server: Server) -> None:
    client = server.client()
    code, message = _status(lambda: client.infer("nope", fraud_inputs(sample_transactions(1))))
    assert code == "StatusCode.NOT_FOUND" and "nope" in message
    bad = sample_transactions(2, seed=43)
    bad[1]["hour_of_day"] = 99
    code, message = _status(lambda: client.infer("fraud-risk", fraud_inputs(bad)))
    assert code == "StatusCode.INVALID_ARGUMENT" and "hour_of_day" in message
    wrong_type = triton.InferInput("amount_usd", [1], "BYTES")
    wrong_type.set_data_from_numpy(np.array([b"12"], dtype=np.object_))
    code, message = _status(lambda: client.infer("fraud-risk", [wrong_type]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "amount_usd" in message
    code, _ = _status(lambda: client.get_model_config("fraud-risk", model_version="7"))
    assert code == "StatusCode.NOT_FOUND"


def test_auth_is_required_except_for_the_health_rpcs() -> None:
    with Server(token=TOKEN) as secured:
        client = secured.client()
        assert client.is_server_live() and client.is_server_ready()  # open, as over HTTP
        code, _ = _status(lambda: client.get_model_metadata("fraud-risk"))
        assert code == "StatusCode.UNAUTHENTICATED"
        code, _ = _status(
            lambda: client.get_model_metadata("fraud-risk", headers={"authorization": "Bearer x"})
        )
        assert code == "StatusCode.UNAUTHENTICATED"
        good = {"authorization": f"Bearer {TOKEN}"}
        assert client.get_model_metadata("fraud-risk", headers=good).name == "fraud-risk"


def test_over_the_rate_limit_is_resource_exhausted_with_retry_after() -> None:
    limit = {"enabled": True, "requests_per_s": 0.01, "burst": 1}
    with Server(rate_limit=limit) as limited:
        channel = grpc.insecure_channel(f"127.0.0.1:{limited.port}")
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        from tritonclient.grpc import service_pb2 as pb

        stub.ModelMetadata(pb.ModelMetadataRequest(name="fraud-risk"))
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="fraud-risk"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(info.value.trailing_metadata())
        assert int(trailing["retry-after"]) >= 1 and trailing["x-request-id"]
        channel.close()


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_serve_s_grpc_servers_bind_where_http_listens_on_loopback(
    monkeypatch, host: str, loopback: bool
) -> None:
    """Ray binds its gRPC servers through `default_impl.add_grpc_address("[::]:port")`;
    held to a loopback HTTP host, a real server then listens on 127.0.0.1 only."""
    import psutil
    from ray.serve._private import default_impl

    from deployments.roles.listen import grpc_on_http_host

    monkeypatch.setattr(default_impl, "add_grpc_address", default_impl.add_grpc_address)
    grpc_on_http_host(host)
    port = free_port()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    default_impl.add_grpc_address(server, f"[::]:{port}")  # as Ray calls it
    server.start()
    try:
        bound = {
            c.laddr.ip
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
    finally:
        server.stop(None).wait(30)
    addresses = {ipaddress.ip_address(ip) for ip in bound}
    # 127.0.0.1 may show as its IPv4-mapped IPv6 form on a dual-stack socket.
    on_loopback = {(a.ipv4_mapped or a).is_loopback for a in addresses}
    assert addresses and on_loopback == {loopback}
