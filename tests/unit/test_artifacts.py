"""Artifact loading: verified checksum, schema fingerprint, architecture fit, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from deployments.artifacts import SCHEMA_FINGERPRINT_KEY, load_artifact, sha256_file
from deployments.errors import ArtifactError
from deployments.metadata import read_metadata
from tests.support import MODEL, MODELS, REPO


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shutil.copytree(MODELS / MODEL, tmp_path / MODEL)
    return tmp_path


def edit_metadata(model_dir: Path, version: str, change) -> None:
    path = model_dir / MODEL / version / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("version", ["1", "2"])
def test_shipped_versions_load_and_match_their_metadata(version: str) -> None:
    artifact = load_artifact(MODELS, MODEL, version)
    meta = artifact.metadata
    assert meta.version == version
    assert sha256_file(artifact.path / "model.safetensors") == meta.weights.sha256
    assert not artifact.module.training
    out = artifact.module(torch.zeros(3, meta.architecture.input_dim))
    assert out.shape == (3, 2)
    assert {"roc_auc", "accuracy", "precision", "recall"} <= set(meta.metrics["heldout"])
    assert {"torch", "safetensors", "numpy"} <= set(meta.library_versions)


def test_candidate_disagrees_with_primary_sometimes() -> None:
    from deployments.schema import InputSchema
    from tests.support import sample_transactions

    schema = InputSchema(read_metadata(MODELS, MODEL, "1"))
    x = torch.from_numpy(schema.to_features(sample_transactions(2000)))
    labels = [load_artifact(MODELS, MODEL, v).module(x).argmax(1) for v in ("1", "2")]
    disagreement = (labels[0] != labels[1]).float().mean().item()
    assert 0.005 < disagreement < 0.3


def test_corrupted_weights_are_refused(model_dir: Path) -> None:
    weights = model_dir / MODEL / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(model_dir, MODEL, "1")


def test_metadata_edited_after_training_is_a_schema_mismatch(model_dir: Path) -> None:
    def shift_mean(meta: dict) -> None:
        meta["normalization"]["amount_usd"]["mean"] += 0.5

    edit_metadata(model_dir, "1", shift_mean)
    with pytest.raises(ArtifactError, match="schema mismatch"):
        load_artifact(model_dir, MODEL, "1")


def test_weights_of_another_version_are_refused(model_dir: Path) -> None:
    # v2's weights with v1's metadata: refused by checksum before anything runs.
    shutil.copy(
        model_dir / MODEL / "2" / "model.safetensors", model_dir / MODEL / "1" / "model.safetensors"
    )
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(model_dir, MODEL, "1")


def test_architecture_that_does_not_fit_the_weights(model_dir: Path) -> None:
    def widen(meta: dict) -> None:
        meta["architecture"]["hidden_dims"] = [128, 32]

    edit_metadata(model_dir, "1", widen)
    with pytest.raises(ArtifactError, match="do not fit architecture"):
        load_artifact(model_dir, MODEL, "1")


def test_feature_vector_inconsistent_with_input_dim(model_dir: Path) -> None:
    def drop_category(meta: dict) -> None:
        meta["features"][2]["categories"].pop()
        meta["feature_vector"].remove("merchant_category=other")

    edit_metadata(model_dir, "1", drop_category)
    with pytest.raises(ArtifactError, match="schema mismatch: the features make a vector"):
        read_metadata(model_dir, MODEL, "1")


def test_missing_version_lists_what_exists() -> None:
    with pytest.raises(ArtifactError, match=r"versions present for 'fraud-risk': \['1', '2'\]"):
        read_metadata(MODELS, MODEL, "9")


def test_fingerprint_is_recorded_in_the_safetensors_header() -> None:
    from safetensors import safe_open

    meta = read_metadata(MODELS, MODEL, "1")
    with safe_open(str(MODELS / MODEL / "1" / "model.safetensors"), framework="pt") as f:
        assert f.metadata()[SCHEMA_FINGERPRINT_KEY] == meta.schema_fingerprint()


def test_no_pickle_anywhere_in_the_package() -> None:
    # Weights load through safetensors only; nothing of ours unpickles.
    forbidden = ("torch.load(", "import pickle", "pickle.load", "cloudpickle")
    for path in (REPO / "deployments").rglob("*.py"):
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path} contains {needle}"
