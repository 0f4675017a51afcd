"""A tabular model's declared input schema, and how its records become a feature matrix.

Pydantic and numpy only (no torch): the validator and the ingress read it. The per-instance
pydantic model is compiled from metadata.json (types, ranges, categories, required fields,
`extra="forbid"`, NaN/inf refused, strict types so "12" is not silently a number); the
vectorisation plan applies exactly the training normalisation recorded beside it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic import model_validator as _model_validator

from deployments.errors import InvalidInput, PayloadTooLarge
from deployments.repository.metadata import Architecture, BaseMetadata, Strict, Weights

FeatureType = Literal["float", "int", "bool", "category"]
_MAX_REPORTED_ERRORS = 50

# OIP v2 datatypes a feature may be sent as; the first is what the metadata advertises.
V2_DATATYPES: dict[str, tuple[str, ...]] = {
    "float": ("FP32", "FP64", "FP16"),
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"),
    "bool": ("BOOL",),
    "category": ("BYTES",),
}


class Feature(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: FeatureType
    description: str = ""
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str] | None = None
    required: bool = True
    default: float | int | bool | str | None = None
    # Applied before normalisation, e.g. log1p for heavy-tailed amounts.
    transform: Literal["identity", "log1p"] = "identity"

    @_model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs 'categories'")
        if self.type != "category" and self.categories:
            raise ValueError(f"feature {self.name!r}: only category features have 'categories'")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum > maximum")
        if not self.required and self.default is None:
            raise ValueError(f"feature {self.name!r}: an optional feature needs a 'default'")
        return self

    def vector_columns(self) -> list[str]:
        """Names of the columns this feature occupies in the model's input vector."""
        if self.type == "category":
            return [f"{self.name}={c}" for c in self.categories or []]
        return [self.name]


class Normalization(Strict):
    mean: float
    std: float = Field(gt=0)


class TabularMetadata(BaseMetadata):
    """Features in, a torch module over their normalised vector: shared by tabular kinds."""

    architecture: Architecture
    features: list[Feature] = Field(min_length=1)
    normalization: dict[str, Normalization]
    feature_vector: list[str]
    weights: Weights

    @_model_validator(mode="after")
    def _coherent_features(self) -> TabularMetadata:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        numeric = {f.name for f in self.features if f.type in ("float", "int")}
        if set(self.normalization) != numeric:
            raise ValueError(
                "normalization must have exactly one entry per numeric feature; "
                f"missing {sorted(numeric - set(self.normalization))}, "
                f"unexpected {sorted(set(self.normalization) - numeric)}"
            )
        derived = [col for f in self.features for col in f.vector_columns()]
        if derived != self.feature_vector:
            raise ValueError(
                "feature_vector does not match the features' declared order and categories"
            )
        return self

    @property
    def width(self) -> int:
        return len(self.feature_vector)

    def schema_payload(self) -> dict[str, Any]:
        return {
            "features": [f.model_dump(mode="json") for f in self.features],
            "normalization": {k: v.model_dump() for k, v in sorted(self.normalization.items())},
            "feature_vector": self.feature_vector,
        }


class InputSchema:
    """Validation and vectorisation of one tabular model's records."""

    def __init__(self, metadata: TabularMetadata) -> None:
        self.metadata = metadata
        self.instance_model = build_instance_model(metadata)
        self._adapter = TypeAdapter(list[self.instance_model])  # type: ignore[name-defined]
        self._plan = [_ColumnPlan(f, metadata) for f in metadata.features]
        self.optional = [f.name for f in metadata.features if not f.required]
        self.width = metadata.width

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
            col = plan.fill(matrix, col, [getattr(r, plan.name) for r in records])
        return matrix

    def absent(self, records: list[BaseModel]) -> np.ndarray:
        """[rows, optional features]: True where an optional feature took its default."""
        return np.array(
            [[name not in r.model_fields_set for name in self.optional] for r in records],
            dtype=bool,
        ).reshape(len(records), len(self.optional))

    def to_features(self, instances: list[Any]) -> np.ndarray:
        return self.vectorize(self.validate(instances))

    def records_from_tensors(self, inputs: list[Any], max_rows: int) -> list[dict[str, Any]]:
        """One record per row of OIP v2 tensors (one tensor per feature, [N] or [N, 1]);
        tensor problems are reported all at once, by tensor name."""
        features = {f.name: f for f in self.metadata.features}
        problems: list[dict[str, Any]] = []
        columns: dict[str, list[Any]] = {}
        for tensor in inputs:
            feature = features.get(tensor.name)
            if feature is None:
                problems.append(problem(tensor.name, f"unknown input; expected {sorted(features)}"))
                continue
            if tensor.name in columns:
                problems.append(problem(tensor.name, "input given more than once"))
                continue
            allowed = V2_DATATYPES[feature.type]
            if tensor.datatype not in allowed:
                problems.append(
                    problem(
                        tensor.name,
                        f"datatype {tensor.datatype} does not fit a {feature.type} feature; "
                        f"use {' or '.join(allowed)}",
                    )
                )
                continue
            column = flatten_column(tensor)
            if isinstance(column, str):
                problems.append(problem(tensor.name, column))
                continue
            columns[tensor.name] = column
        reported = {p["field"] for p in problems}
        problems += [
            problem(f.name, "required input is missing")
            for f in self.metadata.features
            if f.required and f.name not in columns and f.name not in reported
        ]
        lengths = {len(c) for c in columns.values()}
        if not problems and len(lengths) > 1:
            sizes = {name: len(c) for name, c in columns.items()}
            problems.append(problem(None, f"inputs disagree on the batch size N: {sizes}"))
        if problems:
            shown = "; ".join(f"{p['field'] or 'inputs'}: {p['reason']}" for p in problems[:5])
            raise InvalidInput(f"{len(problems)} invalid input tensor(s): {shown}", problems)
        n = lengths.pop() if lengths else 0
        if n == 0:
            raise InvalidInput("inputs: tensors hold no rows (N = 0)")
        if n > max_rows:
            raise PayloadTooLarge(f"inputs: N = {n} rows exceed the limit of {max_rows}")
        names = list(columns)
        return [dict(zip(names, row)) for row in zip(*columns.values())]

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "datatype": V2_DATATYPES[f.type][0], "shape": [-1]}
            for f in self.metadata.features
        ]


def flatten_column(tensor: Any) -> list[Any] | str:
    """The values of a [N] or [N, 1] tensor, or why its shape does not fit."""
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


def problem(field: str | None, reason: str) -> dict[str, Any]:
    return {"field": field, "reason": reason}


def build_instance_model(metadata: TabularMetadata) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for feature in metadata.features:
        default = ... if feature.required else feature.default
        fields[feature.name] = (_annotation(feature), default)
    return create_model(  # type: ignore[call-overload,no-any-return]
        class_name(metadata.name) + "Instance",
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
    unit = f" [{feature.unit}]" if feature.unit else ""
    meta: dict[str, Any] = {"description": f"{feature.description}{unit}".strip()}
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


def class_name(model_name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", model_name) if part)


class _ColumnPlan:
    """How one feature becomes one or more float32 columns."""

    def __init__(self, feature: Feature, metadata: TabularMetadata) -> None:
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
