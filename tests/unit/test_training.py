"""The training script is deterministic and writes artifacts the server accepts."""

from __future__ import annotations

from pathlib import Path

from deployments.repository.store import load_kind
from deployments.training.train import RECIPES, train
from tests.support import MODEL, MODELS


def test_training_is_deterministic_and_loadable(tmp_path: Path) -> None:
    for run in ("a", "b"):
        written = train(RECIPES["2"], str(tmp_path / run))
        assert Path(written) == tmp_path / run / MODEL / "2"
    first = load_kind(tmp_path / "a", MODEL, "2")
    second = load_kind(tmp_path / "b", MODEL, "2")
    assert first.metadata.weights.sha256 == second.metadata.weights.sha256
    first.load(str(tmp_path / "a"), "cpu", [])  # checksum + fingerprint verified
    shipped = load_kind(MODELS, MODEL, "2").metadata
    assert first.metadata.schema_fingerprint() == shipped.schema_fingerprint()
    auc = first.metadata.metrics["heldout"]["roc_auc"]
    shipped_auc = shipped.metrics["heldout"]["roc_auc"]
    assert abs(auc - shipped_auc) < 0.01


def test_training_packages_the_drift_reference_from_its_training_data(tmp_path: Path) -> None:
    train(RECIPES["2"], str(tmp_path))
    kind = load_kind(tmp_path, MODEL, "2")
    reference = kind.drift_reference(tmp_path)  # checksum verified
    shipped = load_kind(MODELS, MODEL, "2").drift_reference(MODELS)
    assert reference is not None and shipped is not None
    assert reference.rows == shipped.rows
    assert reference.features == shipped.features  # same data, same bins, same shares
    assert reference.prediction is not None and reference.prediction_output == "fraud_probability"
