"""The contract every model kind implements, and the arrays that cross the graph's hops.

A kind is what differs between a fraud classifier, a regressor and a text encoder. Each role
of the graph (ingress routes, validator, batched replica, shadow, report) has one generic
implementation over this contract; a new kind is one new module registered in
`deployments.kinds`, and no role changes.

Two halves, so the ingress and the validator never import torch:

- `ModelKind` (numpy and pydantic only): decode and validate v1 instances and v2 tensors into
  named columns, encode output columns for both protocols, describe v2 metadata and the v1
  JSON schema, compare a primary's and a candidate's outputs.
- `Runtime` (torch, built by `ModelKind.load` in a replica): what one row costs, the forward
  pass over many requests' rows at once, warm-up on a declared example.

A batch crosses each hop as `Batch`: named columns whose rows are the requests' rows one after
another, and `offsets` (n+1) saying where each request's rows start. Errors travel beside it
by request index, as values (`Failures`), so one bad request never fails its batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from deployments.errors import ArtifactError, InvalidInput, ServingError
from deployments.repository.metadata import BaseMetadata

if TYPE_CHECKING:
    import torch

    from deployments.protocol.v2 import RequestInput

Columns = dict[str, np.ndarray]
Failures = dict[int, ServingError]


def rows_of(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


@dataclass
class Batch:
    """Many requests' rows as one set of arrays; request i owns rows offsets[i]:offsets[i+1]."""

    columns: Columns
    offsets: np.ndarray

    @classmethod
    def of(cls, parts: Sequence[Columns]) -> Batch:
        sizes = [rows_of(p) for p in parts]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        if not parts:
            return cls({}, offsets)
        columns = {
            name: parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])
            for name in parts[0]
        }
        return cls(columns, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def part(self, i: int) -> Columns:
        start, stop = self.offsets[i], self.offsets[i + 1]
        return {name: array[start:stop] for name, array in self.columns.items()}

    def parts(self) -> list[Columns]:
        return [self.part(i) for i in range(len(self))]

    def select(self, indices: Sequence[int]) -> Batch:
        return Batch.of([self.part(i) for i in indices])


@dataclass
class Answer:
    """A ModelReplica's reply to one batch: outputs of the answered requests (in order of
    `answered`), and the others' errors. It lives here, beside `Batch`, because the ingress
    unpickles it: a class defined in a torch module would import torch into the ingress on
    its first answer."""

    outputs: Batch
    answered: list[int]
    failures: Failures
    model_version: str
    infer_ms: float
    # Which replica answered: the ingress counts the replicas it sees (pipeline depth).
    replica: str = ""


def _rows(array: np.ndarray) -> list[Any]:
    return list(array) if array.ndim > 1 and array.dtype != object else array.tolist()


def _flat(array: np.ndarray) -> Any:
    return array.reshape(-1).tolist() if array.dtype == object else array.reshape(-1)


@dataclass(frozen=True)
class ComparisonSpec:
    """How a kind compares a candidate's rows with the primary's: the per-row metric's name
    and the histogram edges its distribution is counted in (mergeable across replicas)."""

    metric: Literal["abs_score_delta", "abs_delta", "cosine"]
    edges: tuple[float, ...]
    agreement: Literal["label", "tolerance", "min_cosine"]


@dataclass
class Comparison:
    """One compared batch of rows: whether each agrees, its metric, and label pairs."""

    agree: np.ndarray
    metric: np.ndarray
    labels: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class ComparePolicy:
    max_abs_delta: float = 0.1
    min_cosine: float = 0.98


class Runtime(ABC):
    """A loaded model in a replica: torch lives here and below."""

    device: torch.device
    # Peak bytes one unit of cost (a row, a token) takes in a forward pass.
    bytes_per_cost: int = 1
    variant: str = "fp32"
    # Cost units one forward pass may hold now; the replica sets it before each batch
    # (lower under memory pressure). A runtime that sub-batches internally reads it.
    cost_budget: int = 0

    def prepare(self, columns: Columns) -> Columns:
        """Per-request work before batching (e.g. tokenizing); default: nothing."""
        return columns

    def row_costs(self, columns: Columns) -> np.ndarray:
        """What each row costs a forward pass (rows by default; tokens for text)."""
        return np.ones(rows_of(columns), dtype=np.int64)

    @abstractmethod
    def forward(self, columns: Columns) -> Columns:
        """Outputs for every row of `columns` (many requests' rows, concatenated)."""

    @abstractmethod
    def example(self, rows: int) -> Columns:
        """A valid input of `rows` rows, for warm-up and health checks."""

    def warm_up(self, max_cost: int) -> None:
        for rows in sorted({1, max(1, max_cost)}):
            self.forward(self.prepare(self.example(rows)))

    def check_health(self) -> None:
        self.forward(self.prepare(self.example(1)))


class ModelKind(ABC):
    """A kind of model. Subclasses set the class attributes and implement the hooks."""

    kind: ClassVar[str]
    metadata_class: ClassVar[type[BaseMetadata]]
    comparison: ClassVar[ComparisonSpec]
    # Where requests are validated: "validator" (a deployment of its own, for schemas whose
    # checks cost more than a hop) or "ingress" (e.g. a string length: cheaper than a hop).
    validates_at: ClassVar[Literal["validator", "ingress"]] = "validator"
    # Candidates a kind can derive from the primary's own weights (e.g. "int8").
    variants: ClassVar[tuple[str, ...]] = ()
    # What one unit of batch cost is (`Runtime.row_costs`): "rows" or e.g. "tokens".
    cost_unit: ClassVar[str] = "rows"
    # Modules the kind needs beyond the base install (checked before anything is deployed).
    requirements: ClassVar[tuple[str, ...]] = ()
    requirements_hint: ClassVar[str] = ""
    # Requests that must be waiting before a caller batch leaves while another of this
    # model's batches is still on its way; fewer wait for that batch to come back. Each call
    # costs every process on the path its own overhead, so where a forward pass is cheap
    # beside a call, small overlapping batches only add CPU; where it is dear (1: overlap at
    # once), a second replica should start on the next batch without waiting.
    caller_batch_min_overlap: ClassVar[int] = 1
    # Batching defaults (max_batch_size in cost units) and environment of its replicas.
    batch_defaults: ClassVar[dict[str, Any]] = {"max_batch_size": 64}
    replica_env: ClassVar[dict[str, str]] = {}

    def __init__(self, metadata: BaseMetadata) -> None:
        self.metadata = metadata

    # ---- requests (no torch) ---------------------------------------------------------

    @abstractmethod
    def decode_v1(self, instances: list[Any]) -> Columns:
        """Validated columns for KServe v1 instances; InvalidInput names every bad field."""

    @abstractmethod
    def decode_v2(self, inputs: list[RequestInput], max_rows: int) -> Columns:
        """Validated columns for OIP v2 input tensors."""

    @abstractmethod
    def instance_json_schema(self) -> dict[str, Any]:
        """JSON schema of one v1 instance."""

    @abstractmethod
    def v2_inputs(self) -> list[dict[str, Any]]:
        """OIP v2 input tensor metadata: name, datatype, shape."""

    def v2_outputs(self) -> list[dict[str, Any]]:
        return [
            {"name": o.name, "datatype": o.datatype, "shape": o.shape}
            for o in self.metadata.outputs
        ]

    def v2_metadata(self, versions: list[str]) -> dict[str, Any]:
        return {
            "name": self.metadata.name,
            "versions": versions,
            "platform": "pytorch_safetensors",
            "inputs": self.v2_inputs(),
            "outputs": self.v2_outputs(),
        }

    # ---- answers ---------------------------------------------------------------------

    def encode_v1(self, outputs: Columns) -> list[dict[str, Any]]:
        """One prediction object per row: `{output name: value}`. A vector per row (an
        embedding) stays a numpy row, which the JSON encoder writes straight from its
        float32 buffer instead of through a Python float per element."""
        listed = {name: _rows(array) for name, array in outputs.items()}
        names = list(listed)
        return [dict(zip(names, row)) for row in zip(*listed.values())]

    def encode_v2(self, outputs: Columns, requested: Iterable[str] | None) -> list[dict[str, Any]]:
        """OIP v2 output tensors, the requested ones (default: every declared output)."""
        wanted = list(requested) if requested else [o.name for o in self.metadata.outputs]
        unknown = [name for name in wanted if name not in outputs]
        if unknown:
            raise InvalidInput(
                f"outputs: unknown output(s) {unknown}; this model has {list(outputs)}",
                [{"field": "outputs", "reason": f"unknown output {name!r}"} for name in unknown],
            )
        return [
            {
                "name": name,
                "datatype": self.metadata.output(name).datatype,
                "shape": list(outputs[name].shape),
                "data": _flat(outputs[name]),
            }
            for name in wanted
        ]

    # ---- model (torch, in replicas) --------------------------------------------------

    @abstractmethod
    def load(
        self,
        model_dir: str,
        device: str,
        allowed_architectures: Sequence[str],
        variant: str | None = None,
    ) -> Runtime:
        """Verified weights in the declared module, on `device`, ready for `forward`."""

    # ---- shadow ------------------------------------------------------------------------

    @abstractmethod
    def compare(self, primary: Columns, candidate: Columns, policy: ComparePolicy) -> Comparison:
        """Row-by-row comparison of a candidate's outputs with the primary's."""

    # ---- telemetry ---------------------------------------------------------------------

    def drift_recorder(
        self, name: str, version: str, reference: Any = None, window: Any = None
    ) -> Any | None:
        """What records this kind's input distributions in the validator (None: nothing),
        into Ray metrics and, with a training reference, into the drift `window`. Called
        inside a replica: it may create Ray metrics."""
        return None

    def drift_reference(self, model_dir: str | Path) -> Any | None:
        """The training reference packaged with the model (checksum verified), or None."""
        from deployments.repository.metadata import artifact_dir
        from deployments.repository.reference import read_reference

        recorded = self.metadata.reference
        if recorded is None:
            return None
        directory = artifact_dir(model_dir, self.metadata.name, self.metadata.version)
        return read_reference(directory, recorded)

    def build_reference(self, columns: Columns, outputs: Columns) -> Any:
        """A training reference from training rows (decoded as requests are) and the
        model's outputs on them."""
        raise ArtifactError(f"the {self.kind} kind has no drift reference")

    def prediction_values(self, outputs: Columns) -> np.ndarray | None:
        """The one number per row whose distribution is watched for drift; None: none."""
        return None

    def observe_inputs(self, columns: Columns, sink: Any) -> None:  # noqa: B027 - optional hook
        """Record the input distribution of validated rows into `drift_recorder`'s sink."""

    def observe_outputs(self, outputs: Columns, sink: Any) -> None:  # noqa: B027
        """Record the prediction distribution of one forward pass; default: nothing."""


@dataclass
class Decoded:
    """What the validator returns for many requests: the valid ones' columns, the rest's
    errors, both by request index."""

    batch: Batch
    valid: list[int] = field(default_factory=list)
    failures: Failures = field(default_factory=dict)
