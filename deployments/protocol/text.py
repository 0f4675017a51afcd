"""The text-embedding model on both protocols.

KServe v1: `{"instances": [{"text": "..."}]}` -> `{"predictions": [{"embedding": [384 floats]}]}`.
OIP v2: one BYTES input `text` of shape [N] (or [N, 1]) -> one FP32 output `embedding` of
shape [N, 384], row-major. Lengths and emptiness are checked against the model's own
metadata.json (min/max characters), every bad text reported with its index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from deployments.errors import InvalidInput, PayloadTooLarge
from deployments.protocol.v2 import RequestInput, RequestOutput, _flatten, _problem
from deployments.schema import invalid_input_from


class TextSchema:
    """Validation of texts for one text model, built from its metadata."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        self.instance_model = metadata.instance_model()
        self.field = metadata.text_input.name
        self._adapter = TypeAdapter(list[self.instance_model])  # type: ignore[name-defined]

    def json_schema(self) -> dict[str, Any]:
        return self.instance_model.model_json_schema()

    def texts(self, instances: list[Any]) -> list[str]:
        try:
            records = self._adapter.validate_python(instances)
        except ValidationError as exc:
            raise invalid_input_from(exc) from None
        return [getattr(r, self.field) for r in records]

    def texts_from_tensors(self, inputs: list[RequestInput], max_instances: int) -> list[str]:
        names = [t.name for t in inputs]
        if names != [self.field]:
            raise InvalidInput(
                f"inputs: expected exactly one input named {self.field!r}, got {names}",
                [_problem("inputs", f"expected one BYTES input {self.field!r}")],
            )
        (tensor,) = inputs
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"{self.field}: datatype {tensor.datatype} does not fit text; use BYTES",
                [_problem(self.field, "datatype must be BYTES")],
            )
        column = _flatten(tensor)
        if isinstance(column, str):
            raise InvalidInput(f"{self.field}: {column}", [_problem(self.field, column)])
        if not column:
            raise InvalidInput(f"{self.field}: the tensor holds no texts (N = 0)")
        if len(column) > max_instances:
            raise PayloadTooLarge(f"inputs: N = {len(column)} texts exceed {max_instances}")
        return self.texts([{self.field: value} for value in column])


def v1_predictions(embeddings: np.ndarray) -> list[dict[str, Any]]:
    return [{"embedding": row} for row in embeddings.tolist()]


def v2_response(
    metadata: Any,
    embeddings: np.ndarray,
    model_version: str,
    request_id: str | None,
    requested: list[RequestOutput] | None,
) -> dict[str, Any]:
    output = metadata.outputs[0]
    wanted = [o.name for o in requested] if requested else [output.name]
    unknown = [name for name in wanted if name != output.name]
    if unknown:
        raise InvalidInput(
            f"outputs: unknown output(s) {unknown}; this model has {[output.name]}",
            [_problem("outputs", f"unknown output {name!r}") for name in unknown],
        )
    body: dict[str, Any] = {
        "model_name": metadata.name,
        "model_version": model_version,
        "outputs": [
            {
                "name": output.name,
                "datatype": output.datatype,
                "shape": list(embeddings.shape),
                "data": embeddings.reshape(-1).tolist(),
            }
        ],
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def v2_metadata(metadata: Any, versions: list[str]) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": versions,
        "platform": "pytorch_safetensors",
        "inputs": [
            {"name": i.name, "datatype": i.datatype, "shape": i.shape} for i in metadata.v2_inputs
        ],
        "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": o.shape} for o in metadata.outputs
        ],
    }
