"""Open Inference Protocol v2, spoken by an independent client (tritonclient): JSON and binary
tensors, Triton's model configuration and statistics."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import MODEL, sample_transactions, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(service):
    c = triton.InferenceServerClient(service.base_url.removeprefix("http://"))
    yield c
    c.close()


def feature_inputs(
    client, records: list[dict], column: bool = False, binary: bool = False
) -> list[triton.InferInput]:
    metadata = client.get_model_metadata(MODEL)
    inputs = []
    for spec in metadata["inputs"]:
        values = [r[spec["name"]] for r in records]
        dtype = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}
        array = np.array(values, dtype=dtype[spec["datatype"]])
        if column:
            array = array.reshape(-1, 1)
        tensor = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_health_and_metadata(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("nope")
    md = client.get_model_metadata(MODEL)
    assert md["name"] == MODEL and md["versions"] == ["1"]
    assert [o["name"] for o in md["outputs"]] == ["label", "fraud_probability"]


@pytest.mark.parametrize("column", [False, True], ids=["shape-N", "shape-Nx1"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_v1(service, client, column: bool, binary: bool) -> None:
    records = sample_transactions(7, seed=21 + column + 2 * binary)
    inputs = feature_inputs(client, records, column, binary)
    # No outputs named: tritonclient asks for every output in binary.
    result = client.infer(MODEL, inputs, request_id="trace-me")
    response = result.get_response()
    assert response["id"] == "trace-me" and response["model_version"] == "1"
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    probs = result.as_numpy("fraud_probability")
    v1 = service.http.post(
        service.url(f"/v1/models/{MODEL}:predict"), json={"instances": records}
    ).json()["predictions"]
    assert labels == [p["label"] for p in v1]
    np.testing.assert_allclose(probs, [p["fraud_probability"] for p in v1], rtol=1e-6)


def test_requested_outputs_only(client) -> None:
    outputs = [triton.InferRequestedOutput("fraud_probability", binary_data=False)]
    result = client.infer(MODEL, feature_inputs(client, sample_transactions(2)), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["fraud_probability"]


def test_bad_tensors_are_client_errors_naming_the_tensor(service) -> None:
    body = {
        "inputs": [
            {"name": "amount_usd", "shape": [1], "datatype": "BYTES", "data": ["12"]},
            {"name": "hour_of_day", "shape": [2], "datatype": "INT64", "data": [1]},
        ]
    }
    resp = service.http.post(service.url(f"/v2/models/{MODEL}/infer"), json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert "amount_usd" in error and "hour_of_day" in error and "card_present" in resp.text


def test_bad_values_inside_tensors(client) -> None:
    records = sample_transactions(3)
    records[2]["hour_of_day"] = 99
    with pytest.raises(InferenceServerException, match="hour_of_day"):
        client.infer(MODEL, feature_inputs(client, records))


def test_unknown_model_and_version(service) -> None:
    assert service.http.post(service.url("/v2/models/nope/infer"), json={}).status_code == 404
    resp = service.http.get(service.url(f"/v2/models/{MODEL}/versions/7"))
    assert resp.status_code == 404 and "no version '7'" in resp.json()["error"]
    assert service.http.get(service.url(f"/v2/models/{MODEL}/versions/1/ready")).status_code == 200


def test_text_model_in_binary_both_ways(client) -> None:
    texts = np.array([b"the cat sat on the mat", b"a dog barked"], dtype=object)
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts)  # the library's default: binary
    result = client.infer("minilm", [tensor])
    (output,) = result.get_response()["outputs"]
    assert output["parameters"]["binary_data_size"] == 2 * 384 * 4
    embedding = result.as_numpy(output["name"])
    assert embedding.dtype == np.float32 and embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_model_config_read_by_tritonclient(client) -> None:
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
        client.get_server_metadata()["extensions"]
    )
    config = client.get_model_config(MODEL)
    assert config == client.get_model_config(MODEL, model_version="1")
    assert config["name"] == MODEL and config["max_batch_size"] > 0
    metadata = client.get_model_metadata(MODEL)
    assert [i["name"] for i in config["input"]] == [i["name"] for i in metadata["inputs"]]
    assert config["instance_group"][0]["count"] >= 1
    text = client.get_model_config("minilm")
    assert text["output"][0]["dims"] == [384]
    with pytest.raises(InferenceServerException, match="version"):
        client.get_model_config(MODEL, model_version="7")


def test_statistics_count_inferences_across_replicas(client) -> None:
    def stats() -> dict:
        (entry,) = client.get_inference_statistics(MODEL)["model_stats"]
        return entry

    before = stats()
    client.infer(MODEL, feature_inputs(client, sample_transactions(6, seed=31), binary=True))
    after = wait_until(
        lambda: (s := stats())["inference_count"] >= before["inference_count"] + 6 and s,
        30,
        "six more rows in the statistics",
    )
    assert after["name"] == MODEL and after["version"] == "1"
    assert after["execution_count"] > before["execution_count"]
    inference = after["inference_stats"]
    assert inference["success"]["count"] > before["inference_stats"]["success"]["count"]
    assert inference["compute_infer"]["ns"] > 0 and inference["queue"]["count"] > 0
    assert after["last_inference"] >= before["last_inference"]
    assert (
        sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    )
    every = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} >= {MODEL, "minilm"}
