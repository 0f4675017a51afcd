"""Open Inference Protocol v2 over gRPC: Triton's `inference.GRPCInferenceService` messages,
from the stubs tritonclient ships (`tritonclient.grpc.service_pb2`), not a copied proto.

A `ModelInferRequest` becomes the same JSON-shaped request the HTTP routes parse, so the
envelope and the model's kind validate both protocols alike: typed `contents` become `data`,
and `raw_input_contents` are decoded exactly as HTTP's binary tensors are (the layout is the
same). Answers go back as `raw_output_contents`, as Triton sends them. Config and statistics
are the JSON the HTTP routes answer, parsed into Triton's messages (so a field Triton does
not know is an error here, in the tests, rather than in a client).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb

from deployments.errors import BadRequest
from deployments.protocol import v2_binary

# Which typed `contents` field holds each datatype.
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(params: Any) -> dict[str, Any]:
    """A protobuf map of `InferParameter` as plain values."""
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice is not None else None
    return out


def infer_request(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request as the JSON body of `POST /v2/models/{m}/infer` would carry it."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs",
            [{"field": "raw_input_contents", "reason": "one entry per input, in order"}],
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        body: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if raw:
            v2_binary.attach_one(body, memoryview(raw[i]), i)
        else:
            body["data"] = _contents(tensor)
        inputs.append(body)
    out: dict[str, Any] = {"inputs": inputs}
    if request.id:
        out["id"] = request.id
    if request.parameters:
        out["parameters"] = parameters(request.parameters)
    if request.outputs:
        out["outputs"] = [{"name": o.name} for o in request.outputs]
    return out


def _contents(tensor: Any) -> list[Any]:
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        raise BadRequest(
            f"{tensor.name}: datatype {tensor.datatype!r} is not an OIP v2 datatype",
            [{"field": tensor.name, "reason": "unknown datatype"}],
        )
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise BadRequest(
                f"{tensor.name}: an element is not valid UTF-8",
                [{"field": tensor.name, "reason": "not UTF-8"}],
            ) from None
    return values


def infer_response(answer: dict[str, Any]) -> pb.ModelInferResponse:
    """The JSON answer (`model_name`, `model_version`, `id`, `outputs` with `data`) as a
    `ModelInferResponse` with every output in `raw_output_contents`."""
    response = pb.ModelInferResponse(
        model_name=answer["model_name"],
        model_version=answer["model_version"],
        id=answer.get("id") or "",
    )
    for output in answer["outputs"]:
        tensor = response.outputs.add()
        tensor.name = output["name"]
        tensor.datatype = output["datatype"]
        tensor.shape.extend(output["shape"])
        response.raw_output_contents.append(v2_binary.encode(output["datatype"], output["data"]))
    return response


def model_metadata(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    return json_format.ParseDict(metadata, pb.ModelMetadataResponse())


def model_config(config: dict[str, Any]) -> pb.ModelConfigResponse:
    return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())


def model_statistics(stats: dict[str, Any]) -> pb.ModelStatisticsResponse:
    return json_format.ParseDict(stats, pb.ModelStatisticsResponse())


def server_metadata(metadata: dict[str, Any]) -> pb.ServerMetadataResponse:
    return json_format.ParseDict(metadata, pb.ServerMetadataResponse())
