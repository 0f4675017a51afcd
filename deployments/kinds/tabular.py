"""Tabular kinds: classification (binary or multiclass) and regression over declared features.

Both validate records against the schema in metadata.json (`tabular_schema`), send one
normalised float32 matrix across the hops, and run a torch module over it. They differ only
in what the module's output means: class logits, or regression targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from deployments.errors import InferenceFailed, InvalidInput
from deployments.kinds.base import (
    Columns,
    ComparePolicy,
    Comparison,
    ComparisonSpec,
    ModelKind,
    Runtime,
    rows_of,
)
from deployments.kinds.tabular_schema import InputSchema, TabularMetadata
from deployments.repository.metadata import Output, Strict

FEATURES = "features"
ABSENT = "absent"
DELTA_EDGES = (1e-4, 1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0)


class ClassificationTask(Strict):
    labels: list[str] = Field(min_length=2)
    # Binary models may name the class whose probability they answer as `<label>_probability`
    # and the decision threshold on it; otherwise the most probable class wins.
    positive_label: str | None = None
    threshold: float = Field(default=0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> ClassificationTask:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.positive_label is not None:
            if len(self.labels) != 2:
                raise ValueError("positive_label applies to binary classifiers (two labels)")
            if self.positive_label not in self.labels:
                raise ValueError(f"positive_label {self.positive_label!r} is not in {self.labels}")
        return self

    def outputs(self) -> list[Output]:
        label = Output(name="label", datatype="BYTES", shape=[-1], description="Predicted class")
        if self.positive_label is not None:
            return [
                label,
                Output(
                    name=f"{self.positive_label}_probability",
                    datatype="FP32",
                    shape=[-1],
                    description=f"Probability of {self.positive_label!r}",
                ),
            ]
        k = len(self.labels)
        return [
            label,
            Output(name="probability", datatype="FP32", shape=[-1], description="Of the label"),
            Output(
                name="probabilities",
                datatype="FP32",
                shape=[-1, k],
                description=f"Per class, in the order {self.labels}",
            ),
        ]


class Target(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    unit: str | None = None
    description: str = ""
    # The module predicts (target - mean) / std; answers are given in the target's own unit.
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)


class RegressionTask(Strict):
    targets: list[Target] = Field(min_length=1)

    def outputs(self) -> list[Output]:
        return [
            Output(name=t.name, datatype="FP32", shape=[-1], description=t.description, unit=t.unit)
            for t in self.targets
        ]


class _TaskMetadata(TabularMetadata):
    """A tabular model whose task decides its outputs: the declared ones must be those."""

    task: ClassificationTask | RegressionTask

    @model_validator(mode="after")
    def _outputs_fit(self) -> _TaskMetadata:
        declared = [(o.name, o.datatype, o.shape) for o in self.outputs]
        wanted = [(o.name, o.datatype, o.shape) for o in self.task.outputs()]
        if declared != wanted:
            raise ValueError(f"outputs {declared} do not match the task's outputs {wanted}")
        return self


class ClassificationMetadata(_TaskMetadata):
    kind: str = Field(default="tabular_classification", pattern="^tabular_classification$")
    task: ClassificationTask


class RegressionMetadata(_TaskMetadata):
    kind: str = Field(default="tabular_regression", pattern="^tabular_regression$")
    task: RegressionTask


class TabularRuntime(Runtime):
    """A torch module over the normalised feature matrix; subclasses read its output."""

    def __init__(self, module: Any, device: Any, width: int) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.width = width
        self.module = module.to(device=device, dtype=torch.float32).eval()
        # Peak bytes one row costs: its input and every layer's activations in float32,
        # twice for temporaries (softmax, copies).
        widths = [m.out_features for m in self.module.modules() if hasattr(m, "out_features")]
        self.bytes_per_cost = 4 * (width + sum(widths)) * 2

    def prepare(self, columns: Columns) -> Columns:
        # Any handle holder can call a replica, not only the Validator: a matrix of another
        # shape is the caller's error (422), refused before it joins (and fails) a batch.
        self._check_width(columns.get(FEATURES))
        return columns

    def _check_width(self, matrix: Any) -> None:
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.shape[1] != self.width:
            shape = list(matrix.shape) if isinstance(matrix, np.ndarray) else type(matrix).__name__
            raise InvalidInput(
                f"expected a feature matrix of shape [N, {self.width}], got {shape}",
                [{"field": FEATURES, "reason": f"shape {shape}, not [N, {self.width}]"}],
            )

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        torch = self.torch
        self._check_width(matrix)  # also for a forward pass called without `prepare`
        # Arrays from Ray's object store are read-only; torch wants writable memory.
        writable = np.require(matrix, dtype=np.float32, requirements="W")
        with torch.inference_mode():
            out = self.module(torch.from_numpy(writable).to(self.device, non_blocking=True))
            out = self.finish(out.float())
        array = out.cpu().numpy()
        if not np.all(np.isfinite(array)):
            raise InferenceFailed("model produced a non-finite output for this input")
        return array

    def finish(self, out: Any) -> Any:
        return out

    def example(self, rows: int) -> Columns:
        return {FEATURES: np.zeros((rows, self.width), dtype=np.float32)}


class ClassifierRuntime(TabularRuntime):
    def __init__(self, module: Any, device: Any, metadata: ClassificationMetadata) -> None:
        super().__init__(module, device, metadata.width)
        task = metadata.task
        self.labels = np.array(task.labels, dtype=object)
        self.positive = (
            None if task.positive_label is None else task.labels.index(task.positive_label)
        )
        self.threshold = task.threshold
        self.score_name = f"{task.positive_label}_probability"

    def finish(self, out: Any) -> Any:
        return self.torch.softmax(out, dim=1)

    def forward(self, columns: Columns) -> Columns:
        probs = self.raw(columns[FEATURES])
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise InferenceFailed(
                f"the module answered shape {list(probs.shape)}; a classifier over "
                f"{len(self.labels)} labels answers [N, {len(self.labels)}]"
            )
        if self.positive is not None:
            score = probs[:, self.positive]
            other = 1 - self.positive
            picked = np.where(score >= self.threshold, self.positive, other)
            return {"label": self.labels[picked], self.score_name: score}
        picked = probs.argmax(axis=1)
        return {
            "label": self.labels[picked],
            "probability": probs[np.arange(len(picked)), picked],
            "probabilities": probs,
        }


class RegressorRuntime(TabularRuntime):
    def __init__(self, module: Any, device: Any, metadata: RegressionMetadata) -> None:
        super().__init__(module, device, metadata.width)
        targets = metadata.task.targets
        self.names = [t.name for t in targets]
        self.mean = np.array([t.mean for t in targets], dtype=np.float32)
        self.std = np.array([t.std for t in targets], dtype=np.float32)

    def forward(self, columns: Columns) -> Columns:
        out = self.raw(columns[FEATURES])
        out = out.reshape(len(out), -1)
        if out.shape[1] != len(self.names):
            raise InferenceFailed(
                f"the module answered {out.shape[1]} values per row; this regressor declares "
                f"{len(self.names)} targets {self.names}"
            )
        out = out * self.std + self.mean
        return {name: out[:, i] for i, name in enumerate(self.names)}


class TabularKind(ModelKind):
    runtime_class: ClassVar[type[TabularRuntime]]
    metadata: TabularMetadata
    # A small network's forward pass costs less than the calls that carry it
    # (docs/benchmarks.md): a few requests wait for the batch on its way instead.
    caller_batch_min_overlap = 8

    def __init__(self, metadata: TabularMetadata) -> None:
        super().__init__(metadata)
        self.schema = InputSchema(metadata)

    def decode_v1(self, instances: list[Any]) -> Columns:
        return self._columns(self.schema.validate(instances))

    def decode_v2(self, inputs: list[Any], max_rows: int) -> Columns:
        return self.decode_v1(self.schema.records_from_tensors(inputs, max_rows))

    def _columns(self, records: list[Any]) -> Columns:
        columns = {FEATURES: self.schema.vectorize(records)}
        if self.schema.optional:
            columns[ABSENT] = self.schema.absent(records)
        return columns

    def instance_json_schema(self) -> dict[str, Any]:
        return self.schema.json_schema()

    def v2_inputs(self) -> list[dict[str, Any]]:
        return self.schema.v2_inputs()

    def load(
        self,
        model_dir: str,
        device: str,
        allowed_architectures: Sequence[str],
        variant: str | None = None,
    ) -> Runtime:
        from deployments.kinds.devices import resolve_device
        from deployments.repository.artifacts import load_module, read_state, verify_checksum
        from deployments.repository.metadata import artifact_dir

        meta = self.metadata
        label = f"{meta.name}:{meta.version}"
        path = artifact_dir(model_dir, meta.name, meta.version) / meta.weights.file
        verify_checksum(path, meta.weights.sha256)
        state = read_state(path, meta.schema_fingerprint(), label)
        arch = meta.architecture
        module = load_module(arch.import_path, arch.kwargs, state, allowed_architectures, label)
        return self.runtime_class(module, resolve_device(device), meta)  # type: ignore[call-arg]

    def drift_recorder(
        self, name: str, version: str, reference: Any = None, window: Any = None
    ) -> Any:
        from deployments.telemetry.drift import DriftRecorder
        from deployments.telemetry.metrics import DriftMetrics

        return DriftRecorder(self.metadata, DriftMetrics(name, version), reference, window)

    def build_reference(self, columns: Columns, outputs: Columns) -> Any:
        from deployments.repository.reference import Distribution, DriftReference
        from deployments.telemetry.drift import FeatureLayout

        matrix = columns[FEATURES]
        values = self.prediction_values(outputs)
        return DriftReference(
            rows=len(matrix),
            features=FeatureLayout(self.metadata).reference(matrix),
            prediction=Distribution.numeric(values) if values is not None else None,
            prediction_output=self.prediction_output(),
        )

    def prediction_output(self) -> str | None:
        return None

    def observe_inputs(self, columns: Columns, sink: Any) -> None:
        sink.record(columns[FEATURES], columns.get(ABSENT))


class ClassificationKind(TabularKind):
    kind = "tabular_classification"
    metadata_class = ClassificationMetadata
    runtime_class = ClassifierRuntime
    comparison = ComparisonSpec("abs_score_delta", DELTA_EDGES, "label")
    metadata: ClassificationMetadata

    def score_output(self) -> str:
        task = self.metadata.task
        return (
            "probability" if task.positive_label is None else f"{task.positive_label}_probability"
        )

    def compare(self, primary: Columns, candidate: Columns, policy: ComparePolicy) -> Comparison:
        score = self.score_output()
        _same_rows(primary, candidate)
        return Comparison(
            agree=primary["label"] == candidate["label"],
            metric=np.abs(candidate[score].astype(np.float64) - primary[score]),
            labels=(primary["label"], candidate["label"]),
        )

    def observe_outputs(self, outputs: Columns, sink: Any) -> None:
        sink.predicted(outputs[self.score_output()], outputs["label"])

    def prediction_output(self) -> str | None:
        return self.score_output()

    def prediction_values(self, outputs: Columns) -> np.ndarray | None:
        return np.asarray(outputs[self.score_output()], dtype=np.float64)


class RegressionKind(TabularKind):
    kind = "tabular_regression"
    metadata_class = RegressionMetadata
    runtime_class = RegressorRuntime
    comparison = ComparisonSpec("abs_delta", DELTA_EDGES, "tolerance")
    metadata: RegressionMetadata

    def prediction_output(self) -> str | None:
        return self.metadata.task.targets[0].name

    def prediction_values(self, outputs: Columns) -> np.ndarray | None:
        return np.asarray(outputs[self.prediction_output()], dtype=np.float64).reshape(-1)

    def compare(self, primary: Columns, candidate: Columns, policy: ComparePolicy) -> Comparison:
        names = [t.name for t in self.metadata.task.targets]
        _same_rows(primary, candidate)
        deltas = np.stack(
            [np.abs(candidate[n].astype(np.float64) - primary[n]) for n in names], axis=1
        ).max(axis=1)
        return Comparison(agree=deltas <= policy.max_abs_delta, metric=deltas)


def _same_rows(primary: Columns, candidate: Columns) -> None:
    # numpy would broadcast a one-row answer against many and compare nonsense.
    if rows_of(primary) != rows_of(candidate):
        raise ValueError("primary and candidate answered a different number of rows")
