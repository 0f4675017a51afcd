"""KServe v1 over real HTTP through the real graph, and its error contract."""

from __future__ import annotations

import concurrent.futures as cf
import json

import numpy as np
import pytest
import torch

from deployments.config import ModelSpec
from deployments.repository.store import load_kind
from tests.support import MODEL, MODELS, instance_from_schema, sample_transactions

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"


def expected_probabilities(records: list[dict]) -> np.ndarray:
    """The verified v1 weights in their declared module, run here on the schema's features."""
    kind = load_kind(MODELS, MODEL, "1")
    module = kind.load(str(MODELS), "cpu", []).module
    x = torch.from_numpy(kind.schema.to_features(records))
    fraud = kind.metadata.task.labels.index("fraud")
    with torch.no_grad():
        return torch.softmax(module(x), 1)[:, fraud].numpy()


def test_list_and_describe(service) -> None:
    models = service.http.get(service.url("/v1/models")).json()["models"]
    # The text model is there when the `text` extra is installed (the dev install has it).
    assert models in ([MODEL], sorted([MODEL, "minilm"]))
    info = service.http.get(service.url(f"/v1/models/{MODEL}")).json()
    assert (info["name"], info["version"], info["ready"]) == (MODEL, "1", True)
    assert info["input_schema"]["additionalProperties"] is False


def test_predict_from_the_published_schema(service) -> None:
    schema = service.http.get(service.url(f"/v1/models/{MODEL}")).json()["input_schema"]
    body = {"instances": [instance_from_schema(schema)]}
    resp = service.http.post(service.url(PREDICT), json=body)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model_name"], body["model_version"]) == (MODEL, "1")
    (pred,) = body["predictions"]
    assert pred["label"] in ("legit", "fraud") and 0.0 <= pred["fraud_probability"] <= 1.0


def test_predictions_match_the_model_and_keep_order(service) -> None:
    records = sample_transactions(25, seed=5)
    resp = service.http.post(service.url(PREDICT), json={"instances": records})
    assert resp.status_code == 200, resp.text
    got = [p["fraud_probability"] for p in resp.json()["predictions"]]
    np.testing.assert_allclose(got, expected_probabilities(records), rtol=1e-5, atol=1e-6)


def test_request_larger_than_a_batch_is_split_and_answered_whole(service) -> None:
    records = sample_transactions(300, seed=6)  # > max_batch_size of 64
    resp = service.http.post(service.url(PREDICT), json={"instances": records})
    assert resp.status_code == 200, resp.text
    got = [p["fraud_probability"] for p in resp.json()["predictions"]]
    np.testing.assert_allclose(got, expected_probabilities(records), rtol=1e-5, atol=1e-6)


def test_concurrent_requests_each_get_their_own_answer(service) -> None:
    records = sample_transactions(48, seed=9)
    expected = expected_probabilities(records)

    def one(i: int) -> float:
        resp = service.http.post(service.url(PREDICT), json={"instances": [records[i]]})
        assert resp.status_code == 200, resp.text
        return resp.json()["predictions"][0]["fraud_probability"]

    with cf.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(len(records))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


VALID = sample_transactions(1, seed=1)[0]


def mutated(**changes) -> dict:
    instance = dict(VALID)
    for key, value in changes.items():
        if value is KeyError:
            del instance[key]
        else:
            instance[key] = value
    return {"instances": [instance]}


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (mutated(hour_of_day=KeyError), 422, "instances[0].hour_of_day: Field required"),
        (mutated(amount_usd="12"), 422, "instances[0].amount_usd: Input should be a valid number"),
        (mutated(card_present=None), 422, "instances[0].card_present: must not be null"),
        (mutated(hour_of_day=30), 422, "instances[0].hour_of_day: Input should be less than"),
        (mutated(colour="red"), 422, "instances[0].colour: Extra inputs are not permitted"),
        (mutated(merchant_category="casino"), 422, "instances[0].merchant_category"),
        ({"instances": {"a": 1}}, 400, "instances: Input should be a valid list"),
        ({"rows": []}, 400, "instances: Field required"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem(service, body, status, needle) -> None:
    resp = service.http.post(service.url(PREDICT), json=body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert needle in resp.json()["error"]


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b"", "request body is empty"),
        (b"{not json", "request body is not valid JSON"),
        # A UTF-16 byte order mark: named as the wrong encoding, not as broken JSON.
        (b"\xff\xfe", "request body is not UTF-8"),
        # Refused while parsing, naming where: NaN is not a JSON number.
        (
            b'{"instances": [{"amount_usd": NaN}]}',
            "instances[0].amount_usd: NaN and Infinity are not JSON numbers",
        ),
    ],
)
def test_unreadable_bodies(service, raw: bytes, needle: str) -> None:
    resp = service.http.post(
        service.url(PREDICT), data=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= resp.status_code < 500, resp.text
    assert needle in resp.json()["error"]


def test_unknown_model_and_route(service) -> None:
    resp = service.http.post(service.url("/v1/models/nope:predict"), json={"instances": [VALID]})
    assert resp.status_code == 404 and "'nope'" in resp.json()["error"]
    resp = service.http.get(service.url("/v3/anything"))
    assert resp.status_code == 404 and resp.json()["code"] == "not_found"


def test_oversized_payload_and_too_many_instances(service) -> None:
    limit = service.config["applications"][0]["args"]["max_request_bytes"]
    resp = service.http.post(
        service.url(PREDICT),
        data=b"{" + b" " * limit + b"}",
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413 and "exceeds the limit" in resp.json()["error"]
    (spec,) = [m for m in service.config["applications"][0]["args"]["models"] if m["name"] == MODEL]
    cap = ModelSpec.model_validate(spec).max_instances_per_request
    resp = service.http.post(service.url(PREDICT), json={"instances": [VALID] * (cap + 1)})
    assert resp.status_code == 413 and "instances" in resp.json()["error"]


def test_request_id_is_kept_or_made(service) -> None:
    resp = service.http.post(
        service.url(PREDICT), json={"instances": [VALID]}, headers={"x-request-id": "client-42"}
    )
    # requests joins repeated headers with ", ": equality also proves there is exactly one.
    assert resp.headers["x-request-id"] == "client-42"
    resp = service.http.post(service.url(PREDICT), json={"rows": 1})
    assert resp.status_code == 400 and len(resp.headers["x-request-id"]) >= 16


def test_openapi_documents_the_contract(service) -> None:
    spec = service.http.get(service.url("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}:predict",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
    ):
        assert path in paths, path
    body = paths["/v1/models/{name}:predict"]["post"]["requestBody"]
    assert "instances" in json.dumps(body)
