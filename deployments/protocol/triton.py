"""Triton's model configuration extension: what `GET /v2/models/{m}/config` answers.

Triton's tools (perf_analyzer, model_analyzer, the clients' examples) read a model's config
before anything else: its inputs and outputs with Triton's data types and per-row dims, the
largest batch one request may carry, and how requests are batched. Here batching happens once,
at the ingress, across requests (`caller_batch_*`), so that is the dynamic batching reported.
Field names follow Triton's `model_config.proto` in its JSON form.
"""

from __future__ import annotations

from typing import Any

PLATFORM = "pytorch_safetensors"
BACKEND = "ray_serve"
# OIP v2 datatypes -> Triton's `DataType` enum names.
_TRITON_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}


def data_type(datatype: str) -> str:
    return _TRITON_TYPES.get(datatype, f"TYPE_{datatype}")


def _tensor(spec: dict[str, Any]) -> dict[str, Any]:
    """A batched tensor: dims without the batch dimension. A [-1] tensor is one value per
    row: dims [1], reshaped to [] so that a [N] tensor is accepted as Triton clients send it."""
    dims = list(spec["shape"][1:])
    out: dict[str, Any] = {"name": spec["name"], "data_type": data_type(spec["datatype"])}
    if dims:
        out["dims"] = dims
    else:
        out["dims"] = [1]
        out["reshape"] = {"shape": []}
    return out


def model_config(
    kind: Any,
    max_rows: int,
    batch_wait_s: float,
    max_requests_per_batch: int,
    replica: dict[str, Any],
    replicas: int,
) -> dict[str, Any]:
    """The config of one served version. `replica`: a ModelReplica's `describe()`."""
    metadata = kind.metadata
    version = metadata.version
    gpu = str(replica.get("device", "cpu")).startswith("cuda")
    return {
        "name": metadata.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": max_rows,
        "input": [_tensor(spec) for spec in kind.v2_inputs()],
        "output": [_tensor(spec) for spec in kind.v2_outputs()],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(batch_wait_s * 1_000_000),
            "preserve_ordering": True,
        },
        "instance_group": [
            {
                "name": f"{metadata.name}_{version}",
                "kind": "KIND_GPU" if gpu else "KIND_CPU",
                "count": replicas,
            }
        ],
        "parameters": {
            "kind": {"string_value": kind.kind},
            "version": {"string_value": version},
            "max_requests_per_batch": {"string_value": str(max_requests_per_batch)},
            "max_cost_per_forward_pass": {
                "string_value": str(replica.get("batch", {}).get("max_batch_size", ""))
            },
            "cost_unit": {"string_value": kind.cost_unit},
        },
    }
