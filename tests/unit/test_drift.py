"""Drift recording from the real feature matrix the real kind decodes (what the Validator
records once per call, from the arrays that travel to the replica)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from deployments.errors import InvalidInput
from deployments.kinds.tabular import ABSENT, FEATURES, ClassificationKind
from deployments.repository.store import load_kind
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
def kind() -> ClassificationKind:
    kind = load_kind(MODELS, MODEL, "1")
    assert isinstance(kind, ClassificationKind)
    return kind


def record(kind: ClassificationKind, instances: list[dict]) -> Counter:
    """What the Validator does with one call's valid requests: decode, then record."""
    sink = CounterSink()
    columns = kind.decode_v1(instances)
    kind.observe_inputs(columns, DriftRecorder(kind.metadata, sink))
    return sink.values


def test_valid_rows_are_counted_by_band_category_and_outcome(kind) -> None:
    v = record(kind, sample_transactions(200))
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
    assert sum(n for k, n in v.items() if ("feature", "card_present") in k[1]) == 200
    assert not [k for k in v if k[0] == "missing"], "every optional feature was given"


def test_counts_equal_the_inputs_value_by_value(kind) -> None:
    records = sample_transactions(120, seed=5)
    v = record(kind, records)
    for name in ("merchant_category", "card_present"):
        expected = Counter(str(r[name]).lower() for r in records)
        counted = {
            dict(k[1])["value"]: n
            for k, n in v.items()
            if k[0] == "category" and ("feature", name) in k[1]
        }
        assert counted == dict(expected), name


def test_absent_optional_features_are_counted_from_the_absent_mask(kind) -> None:
    records = sample_transactions(10)
    for r in records[:4]:
        del r["merchant_risk_score"]
    columns = kind.decode_v1(records)
    assert columns[ABSENT].sum() == 4
    sink = CounterSink()
    DriftRecorder(kind.metadata, sink).record(columns[FEATURES], columns[ABSENT])
    assert sink.values[("missing", (("feature", "merchant_risk_score"),))] == 4
    assert sink.values[("rows", (("outcome", "valid"),))] == 10


def test_shifted_inputs_land_in_the_outer_bands(kind) -> None:
    shifted = [{**r, "amount_usd": 49000.0} for r in sample_transactions(50)]
    v = record(kind, shifted)
    bands = {dict(k[1])["band"]: n for k, n in v.items() if ("feature", "amount_usd") in k[1]}
    assert sum(n for b, n in bands.items() if b in ("(2,3]", "(3,inf)")) == 50


def test_invalid_values_are_counted_by_field_with_bounded_labels(kind) -> None:
    sink = CounterSink()
    recorder = DriftRecorder(kind.metadata, sink)
    bad = [{**r} for r in sample_transactions(3)]
    bad[0]["amount_usd"] = -1.0
    bad[2]["made_up_field_123"] = 1
    with pytest.raises(InvalidInput) as info:
        kind.decode_v1(bad)
    recorder.invalid(info.value, len(bad))
    v = sink.values
    assert v[("rows", (("outcome", "invalid"),))] == 2
    fields = {dict(k[1])["feature"] for k in v if k[0] == "invalid"}
    assert fields == {"amount_usd", "_unknown"}
