"""KServe v1 and OIP v2: envelopes, and what a tabular kind makes of tensors and outputs.

The protocols own only their envelopes (deployments/protocol/); turning v2 tensors into
records and output columns into v2 tensors is the kind's (deployments/kinds/), exercised here
on the shipped fraud model.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import pytest

from deployments.errors import BadRequest, InvalidInput, PayloadTooLarge
from deployments.kinds.tabular import ClassificationKind
from deployments.protocol import v1, v2
from deployments.protocol.json_body import json_response_bytes
from deployments.repository.store import load_kind
from tests.support import MODEL, MODELS, sample_transactions
from tests.unit.graph_fakes import http_app, served_model

KIND = load_kind(MODELS, MODEL, "1")
assert isinstance(KIND, ClassificationKind)
META = KIND.metadata
SCHEMA = KIND.schema
TYPES = {"float": "FP32", "int": "INT64", "bool": "BOOL", "category": "BYTES"}


def tensors(records: list[dict], nested: bool = False) -> list[v2.RequestInput]:
    out = []
    for f in META.features:
        data = [r[f.name] for r in records]
        shape = [len(data), 1] if nested else [len(data)]
        out.append(
            v2.RequestInput(
                name=f.name,
                shape=shape,
                datatype=TYPES[f.type],
                data=[[d] for d in data] if nested else data,
            )
        )
    return out


@pytest.mark.parametrize(
    "body,needle",
    [
        ([], "must be a JSON object, got an array"),
        ("x", "got a string"),
        ({}, "instances: Field required"),
        ({"instances": 3}, "instances: Input should be a valid list"),
        ({"instances": []}, "instances: List should have at least 1 item"),
        ({"instances": [{}], "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_v1_envelope_errors_name_the_field(body, needle) -> None:
    with pytest.raises(BadRequest, match=needle):
        v1.parse_predict(body, max_instances=10)


def test_v1_instance_cap() -> None:
    with pytest.raises(PayloadTooLarge, match="11 instances exceed the limit of 10"):
        v1.parse_predict({"instances": [{}] * 11}, max_instances=10)


def test_v1_predictions_are_rows_in_order() -> None:
    # What the data plane answers with: the kind's encoding of output columns, row by row.
    columns = {
        "label": np.array(["a", "b"], dtype=object),
        "fraud_probability": np.array([0.1, 0.9], dtype=np.float32),
    }
    rows = KIND.encode_v1(columns)
    assert [r["label"] for r in rows] == ["a", "b"]
    assert [r["fraud_probability"] for r in rows] == pytest.approx([0.1, 0.9])
    assert all(type(r["fraud_probability"]) is float for r in rows), "JSON-native values"


def test_v2_envelope_errors_name_the_field() -> None:
    with pytest.raises(BadRequest, match="inputs: List should have at least 1 item"):
        v2.parse_infer({"inputs": []})
    with pytest.raises(BadRequest, match="instances: Extra inputs are not permitted"):
        v2.parse_infer(
            {
                "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                "instances": [],
            }
        )


@pytest.mark.parametrize("nested", [False, True])
def test_v2_tensors_become_records(nested: bool) -> None:
    records = sample_transactions(3)
    assert SCHEMA.records_from_tensors(tensors(records, nested), 100) == records


@pytest.mark.parametrize("nested", [False, True])
def test_v2_tensors_decode_to_the_same_columns_as_v1_instances(nested: bool) -> None:
    records = sample_transactions(4)
    from_v2 = KIND.decode_v2(tensors(records, nested), 100)
    from_v1 = KIND.decode_v1(records)
    assert set(from_v2) == set(from_v1)
    for name in from_v1:
        np.testing.assert_array_equal(from_v2[name], from_v1[name])


def test_v2_optional_tensor_may_be_omitted() -> None:
    records = sample_transactions(2)
    inputs = [t for t in tensors(records) if t.name != "merchant_risk_score"]
    assert "merchant_risk_score" not in SCHEMA.records_from_tensors(inputs, 100)[0]
    assert KIND.decode_v2(inputs, 100)["absent"].tolist() == [[True], [True]]


def test_v2_tensor_problems_are_reported_together_by_name() -> None:
    inputs = tensors(sample_transactions(2))
    by_name = {t.name: t for t in inputs}
    by_name["amount_usd"].datatype = "BYTES"
    by_name["hour_of_day"].shape = [2, 3]
    inputs = [t for t in inputs if t.name != "card_present"]
    inputs.append(v2.RequestInput(name="colour", shape=[2], datatype="BYTES", data=["a", "b"]))
    with pytest.raises(InvalidInput) as info:
        SCHEMA.records_from_tensors(inputs, 100)
    fields = {d["field"]: d["reason"] for d in info.value.details}
    assert "does not fit a float feature" in fields["amount_usd"]
    assert "is not [N] or [N, 1]" in fields["hour_of_day"]
    assert fields["card_present"] == "required input is missing"
    assert "unknown input" in fields["colour"]


def test_v2_values_are_validated_like_v1_instances() -> None:
    inputs = tensors(sample_transactions(2))
    {t.name: t for t in inputs}["hour_of_day"].data[1] = 24
    with pytest.raises(InvalidInput) as info:
        KIND.decode_v2(inputs, 100)
    assert [(d["instance"], d["field"]) for d in info.value.details] == [(1, "hour_of_day")]


def test_v2_shape_must_match_data_and_batch_sizes_must_agree() -> None:
    inputs = tensors(sample_transactions(2))
    inputs[0].shape = [3]
    with pytest.raises(InvalidInput, match="promises 3 values, data holds 2"):
        SCHEMA.records_from_tensors(inputs, 100)
    inputs = tensors(sample_transactions(2))
    inputs[1] = tensors(sample_transactions(3))[1]
    with pytest.raises(InvalidInput, match="disagree on the batch size"):
        SCHEMA.records_from_tensors(inputs, 100)


def test_v2_row_cap() -> None:
    with pytest.raises(PayloadTooLarge):
        SCHEMA.records_from_tensors(tensors(sample_transactions(5)), 4)
    with pytest.raises(PayloadTooLarge):
        KIND.decode_v2(tensors(sample_transactions(5)), 4)


def test_v2_outputs_are_typed_tensors_and_only_the_requested_ones() -> None:
    outputs = {
        "label": np.array(["legit"], dtype=object),
        "fraud_probability": np.array([0.25], dtype=np.float32),
    }
    assert orjson.loads(json_response_bytes(KIND.encode_v2(outputs, None))) == [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["legit"]},
        {"name": "fraud_probability", "datatype": "FP32", "shape": [1], "data": [0.25]},
    ]
    only = KIND.encode_v2(outputs, ["label"])
    assert [o["name"] for o in only] == ["label"]
    with pytest.raises(InvalidInput, match="unknown output"):
        KIND.encode_v2(outputs, ["nope"])


def test_v2_response_echoes_id_and_names_the_version() -> None:
    app, _ = http_app({MODEL: served_model(MODELS, MODEL, "1")})
    inputs = [t.model_dump(exclude_none=True) for t in tensors(sample_transactions(2))]

    async def post(body: dict) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(f"/v2/models/{MODEL}/infer", json=body)

    with_id = asyncio.run(post({"id": "req-1", "inputs": inputs}))
    assert with_id.status_code == 200, with_id.text
    body = with_id.json()
    assert body["id"] == "req-1" and body["model_version"] == "1"
    assert body["model_name"] == MODEL
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "BYTES", [2]),
        ("fraud_probability", "FP32", [2]),
    ]
    without = asyncio.run(post({"inputs": inputs, "outputs": [{"name": "label"}]}))
    assert without.status_code == 200, without.text
    assert "id" not in without.json()
    assert [o["name"] for o in without.json()["outputs"]] == ["label"]


def test_v2_model_metadata_advertises_feature_tensors() -> None:
    md = KIND.v2_metadata(["1"])
    assert md["name"] == MODEL and md["versions"] == ["1"]
    assert [i["name"] for i in md["inputs"]] == [f.name for f in META.features]
    assert {i["datatype"] for i in md["inputs"]} == {"FP32", "INT64", "BOOL", "BYTES"}
    assert [o["name"] for o in md["outputs"]] == ["label", "fraud_probability"]
    v2.ModelMetadataResponse.model_validate(md)
