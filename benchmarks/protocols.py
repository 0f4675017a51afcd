"""What each encoding costs: KServe v1 JSON, OIP v2 JSON, OIP v2 with Triton's binary
tensors (binary inputs and outputs, as tritonclient sends them by default) and OIP v2 over
gRPC, against the shipped config in one run, rounds interleaved so that a drifting machine
favours none.

fraud-risk: one transaction per request, 64 connections. MiniLM (with the text extra):
8 texts per request, 16 connections, where an answer is 8 x 384 floats: JSON numbers or
float32 bytes. Every body is built by tritonclient's own request encoder; the result cache
is off, so each request is decoded, validated and predicted. HTTP load is wrk's, cycling
through distinct bodies. gRPC load is h2load's (nghttp2-client; one stream per connection,
like wrk), which sends one body over and over (with the cache off that costs the same as
distinct ones) and cannot read gRPC's status: the model's own statistics count the
requests it answered, and any shortfall against h2load's count is reported as errors.

    python -m benchmarks protocols [--duration-s 15] [--rounds 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
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
        if b < 128 and (c.isalnum() or c in " {}[]:,._-+=/"):
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


# ---- gRPC, with h2load ----------------------------------------------------------------------


def _grpc_body(model: str, inputs: list[tuple[str, str, np.ndarray]]) -> Path:
    """One ModelInferRequest as a gRPC message frame, as tritonclient.grpc builds it."""
    import tritonclient.grpc as triton
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, array in inputs:
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        request.inputs.append(tensor._get_tensor())
        request.raw_input_contents.append(tensor._get_content())
    message = request.SerializeToString()
    path = Path(tempfile.gettempdir()) / f"protocols_grpc_{model}.bin"
    path.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    return path


def grpc_bodies(text: bool) -> dict[str, tuple[str, Path]]:
    from benchmarks.text_encoder import short_sentences
    from deployments.repository.store import load_kind
    from deployments.training.fraud_data import generate

    (record,), _ = generate(1, 7)
    specs = load_kind("models", MODEL, "1").v2_inputs()
    fraud = [
        (s["name"], s["datatype"], np.array([record[s["name"]]], FEATURE_TYPES[s["datatype"]]))
        for s in specs
        if s["name"] in record
    ]
    out = {"v2 grpc": (MODEL, _grpc_body(MODEL, fraud))}
    if text:
        texts = np.array([t.encode() for t in short_sentences(8)], dtype=np.object_)
        out["minilm v2 grpc"] = ("minilm", _grpc_body("minilm", [("text", "BYTES", texts)]))
    return out


def _grpc_answers(url: str, model: str) -> dict[str, float]:
    """The ingress's count of ModelInfer answers for `model`, by status, from its /metrics
    (summed over replicas): what h2load cannot read from gRPC trailers."""
    import requests

    text = requests.get(f"{url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("ray_inference_requests_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        if 'endpoint="grpc ModelInfer"' in labels and f'model="{model}"' in labels:
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
    return counts


def run_h2load(
    url: str, address: str, model: str, body: Path, connections: int, duration_s: int
) -> LoadResult:
    h2load = shutil.which("h2load")
    if h2load is None:
        raise SystemExit("h2load is needed for the gRPC rows: apt-get install nghttp2-client")
    log = Path(tempfile.mkdtemp()) / "h2load.log"
    before = _grpc_answers(url, model)
    subprocess.run(
        [
            h2load,
            f"-c{connections}",
            "-m1",
            f"-t{min(2, connections)}",
            f"-D{duration_s}",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(body),
            f"--log-file={log}",
            f"http://{address}/inference.GRPCInferenceService/ModelInfer",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration_s + 60,
    )
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    latencies_ms = np.array([int(r[2]) / 1000 for r in rows], dtype=np.float64)
    statuses = [r[1] for r in rows]
    ok_http = sum(1 for s in statuses if s == "200")

    def answered() -> dict[str, float]:
        after = _grpc_answers(url, model)
        return {k: after[k] - before.get(k, 0.0) for k in after}

    # Replicas export their counters every metrics_report_interval_ms (10 s by default):
    # wait until every answer h2load saw is counted, for at most 30 s.
    deadline = time.monotonic() + 30
    while sum(answered().values()) < ok_http and time.monotonic() < deadline:
        time.sleep(1)
    counted = answered()
    ok = counted.get("200", 0.0)
    errors = int(max(0.0, ok_http - ok)) + (len(rows) - ok_http)
    return LoadResult(
        connections=connections,
        duration_s=float(duration_s),
        requests=len(rows),
        rps=len(rows) / duration_s,
        p50_ms=float(np.percentile(latencies_ms, 50)) if len(rows) else 0.0,
        p99_ms=float(np.percentile(latencies_ms, 99)) if len(rows) else 0.0,
        non_2xx=errors,
        socket_errors=0,
    )


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
    parser.add_argument("--grpc-address", help="with --url: where its gRPC listens")
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
    grpc = grpc_bodies(text=any(name.startswith("minilm") for name in scripts))
    service = (
        None if args.url else LocalService(variant(shipped_config(), Ingress={"cache_mode": "off"}))
    )
    url = args.url or service.url
    grpc_address = args.grpc_address or (service.grpc_address if service else None)
    if grpc_address is None:
        print("gRPC rows skipped: --url given without --grpc-address")
        grpc = {}
    results: dict[str, list[LoadResult]] = {name: [] for name in [*scripts, *grpc]}
    try:
        for script, connections in scripts.values():
            run_wrk(url, connections, 2, script=script)  # warm-up, discarded
        for _ in range(args.rounds):
            for name, (script, connections) in scripts.items():
                result = run_wrk(url, connections, args.duration_s, script=script)
                results[name].append(result)
                print(f"{name:18s} {result}")
            for name, (model, body) in grpc.items():
                connections = args.text_connections if model == "minilm" else args.connections
                result = run_h2load(url, grpc_address, model, body, connections, args.duration_s)
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
    connections_of = {name: c for name, (_, c) in scripts.items()}
    for name, (model, _) in grpc.items():
        connections_of[name] = args.text_connections if model == "minilm" else args.connections
    for name, connections in connections_of.items():
        if name not in results or not results[name]:
            continue
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
