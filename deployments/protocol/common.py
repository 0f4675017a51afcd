"""What both protocols share: error bodies, and envelope validation errors named by field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from deployments.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


class ErrorBody(BaseModel):
    error: str
    code: str
    details: list[dict[str, Any]] | None = None


def parse_envelope(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {_json_type(body)}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or None,
                "reason": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        shown = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
        raise BadRequest(f"invalid request envelope: {shown}", details) from None


def _json_type(value: Any) -> str:
    names = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
