"""A tabular model's input schema, built from metadata.json: every validation error, and
vectorisation with exactly the training normalisation (deployments/kinds/tabular_schema.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deployments.errors import InvalidInput
from deployments.kinds.tabular_schema import InputSchema, TabularMetadata
from deployments.repository.store import load_kind
from tests.support import MODEL, MODELS, instance_from_schema, sample_transactions


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    metadata = load_kind(MODELS, MODEL, "1").metadata
    assert isinstance(metadata, TabularMetadata)
    return InputSchema(metadata)


@pytest.fixture
def valid(schema: InputSchema) -> dict:
    return sample_transactions(1)[0]


def errors_of(schema: InputSchema, instances: list) -> list[dict]:
    with pytest.raises(InvalidInput) as info:
        schema.validate(instances)
    assert info.value.status_code == 422
    return info.value.details


def only_error(schema: InputSchema, instance: dict) -> dict:
    details = errors_of(schema, [instance])
    assert len(details) == 1, details
    return details[0]


def test_instance_model_comes_from_metadata(schema: InputSchema) -> None:
    js = schema.json_schema()
    features = schema.metadata.features
    assert list(js["properties"]) == [f.name for f in features]
    assert set(js["required"]) == {f.name for f in features if f.required}
    assert js["additionalProperties"] is False
    amount = js["properties"]["amount_usd"]
    assert (amount["minimum"], amount["maximum"], amount["unit"]) == (0.0, 50000.0, "USD")
    assert js["properties"]["merchant_category"]["enum"][0] == "grocery"


def test_schema_built_instance_is_valid(schema: InputSchema) -> None:
    records = schema.validate([instance_from_schema(schema.json_schema())])
    assert len(records) == 1


def test_missing_field(schema: InputSchema, valid: dict) -> None:
    del valid["hour_of_day"]
    err = only_error(schema, valid)
    assert (err["instance"], err["field"], err["type"]) == (0, "hour_of_day", "missing")


def test_wrong_type_is_not_coerced(schema: InputSchema, valid: dict) -> None:
    valid["amount_usd"] = "12.5"
    err = only_error(schema, valid)
    assert (err["field"], err["type"]) == ("amount_usd", "float_type")


def test_bool_is_not_an_int_and_string_is_not_a_bool(schema: InputSchema, valid: dict) -> None:
    valid["txn_count_24h"] = True
    valid["card_present"] = "yes"
    fields = {e["field"] for e in errors_of(schema, [valid])}
    assert fields == {"txn_count_24h", "card_present"}


def test_null_is_rejected_with_a_clear_reason(schema: InputSchema, valid: dict) -> None:
    valid["account_age_days"] = None
    err = only_error(schema, valid)
    assert err["field"] == "account_age_days"
    assert "null" in err["reason"]


@pytest.mark.parametrize(
    "field,value,kind",
    [
        ("amount_usd", -1.0, "greater_than_equal"),
        ("amount_usd", 50000.01, "less_than_equal"),
        ("hour_of_day", 24, "less_than_equal"),
        ("merchant_risk_score", 1.5, "less_than_equal"),
    ],
)
def test_out_of_range(schema: InputSchema, valid: dict, field: str, value, kind: str) -> None:
    valid[field] = value
    err = only_error(schema, valid)
    assert (err["field"], err["type"]) == (field, kind)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers(schema: InputSchema, valid: dict, value: float) -> None:
    valid["distance_from_home_km"] = value
    err = only_error(schema, valid)
    assert (err["field"], err["type"]) == ("distance_from_home_km", "finite_number")


def test_unknown_category(schema: InputSchema, valid: dict) -> None:
    valid["merchant_category"] = "casino"
    err = only_error(schema, valid)
    assert (err["field"], err["type"]) == ("merchant_category", "literal_error")


def test_unknown_extra_field(schema: InputSchema, valid: dict) -> None:
    valid["merchant_id"] = "m-123"
    err = only_error(schema, valid)
    assert (err["field"], err["type"]) == ("merchant_id", "extra_forbidden")


def test_every_error_of_a_request_is_reported_with_its_index(schema: InputSchema) -> None:
    good, bad1, bad2 = sample_transactions(3)
    bad1["hour_of_day"] = -1
    bad2["card_present"] = None
    del bad2["amount_usd"]
    with pytest.raises(InvalidInput) as info:
        schema.validate([good, bad1, bad2])
    where = {(d["instance"], d["field"]) for d in info.value.details}
    assert where == {(1, "hour_of_day"), (2, "card_present"), (2, "amount_usd")}
    assert "instances[1].hour_of_day" in info.value.message
    assert "instances[2].amount_usd" in info.value.message


def test_non_object_instance(schema: InputSchema) -> None:
    details = errors_of(schema, [42])
    assert details[0]["instance"] == 0 and details[0]["field"] is None
    assert "JSON object" in details[0]["reason"]


def test_optional_feature_takes_its_documented_default(schema: InputSchema, valid: dict) -> None:
    del valid["merchant_risk_score"]
    (record,) = schema.validate([valid])
    assert record.merchant_risk_score == 0.2


def test_absent_marks_only_the_optional_features_left_out(schema: InputSchema) -> None:
    given, omitted = sample_transactions(2)
    del omitted["merchant_risk_score"]
    records = schema.validate([given, omitted])
    assert schema.optional == ["merchant_risk_score"]
    absent = schema.absent(records)
    assert absent.dtype == np.bool_ and absent.tolist() == [[False], [True]]
    # The default is what the model sees for the omitted one, normalised like any value.
    norm = schema.metadata.normalization["merchant_risk_score"]
    column = schema.metadata.feature_vector.index("merchant_risk_score")
    row = schema.vectorize(records)[1]
    assert row[column] == pytest.approx((0.2 - norm.mean) / norm.std, rel=1e-6)


def test_vectorize_applies_training_normalisation_exactly(schema: InputSchema) -> None:
    (record,) = sample_transactions(1, seed=3)
    meta = schema.metadata
    (row,) = schema.to_features([record])
    assert row.dtype == np.float32 and len(row) == meta.width
    assert meta.width == meta.architecture.kwargs["input_dim"] == schema.width

    expected = []
    for f in meta.features:
        value = record[f.name]
        if f.type == "category":
            expected += [1.0 if c == value else 0.0 for c in f.categories]
        elif f.type == "bool":
            expected.append(float(value))
        else:
            x = math.log1p(value) if f.transform == "log1p" else float(value)
            norm = meta.normalization[f.name]
            expected.append((x - norm.mean) / norm.std)
    np.testing.assert_allclose(row, np.array(expected, dtype=np.float32), rtol=1e-6, atol=1e-6)
