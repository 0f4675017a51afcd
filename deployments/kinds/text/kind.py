"""The text-embedding kind: strings in, L2-normalised float32 embeddings out.

Validated in the ingress (a string's length is cheaper to check than a hop to another actor),
tokenized in the replica, batched by tokens rather than rows: a row's cost is its token
count, so one batch of long texts holds fewer of them. Needs the `text` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from deployments.errors import InvalidInput, PayloadTooLarge
from deployments.kinds.base import (
    Columns,
    ComparePolicy,
    Comparison,
    ComparisonSpec,
    ModelKind,
    Runtime,
)
from deployments.kinds.tabular_schema import flatten_column, invalid_input_from, problem
from deployments.kinds.text.metadata import TextModelMetadata

TEXT = "text"
ENCODINGS = "encodings"
COSINE_EDGES = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0)


class TextRuntime(Runtime):
    def __init__(self, encoder: Any, output: str) -> None:
        self.encoder = encoder
        self.device = encoder.device
        self.variant = encoder.variant
        self.bytes_per_cost = encoder.bytes_per_token
        self.output = output
        # Padded tokens one forward pass may hold; the replica lowers it under memory pressure.
        self.cost_budget = encoder.token_budget

    def prepare(self, columns: Columns) -> Columns:
        texts = columns[TEXT]
        encodings = np.empty(len(texts), dtype=object)
        encodings[:] = self.encoder.tokenize(list(texts))
        return {TEXT: texts, ENCODINGS: encodings}

    def row_costs(self, columns: Columns) -> np.ndarray:
        return np.fromiter((len(e.ids) for e in columns[ENCODINGS]), dtype=np.int64)

    def forward(self, columns: Columns) -> Columns:
        import torch

        from deployments.kinds.text.token_budget import plan_sub_batches

        rows = list(columns[ENCODINGS])
        out = np.empty((len(rows), self.encoder.dim), dtype=np.float32)
        plan = plan_sub_batches([len(e.ids) for e in rows], max(1, self.cost_budget))
        with torch.inference_mode():
            for sub in plan:
                out[sub] = self.encoder._forward([rows[i] for i in sub]).cpu().numpy()
        return {self.output: out}

    def example(self, rows: int) -> Columns:
        # A short text and a full-length one: the shapes serving will see.
        texts = np.empty(rows, dtype=object)
        texts[:] = (["warm up", "warm " * self.encoder.max_seq_length] * rows)[:rows]
        return {TEXT: texts}

    def warm_up(self, max_cost: int) -> None:
        self.forward(self.prepare(self.example(2)))


class TextEmbeddingKind(ModelKind):
    kind = "text_embedding"
    metadata_class = TextModelMetadata
    comparison = ComparisonSpec("cosine", COSINE_EDGES, "min_cosine")
    validates_at = "ingress"
    variants = ("int8",)
    cost_unit = "tokens"
    requirements = ("transformers", "tokenizers")
    requirements_hint = "pip install -e '.[text]'"
    batch_defaults = {"max_batch_size": 1024}
    # glibc hands an encoder's large activation buffers back to the OS after each forward
    # pass and page-faults them in again on the next; keeping them costs no more than the
    # peak the token budget bounds (measurements: docs/benchmarks.md).
    replica_env = {
        "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's maximum for this setting
        "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    }
    metadata: TextModelMetadata

    def __init__(self, metadata: TextModelMetadata) -> None:
        super().__init__(metadata)
        self.instance_model = metadata.instance_model()
        self.field = metadata.text_input.name
        self._adapter = TypeAdapter(list[self.instance_model])  # type: ignore[name-defined]

    def decode_v1(self, instances: list[Any]) -> Columns:
        try:
            records = self._adapter.validate_python(instances)
        except ValidationError as exc:
            raise invalid_input_from(exc) from None
        texts = np.empty(len(records), dtype=object)
        texts[:] = [getattr(r, self.field) for r in records]
        return {TEXT: texts}

    def decode_v2(self, inputs: list[Any], max_rows: int) -> Columns:
        names = [t.name for t in inputs]
        if names != [self.field]:
            raise InvalidInput(
                f"inputs: expected exactly one input named {self.field!r}, got {names}",
                [problem("inputs", f"expected one BYTES input {self.field!r}")],
            )
        (tensor,) = inputs
        if tensor.datatype != "BYTES":
            raise InvalidInput(
                f"{self.field}: datatype {tensor.datatype} does not fit text; use BYTES",
                [problem(self.field, "datatype must be BYTES")],
            )
        column = flatten_column(tensor)
        if isinstance(column, str):
            raise InvalidInput(f"{self.field}: {column}", [problem(self.field, column)])
        if not column:
            raise InvalidInput(f"{self.field}: the tensor holds no texts (N = 0)")
        if len(column) > max_rows:
            raise PayloadTooLarge(f"inputs: N = {len(column)} texts exceed {max_rows}")
        return self.decode_v1([{self.field: value} for value in column])

    def instance_json_schema(self) -> dict[str, Any]:
        return self.instance_model.model_json_schema()

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [
            {"name": i.name, "datatype": i.datatype, "shape": i.shape}
            for i in self.metadata.v2_inputs
        ]

    def load(
        self,
        model_dir: str,
        device: str,
        allowed_architectures: Sequence[str],
        variant: str | None = None,
    ) -> Runtime:
        from deployments.kinds.devices import resolve_device
        from deployments.kinds.text.encoder import TextEncoder

        # int8 kernels are CPU-only.
        target = "cpu" if variant == "int8" else device
        encoder = TextEncoder.from_metadata(self.metadata, resolve_device(target))
        if variant == "int8":
            from deployments.kinds.text.quantized import int8_encoder

            encoder = int8_encoder(encoder)
        return TextRuntime(encoder, self.metadata.outputs[0].name)

    def compare(self, primary: Columns, candidate: Columns, policy: ComparePolicy) -> Comparison:
        name = self.metadata.outputs[0].name
        reference = np.asarray(primary[name], dtype=np.float32)
        # Both sides are L2-normalised: cosine is the row-wise dot product.
        cosines = np.einsum("ij,ij->i", reference, candidate[name]).astype(np.float64)
        return Comparison(agree=cosines >= policy.min_cosine, metric=cosines)
