"""Model kinds: what differs between models, behind one contract (`base.ModelKind`).

A kind is registered here by name, the name a model's metadata.json gives as `kind`. The text
kind's module is imported lazily: its metadata needs nothing beyond pydantic, but its name
must not make every process import the `text` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from deployments.errors import ArtifactError
from deployments.kinds.base import ModelKind

KINDS: dict[str, str] = {
    "tabular_classification": "deployments.kinds.tabular:ClassificationKind",
    "tabular_regression": "deployments.kinds.tabular:RegressionKind",
    "text_embedding": "deployments.kinds.text.kind:TextEmbeddingKind",
}


def kind_class(name: Any) -> type[ModelKind]:
    path = KINDS.get(name) if isinstance(name, str) else None
    if path is None:
        raise ArtifactError(f"unknown model kind {name!r}; known kinds: {sorted(KINDS)}")
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
