"""Drift recording from real metadata and the real input schema."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from deployments.errors import InvalidInput
from deployments.metadata import read_metadata
from deployments.schema import InputSchema
from deployments.telemetry.drift import DriftRecorder
from tests.support import MODEL, MODELS, sample_transactions


class CounterSink:
    """Collects what would be exported, keyed by the tags each call carries."""

    def __init__(self) -> None:
        self.values: Counter[tuple[str, tuple[tuple[str, Any], ...]]] = Counter()

    def __getattr__(self, metric: str) -> Any:
        sink = self

        class Metric:
            def inc(self, value: float, tags: dict[str, str]) -> None:
                sink.values[(metric, tuple(sorted(tags.items())))] += value

        return Metric()


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    return InputSchema(read_metadata(MODELS, MODEL, "1"))


def test_valid_rows_are_counted_by_band_category_and_outcome(schema) -> None:
    sink = CounterSink()
    recorder = DriftRecorder(schema.metadata, sink)
    records = schema.validate(sample_transactions(200))
    recorder.valid(records, schema.vectorize(records))
    v = sink.values
    assert v[("rows", (("outcome", "valid"),))] == 200
    amount = {
        dict(k[1])["band"]: n
        for k, n in v.items()
        if k[0] == "numeric" and ("feature", "amount_usd") in k[1]
    }
    assert sum(amount.values()) == 200
    # Training-distributed data sits mostly within one std dev of the training mean.
    assert amount.get("(-1,0]", 0) + amount.get("(0,1]", 0) > 100
    merchants = [
        n for k, n in v.items() if k[0] == "category" and ("feature", "merchant_category") in k[1]
    ]
    assert sum(merchants) == 200
    present = {
        dict(k[1])["value"] for k in v if k[0] == "category" and ("feature", "card_present") in k[1]
    }
    assert present <= {"true", "false"} and present


def test_shifted_inputs_land_in_the_outer_bands(schema) -> None:
    sink = CounterSink()
    recorder = DriftRecorder(schema.metadata, sink)
    shifted = [{**r, "amount_usd": 49000.0} for r in sample_transactions(50)]
    records = schema.validate(shifted)
    recorder.valid(records, schema.vectorize(records))
    bands = {
        dict(k[1])["band"]: n for k, n in sink.values.items() if ("feature", "amount_usd") in k[1]
    }
    assert sum(n for b, n in bands.items() if b in ("(2,3]", "(3,inf)")) == 50


def test_invalid_values_are_counted_by_field_with_bounded_labels(schema) -> None:
    sink = CounterSink()
    recorder = DriftRecorder(schema.metadata, sink)
    bad = [{**r} for r in sample_transactions(3)]
    bad[0]["amount_usd"] = -1.0
    bad[2]["made_up_field_123"] = 1
    with pytest.raises(InvalidInput) as info:
        schema.validate(bad)
    recorder.invalid(info.value, len(bad))
    v = sink.values
    assert v[("rows", (("outcome", "invalid"),))] == 2
    fields = {dict(k[1])["feature"] for k in v if k[0] == "invalid"}
    assert fields == {"amount_usd", "_unknown"}
