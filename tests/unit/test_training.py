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
