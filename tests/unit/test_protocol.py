"""KServe v1 and OIP v2 adapters: envelopes, tensors <-> records, responses."""

from __future__ import annotations

import pytest

from deployments.errors import BadRequest, InvalidInput, PayloadTooLarge
from deployments.metadata import read_metadata
from deployments.protocol import v1, v2
from tests.support import MODEL, MODELS, sample_transactions

META = read_metadata(MODELS, MODEL, "1")
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
    out = v1.predictions({"label": ["a", "b"], "p": [0.1, 0.9]})
    assert out == [{"label": "a", "p": 0.1}, {"label": "b", "p": 0.9}]


@pytest.mark.parametrize("nested", [False, True])
def test_v2_tensors_become_records(nested: bool) -> None:
    records = sample_transactions(3)
    assert v2.records_from_tensors(tensors(records, nested), META, 100) == records


def test_v2_optional_tensor_may_be_omitted() -> None:
    records = sample_transactions(2)
    inputs = [t for t in tensors(records) if t.name != "merchant_risk_score"]
    assert "merchant_risk_score" not in v2.records_from_tensors(inputs, META, 100)[0]


def test_v2_tensor_problems_are_reported_together_by_name() -> None:
    inputs = tensors(sample_transactions(2))
    by_name = {t.name: t for t in inputs}
    by_name["amount_usd"].datatype = "BYTES"
    by_name["hour_of_day"].shape = [2, 3]
    inputs = [t for t in inputs if t.name != "card_present"]
    inputs.append(v2.RequestInput(name="colour", shape=[2], datatype="BYTES", data=["a", "b"]))
    with pytest.raises(InvalidInput) as info:
        v2.records_from_tensors(inputs, META, 100)
    fields = {d["field"]: d["reason"] for d in info.value.details}
    assert "does not fit a float feature" in fields["amount_usd"]
    assert "is not [N] or [N, 1]" in fields["hour_of_day"]
    assert fields["card_present"] == "required input is missing"
    assert "unknown input" in fields["colour"]


def test_v2_shape_must_match_data_and_batch_sizes_must_agree() -> None:
    inputs = tensors(sample_transactions(2))
    inputs[0].shape = [3]
    with pytest.raises(InvalidInput, match="promises 3 values, data holds 2"):
        v2.records_from_tensors(inputs, META, 100)
    inputs = tensors(sample_transactions(2))
    inputs[1] = tensors(sample_transactions(3))[1]
    with pytest.raises(InvalidInput, match="disagree on the batch size"):
        v2.records_from_tensors(inputs, META, 100)


def test_v2_row_cap() -> None:
    with pytest.raises(PayloadTooLarge):
        v2.records_from_tensors(tensors(sample_transactions(5)), META, 4)


def test_v2_response_echoes_id_and_types_outputs() -> None:
    outputs = {"outputs": {"label": ["legit"], "fraud_probability": [0.25]}, "model_version": "1"}
    body = v2.infer_response(META, outputs, "req-1", None)
    assert body["id"] == "req-1" and body["model_version"] == "1"
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["legit"]},
        {"name": "fraud_probability", "datatype": "FP32", "shape": [1], "data": [0.25]},
    ]
    only = v2.infer_response(META, outputs, None, [v2.RequestOutput(name="label")])
    assert [o["name"] for o in only["outputs"]] == ["label"] and "id" not in only
    with pytest.raises(InvalidInput, match="unknown output"):
        v2.infer_response(META, outputs, None, [v2.RequestOutput(name="nope")])


def test_v2_model_metadata_advertises_feature_tensors() -> None:
    md = v2.model_metadata(META, ["1"])
    assert [i["name"] for i in md["inputs"]] == [f.name for f in META.features]
    assert {i["datatype"] for i in md["inputs"]} == {"FP32", "INT64", "BOOL", "BYTES"}
