"""The typed shape of a text-embedding artifact's `metadata.json`.

The text kind's section of the common envelope (`deployments.repository.metadata`).
Pydantic only, no torch, so an ingress can read it. Same conventions: `extra="forbid"`
where a typo would silently change meaning, a malformed file fails at startup with
pydantic's field-by-field message, and the schema travels with the weights: the sha256 of
every file that decides what a text becomes (weights, model config, tokenizer) is recorded
here and checked at load.

Where the weights live: `weights.package` names the installed distribution that ships
them (they are ~90 MB, too big for git), `weights.file` is their path inside that
package's model directory. Reading metadata does not touch them; the encoder hashes
them before loading.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    create_model,
    model_validator,
)

from deployments.repository.metadata import BaseMetadata, Strict

_SHA256 = r"^[0-9a-f]{64}$"


class Source(Strict):
    """Where the model comes from: the pip distribution that ships it offline."""

    # The distribution that ships the files, found by name and version (never imported).
    package: str
    package_version: str
    upstream: str  # the original model id, for people: nothing is fetched from it
    license: str = ""


class TextArchitecture(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    class_name: str = Field(alias="class")
    library: Literal["transformers"] = "transformers"
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)


class TextInput(Strict):
    """One v1 instance is `{name: str}`; over v2 the same field is a BYTES tensor [-1]."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["string"] = "string"
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(gt=0)
    description: str = ""

    @model_validator(mode="after")
    def _range(self) -> TextInput:
        if self.min_chars > self.max_chars:
            raise ValueError(f"input {self.name!r}: min_chars > max_chars")
        return self


class TensorSpec(Strict):
    name: str
    datatype: Literal["BYTES", "FP32", "FP16"]
    shape: list[int]


class FileDigest(Strict):
    file: str
    sha256: str = Field(pattern=_SHA256)
    size_bytes: int = Field(ge=0)


class PackagedWeights(FileDigest):
    file: str = "model.safetensors"
    # The distribution whose model directory holds `file` (the same as `source.package`,
    # found by name and version); the sha256 is checked against the installed file at load.
    package: str


class TextModelMetadata(BaseMetadata):
    kind: str = Field(default="text_embedding", pattern="^text_embedding$")
    source: Source
    architecture: TextArchitecture
    pooling: Literal["mean"] = "mean"
    normalize: Literal["l2"] = "l2"
    embedding_dim: int = Field(gt=0)
    max_seq_length: int = Field(gt=0)
    lowercase: bool
    inputs: list[TextInput] = Field(min_length=1, max_length=1)
    v2_inputs: list[TensorSpec] = Field(min_length=1)
    weights: PackagedWeights
    # config.json, tokenizer.json, ...: what decides how a text becomes the model's input.
    files: list[FileDigest] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> TextModelMetadata:
        if self.weights.package != self.source.package:
            # The encoder reads (and hashes) every file from source.package's directory.
            raise ValueError(
                f"weights.package {self.weights.package!r} != source.package "
                f"{self.source.package!r}: the files are read from source.package"
            )
        if self.embedding_dim != self.architecture.hidden_size:
            raise ValueError(
                f"embedding_dim {self.embedding_dim} != architecture.hidden_size "
                f"{self.architecture.hidden_size} (mean pooling keeps the hidden size)"
            )
        if self.max_seq_length > self.architecture.max_position_embeddings:
            raise ValueError(
                f"max_seq_length {self.max_seq_length} exceeds the model's "
                f"max_position_embeddings {self.architecture.max_position_embeddings}"
            )
        v1_names = [i.name for i in self.inputs]
        v2_names = [t.name for t in self.v2_inputs]
        if v1_names != v2_names or any(t.datatype != "BYTES" for t in self.v2_inputs):
            raise ValueError(
                f"v2_inputs {v2_names} must be BYTES tensors named like the v1 inputs {v1_names}"
            )
        for out in self.outputs:
            if out.datatype in ("FP32", "FP64") and out.shape[-1:] != [self.embedding_dim]:
                raise ValueError(
                    f"output {out.name!r} has shape {out.shape}; an embedding output ends "
                    f"in embedding_dim {self.embedding_dim}"
                )
        return self

    def schema_payload(self) -> dict[str, Any]:
        """What decides how a text becomes the model's input: the accepted text, the tokenizer
        and the sequence length."""
        return {
            "inputs": [i.model_dump(mode="json") for i in self.inputs],
            "max_seq_length": self.max_seq_length,
            "lowercase": self.lowercase,
            "files": sorted(f.sha256 for f in self.files),
        }

    @property
    def text_input(self) -> TextInput:
        return self.inputs[0]

    def instance_model(self) -> type[BaseModel]:
        """A pydantic model for one v1 instance: `{text: str}`, strict, nothing else."""
        spec = self.text_input
        field = (
            StrictStr,
            Field(
                min_length=spec.min_chars, max_length=spec.max_chars, description=spec.description
            ),
        )
        return create_model(  # type: ignore[call-overload,no-any-return]
            "".join(p.capitalize() for p in self.name.replace(".", "-").split("-"))
            + "TextInstance",
            __config__=ConfigDict(extra="forbid"),
            **{spec.name: field},
        )
