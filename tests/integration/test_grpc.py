"""OIP v2 over gRPC through Ray Serve's gRPC ingress (HAProxy in front, as the README's
command runs it), spoken by tritonclient.grpc and by the stubs it ships: every RPC, every
shipped model, the same answers and the same features as HTTP."""

from __future__ import annotations

import secrets

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.integration.test_observability import deployments_in, traceparent
from tests.support import MODEL, sample_transactions, wait_until

pytestmark = pytest.mark.slow

DTYPES = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


@pytest.fixture(scope="module")
def client(service):
    c = triton.InferenceServerClient(service.grpc_address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(service):
    channel = grpc.insecure_channel(service.grpc_address)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def fraud_inputs(client, records: list[dict]) -> list:
    inputs = []
    for spec in client.get_model_metadata(MODEL, as_json=True)["inputs"]:
        array = np.array([r[spec["name"]] for r in records], dtype=DTYPES[spec["datatype"]])
        tensor = triton.InferInput(spec["name"], list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_health_metadata_and_config(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready("minilm")
    assert not client.is_model_ready("nope")
    assert "model_configuration" in client.get_server_metadata(as_json=True)["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata.name == MODEL and list(metadata.versions) == ["1"]
    config = client.get_model_config(MODEL).config
    assert config.name == MODEL and config.max_batch_size > 0
    assert [i.name for i in config.input] == [i.name for i in metadata.inputs]
    assert list(client.get_model_config("minilm").config.output[0].dims) == [384]


def test_infer_answers_as_http_v1_does(service, client) -> None:
    records = sample_transactions(5, seed=secrets.randbelow(10**6))
    result = client.infer(MODEL, fraud_inputs(client, records), request_id="grpc-1")
    assert result.get_response().id == "grpc-1"
    v1 = service.http.post(
        service.url(f"/v1/models/{MODEL}:predict"), json={"instances": records}, timeout=30
    ).json()["predictions"]
    assert [v.decode() for v in result.as_numpy("label")] == [p["label"] for p in v1]
    np.testing.assert_allclose(
        result.as_numpy("fraud_probability"), [p["fraud_probability"] for p in v1], rtol=1e-6
    )


def test_text_model_over_grpc(client) -> None:
    texts = triton.InferInput("text", [2], "BYTES")
    texts.set_data_from_numpy(np.array([b"a quiet harbour", b"loud trains"], dtype=np.object_))
    embedding = client.infer("minilm", [texts]).as_numpy("embedding")
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_statistics_count_grpc_inferences(client) -> None:
    def successes() -> int:
        (stats,) = client.get_inference_statistics(MODEL).model_stats
        return stats.inference_stats.success.count

    before = successes()
    client.infer(MODEL, fraud_inputs(client, sample_transactions(2, seed=61)))
    wait_until(lambda: successes() > before, 30, "the gRPC inference in the statistics")


def _code(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def test_each_kind_of_bad_request_gets_its_status_code(client) -> None:
    code, message = _code(
        lambda: client.infer("nope", fraud_inputs(client, sample_transactions(1)))
    )
    assert code == "StatusCode.NOT_FOUND" and "nope" in message
    bad = sample_transactions(2, seed=62)
    bad[0]["hour_of_day"] = 99
    code, message = _code(lambda: client.infer(MODEL, fraud_inputs(client, bad)))
    assert code == "StatusCode.INVALID_ARGUMENT" and "hour_of_day" in message
    text = triton.InferInput("text", [1], "FP32")
    text.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    code, message = _code(lambda: client.infer("minilm", [text]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "text" in message
    code, _ = _code(lambda: client.get_model_metadata(MODEL, model_version="7"))
    assert code == "StatusCode.NOT_FOUND"
    # The deadline metadata is read as the HTTP header is: a bad one is the caller's error...
    code, message = _code(
        lambda: client.infer(
            MODEL,
            fraud_inputs(client, sample_transactions(1, seed=63)),
            headers={"x-request-deadline-ms": "0"},
        )
    )
    assert code == "StatusCode.INVALID_ARGUMENT" and "x-request-deadline-ms" in message
    # ...and one that cannot be met (64 texts through MiniLM in 1 ms) is DEADLINE_EXCEEDED.
    many = triton.InferInput("text", [64], "BYTES")
    many.set_data_from_numpy(
        np.array([f"sentence {i} {secrets.token_hex(4)}".encode() for i in range(64)], object)
    )
    code, _ = _code(lambda: client.infer("minilm", [many], headers={"x-request-deadline-ms": "1"}))
    assert code == "StatusCode.DEADLINE_EXCEEDED"


def test_request_id_and_traceparent_from_metadata_are_honoured(service, client, stub) -> None:
    trace_id, header = traceparent(sampled=True)
    request = pb.ModelInferRequest(model_name=MODEL)
    for tensor in fraud_inputs(client, sample_transactions(1, seed=secrets.randbelow(10**6))):
        request.inputs.append(tensor._get_tensor())
        request.raw_input_contents.append(tensor._get_content())
    _response, call = stub.ModelInfer.with_call(
        request, metadata=[("x-request-id", "rid-grpc-7"), ("traceparent", header)], timeout=30
    )
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "rid-grpc-7" and trailing["x-trace-id"] == trace_id
    # The request's own trace reaches every actor (the shadow mirrors every request here).
    wanted = {"Ingress", f"Validator-{MODEL}", f"ModelReplica-{MODEL}"}
    spans = wait_until(
        lambda: (s := service.otlp.trace(trace_id)) and wanted <= deployments_in(s) and s,
        30,
        f"spans of the gRPC request's trace {trace_id}",
    )
    assert any(s.name == "Ingress gRPC ModelInfer" for s in spans)


def test_grpc_requests_are_mirrored_to_the_shadow(service, client) -> None:
    def mirrored() -> int:
        return service.http.get(service.url(f"/v1/shadow/report?model={MODEL}"), timeout=10).json()[
            "mirrored_requests"
        ]

    before = mirrored()
    client.infer(MODEL, fraud_inputs(client, sample_transactions(1, seed=secrets.randbelow(10**6))))
    wait_until(lambda: mirrored() > before, 30, "the gRPC request mirrored to the shadow")
