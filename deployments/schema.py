"""Per-model input schema, built from metadata.json rather than written by hand per model.

`InputSchema` compiles a model's feature list into a pydantic model for one instance (types,
ranges, categories, required fields, `extra="forbid"`, NaN/inf rejected, strict types so
"12" is not silently a number) and into a vectorisation plan that applies exactly the
training normalisation recorded in the metadata.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from deployments.errors import InvalidInput
from deployments.metadata import Feature, ModelMetadata

_MAX_REPORTED_ERRORS = 50


class InputSchema:
    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.instance_model = build_instance_model(metadata)
        self._adapter = TypeAdapter(list[self.instance_model])  # type: ignore[name-defined]
        self._plan = [_ColumnPlan(f, metadata) for f in metadata.features]
        self.width = len(metadata.feature_vector)

    def json_schema(self) -> dict[str, Any]:
        return self.instance_model.model_json_schema()

    def validate(self, instances: list[Any]) -> list[BaseModel]:
        """Validate every instance; on failure report every error at once, by index and field."""
        try:
            return self._adapter.validate_python(instances)
        except ValidationError as exc:
            raise invalid_input_from(exc) from None

    def vectorize(self, records: list[BaseModel]) -> np.ndarray:
        matrix = np.empty((len(records), self.width), dtype=np.float32)
        col = 0
        for plan in self._plan:
            values = [getattr(r, plan.name) for r in records]
            col = plan.fill(matrix, col, values)
        return matrix

    def to_features(self, instances: list[Any]) -> np.ndarray:
        return self.vectorize(self.validate(instances))


def build_instance_model(metadata: ModelMetadata) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for feature in metadata.features:
        default = ... if feature.required else feature.default
        fields[feature.name] = (_annotation(feature), default)
    return create_model(  # type: ignore[call-overload,no-any-return]
        _class_name(metadata.name) + "Instance",
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
        __doc__=f"One input instance of model {metadata.name!r}.",
        **fields,
    )


def invalid_input_from(exc: ValidationError) -> InvalidInput:
    details = []
    for err in exc.errors(include_url=False)[:_MAX_REPORTED_ERRORS]:
        loc = list(err["loc"])
        index = loc[0] if loc and isinstance(loc[0], int) else None
        field = ".".join(str(p) for p in loc[1:]) or None
        details.append(
            {"instance": index, "field": field, "reason": _reason(err, field), "type": err["type"]}
        )
    total = exc.error_count()
    shown = "; ".join(_describe(d) for d in details[:5])
    more = f" (and {total - 5} more)" if total > 5 else ""
    return InvalidInput(f"{total} invalid input value(s): {shown}{more}", details)


def _reason(err: Any, field: str | None) -> str:
    if field is None and err["type"] == "model_type":
        return "an instance must be a JSON object of features"
    if err.get("input", "") is None and err["type"].endswith("_type"):
        return "must not be null; " + err["msg"]
    return str(err["msg"])


def _describe(detail: dict[str, Any]) -> str:
    where = "instances" if detail["instance"] is None else f"instances[{detail['instance']}]"
    if detail["field"]:
        where += f".{detail['field']}"
    return f"{where}: {detail['reason']}"


def _annotation(feature: Feature) -> Any:
    meta: dict[str, Any] = {"description": _description(feature)}
    if feature.unit:
        meta["json_schema_extra"] = {"unit": feature.unit}
    if feature.type == "category":
        return Annotated[Literal[tuple(feature.categories or ())], Field(**meta)]  # type: ignore[misc]
    if feature.type == "bool":
        return Annotated[bool, Field(**meta)]
    if feature.minimum is not None:
        meta["ge"] = feature.minimum if feature.type == "float" else math.ceil(feature.minimum)
    if feature.maximum is not None:
        meta["le"] = feature.maximum if feature.type == "float" else math.floor(feature.maximum)
    base = float if feature.type == "float" else int
    return Annotated[base, Field(**meta)]


def _description(feature: Feature) -> str:
    unit = f" [{feature.unit}]" if feature.unit else ""
    return f"{feature.description}{unit}".strip()


def _class_name(model_name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", model_name) if part)


class _ColumnPlan:
    """How one feature becomes one or more float32 columns."""

    def __init__(self, feature: Feature, metadata: ModelMetadata) -> None:
        self.name = feature.name
        self.kind = feature.type
        self.log1p = feature.transform == "log1p"
        norm = metadata.normalization.get(feature.name)
        self.mean = norm.mean if norm else 0.0
        self.std = norm.std if norm else 1.0
        self.categories = {c: i for i, c in enumerate(feature.categories or [])}

    def fill(self, matrix: np.ndarray, col: int, values: list[Any]) -> int:
        if self.kind == "category":
            block = matrix[:, col : col + len(self.categories)]
            block[:] = 0.0
            for row, value in enumerate(values):
                block[row, self.categories[value]] = 1.0
            return col + len(self.categories)
        column = np.asarray(values, dtype=np.float64)
        if self.kind in ("float", "int"):
            if self.log1p:
                column = np.log1p(column)
            column = (column - self.mean) / self.std
        matrix[:, col] = column
        return col + 1
