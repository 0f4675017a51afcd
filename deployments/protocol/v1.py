"""KServe v1: `{"instances": [...]}` -> `{"predictions": [...]}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.errors import PayloadTooLarge
from deployments.protocol.common import parse_envelope


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(min_length=1, description="Instances, each an object of features.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    predictions: list[dict[str, Any]]
    model_name: str
    model_version: str


class ModelList(BaseModel):
    models: list[str]


class ModelInfo(BaseModel):
    name: str
    kind: str
    version: str
    ready: bool
    input_schema: dict[str, Any]


def parse_predict(body: Any, max_instances: int) -> list[Any]:
    request = parse_envelope(PredictRequest, body)
    if len(request.instances) > max_instances:
        raise PayloadTooLarge(
            f"instances: {len(request.instances)} instances exceed the limit of {max_instances} "
            "per request; split the request"
        )
    return request.instances
