"""The training script is deterministic and writes artifacts the server accepts."""

from __future__ import annotations

from pathlib import Path

from deployments.artifacts import load_artifact
from deployments.metadata import read_metadata
from deployments.training.train import RECIPES, train
from tests.support import MODEL, MODELS


def test_training_is_deterministic_and_loadable(tmp_path: Path) -> None:
    for run in ("a", "b"):
        train(RECIPES["2"], str(tmp_path / run))
    first = read_metadata(tmp_path / "a", MODEL, "2")
    second = read_metadata(tmp_path / "b", MODEL, "2")
    assert first.weights.sha256 == second.weights.sha256
    load_artifact(tmp_path / "a", MODEL, "2")  # checksum + fingerprint verified
    shipped = read_metadata(MODELS, MODEL, "2")
    assert first.schema_fingerprint() == shipped.schema_fingerprint()
    auc, shipped_auc = first.metrics["heldout"]["roc_auc"], shipped.metrics["heldout"]["roc_auc"]
    assert abs(auc - shipped_auc) < 0.01
