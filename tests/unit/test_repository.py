"""The model repository: verified checksum, schema fingerprint, architecture fit, clear refusals.

Real artifacts (models/ and copies of it under tmp_path), read through `repository.store`
(metadata, validated by its kind) and loaded through the kind (`repository.artifacts`:
checksum, fingerprint, safetensors into the allow-listed module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from deployments.errors import ArtifactError
from deployments.kinds.tabular import ClassificationKind, ClassifierRuntime
from deployments.repository.artifacts import read_state
from deployments.repository.metadata import (
    SCHEMA_FINGERPRINT_KEY,
    WEIGHTS_FILE,
    available_models,
    available_versions,
    read_raw,
    sha256_file,
)
from deployments.repository.store import latest_version, load_kind
from tests.support import MODEL, MODELS, REPO, sample_transactions


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shutil.copytree(MODELS / MODEL, tmp_path / MODEL)
    return tmp_path


def edit_metadata(model_dir: Path, version: str, change) -> None:
    path = model_dir / MODEL / version / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def load(model_dir: Path, version: str) -> ClassifierRuntime:
    runtime = load_kind(model_dir, MODEL, version).load(str(model_dir), "cpu", [])
    assert isinstance(runtime, ClassifierRuntime)
    return runtime


@pytest.mark.parametrize("version", ["1", "2"])
def test_shipped_versions_load_and_match_their_metadata(version: str) -> None:
    kind = load_kind(MODELS, MODEL, version)
    assert isinstance(kind, ClassificationKind)
    meta = kind.metadata
    assert meta.version == version
    assert sha256_file(MODELS / MODEL / version / meta.weights.file) == meta.weights.sha256
    runtime = load(MODELS, version)
    assert not runtime.module.training
    assert meta.width == meta.architecture.kwargs["input_dim"]
    out = runtime.module(torch.zeros(3, meta.width))
    assert out.shape == (3, 2)
    assert {"roc_auc", "accuracy", "precision", "recall"} <= set(meta.metrics["heldout"])
    assert {"torch", "safetensors", "numpy"} <= set(meta.library_versions)


def test_candidate_disagrees_with_primary_sometimes() -> None:
    kind = load_kind(MODELS, MODEL, "1")
    x = torch.from_numpy(kind.schema.to_features(sample_transactions(2000)))
    labels = [load(MODELS, v).module(x).argmax(1) for v in ("1", "2")]
    disagreement = (labels[0] != labels[1]).float().mean().item()
    assert 0.005 < disagreement < 0.3


def test_corrupted_weights_are_refused(model_dir: Path) -> None:
    weights = model_dir / MODEL / "1" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load(model_dir, "1")


def test_metadata_edited_after_training_is_a_schema_mismatch(model_dir: Path) -> None:
    def shift_mean(meta: dict) -> None:
        meta["normalization"]["amount_usd"]["mean"] += 0.5

    edit_metadata(model_dir, "1", shift_mean)
    with pytest.raises(ArtifactError, match="schema mismatch"):
        load(model_dir, "1")


def test_weights_of_another_version_are_refused(model_dir: Path) -> None:
    # v2's weights with v1's metadata: refused by checksum before anything runs.
    shutil.copy(model_dir / MODEL / "2" / WEIGHTS_FILE, model_dir / MODEL / "1" / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load(model_dir, "1")


def test_architecture_that_does_not_fit_the_weights(model_dir: Path) -> None:
    def widen(meta: dict) -> None:
        meta["architecture"]["kwargs"]["hidden_dims"] = [128, 32]

    edit_metadata(model_dir, "1", widen)
    with pytest.raises(ArtifactError, match="do not fit architecture"):
        load(model_dir, "1")


def test_feature_vector_inconsistent_with_the_features(model_dir: Path) -> None:
    def drop_category_only(meta: dict) -> None:
        meta["features"][2]["categories"].pop()

    edit_metadata(model_dir, "1", drop_category_only)
    with pytest.raises(ArtifactError, match="feature_vector does not match"):
        load_kind(model_dir, MODEL, "1")


def test_features_narrower_than_the_trained_input_are_a_schema_mismatch(model_dir: Path) -> None:
    # A coherent 15-column schema for weights trained on 16: refused before any forward pass.
    def drop_category(meta: dict) -> None:
        meta["features"][2]["categories"].pop()
        meta["feature_vector"].remove("merchant_category=other")

    edit_metadata(model_dir, "1", drop_category)
    kind = load_kind(model_dir, MODEL, "1")
    assert kind.metadata.width == 15
    with pytest.raises(ArtifactError, match="schema mismatch"):
        kind.load(str(model_dir), "cpu", [])


def test_missing_version_lists_what_exists() -> None:
    with pytest.raises(ArtifactError, match=r"versions present for 'fraud-risk': \['1', '2'\]"):
        load_kind(MODELS, MODEL, "9")
    with pytest.raises(ArtifactError, match="no versions of 'nope'"):
        read_raw(MODELS, "nope", "1")


def test_the_repository_lists_models_and_versions_in_version_order(tmp_path: Path) -> None:
    assert {"fraud-risk", "minilm"} <= set(available_models(MODELS))
    assert available_versions(MODELS, MODEL) == ["1", "2"]
    assert latest_version(MODELS, MODEL) == "2"
    for version in ("9", "10"):
        shutil.copytree(MODELS / MODEL / "1", tmp_path / MODEL / version)
    assert available_versions(tmp_path, MODEL) == ["9", "10"]  # numerically, not as strings
    with pytest.raises(ArtifactError, match="no versions of 'nope'"):
        latest_version(tmp_path, "nope")


def test_metadata_in_the_wrong_place_is_refused(tmp_path: Path) -> None:
    shutil.copytree(MODELS / MODEL / "1", tmp_path / MODEL / "3")
    with pytest.raises(ArtifactError, match="describes fraud-risk:1, but it sits where"):
        load_kind(tmp_path, MODEL, "3")


def test_unknown_or_missing_kind_is_refused(model_dir: Path) -> None:
    edit_metadata(model_dir, "1", lambda meta: meta.update(kind="tabular_ranking"))
    with pytest.raises(ArtifactError, match="unknown model kind 'tabular_ranking'"):
        load_kind(model_dir, MODEL, "1")
    edit_metadata(model_dir, "1", lambda meta: meta.pop("kind"))
    with pytest.raises(ArtifactError, match="names no 'kind'"):
        load_kind(model_dir, MODEL, "1")


def test_malformed_metadata_fails_field_by_field(model_dir: Path) -> None:
    edit_metadata(model_dir, "1", lambda meta: meta["task"].update(threshold=1.5))
    with pytest.raises(ArtifactError, match=r"does not describe a servable tabular_classification"):
        load_kind(model_dir, MODEL, "1")
    (model_dir / MODEL / "1" / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load_kind(model_dir, MODEL, "1")


def test_an_architecture_outside_the_allow_list_is_never_imported(model_dir: Path) -> None:
    edit_metadata(
        model_dir,
        "1",
        lambda meta: meta["architecture"].update(import_path="tests.support:Nothing"),
    )
    kind = load_kind(model_dir, MODEL, "1")
    with pytest.raises(ArtifactError, match="is not allowed: add it .* to allowed_architectures"):
        kind.load(str(model_dir), "cpu", [])


def test_fingerprint_is_recorded_in_the_safetensors_header() -> None:
    from safetensors import safe_open

    meta = load_kind(MODELS, MODEL, "1").metadata
    with safe_open(str(MODELS / MODEL / "1" / WEIGHTS_FILE), framework="pt") as f:
        assert f.metadata()[SCHEMA_FINGERPRINT_KEY] == meta.schema_fingerprint()
    state = read_state(MODELS / MODEL / "1" / WEIGHTS_FILE, meta.schema_fingerprint(), "v1")
    assert state and all(isinstance(t, torch.Tensor) for t in state.values())
    with pytest.raises(ArtifactError, match="schema mismatch for v1"):
        read_state(MODELS / MODEL / "1" / WEIGHTS_FILE, "0" * 64, "v1")


def test_no_pickle_anywhere_in_the_package() -> None:
    # Weights load through safetensors only; nothing of ours unpickles.
    forbidden = ("torch.load(", "import pickle", "pickle.load", "cloudpickle")
    for path in (REPO / "deployments").rglob("*.py"):
        text = path.read_text()
        for needle in forbidden:
            assert needle not in text, f"{path} contains {needle}"
