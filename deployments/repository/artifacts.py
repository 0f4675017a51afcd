"""Verified weights: checksum, schema fingerprint, then safetensors into the declared module.

Loading refuses anything it cannot vouch for, at startup, with a message that says what to
fix. Weights are read through safetensors' reader; nothing is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from deployments.errors import ArtifactError
from deployments.repository import architectures
from deployments.repository.metadata import SCHEMA_FINGERPRINT_KEY, verify_checksum

__all__ = ["load_module", "read_state", "verify_checksum"]


def read_state(path: Path, expected_fingerprint: str | None, label: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose header carries the expected schema fingerprint
    (None: the header is not checked, for weights shipped by a package)."""
    with safe_open(str(path), framework="pt", device="cpu") as reader:
        header = reader.metadata() or {}
        if expected_fingerprint is not None:
            trained_on = header.get(SCHEMA_FINGERPRINT_KEY)
            if trained_on != expected_fingerprint:
                raise ArtifactError(
                    f"schema mismatch for {label}: the weights were trained with schema "
                    f"{trained_on or '<none recorded>'}, metadata.json describes "
                    f"{expected_fingerprint}. Features, categories, order or normalisation "
                    "changed after training; retrain or restore the matching metadata.json."
                )
        return {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118


def load_module(
    import_path: str,
    kwargs: dict,
    state: dict[str, torch.Tensor],
    allowed: Iterable[str],
    label: str,
) -> torch.nn.Module:
    module = architectures.build(import_path, kwargs, allowed)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(
            f"weights of {label} do not fit architecture {import_path}({kwargs}): {exc}"
        ) from exc
    return module.eval()
