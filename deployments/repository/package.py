"""Packaging a torch module as a served model: one call, or `python -m` this module.

    package_model(module, spec, model_dir="models")

`spec` is what the model needs beyond its weights: name, version, kind, architecture (import
path and kwargs), features and their normalisation, and the task (labels for a classifier,
targets for a regressor). Outputs follow from the task. The call writes `model.safetensors`
(with the schema fingerprint in its header) and a complete `metadata.json` (sha256, size,
library versions, created_at), then loads the artifact back exactly as the server will
(checksum, fingerprint, allow-listed architecture) and runs a forward pass on a valid
example, so a broken package fails here rather than at startup.

    python -m deployments.repository.package --spec spec.json --weights trained.safetensors \\
        [--model-dir models] [--allow mypkg.nets:*] [--reference-data train.jsonl]

where `trained.safetensors` is a state dict saved with `safetensors.torch.save_file`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from deployments.errors import ArtifactError, InvalidInput
from deployments.kinds import kind_class
from deployments.kinds.base import Runtime, rows_of
from deployments.repository import architectures
from deployments.repository.metadata import (
    METADATA_FILE,
    SCHEMA_FINGERPRINT_KEY,
    WEIGHTS_FILE,
    artifact_dir,
    read_raw,
    sha256_file,
)
from deployments.repository.reference import write_reference
from deployments.repository.store import load_kind

_REFERENCE_CHUNK_ROWS = 4096
_LIBRARIES = ("torch", "safetensors", "numpy", "pydantic", "ray")


@dataclass(frozen=True)
class Packaged:
    path: Path
    metadata: Any
    runtime: Runtime


def complete_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with what follows from it filled in: task from `labels`/`targets`, the
    feature vector, the outputs, provenance. Explicit values win."""
    out = dict(spec)
    if "labels" in out:
        out["task"] = {"labels": out.pop("labels"), **out.get("task", {})}
        for key in ("positive_label", "threshold"):
            if key in out:
                out["task"][key] = out.pop(key)
    if "targets" in out:
        targets = [t if isinstance(t, dict) else {"name": t} for t in out.pop("targets")]
        out["task"] = {"targets": targets}
    if "features" in out and "feature_vector" not in out:
        out["feature_vector"] = [
            f"{f['name']}={c}" if f.get("type") == "category" else f["name"]
            for f in out["features"]
            for c in (f.get("categories") or [None])
        ]
    if "outputs" not in out and "task" in out:
        cls = kind_class(out.get("kind"))
        task_class = cls.metadata_class.model_fields["task"].annotation
        try:
            task = task_class.model_validate(out["task"])
        except ValidationError as exc:
            raise ArtifactError(
                f"the spec's task does not fit a {out.get('kind')} model:\n{exc}"
            ) from exc
        out["outputs"] = [o.model_dump() for o in task.outputs()]
    out.setdefault("created_at", datetime.now(UTC).replace(microsecond=0).isoformat())
    out.setdefault("library_versions", library_versions())
    return out


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            versions[lib] = dist_metadata.version(lib)
        except dist_metadata.PackageNotFoundError:
            continue
    return versions


def package_model(
    module: torch.nn.Module,
    spec: dict[str, Any],
    model_dir: str | Path = "models",
    allowed_architectures: list[str] | None = None,
    reference_data: list[Any] | None = None,
) -> Packaged:
    """Write and verify `<model_dir>/<name>/<version>/`; see the module docstring. With
    `reference_data` (training instances, as a v1 request would send them), also the drift
    reference (`attach_reference`)."""
    full = complete_spec(spec)
    cls = kind_class(full.get("kind"))
    try:
        draft = cls.metadata_class.model_validate(
            {**full, "weights": {"sha256": "0" * 64, "size_bytes": 0}}
        )
    except ValidationError as exc:
        raise ArtifactError(
            f"the spec does not describe a {full.get('kind')} model:\n{exc}"
        ) from exc
    allowed = list(allowed_architectures or [])
    import_path = draft.architecture.import_path
    if not architectures.is_allowed(import_path, allowed):
        allowed.append(import_path)  # the packager names it: the server's allow list decides
    expected = architectures.resolve(import_path, allowed)
    if type(module) is not expected:
        raise ArtifactError(
            f"the module is a {type(module).__module__}.{type(module).__qualname__}, the spec "
            f"names {import_path}"
        )
    path = artifact_dir(model_dir, draft.name, draft.version)
    path.mkdir(parents=True, exist_ok=True)
    weights_path = path / WEIGHTS_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(
        state, str(weights_path), metadata={SCHEMA_FINGERPRINT_KEY: draft.schema_fingerprint()}
    )
    final = {
        **full,
        "weights": {
            "file": weights_path.name,
            "sha256": sha256_file(weights_path),
            "size_bytes": weights_path.stat().st_size,
        },
    }
    (path / METADATA_FILE).write_text(json.dumps(final, indent=2) + "\n")
    packaged = verify(model_dir, draft.name, draft.version, allowed, module)
    if reference_data is None:
        return packaged
    return attach_reference(
        model_dir, draft.name, draft.version, reference_data, allowed, packaged.runtime
    )


def attach_reference(
    model_dir: str | Path,
    name: str,
    version: str,
    records: list[Any],
    allowed_architectures: list[str] | None = None,
    runtime: Runtime | None = None,
) -> Packaged:
    """Write `reference.json` for an artifact from its training instances: each feature's
    distribution as requests will be decoded, and the model's own predictions on them, in
    bins fixed now. Its sha256 goes into metadata.json, and the artifact is verified again.
    `runtime`: the artifact already loaded (package_model's verified one), else loaded here."""
    if not records:
        raise ArtifactError("the drift reference needs at least one training instance")
    kind = load_kind(model_dir, name, version)
    allowed = [*(allowed_architectures or []), kind.metadata.architecture.import_path]
    runtime = runtime or kind.load(str(model_dir), "cpu", allowed)
    try:
        columns = kind.decode_v1(records)
    except InvalidInput as exc:
        raise ArtifactError(
            f"reference data for {name}:{version} does not fit its schema: {exc.details[:3]}"
        ) from exc
    step = _REFERENCE_CHUNK_ROWS
    parts = [
        runtime.forward(runtime.prepare({k: v[i : i + step] for k, v in columns.items()}))
        for i in range(0, rows_of(columns), step)
    ]
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    reference = kind.build_reference(columns, outputs)
    path = artifact_dir(model_dir, name, version)
    recorded = write_reference(path, reference)
    raw = read_raw(model_dir, name, version)
    raw["reference"] = recorded.model_dump()
    (path / METADATA_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    return verify(model_dir, name, version, allowed)


def verify(
    model_dir: str | Path,
    name: str,
    version: str,
    allowed: list[str],
    module: torch.nn.Module | None = None,
) -> Packaged:
    """Load the artifact as the server does and run a forward pass on a valid example; with
    `module`, check the loaded copy answers exactly as the module itself does."""
    kind = load_kind(model_dir, name, version)
    runtime = kind.load(str(model_dir), "cpu", allowed)
    example = runtime.example(4)
    outputs = runtime.forward(runtime.prepare(example))
    if any(rows_of({k: v}) != rows_of(example) for k, v in outputs.items()):
        raise ArtifactError(f"{name}:{version}: the forward pass answered the wrong number of rows")
    loaded = getattr(runtime, "module", None)
    if module is not None and loaded is not None:
        x = torch.from_numpy(next(iter(example.values())))
        with torch.inference_mode():
            if not torch.allclose(module.eval()(x), loaded(x)):
                raise ArtifactError(f"{name}:{version}: the loaded weights answer differently")
    return Packaged(artifact_dir(model_dir, name, version), kind.metadata, runtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Package a torch model for the model repository.")
    parser.add_argument("--spec", required=True, type=Path, help="JSON spec (see the docstring)")
    parser.add_argument("--weights", required=True, type=Path, help="state dict, safetensors")
    parser.add_argument("--model-dir", default="models", type=Path)
    parser.add_argument("--allow", action="append", default=[], help="allowed architectures")
    parser.add_argument(
        "--reference-data",
        type=Path,
        help="training instances, one JSON object per line: the drift reference's source",
    )
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text())
        full = complete_spec(spec)
        arch = full["architecture"]
        allowed = [*args.allow, arch["import_path"]]
        module = architectures.build(arch["import_path"], arch.get("kwargs", {}), allowed)
        module.load_state_dict(load_file(str(args.weights)), strict=True)
        reference = None
        if args.reference_data is not None:
            lines = args.reference_data.read_text().splitlines()
            reference = [json.loads(line) for line in lines if line.strip()]
        packaged = package_model(module, spec, args.model_dir, allowed, reference)
    except (ArtifactError, OSError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        print(f"packaging failed: {exc}", file=sys.stderr)
        return 2
    meta = packaged.metadata
    print(f"wrote {packaged.path} ({meta.kind}, sha256 {meta.weights.sha256[:12]}...); verified")
    if meta.reference is not None:
        print(f"drift reference: {meta.reference.file} (sha256 {meta.reference.sha256[:12]}...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
