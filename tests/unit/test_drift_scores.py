"""Drift scores: the training reference packaged with the model, the live window counted into
its bins, merged across replicas, and scored by PSI. Real artifacts, real kinds, the real
feature matrix; the window's store is an in-memory key-value store with Ray's semantics (the
integration tier runs the same code against Ray's own)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from deployments.errors import ArtifactError
from deployments.kinds.tabular import FEATURES, ClassificationKind
from deployments.repository.metadata import METADATA_FILE, REFERENCE_FILE
from deployments.repository.package import attach_reference
from deployments.repository.reference import PREDICTION, Distribution, psi
from deployments.repository.store import load_kind
from deployments.telemetry.drift import FeatureLayout
from deployments.telemetry.drift_report import drifted, render
from deployments.telemetry.drift_window import (
    RETAIN_S,
    SLOT_S,
    WindowScorer,
    WindowWriter,
)
from tests.support import MODEL, MODELS, sample_transactions


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {k: self.data[k] for k in keys if k in self.data}

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def kind() -> ClassificationKind:
    kind = load_kind(MODELS, MODEL, "1")
    assert isinstance(kind, ClassificationKind)
    return kind


@pytest.fixture(scope="module")
def reference(kind):
    reference = kind.drift_reference(MODELS)
    assert reference is not None
    return reference


def feature_counts(kind, reference, records) -> dict[str, np.ndarray]:
    matrix = kind.decode_v1(records)[FEATURES]
    return FeatureLayout(kind.metadata).counts(matrix, reference)


def amounts_times(records, factor: float):
    return [{**r, "amount_usd": min(r["amount_usd"] * factor, 50000.0)} for r in records]


def test_the_shipped_reference_covers_every_feature_and_the_score(kind, reference) -> None:
    assert set(reference.features) == {f.name for f in kind.metadata.features}
    assert reference.features["merchant_category"].values == [
        c.lower() for c in kind.metadata.features[2].categories
    ]
    assert reference.features["card_present"].values == ["false", "true"]
    # Deciles of a continuous feature: ten bins of a tenth each.
    assert np.allclose(reference.features["amount_usd"].shares, 0.1, atol=0.002)
    assert reference.prediction is not None and reference.prediction.bins >= 5


def test_training_like_traffic_scores_low_and_a_shifted_feature_scores_high(
    kind, reference
) -> None:
    live = sample_transactions(3000, seed=23)  # the same generating process, other draws
    stable = feature_counts(kind, reference, live)
    for name, counts in stable.items():
        assert psi(counts, reference.features[name]) < 0.05, name
    shifted = feature_counts(kind, reference, amounts_times(live, 3.0))
    assert psi(shifted["amount_usd"], reference.features["amount_usd"]) > 0.5
    for name in set(stable) - {"amount_usd"}:
        assert np.array_equal(shifted[name], stable[name])


def test_psi_of_the_reference_itself_is_zero_and_of_nothing_is_nan() -> None:
    dist = Distribution(edges=[0.0, 1.0], shares=[0.25, 0.5, 0.25])
    assert psi(np.array([25, 50, 25]), dist) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(psi(np.array([0, 0, 0]), dist))
    # A bin empty in the window is floored, not infinite.
    assert math.isfinite(psi(np.array([0, 100, 0]), dist))


def test_a_value_on_an_edge_counts_in_the_bin_above_it() -> None:
    dist = Distribution(edges=[0.0, 1.0], shares=[0.25, 0.5, 0.25])
    assert dist.count(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist() == [1, 2, 2]


def test_windows_of_several_replicas_merge_to_what_one_replica_would_count(kind, reference) -> None:
    store, clock = MemoryStore(), Clock()
    records = sample_transactions(1000, seed=5)
    one = [WindowWriter(store, MODEL, "1", "solo", clock)]
    both = [WindowWriter(store, MODEL, "1-pair", f"r{i}", clock) for i in range(2)]
    for writer in one:
        writer.add(feature_counts(kind, reference, records))
    both[0].add(feature_counts(kind, reference, records[:400]))
    both[1].add(feature_counts(kind, reference, records[400:]))
    for writer in one + both:
        writer.flush()
    solo = WindowScorer(store, MODEL, "1", reference, clock).score(600, 0.2, 500)
    pair = WindowScorer(store, MODEL, "1-pair", reference, clock).score(600, 0.2, 500)
    assert solo.rows == pair.rows == 1000
    assert solo.features == pytest.approx(pair.features)


def test_the_window_forgets_old_slots_and_stale_writers_are_deleted(kind, reference) -> None:
    store, clock = MemoryStore(), Clock()
    writer = WindowWriter(store, MODEL, "1", "r0", clock)
    shifted = feature_counts(kind, reference, amounts_times(sample_transactions(600, 3), 3.0))
    writer.add(shifted)
    writer.flush()
    scorer = WindowScorer(store, MODEL, "1", reference, clock)
    assert scorer.score(60, 0.2, 500).drifted()[0] == "amount_usd"
    clock.now += 60 + SLOT_S  # the shifted slot leaves a 60 s window...
    writer.add(feature_counts(kind, reference, sample_transactions(600, 4)))
    writer.flush()
    scores = scorer.score(60, 0.2, 500)
    assert scores.rows == 600 and scores.drifted() == []
    assert scorer.score(900, 0.2, 500).rows == 1200  # ...but not a 900 s one
    clock.now += RETAIN_S + SLOT_S  # past retention: gone from the store altogether
    scorer.score(900, 0.2, 500)
    assert store.data == {}


def test_too_few_rows_score_nan_and_nothing_is_drifted(kind, reference) -> None:
    store, clock = MemoryStore(), Clock()
    writer = WindowWriter(store, MODEL, "1", "r0", clock)
    writer.add(feature_counts(kind, reference, amounts_times(sample_transactions(50, 3), 3.0)))
    writer.flush()
    scores = WindowScorer(store, MODEL, "1", reference, clock).score(600, 0.2, 500)
    assert scores.rows == 50 and not scores.enough_rows
    assert all(math.isnan(v) for v in scores.features.values())
    assert scores.drifted() == []
    report = scores.as_json()
    assert report["features"][0]["psi"] is None and not drifted(report)
    assert "too few rows" in render(report)


def test_prediction_drift_is_scored_from_the_model_replicas_window(kind, reference) -> None:
    store, clock = MemoryStore(), Clock()
    predictions = WindowWriter(store, MODEL, "1", "model-r0", clock)
    inputs = WindowWriter(store, MODEL, "1", "validator-r0", clock)
    records = sample_transactions(800, 9)
    inputs.add(feature_counts(kind, reference, records))
    # Scores all near 1: far from what the model predicts on training data.
    predictions.add({PREDICTION: reference.prediction.count(np.full(800, 0.999))})
    for writer in (inputs, predictions):
        writer.flush()
    scores = WindowScorer(store, MODEL, "1", reference, clock).score(600, 0.2, 500)
    assert scores.prediction > 1.0 and scores.drifted() == []
    report = scores.as_json()
    assert report["prediction"]["drifted"] and drifted(report)
    assert "(prediction)" in render(report) and "DRIFTED" in render(report)


def test_a_reference_edited_after_packaging_is_refused(tmp_path: Path, kind) -> None:
    shutil.copytree(MODELS / MODEL, tmp_path / MODEL)
    path = tmp_path / MODEL / "1" / REFERENCE_FILE
    data = json.loads(path.read_text())
    data["rows"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_kind(tmp_path, MODEL, "1").drift_reference(tmp_path)


def test_attach_reference_writes_it_and_records_its_checksum(tmp_path: Path) -> None:
    shutil.copytree(MODELS / MODEL, tmp_path / MODEL)
    (tmp_path / MODEL / "1" / REFERENCE_FILE).unlink()
    meta_path = tmp_path / MODEL / "1" / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    del meta["reference"]
    meta_path.write_text(json.dumps(meta))
    assert load_kind(tmp_path, MODEL, "1").drift_reference(tmp_path) is None
    attach_reference(tmp_path, MODEL, "1", sample_transactions(2000, 1))
    reference = load_kind(tmp_path, MODEL, "1").drift_reference(tmp_path)
    assert reference is not None and reference.rows == 2000
    with pytest.raises(ArtifactError, match="does not fit its schema"):
        attach_reference(tmp_path, MODEL, "1", [{"amount_usd": "lots"}])


class Gauges:
    def __init__(self) -> None:
        self.published: list = []

    def publish(self, scores) -> None:
        self.published.append(scores)


def test_scoring_turned_off_publishes_unscored_values_not_the_last_scores(kind, reference) -> None:
    from deployments.config import DriftConfig
    from deployments.telemetry.drift_watch import InputDrift

    store, gauges = MemoryStore(), Gauges()
    watch = InputDrift(MODEL, "1", reference, DriftConfig(min_rows=100), gauges, store)
    watch.flusher.close()  # ticks driven by the test
    shifted = amounts_times(sample_transactions(300, 3), 3.0)
    watch.window.add(feature_counts(kind, reference, shifted))
    watch.tick()
    assert gauges.published[-1].drifted() == ["amount_usd"]
    watch.reconfigure(DriftConfig(enabled=False, min_rows=100))
    assert watch.window is None  # the recorder stops adding
    watch.tick()
    last = gauges.published[-1]
    assert last.rows == 0 and last.drifted() == []
    assert all(math.isnan(v) for v in last.features.values())  # exported as 0
