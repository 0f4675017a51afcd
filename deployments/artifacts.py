"""Model artifacts on disk: `<model_dir>/<name>/<version>/{model.safetensors, metadata.json}`.

Loading refuses anything it cannot vouch for, at startup, with a message that says what to
fix: a weights file whose sha256 differs from the metadata, weights trained against a
different feature schema, tensors that do not fit the declared architecture. Weights are
read through safetensors' memory-mapped reader; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deployments.errors import ArtifactError
from deployments.metadata import METADATA_FILE, ModelMetadata, artifact_dir, read_metadata
from deployments.nets import ARCHITECTURES

SCHEMA_FINGERPRINT_KEY = "schema_sha256"
_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Artifact:
    metadata: ModelMetadata
    module: torch.nn.Module
    path: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def load_artifact(model_dir: str | Path, name: str, version: str) -> Artifact:
    """Load verified weights into the declared architecture, on CPU, in eval mode."""
    metadata = read_metadata(model_dir, name, version)
    path = artifact_dir(model_dir, name, version)
    weights_path = path / metadata.weights.file
    if not weights_path.is_file():
        raise ArtifactError(f"weights file {weights_path} is missing")

    actual = sha256_file(weights_path)
    if actual != metadata.weights.sha256:
        raise ArtifactError(
            f"checksum mismatch for {weights_path}: metadata.json says sha256 "
            f"{metadata.weights.sha256}, the file hashes to {actual}. The weights were "
            "replaced or corrupted; re-export the artifact rather than editing the checksum."
        )

    with safe_open(str(weights_path), framework="pt", device="cpu") as reader:
        header = reader.metadata() or {}
        trained_on = header.get(SCHEMA_FINGERPRINT_KEY)
        expected = metadata.schema_fingerprint()
        if trained_on != expected:
            raise ArtifactError(
                f"schema mismatch for {name}:{version}: the weights were trained with feature "
                f"schema {trained_on or '<none recorded>'}, metadata.json describes {expected}. "
                "Features, categories, order or normalisation statistics changed after "
                "training; retrain or restore the matching metadata.json."
            )
        state = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118

    module = build_module(metadata)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(
            f"weights of {name}:{version} do not fit architecture "
            f"{metadata.architecture.model_dump(by_alias=True)}: {exc}"
        ) from exc
    module.eval()
    return Artifact(metadata=metadata, module=module, path=path)


def build_module(metadata: ModelMetadata) -> torch.nn.Module:
    arch = metadata.architecture
    cls = ARCHITECTURES.get(arch.class_name)
    if cls is None:
        raise ArtifactError(
            f"unknown architecture class {arch.class_name!r}; known: {sorted(ARCHITECTURES)}"
        )
    try:
        return cls(**arch.kwargs())
    except TypeError as exc:
        raise ArtifactError(
            f"architecture {arch.class_name} rejects its hyperparameters: {exc}"
        ) from exc


def save_artifact(model_dir: str | Path, module: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write weights (with the schema fingerprint in the header) and then the metadata.

    `metadata` is everything but `weights`, which is filled in from the written file.
    """
    draft = ModelMetadata.model_validate(
        {**metadata, "weights": {"sha256": "0" * 64, "size_bytes": 0}}
    )
    path = artifact_dir(model_dir, draft.name, draft.version)
    path.mkdir(parents=True, exist_ok=True)
    weights_path = path / "model.safetensors"
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    header = {SCHEMA_FINGERPRINT_KEY: draft.schema_fingerprint()}
    save_file(state, str(weights_path), metadata=header)
    final = {
        **metadata,
        "weights": {
            "file": weights_path.name,
            "sha256": sha256_file(weights_path),
            "size_bytes": weights_path.stat().st_size,
        },
    }
    ModelMetadata.model_validate(final)
    (path / METADATA_FILE).write_text(json.dumps(final, indent=2) + "\n")
    return path
