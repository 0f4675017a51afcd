"""The typed shape of an artifact's `metadata.json`: the schema that travels with the weights.

Pydantic and the error types only (no torch), so the ingress can read it too. Everything
that serves or validates a model reads the model through these classes, so a malformed
metadata file fails at startup with pydantic's field-by-field message, not in a request.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployments.errors import ArtifactError

METADATA_FILE = "metadata.json"

FeatureType = Literal["float", "int", "bool", "category"]

# OIP v2 datatype a feature is sent as, by feature type; the first is what we advertise.
V2_DATATYPES: dict[str, tuple[str, ...]] = {
    "float": ("FP32", "FP64", "FP16"),
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"),
    "bool": ("BOOL",),
    "category": ("BYTES",),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: FeatureType
    description: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    required: bool = True
    default: float | int | bool | str | None = None
    # Applied before normalisation, e.g. log1p for heavy-tailed amounts.
    transform: Literal["identity", "log1p"] = "identity"

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs 'categories'")
        if self.type != "category" and self.categories:
            raise ValueError(f"feature {self.name!r}: only category features have 'categories'")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum > maximum")
        if not self.required and self.default is None:
            raise ValueError(f"feature {self.name!r}: an optional feature needs a 'default'")
        return self

    def vector_columns(self) -> list[str]:
        """Names of the columns this feature occupies in the model's input vector."""
        if self.type == "category":
            return [f"{self.name}={c}" for c in self.categories or []]
        return [self.name]


class Normalization(_Strict):
    mean: float
    std: float = Field(gt=0)


class Architecture(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    class_name: str = Field(alias="class")
    input_dim: int = Field(gt=0)

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"class_name"})


class Output(_Strict):
    name: str
    datatype: Literal["BYTES", "FP32", "FP64", "INT64", "BOOL"]
    shape: list[int]
    description: str = ""


class Task(_Strict):
    kind: Literal["binary_classification"]
    labels: list[str] = Field(min_length=2, max_length=2)
    positive_label: str
    threshold: float = Field(default=0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> Task:
        if self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of {self.labels}")
        return self


class Weights(_Strict):
    file: str = "model.safetensors"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    format_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    architecture: Architecture
    features: list[Feature] = Field(min_length=1)
    normalization: dict[str, Normalization]
    feature_vector: list[str]
    task: Task
    outputs: list[Output]
    weights: Weights

    @model_validator(mode="after")
    def _coherent(self) -> ModelMetadata:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        numeric = {f.name for f in self.features if f.type in ("float", "int")}
        if set(self.normalization) != numeric:
            raise ValueError(
                "normalization must have exactly one entry per numeric feature; "
                f"missing {sorted(numeric - set(self.normalization))}, "
                f"unexpected {sorted(set(self.normalization) - numeric)}"
            )
        derived = [col for f in self.features for col in f.vector_columns()]
        if derived != self.feature_vector:
            raise ValueError(
                "feature_vector does not match the features' declared order and categories"
            )
        if len(self.feature_vector) != self.architecture.input_dim:
            raise ValueError(
                f"schema mismatch: the features make a vector of {len(self.feature_vector)} "
                f"columns but the architecture expects input_dim={self.architecture.input_dim}"
            )
        return self

    def schema_fingerprint(self) -> str:
        """sha256 of everything that decides how a record becomes the model's input.

        Stored in the safetensors header at training time, checked at load time: weights
        only ever run against the schema and normalisation they were trained with.
        """
        payload = {
            "features": [f.model_dump(mode="json") for f in self.features],
            "normalization": {k: v.model_dump() for k, v in sorted(self.normalization.items())},
            "feature_vector": self.feature_vector,
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(name)


def artifact_dir(model_dir: str | Path, name: str, version: str) -> Path:
    return Path(model_dir) / name / version


def read_metadata(model_dir: str | Path, name: str, version: str) -> ModelMetadata:
    """Read and validate metadata.json alone: cheap, no torch, no weights."""
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
    try:
        metadata = ModelMetadata.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path} does not describe a servable model:\n{exc}") from exc
    if (metadata.name, metadata.version) != (name, version):
        raise ArtifactError(
            f"{path} describes {metadata.name}:{metadata.version}, "
            f"but it sits where {name}:{version} belongs"
        )
    return metadata


def available_versions(model_dir: str | Path, name: str) -> list[str]:
    name_dir = Path(model_dir) / name
    if not name_dir.is_dir():
        return []
    return sorted(p.name for p in name_dir.iterdir() if (p / METADATA_FILE).is_file())
