"""Open Inference Protocol v2, spoken by an independent client (tritonclient, JSON mode)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import MODEL, sample_transactions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(service):
    c = triton.InferenceServerClient(service.base_url.removeprefix("http://"))
    yield c
    c.close()


def feature_inputs(client, records: list[dict], column: bool = False) -> list[triton.InferInput]:
    metadata = client.get_model_metadata(MODEL)
    inputs = []
    for spec in metadata["inputs"]:
        values = [r[spec["name"]] for r in records]
        dtype = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}
        array = np.array(values, dtype=dtype[spec["datatype"]])
        if column:
            array = array.reshape(-1, 1)
        tensor = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=False)
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
def test_infer_matches_v1(service, client, column: bool) -> None:
    records = sample_transactions(7, seed=21)
    result = client.infer(MODEL, feature_inputs(client, records, column), request_id="trace-me")
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
