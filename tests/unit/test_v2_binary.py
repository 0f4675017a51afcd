"""Triton's binary tensor data extension, model configuration and statistics over the HTTP
layer (no Ray): requests built and answers read by tritonclient's own helpers, the real kinds
behind in-process handles (tests/unit/graph_fakes.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import np_to_triton_dtype

from deployments.protocol.v2_binary import HEADER
from tests.support import MODELS, sample_transactions
from tests.unit.graph_fakes import http_app, served_model

FEATURE_TYPES = {
    "amount_usd": np.float32,
    "hour_of_day": np.int64,
    "merchant_category": np.object_,
    "account_age_days": np.int64,
    "txn_count_24h": np.int64,
    "distance_from_home_km": np.float32,
    "card_present": np.bool_,
    "foreign_transaction": np.bool_,
}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {
        "fraud-risk": served_model(MODELS, "fraud-risk", "1"),
        "minilm": served_model(MODELS, "minilm", "1"),
    }


def run(models: dict[str, Any], scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    app, _plane = http_app(models)

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client)

    return asyncio.run(go())


def fraud_inputs(records: list[dict[str, Any]], binary: bool = True) -> list[Any]:
    inputs = []
    for name, dtype in FEATURE_TYPES.items():
        array = np.array([r[name] for r in records], dtype=dtype)
        tensor = triton_http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def post_triton(
    client: httpx.AsyncClient, model: str, inputs: list[Any], outputs: list[Any] | None = None
) -> Any:
    body, json_size = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id="req-7"
    )
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def parsed(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return triton_http.InferenceServerClient.parse_response_body(
        response.content, header_length=response.headers.get(HEADER)
    )


def test_binary_inputs_and_outputs_answer_as_json_does(models: dict[str, Any]) -> None:
    records = sample_transactions(5, seed=11)

    async def scenario(client: httpx.AsyncClient) -> tuple[Any, Any]:
        binary = await post_triton(client, "fraud-risk", fraud_inputs(records))
        plain = await post_triton(
            client,
            "fraud-risk",
            fraud_inputs(records, binary=False),
            [
                triton_http.InferRequestedOutput("label", binary_data=False),
                triton_http.InferRequestedOutput("fraud_probability", binary_data=False),
            ],
        )
        return binary, plain

    binary, plain = run(models, scenario)
    # tritonclient asks for every output in binary when it names none.
    assert binary.headers["content-type"] == "application/octet-stream"
    result = parsed(binary)
    assert result.get_response()["id"] == "req-7"
    assert HEADER not in plain.headers and plain.headers["content-type"] == "application/json"
    expected = {o["name"]: o["data"] for o in plain.json()["outputs"]}
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == expected["label"]
    np.testing.assert_allclose(
        result.as_numpy("fraud_probability"), expected["fraud_probability"], rtol=1e-6
    )
    assert result.as_numpy("fraud_probability").dtype == np.float32


def test_one_output_binary_the_other_json(models: dict[str, Any]) -> None:
    records = sample_transactions(3, seed=12)
    outputs = [
        triton_http.InferRequestedOutput("label", binary_data=False),
        triton_http.InferRequestedOutput("fraud_probability", binary_data=True),
    ]
    response = run(
        models, lambda client: post_triton(client, "fraud-risk", fraud_inputs(records), outputs)
    )
    result = parsed(response)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert len(by_name["label"]["data"]) == 3 and "parameters" not in by_name["label"]
    assert by_name["fraud_probability"]["parameters"] == {"binary_data_size": 12}
    assert result.as_numpy("fraud_probability").shape == (3,)


def test_text_in_binary_embeddings_back_as_float32_bytes(models: dict[str, Any]) -> None:
    texts = np.array([b"a cat on a mat", "ein Hund \u00fcber dem Zaun".encode()], dtype=np.object_)
    tensor = triton_http.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=True)
    response = run(models, lambda client: post_triton(client, "minilm", [tensor]))
    result = parsed(response)
    (output,) = result.get_response()["outputs"]
    assert output["parameters"] == {"binary_data_size": 2 * 384 * 4}
    embedding = result.as_numpy(output["name"])
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def _raw(header: dict[str, Any], binary: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + binary, {HEADER: str(len(text))}


def _text(size: int | None = None, **extra: Any) -> dict[str, Any]:
    params = {} if size is None else {"binary_data_size": size}
    return {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": params, **extra}
        ]
    }


def _amount(size: int) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "amount_usd",
                "datatype": "FP32",
                "shape": [2],
                "parameters": {"binary_data_size": size},
            }
        ]
    }


@pytest.mark.parametrize(
    "model,body,headers,field",
    [
        # FP32 [2] is 8 bytes, not 6
        ("fraud-risk", *_raw(_amount(6), b"\0" * 6), "amount_usd"),
        # sizes that add up to less than the binary section
        ("fraud-risk", *_raw(_amount(8), b"\0" * 12), "inputs"),
        # a size running past the end
        ("fraud-risk", *_raw(_amount(8), b"\0" * 4), "amount_usd"),
        ("minilm", *_raw(_text(-1), b""), "text"),
        ("minilm", *_raw(_text(4, data=["x"]), b"\0\0\0\0"), "text"),
        # a BYTES element whose length runs past its data
        ("minilm", *_raw(_text(8), (99).to_bytes(4, "little") + b"abcd"), "text"),
        # a BYTES element's length cut off
        ("minilm", *_raw(_text(2), b"\1\0"), "text"),
        ("minilm", *_raw(_text(6), (2).to_bytes(4, "little") + b"\xff\xfe"), "text"),
        # two elements where the shape says one
        ("minilm", *_raw(_text(10), ((1).to_bytes(4, "little") + b"a") * 2), "text"),
        ("minilm", b'{"inputs": []}', {HEADER: "x12"}, "Inference-Header-Content-Length"),
        ("minilm", b'{"inputs": []}', {HEADER: "999"}, "Inference-Header-Content-Length"),
    ],
)
def test_bad_binary_requests_get_400_naming_the_field(
    models: dict[str, Any], model: str, body: bytes, headers: dict[str, str], field: str
) -> None:
    response = run(
        models,
        lambda client: client.post(f"/v2/models/{model}/infer", content=body, headers=headers),
    )
    assert response.status_code == 400, response.text
    error = response.json()
    assert field in error["error"]
    assert any(d["field"] == field for d in error["details"]), error


def test_shape_bombs_are_refused_before_anything_is_allocated(models: dict[str, Any]) -> None:
    bomb = {
        "inputs": [
            {
                "name": "amount_usd",
                "datatype": "FP32",
                "shape": [2**40, 2**40],
                "parameters": {"binary_data_size": 8},
            }
        ]
    }
    body, headers = _raw(bomb, b"\0" * 8)
    response = run(
        models,
        lambda client: client.post("/v2/models/fraud-risk/infer", content=body, headers=headers),
    )
    assert response.status_code == 400 and "amount_usd" in response.json()["error"]


def test_server_metadata_advertises_the_extensions(models: dict[str, Any]) -> None:
    response = run(models, lambda client: client.get("/v2"))
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
        response.json()["extensions"]
    )


def test_model_config_in_tritons_schema(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[Any]:
        return [
            await client.get("/v2/models/fraud-risk/config"),
            await client.get("/v2/models/minilm/versions/1/config"),
            await client.get("/v2/models/nope/config"),
            await client.get("/v2/models/minilm/versions/9/config"),
        ]

    fraud, text, missing, wrong_version = run(models, scenario)
    config = fraud.json()
    assert config["name"] == "fraud-risk" and config["max_batch_size"] > 0
    inputs = {i["name"]: i for i in config["input"]}
    assert set(FEATURE_TYPES) <= set(inputs)  # and the optional merchant_risk_score
    assert inputs["amount_usd"]["data_type"] == "TYPE_FP32"
    assert inputs["merchant_category"]["data_type"] == "TYPE_STRING"
    assert inputs["card_present"] == {
        "name": "card_present",
        "data_type": "TYPE_BOOL",
        "dims": [1],
        "reshape": {"shape": []},
    }
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    embedding = text.json()["output"][0]
    assert embedding["dims"] == [384] and embedding["data_type"] == "TYPE_FP32"
    assert missing.status_code == 404 and wrong_version.status_code == 404


def test_statistics_count_what_was_served(models: dict[str, Any]) -> None:
    records = sample_transactions(4, seed=13)

    async def scenario(client: httpx.AsyncClient) -> tuple[Any, Any, Any]:
        before = (await client.get("/v2/models/fraud-risk/stats")).json()
        await post_triton(client, "fraud-risk", fraud_inputs(records))
        after = (await client.get("/v2/models/fraud-risk/stats")).json()
        every = (await client.get("/v2/models/stats")).json()
        return before, after, every

    before, after, every = run(models, scenario)
    (b,), (a,) = before["model_stats"], after["model_stats"]
    assert a["name"] == "fraud-risk" and a["version"] == "1"
    assert a["inference_count"] == b["inference_count"] + 4
    success = a["inference_stats"]["success"]["count"]
    assert success == b["inference_stats"]["success"]["count"] + 1
    assert {s["name"] for s in every["model_stats"]} == {"fraud-risk", "minilm"}
