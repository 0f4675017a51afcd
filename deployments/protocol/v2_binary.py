"""Triton's binary tensor data extension for OIP v2 over HTTP.

A request may carry tensors as raw bytes after its JSON header: the header's length is the
`Inference-Header-Content-Length` HTTP header, and each binary input says how many of the
following bytes are its own (`parameters.binary_data_size`, in input order, no `data`).
Numbers are little-endian in row-major order; a BYTES element is a 4-byte little-endian
length and then its bytes. An answer's outputs go back the same way when the request asks
(`parameters.binary_data` on an output, or `parameters.binary_data_output` for every output
it does not name): the header's length comes back as the same HTTP header.

Decoding checks each size against the tensor's datatype and shape before anything is
allocated from them, and names the input at fault; it fills `data` as JSON would, so the
envelope and the model's kind validate binary and JSON requests alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from deployments.errors import BadRequest
from deployments.protocol.json_body import json_response_bytes

HEADER = "inference-header-content-length"
CONTENT_TYPE = b"application/octet-stream"

# Fixed-size datatypes: the little-endian numpy type of one element.
NUMPY_TYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_MAX_DIMS = 8


def split_body(raw: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """The JSON header and the binary section of a request with binary tensors."""
    if not header_length.isdigit():
        raise BadRequest(
            "Inference-Header-Content-Length must be a non-negative integer, "
            f"got {header_length!r}",
            [{"field": "Inference-Header-Content-Length", "reason": "not an integer"}],
        )
    size = int(header_length)
    if size > len(raw):
        raise BadRequest(
            f"Inference-Header-Content-Length is {size} but the body holds {len(raw)} bytes",
            [{"field": "Inference-Header-Content-Length", "reason": "longer than the body"}],
        )
    return raw[:size], memoryview(raw)[size:]


def attach_inputs(body: Any, binary: memoryview) -> None:
    """Fill `data` of every binary input of the parsed JSON header from `binary`, in order;
    the bytes must be used exactly."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        return  # the envelope check reports it
    offset = 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        name = _name(tensor, i)
        size = params.pop("binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _bad(name, f"binary_data_size must be a non-negative integer, got {size!r}")
        if "data" in tensor:
            raise _bad(name, "give either data or binary_data_size, not both")
        if offset + size > len(binary):
            raise _bad(
                name,
                f"binary_data_size {size} runs past the binary section "
                f"({len(binary) - offset} bytes left)",
            )
        attach_one(tensor, binary[offset : offset + size], i)
        offset += size
    if offset != len(binary):
        raise BadRequest(
            f"the binary section holds {len(binary)} bytes; the inputs' binary_data_size "
            f"add up to {offset}",
            [{"field": "inputs", "reason": "binary_data_size does not cover the binary section"}],
        )


def attach_one(tensor: dict[str, Any], raw: memoryview, index: int) -> None:
    """Fill `data` of input `index` (a dict with name, datatype, shape) from exactly its
    bytes: gRPC's `raw_input_contents` carry the same layout, one entry per input."""
    tensor["data"] = _decode(_name(tensor, index), tensor, raw)


def _decode(name: str, tensor: dict[str, Any], raw: memoryview) -> list[Any]:
    datatype = tensor.get("datatype")
    count = _element_count(name, tensor.get("shape"))
    if datatype == "BYTES":
        return _decode_bytes(name, raw, count)
    dtype = NUMPY_TYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise _bad(name, f"datatype {datatype!r} cannot be sent as binary data")
    if len(raw) != count * dtype.itemsize:
        raise _bad(
            name,
            f"binary_data_size {len(raw)} does not fit shape {tensor.get('shape')} of "
            f"{datatype} ({count} x {dtype.itemsize} bytes)",
        )
    return np.frombuffer(raw, dtype=dtype).tolist()


def _decode_bytes(name: str, raw: memoryview, count: int) -> list[str]:
    out: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if len(out) == count:
            raise _bad(name, f"binary data holds more than the shape's {count} elements")
        if offset + 4 > end:
            raise _bad(name, "a BYTES element's 4-byte length is cut off")
        length = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + length > end:
            raise _bad(name, f"element {len(out)} declares {length} bytes past the data's end")
        try:
            out.append(str(raw[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise _bad(name, f"element {len(out)} is not valid UTF-8") from None
        offset += length
    if len(out) != count:
        raise _bad(name, f"binary data holds {len(out)} elements; the shape promises {count}")
    return out


def _element_count(name: str, shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _bad(name, f"shape must be a list of at most {_MAX_DIMS} non-negative integers")
    return math.prod(shape)


def _name(tensor: Any, index: int) -> str:
    name = tensor.get("name") if isinstance(tensor, dict) else None
    return name if isinstance(name, str) else f"inputs.{index}"


def _bad(name: str, reason: str) -> BadRequest:
    return BadRequest(f"{name}: {reason}", [{"field": name, "reason": reason}])


# ---- answers ----------------------------------------------------------------------------


class BinaryChoice:
    """Which outputs go back as binary: an output's own `binary_data`, else the request's
    `binary_data_output` (default false)."""

    def __init__(self, request_parameters: Any, requested: Any) -> None:
        self.default = bool((request_parameters or {}).get("binary_data_output", False))
        self.explicit = {
            o.name: bool(flag)
            for o in requested or []
            if (flag := (o.parameters or {}).get("binary_data")) is not None
        }

    def __call__(self, name: str) -> bool:
        return self.explicit.get(name, self.default)

    @property
    def any(self) -> bool:
        return self.default or any(self.explicit.values())


def encode_answer(answer: dict[str, Any], binary: BinaryChoice) -> tuple[bytes, int | None]:
    """The answer with its binary outputs' data moved to a binary section: (body, header
    length), the length None when nothing went binary and the body is plain JSON."""
    chunks: list[bytes] = []
    for output in answer["outputs"]:
        if binary(output["name"]):
            raw = encode(output["datatype"], output.pop("data"))
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = json_response_bytes(answer)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def encode(datatype: str, data: Any) -> bytes:
    """One tensor's data as raw bytes (the binary extension's and gRPC's layout)."""
    if datatype == "BYTES":
        parts = []
        for value in data:
            item = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(len(item).to_bytes(4, "little"))
            parts.append(item)
        return b"".join(parts)
    return np.ascontiguousarray(data, dtype=NUMPY_TYPES[datatype]).tobytes()
