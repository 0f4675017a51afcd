"""The text model served by our graph against its compute limit and a per-request baseline,
side by side in one run on the same cores.

1. raw: the batched forward pass alone (TextEncoder, batch 32, no HTTP, no Ray): the limit;
2. fastapi: plain FastAPI + uvicorn (1 worker) encoding each request on its own;
3. served: this service (shipped serve_config.yaml: validation, 10% int8 shadow, metrics,
   1% tracing), result cache off so every text is computed: the minilm model's Ingress,
   ModelReplica-minilm and ShadowReplica-minilm deployments.

2 and 3 are driven by wrk with the same bodies (`--texts-per-request` short sentences each),
first closed-loop at `--connections`, then paced at half the served peak (wrk's per-request
delay) for the p99 at half load. Reports items/s ratios, the shadow's agreement, JSON + md.

    python -m benchmarks text [--duration-s 15] [--connections 32] [--texts-per-request 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.harness import (
    LUA,
    LocalService,
    free_port,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)
from benchmarks.text_encoder import short_sentences, time_forward

MODEL = "minilm"
PATH = f"/v1/models/{MODEL}:predict"


def text_script(texts_per_request: int, n_bodies: int = 128, pace_ms: float = 0) -> Path:
    sentences = short_sentences(n_bodies * texts_per_request + 7)
    bodies = []
    for b in range(n_bodies):
        chunk = sentences[b * texts_per_request : (b + 1) * texts_per_request]
        bodies.append("[[" + json.dumps({"instances": [{"text": t} for t in chunk]}) + "]]")
    pace = f"\ndelay = function() return {pace_ms:.1f} end\n" if pace_ms else ""
    path = Path(tempfile.gettempdir()) / f"text_{texts_per_request}_{pace_ms:.0f}.lua"
    path.write_text(
        "bodies = {\n"
        + ",\n".join(bodies)
        + "\n}\n"
        + f'path = "{PATH}"\n'
        + LUA.read_text()
        + pace
    )
    return path


def raw_items_per_s(seconds: float) -> float:
    import torch

    from deployments.kinds.text.encoder import TextEncoder

    torch.set_num_threads(2)
    encoder = TextEncoder()
    texts = short_sentences(32)
    return max(time_forward(encoder, texts, seconds / 3) for _ in range(3))


def served_config(torch_threads: int | None, replicas: int | None) -> dict[str, Any]:
    """serve_config.yaml with the result cache off and the text model required (not
    `optional`: a missing `text` extra fails the deploy instead of serving without it)."""
    config = variant(shipped_config(), Ingress={"cache_mode": "off"})
    specs = [s for s in config["applications"][0]["args"]["models"] if s["name"] == MODEL]
    if not specs:
        raise SystemExit(f"serve_config.yaml serves no model {MODEL!r}")
    spec = specs[0]
    spec["optional"] = False
    replica = spec.setdefault("replica", {})
    if replicas is not None:
        replica["num_replicas"] = replicas
    if torch_threads is not None:
        replica["torch_threads"] = torch_threads
    return config


def start_fastapi(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.baselines.text_fastapi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "BASELINE_TORCH_THREADS": "2"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            body = {"instances": [{"text": "ready?"}]}
            if requests.post(f"http://127.0.0.1:{port}{PATH}", json=body, timeout=5).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the FastAPI baseline did not start within 120 s")


def measure(url: str, k: int, connections: int, duration_s: int) -> dict:
    run_wrk(url, min(connections, 4), 3, script=text_script(k))  # warm-up
    peak = run_wrk(url, connections, duration_s, script=text_script(k))
    # Half load: each connection waits so the offered rate is half the measured peak.
    pace_ms = connections * 1000 / max(peak.rps / 2, 0.1)
    half = run_wrk(url, connections, duration_s, script=text_script(k, pace_ms=pace_ms))
    return {
        "texts_per_request": k,
        "rps": peak.rps,
        "items_per_s": peak.rps * k,
        "p50_ms": peak.p50_ms,
        "p99_ms": peak.p99_ms,
        "errors": peak.non_2xx + peak.socket_errors,
        "half_load_rps": half.rps,
        "half_load_p99_ms": half.p99_ms,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks text", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--texts-per-request", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help=f"torch threads of each {MODEL} replica: its spec's replica.torch_threads "
        "(default: as shipped)",
    )
    parser.add_argument(
        "--encoder-replicas",
        type=int,
        default=None,
        help=f"replicas of ModelReplica-{MODEL}: its spec's replica.num_replicas "
        "(default: as shipped)",
    )
    args = parser.parse_args(argv)

    raw = raw_items_per_s(6.0)
    print(f"raw batched forward pass (batch 32, 2 threads): {raw:.1f} items/s", flush=True)

    port = free_port()
    proc = start_fastapi(port)
    try:
        fastapi = {
            k: measure(f"http://127.0.0.1:{port}", k, args.connections, args.duration_s)
            for k in args.texts_per_request
        }
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"fastapi: {fastapi}", flush=True)

    config = served_config(args.torch_threads, args.encoder_replicas)
    service = LocalService(config)
    try:
        served = {
            k: measure(service.url, k, args.connections, args.duration_s)
            for k in args.texts_per_request
        }
        shadow = requests.get(f"{service.url}/v1/shadow/report?model={MODEL}", timeout=10).json()
    finally:
        service.close()
    print(f"served: {served}", flush=True)

    rows = [
        "| texts/request | served items/s | ÷ raw forward | fastapi items/s | served ÷ fastapi "
        "| served p99 ms (peak) | served p99 ms (half load) | fastapi p99 ms (half load) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in args.texts_per_request:
        s, f = served[k], fastapi[k]
        rows.append(
            f"| {k} | {s['items_per_s']:.1f} | {s['items_per_s'] / raw:.2f} | "
            f"{f['items_per_s']:.1f} | {s['items_per_s'] / f['items_per_s']:.2f} | "
            f"{s['p99_ms']:.0f} | {s['half_load_p99_ms']:.0f} | {f['half_load_p99_ms']:.0f} |"
        )
    table = (
        f"Text model (MiniLM), {args.connections} connections, {args.duration_s}s per point "
        f"({time.strftime('%Y-%m-%d %H:%M')}); raw batched forward pass {raw:.1f} items/s; "
        f"served encoder torch threads: {args.torch_threads or 'as shipped'}, "
        f"replicas: {args.encoder_replicas or 'as shipped'}; "
        f"int8 shadow agreement {shadow.get('agreement')} over "
        f"{shadow.get('compared_rows')} rows "
        f"(cosine p50 <= {(shadow.get('metric_quantiles') or {}).get('p50')})"
        "\n\n" + "\n".join(rows)
    )
    write_report(
        "text",
        {"raw_items_per_s": raw, "fastapi": fastapi, "served": served, "shadow": shadow},
        table,
        args.out,
    )


if __name__ == "__main__":
    main()
