"""Reading the model repository: which models and versions exist, and each one's kind.

No torch: the ingress and the application builder read metadata through here; only a
replica's `ModelKind.load` touches weights.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from deployments.errors import ArtifactError
from deployments.kinds import kind_class
from deployments.kinds.base import ModelKind
from deployments.repository.metadata import (
    METADATA_FILE,
    artifact_dir,
    available_models,
    available_versions,
    read_raw,
)


def load_kind(model_dir: str | Path, name: str, version: str) -> ModelKind:
    """The kind of `name:version`, with its metadata validated (cheap: no weights)."""
    raw = read_raw(model_dir, name, version)
    path = artifact_dir(model_dir, name, version) / METADATA_FILE
    if "kind" not in raw:
        raise ArtifactError(f"{path} names no 'kind'; add one of the known model kinds")
    cls = kind_class(raw["kind"])
    try:
        metadata = cls.metadata_class.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(
            f"{path} does not describe a servable {raw['kind']} model:\n{exc}"
        ) from exc
    if (metadata.name, metadata.version) != (name, version):
        raise ArtifactError(
            f"{path} describes {metadata.name}:{metadata.version}, "
            f"but it sits where {name}:{version} belongs"
        )
    return cls(metadata)


def latest_version(model_dir: str | Path, name: str) -> str:
    versions = available_versions(model_dir, name)
    if not versions:
        raise ArtifactError(
            f"no versions of {name!r} under {Path(model_dir).resolve()}; models there: "
            f"{available_models(model_dir)}"
        )
    return versions[-1]


__all__ = ["available_models", "available_versions", "latest_version", "load_kind"]
