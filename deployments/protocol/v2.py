"""Open Inference Protocol v2 (KServe v2 / Triton), JSON tensors.

Tabular inputs are one tensor per feature, named as the feature, shape [N] or [N, 1].
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import InvalidInput, PayloadTooLarge
from deployments.metadata import V2_DATATYPES, ModelMetadata
from deployments.protocol.common import parse_envelope


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
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
    data: list[Any]


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


def records_from_tensors(
    inputs: list[RequestInput], metadata: ModelMetadata, max_instances: int
) -> list[dict[str, Any]]:
    """One record per row; tensor problems are reported all at once, by tensor name."""
    features = {f.name: f for f in metadata.features}
    problems: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        feature = features.get(tensor.name)
        if feature is None:
            problems.append(_problem(tensor.name, f"unknown input; expected {sorted(features)}"))
            continue
        if tensor.name in columns:
            problems.append(_problem(tensor.name, "input given more than once"))
            continue
        allowed = V2_DATATYPES[feature.type]
        if tensor.datatype not in allowed:
            problems.append(
                _problem(
                    tensor.name,
                    f"datatype {tensor.datatype} does not fit a {feature.type} feature; "
                    f"use {' or '.join(allowed)}",
                )
            )
            continue
        column = _flatten(tensor)
        if isinstance(column, str):
            problems.append(_problem(tensor.name, column))
            continue
        columns[tensor.name] = column
    missing = [
        f.name
        for f in metadata.features
        if f.required and f.name not in columns and f.name not in {p["field"] for p in problems}
    ]
    problems += [_problem(name, "required input is missing") for name in missing]
    lengths = {len(c) for c in columns.values()}
    if not problems and len(lengths) > 1:
        sizes = {name: len(c) for name, c in columns.items()}
        problems.append(_problem(None, f"inputs disagree on the batch size N: {sizes}"))
    if problems:
        shown = "; ".join(f"{p['field'] or 'inputs'}: {p['reason']}" for p in problems[:5])
        raise InvalidInput(f"{len(problems)} invalid input tensor(s): {shown}", problems)
    n = lengths.pop() if lengths else 0
    if n == 0:
        raise InvalidInput("inputs: tensors hold no rows (N = 0)")
    if n > max_instances:
        raise PayloadTooLarge(f"inputs: N = {n} rows exceed the limit of {max_instances}")
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*columns.values())]


def infer_response(
    metadata: ModelMetadata,
    prediction: dict[str, Any],
    request_id: str | None,
    requested: list[RequestOutput] | None,
) -> dict[str, Any]:
    """`prediction` is the ModelReplica's answer: outputs and the version that made them."""
    outputs = prediction["outputs"]
    wanted = [o.name for o in requested] if requested else [o.name for o in metadata.outputs]
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
        raise InvalidInput(
            f"outputs: unknown output(s) {unknown}; this model has {list(outputs)}",
            [{"field": "outputs", "reason": f"unknown output {name!r}"} for name in unknown],
        )
    body: dict[str, Any] = {
        "model_name": metadata.name,
        "model_version": prediction["model_version"],
        "outputs": [
            {
                "name": name,
                "datatype": metadata.output(name).datatype,
                "shape": [len(outputs[name])],
                "data": outputs[name],
            }
            for name in wanted
        ],
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def model_metadata(metadata: ModelMetadata, versions: list[str]) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": versions,
        "platform": "pytorch_safetensors",
        "inputs": [
            {"name": f.name, "datatype": V2_DATATYPES[f.type][0], "shape": [-1]}
            for f in metadata.features
        ],
        "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": o.shape} for o in metadata.outputs
        ],
    }


def _flatten(tensor: RequestInput) -> list[Any] | str:
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        return f"shape {shape} is not [N] or [N, 1]"
    data = tensor.data
    if data and isinstance(data[0], list):
        if not all(isinstance(row, list) and len(row) == 1 for row in data):
            return "nested data must be rows of exactly one value"
        data = [row[0] for row in data]
    if len(data) != shape[0]:
        return f"shape {shape} promises {shape[0]} values, data holds {len(data)}"
    return data


def _problem(field: str | None, reason: str) -> dict[str, Any]:
    return {"field": field, "reason": reason}
