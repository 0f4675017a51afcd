"""What every artifact's `metadata.json` holds, whatever its kind. Pydantic only: no torch.

The envelope (kind, name, version, weights, provenance) is read here; the rest of the file is
the kind's own section, validated by the kind's metadata class (`deployments.kinds`). A
malformed file fails at startup with pydantic's field-by-field message, never in a request.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import ArtifactError

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
REFERENCE_FILE = "reference.json"
SCHEMA_FINGERPRINT_KEY = "schema_sha256"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_HASH_CHUNK_BYTES = 1 << 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weights(Strict):
    file: str = WEIGHTS_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class ReferenceFile(Strict):
    """The training reference drift is scored against (`deployments.repository.reference`),
    recorded like the weights so that it is verified like them."""

    file: str = REFERENCE_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class Architecture(Strict):
    """The torch module: an import path `package.module:Class` and its keyword arguments.

    Imported only when the operator's `allowed_architectures` permits it
    (`deployments.repository.architectures`); nothing else in an artifact names code.
    """

    import_path: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Output(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    datatype: Literal["BYTES", "FP32", "FP64", "INT64", "BOOL"]
    shape: list[int]
    description: str = ""
    unit: str | None = None


class BaseMetadata(BaseModel):
    """Fields every kind shares. Kinds subclass it with their own sections."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format_version: Literal[1] = 1
    kind: str
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    outputs: list[Output] = Field(min_length=1)
    # Provenance written by the packager: when, and with which libraries.
    created_at: str | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    # Training-time metrics and recipe, for people: never read by the server.
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    reference: ReferenceFile | None = Field(
        default=None, description="Training distributions for drift scores; None: no scores."
    )

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)

    def schema_fingerprint(self) -> str:
        """sha256 of what decides how a request becomes the model's input (kind-defined)."""
        canonical = json.dumps(self.schema_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def schema_payload(self) -> dict[str, Any]:
        raise NotImplementedError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_dir(model_dir: str | Path, name: str, version: str) -> Path:
    return Path(model_dir) / name / version


def read_raw(model_dir: str | Path, name: str, version: str) -> dict[str, Any]:
    path = artifact_dir(model_dir, name, version) / METADATA_FILE
    if not path.is_file():
        available = available_versions(model_dir, name)
        raise ArtifactError(
            f"no metadata at {path}; "
            + (
                f"versions present for {name!r}: {available}"
                if available
                else f"no versions of {name!r} under {Path(model_dir).resolve()}"
            )
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return raw


def available_versions(model_dir: str | Path, name: str) -> list[str]:
    name_dir = Path(model_dir) / name
    if not name_dir.is_dir():
        return []
    return sorted(
        (p.name for p in name_dir.iterdir() if (p / METADATA_FILE).is_file()), key=version_key
    )


def available_models(model_dir: str | Path) -> list[str]:
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and available_versions(root, p.name))


def version_key(version: str) -> tuple[Any, ...]:
    """Numeric parts compare as numbers: "10" sorts after "9"."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[._-]", version))


def verify_checksum(path: Path, expected_sha256: str) -> None:
    """Refuse a file whose sha256 differs from the one recorded for it."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(
            f"checksum mismatch for {path}: metadata.json says sha256 {expected_sha256}, the "
            f"file hashes to {actual}. The file was replaced or corrupted (or an installed "
            "package is not the version the artifact was built from); re-export the artifact "
            "rather than editing the checksum."
        )
