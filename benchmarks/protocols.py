"""What each encoding costs: KServe v1 JSON, OIP v2 JSON and OIP v2 with Triton's binary
tensors (binary inputs and outputs, as tritonclient sends them by default), against the
shipped config in one run, rounds interleaved so that a drifting machine favours none.

fraud-risk: one transaction per request, 64 connections. MiniLM (with the text extra):
8 texts per request, 16 connections, where an answer is 8 x 384 floats: JSON numbers or
float32 bytes. Every body is built by tritonclient's own request encoder from distinct
inputs; the result cache is off, so each request is decoded, validated and predicted.

    python -m benchmarks protocols [--duration-s 15] [--rounds 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    LUA,
    MODEL,
    LoadResult,
    LocalService,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)

FEATURE_TYPES = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}

# Appended to predict_v1.lua (whose `done` reports the run): each request sends its own
# body, with the binary header length where it has one.
_REQUEST = """
local n = 0
request = function()
  n = n + 1
  local k = (n % #bodies) + 1
  local h = {["Content-Type"] = "application/octet-stream"}
  if header_lengths[k] > 0 then
    h["Inference-Header-Content-Length"] = tostring(header_lengths[k])
  else
    h["Content-Type"] = "application/json"
  end
  return wrk.format("POST", path, h, bodies[k])
end
"""


def _lua_string(raw: bytes) -> str:
    """A Lua string literal holding `raw` exactly (binary included)."""
    out = []
    for b in raw:
        c = chr(b)
        if c.isalnum() or c in " {}[]:,._-+=/":
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def _script(name: str, path: str, bodies: list[tuple[bytes, int | None]]) -> Path:
    literals = ",\n".join(_lua_string(body) for body, _ in bodies)
    lengths = ", ".join(str(length or 0) for _, length in bodies)
    script = Path(tempfile.gettempdir()) / f"protocols_{name}.lua"
    script.write_text(
        f"bodies = {{\n{literals}\n}}\nheader_lengths = {{{lengths}}}\npath = {json.dumps(path)}\n"
        + LUA.read_text()
        + _REQUEST
    )
    return script


def _v2_body(
    inputs: list[tuple[str, str, np.ndarray]], outputs: list[str], binary: bool
) -> tuple[bytes, int | None]:
    import tritonclient.http as triton

    tensors = []
    for name, datatype, array in inputs:
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    # Binary: no outputs named, so tritonclient asks for every output in binary (its
    # default). JSON: every output named, each with binary_data off.
    requested = (
        None
        if binary
        else [triton.InferRequestedOutput(name, binary_data=False) for name in outputs]
    )
    body, length = triton.InferenceServerClient.generate_request_body(tensors, requested)
    return (body if isinstance(body, bytes) else body.encode()), length


def fraud_scripts(n_bodies: int = 256, seed: int = 99) -> dict[str, Path]:
    from deployments.repository.store import load_kind
    from deployments.training.fraud_data import generate

    records, _ = generate(n_bodies, seed)
    kind = load_kind("models", MODEL, "1")
    specs = kind.v2_inputs()
    outputs = [o["name"] for o in kind.v2_outputs()]
    v1 = [(json.dumps({"instances": [r]}).encode(), None) for r in records]
    v2: dict[bool, list[tuple[bytes, int | None]]] = {False: [], True: []}
    for record in records:
        inputs = [
            (s["name"], s["datatype"], np.array([record[s["name"]]], FEATURE_TYPES[s["datatype"]]))
            for s in specs
            if s["name"] in record
        ]
        for binary in (False, True):
            v2[binary].append(_v2_body(inputs, outputs, binary))
    path = f"/v2/models/{MODEL}/infer"
    return {
        "v1 json": _script("v1", f"/v1/models/{MODEL}:predict", v1),
        "v2 json": _script("v2_json", path, v2[False]),
        "v2 binary": _script("v2_binary", path, v2[True]),
    }


def text_scripts(n_bodies: int = 128, texts: int = 8) -> dict[str, Path]:
    from benchmarks.text_encoder import short_sentences

    sentences = short_sentences(n_bodies * texts)
    scripts = {}
    for binary in (False, True):
        bodies = []
        for k in range(n_bodies):
            chunk = [s.encode() for s in sentences[k * texts : (k + 1) * texts]]
            array = np.array(chunk, dtype=np.object_)
            bodies.append(_v2_body([("text", "BYTES", array)], ["embedding"], binary))
        label = "binary" if binary else "json"
        scripts[f"minilm v2 {label}"] = _script(f"text_{label}", "/v2/models/minilm/infer", bodies)
    return scripts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks protocols", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--text-connections", type=int, default=16)
    parser.add_argument("--no-text", action="store_true", help="fraud-risk only")
    parser.add_argument("--smoke", action="store_true", help="1 round of 2 s: the suite's check")
    parser.add_argument(
        "--url", help="drive a service already running (the README's command) instead"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration_s, args.rounds, args.connections, args.text_connections = 2, 1, 8, 4

    scripts = {name: (path, args.connections) for name, path in fraud_scripts().items()}
    if not args.no_text:
        try:
            scripts.update(
                {name: (path, args.text_connections) for name, path in text_scripts().items()}
            )
        except ImportError as exc:  # the text extra is not installed
            print(f"MiniLM skipped: {exc}")
    results: dict[str, list[LoadResult]] = {name: [] for name in scripts}
    service = (
        None if args.url else LocalService(variant(shipped_config(), Ingress={"cache_mode": "off"}))
    )
    url = args.url or service.url
    try:
        for script, connections in scripts.values():
            run_wrk(url, connections, 2, script=script)  # warm-up, discarded
        for _ in range(args.rounds):
            for name, (script, connections) in scripts.items():
                result = run_wrk(url, connections, args.duration_s, script=script)
                results[name].append(result)
                print(f"{name:18s} {result}")
    finally:
        if service is not None:
            service.close()

    def mean(name: str, field: str) -> float:
        return statistics.fmean(getattr(r, field) for r in results[name])

    def bad(name: str) -> int:
        return sum(r.non_2xx + r.socket_errors for r in results[name])

    rows = [
        "| encoding | connections | rps (each round) | mean rps | vs JSON | p50 ms | p99 ms | "
        "non-2xx or errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (_, connections) in scripts.items():
        json_name = "minilm v2 json" if name.startswith("minilm") else "v2 json"
        each = ", ".join(f"{r.rps:.0f}" for r in results[name])
        rows.append(
            f"| {name} | {connections} | {each} | {mean(name, 'rps'):.1f} | "
            f"{mean(name, 'rps') / mean(json_name, 'rps'):.2f}x | {mean(name, 'p50_ms'):.1f} | "
            f"{mean(name, 'p99_ms'):.1f} | {bad(name)} |"
        )
    table = (
        f"Encodings side by side, {args.rounds} rounds of {args.duration_s}s each "
        f"({time.strftime('%Y-%m-%d %H:%M')}); result cache off\n\n" + "\n".join(rows)
    )
    payload: dict[str, Any] = {"results": results, "connections": args.connections}
    write_report("protocols", payload, table, args.out)


if __name__ == "__main__":
    main()
