"""Open Inference Protocol v2 (KServe v2 / Triton), JSON tensors.

Envelopes only: what a tensor must mean is the model kind's business (deployments/kinds/).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.protocol.common import parse_envelope

SERVER_NAME = "ray-serve-inference"
SERVER_VERSION = "0.2.0"
# Triton's extensions served here (HTTP and gRPC), as server metadata lists them.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    # With the binary tensor extension (protocol/v2_binary.py) the bytes after the JSON
    # header fill `data` before this model sees it; `parameters.binary_data_size` says how many.
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    # `{"binary_data_size": n}` when the data follows the JSON header as raw bytes.
    parameters: dict[str, Any] | None = None


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def parse_infer(body: Any) -> InferenceRequest:
    return parse_envelope(InferenceRequest, body)
