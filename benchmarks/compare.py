"""Ours against what users would run instead, side by side in one run on this machine.

Systems (each alone on the machine while measured, same model, same validation code):
  raw          the model's batched forward pass in-process (64 rows): the compute limit
  fastapi-1w   plain FastAPI + uvicorn, 1 worker, model run per request
  fastapi-2w   the same with 2 workers
  peers        (quick and full) the same route, body and code on other serving frameworks,
               each from its own venv (benchmarks/peers, installed on first use by
               `python -m benchmarks.peers.setup`): litserve-2w (batched), kserve-1w,
               kserve-2w, bentoml-1w, mosec (validation stage + batched model stage);
               one whose install or start fails is reported as skipped
  serve-naive  the same code as one Ray Serve deployment with default settings
  serve-fair   the same code as one deployment on the launcher's fast path (raw ASGI)
  serve-ceiling  a no-op raw handler on the fast path: the limit of any Serve app here
  serve-hops   this service's graph with no-op stages (raw ASGI ingress, caller batching, a
               Validator call and a model call per batch): what the graph's shape costs
  ours         serve_config.yaml as shipped (validation deployment, batching at the caller,
               10% shadow, metrics, 1% tracing), started the way the README's
               `inference-serve` starts it (HAProxy in front through inference-haproxy);
               result cache off so every request is computed
  ours, Python proxy        the same behind Ray's Python proxy instead of HAProxy
  ours, no caller batching  the same with one request per Validator/ModelReplica call
  ours, replicas at nice 15 the same with Ray's default worker priority (nice 15)
  ours, Ray defaults        (full mode) `serve run` with none of the settings: Python proxy,
                            user code in a separate thread, actor calls

Closed loop: a wrk concurrency sweep (v1 for all; OIP v2 for ours too). Open loop: ours at
fractions of its own closed-loop peak, constant rate, latency from the scheduled send
(benchmarks/openloop.py), then serve-hops at the same rates (the latency floor of the graph).
Writes JSON, a markdown table of ratios and two PNG plots.

    python -m benchmarks compare            # full: ~25 min, plus the peers' first install
    python -m benchmarks compare --quick    # ~10 min
    python -m benchmarks compare --quick --peers none      # FastAPI and Serve only
    python -m benchmarks compare --smoke --ours-url http://127.0.0.1:8000   # seconds, no peers
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from benchmarks.cpu import cpu_per_request
from benchmarks.harness import (
    LUA,
    ROOT,
    LocalService,
    free_port,
    mixed_script,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)
from benchmarks.openloop import run_open_loop
from benchmarks.peers import Peer, select
from benchmarks.peers import setup as peer_setup
from benchmarks.plots import plot_xy
from deployments.config import resolve_model_dir
from deployments.launch import FAST_PATH_ENV, HA_PROXY_ENV, haproxy_wrapper_env

MODEL = "fraud-risk"
MODELS = resolve_model_dir(Path("models"))
MODES = {
    "full": {
        "connections": [1, 8, 32, 64, 128],
        "duration_s": 15,
        "open_loop": [0.25, 0.5, 0.75, 1.0],
        "open_s": 15,
    },
    "quick": {"connections": [1, 16, 64], "duration_s": 6, "open_loop": [0.5, 0.9], "open_s": 10},
    "smoke": {"connections": [4], "duration_s": 2, "open_loop": [], "open_s": 2},
}


def records(n: int = 256) -> list[dict[str, Any]]:
    from deployments.training.fraud_data import generate

    return generate(n, 99)[0]


def v2_script() -> Path:
    """OIP v2 bodies for the same records: one tensor per feature, shape [1]."""
    from deployments.kinds.tabular_schema import V2_DATATYPES
    from deployments.repository.store import load_kind

    metadata = load_kind(MODELS, MODEL, "1").metadata
    bodies = []
    for record in records():
        inputs = [
            {
                "name": f.name,
                "datatype": V2_DATATYPES[f.type][0],
                "shape": [1],
                "data": [record[f.name]],
            }
            for f in metadata.features
            if f.name in record
        ]
        bodies.append("[[" + json.dumps({"inputs": inputs}) + "]]")
    path = Path(tempfile.gettempdir()) / "predict_v2_mixed.lua"
    path.write_text(
        "bodies = {\n"
        + ",\n".join(bodies)
        + "\n}\n"
        + f'path = "/v2/models/{MODEL}/infer"\n'
        + LUA.read_text()
    )
    return path


def sweep(
    url: str, connections: list[int], duration_s: int, script: Path | None = None
) -> list[dict]:
    run_wrk(url, min(connections), 2, script=script)  # warm-up, discarded
    return [asdict(run_wrk(url, c, duration_s, script=script)) for c in connections]


def raw_rows_per_s(seconds: float = 3.0) -> float:
    import numpy as np
    import torch

    from deployments.repository.store import load_kind

    torch.set_num_threads(1)
    # The replica's own runtime: verified weights, the kind's forward pass over 64 rows.
    runtime = load_kind(MODELS, MODEL, "1").load(str(MODELS), "cpu", [])
    rows = np.random.default_rng(0).normal(size=(64, runtime.width)).astype(np.float32)
    columns = runtime.prepare(runtime.example(64) | {"features": rows})
    runtime.forward(columns)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runtime.forward(columns)
        n += 64
    return n / (time.perf_counter() - start)


def start_server(
    command: list[str],
    env: dict[str, str],
    ready_url: str,
    ready_body: Any = None,
    timeout_s: float = 180,
    log: Path | None = None,
) -> subprocess.Popen:
    """Run `command` from the repository root in a process group of its own (so that
    stop_server ends every worker it forks) and wait until `ready_url` answers 200: a GET,
    or a POST of `ready_body` as JSON. Output goes to `log` when given. RuntimeError if it
    exits or is not ready in time, its process group stopped."""
    out = log.open("w") if log else None
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )
    if out:
        out.close()  # the child holds its own copy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ready_body is None:
                answer = requests.get(ready_url, timeout=5)
            else:
                answer = requests.post(ready_url, json=ready_body, timeout=5)
            if answer.status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.3)
    code = proc.poll()
    stop_server(proc)
    why = f"exited with code {code}" if code is not None else f"not ready in {timeout_s:.0f} s"
    tail = " / ".join(log.read_text().strip().splitlines()[-3:]) if log else ""
    raise RuntimeError(f"`{shlex.join(command)}` {why}" + (f" ({log}: {tail})" if log else ""))


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the server's process group, then wait for all of it, not only its leader:
    workers still exiting would take CPU from whatever is measured next. SIGKILL after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    signalled = _signal_group(proc.pid, signal.SIGTERM)
    while signalled:
        proc.poll()  # reap the leader, or the group never empties
        if time.monotonic() > deadline:
            _signal_group(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
        signalled = _signal_group(proc.pid, 0)
    proc.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Whether any process of the group was there to receive `sig` (0: only ask)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def fastapi_server(workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "benchmarks.baselines.tabular_fastapi:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning", "--no-access-log"]
    env = {"BASELINE_TORCH_THREADS": "1"}
    return start_server(command, env, f"{url}/v2/health/ready", timeout_s=120), url


def peer_server(peer: Peer, python: Path) -> tuple[subprocess.Popen, str]:
    """A peer from its own venv, importing `deployments` and `benchmarks` from this checkout."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PYTHONPATH": str(ROOT), "BASELINE_TORCH_THREADS": "1", **peer.env}
    probe = {"instances": records(1)} if peer.ready_post else None
    log = Path(tempfile.gettempdir()) / f"compare-{peer.name}.log"
    proc = start_server(peer.command(str(python), port), env, url + peer.ready_path, probe, log=log)
    return proc, url


def sweep_peers(
    peers: list[Peer], conns: list[int], dur: int, script: Path
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Each peer alone on the machine, swept like the FastAPI baseline; a peer whose
    install, start or load fails is skipped with its reason rather than ending the run."""
    closed: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    venvs: dict[str, Path | str] = {}  # one install per venv (kserve-1w and -2w share one)
    for peer in peers:
        if peer.venv not in venvs:
            try:
                venvs[peer.venv] = peer_setup.ensure(peer.venv)
            except RuntimeError as exc:
                venvs[peer.venv] = str(exc)
        python = venvs[peer.venv]
        try:
            if isinstance(python, str):
                raise RuntimeError(python)
            proc, url = peer_server(peer, python)
            try:
                closed[peer.name] = sweep(url, conns, dur, script)
            finally:
                stop_server(proc)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            skipped[peer.name] = str(exc)
            print(f"{peer.name}: skipped: {exc}", flush=True)
            continue
        print(f"{peer.name}: {[round(r['rps']) for r in closed[peer.name]]}", flush=True)
    return closed, skipped


def single_deployment_config(import_path: str) -> dict[str, Any]:
    """One application of one deployment (a baseline), on the shipped HTTP options."""
    base = shipped_config()
    return {
        "proxy_location": base["proxy_location"],
        "http_options": dict(base["http_options"]),
        "applications": [
            {
                "name": "inference",
                "route_prefix": "/",
                "import_path": import_path,
            }
        ],
    }


# What `inference-serve` runs under: its fast path and its haproxy wrapper (loopback pages,
# the client's address, JSON errors and the bounded front-door queue).
SERVE_FAST_PATH = {**FAST_PATH_ENV, **haproxy_wrapper_env()}

HOPS = "serve-hops"
# Baselines on Ray Serve: (config import path, environment). Ray's defaults for the naive
# one; the launcher's fast path for the fair one-deployment app and the no-op ceiling.
SERVE_BASELINES = {
    "serve-naive": ("benchmarks.baselines.naive_serve:app", {}),
    "serve-fair": ("benchmarks.baselines.serve_fair:fair", SERVE_FAST_PATH),
    "serve-ceiling": ("benchmarks.baselines.serve_fair:ceiling", SERVE_FAST_PATH),
    # This service's graph with no-op stages (caller batching, a Validator call and a model
    # call per batch): what the graph's shape alone costs here, the bound of any code in it.
    HOPS: ("benchmarks.baselines.serve_fair:hops", SERVE_FAST_PATH),
}


def ours_config() -> dict[str, Any]:
    return variant(shipped_config(), Ingress={"cache_mode": "off"})


def lever_variants(full: bool) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    variants = {
        "ours, Python proxy": (ours_config(), {**FAST_PATH_ENV, HA_PROXY_ENV: "0"}),  # no haproxy
        "ours, no caller batching": (
            variant(ours_config(), Ingress={"caller_batch_max_requests": 1}),
            SERVE_FAST_PATH,
        ),
        "ours, replicas at nice 15": (
            ours_config(),
            {**SERVE_FAST_PATH, "RAY_worker_niceness": "15"},
        ),
    }
    if full:
        variants["ours, Ray defaults"] = (ours_config(), {HA_PROXY_ENV: "0"})
    return variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compare", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true")
    group.add_argument("--smoke", action="store_true")
    parser.add_argument("--ours-url", help="measure a service already running here instead")
    parser.add_argument(
        "--peers",
        default="all",
        help="peer frameworks for quick and full modes: all (default), none, or a comma list "
        "of names (litserve-2w, kserve-1w, kserve-2w, bentoml-1w, mosec) or frameworks (kserve)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    try:
        peers = [] if args.smoke else select(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = MODES[mode]
    conns, dur = plan["connections"], plan["duration_s"]
    script = mixed_script()
    results: dict[str, Any] = {"mode": mode, "connections": conns, "duration_s": dur}

    results["raw_rows_per_s"] = raw_rows_per_s(1.0 if args.smoke else 3.0)
    print(f"raw forward pass: {results['raw_rows_per_s']:.0f} rows/s", flush=True)
    closed: dict[str, list[dict]] = {}
    for workers in [1] if args.smoke else [1, 2]:
        proc, url = fastapi_server(workers)
        try:
            closed[f"fastapi-{workers}w"] = sweep(url, conns, dur, script)
        finally:
            stop_server(proc)
        print(
            f"fastapi-{workers}w: {[round(r['rps']) for r in closed[f'fastapi-{workers}w']]}",
            flush=True,
        )
    peer_rows, results["skipped_peers"] = sweep_peers(peers, conns, dur, script)
    closed.update(peer_rows)

    for name, (import_path, env) in {} if args.smoke else SERVE_BASELINES.items():
        service = LocalService(single_deployment_config(import_path), env=env)
        try:
            closed[name] = sweep(service.url, conns, dur, script)
        finally:
            service.close()
        print(f"{name}: {[round(r['rps']) for r in closed[name]]}", flush=True)

    service = None
    ours_url = args.ours_url
    if ours_url is None:
        service = LocalService(ours_config(), env=SERVE_FAST_PATH)
        ours_url = service.url
        results["ours_startup_s"] = service.startup_s
    try:
        closed["ours"] = sweep(ours_url, conns, dur, script)
        print(f"ours: {[round(r['rps']) for r in closed['ours']]}", flush=True)
        # Where a request's CPU goes, by process, at the sweep's highest concurrency.
        _, results["ours_cpu_ms_per_request"] = cpu_per_request(
            lambda: run_wrk(ours_url, max(conns), dur, script=script), lambda r: r.requests
        )
        print(f"ours, CPU ms per request: {results['ours_cpu_ms_per_request']}", flush=True)
        if not args.smoke:
            closed["ours (OIP v2)"] = sweep(ours_url, conns, dur, v2_script())
        peak = max(r["rps"] for r in closed["ours"])
        rates = plan["open_loop"] or [10.0 / max(peak, 1e-9)]
        # Bodies that never repeat within a run, as in the closed loop.
        bodies = [{"instances": [r]} for r in records(int(peak * max(rates) * plan["open_s"]) + 16)]

        def open_loop(url: str, rates_rps: list[float]) -> list[dict[str, Any]]:
            return [
                asdict(run_open_loop(f"{url}/v1/models/{MODEL}:predict", bodies, r, plan["open_s"]))
                for r in rates_rps
            ]

        results["open_loop"] = open_loop(ours_url, [peak * f for f in rates])
    finally:
        if service is not None:
            service.close()
    if not args.smoke:
        # The same offered rates against the graph with nothing in it.
        import_path, env = SERVE_BASELINES[HOPS]
        service = LocalService(single_deployment_config(import_path), env=env)
        try:
            results["open_loop_hops"] = open_loop(
                service.url, [o["rate_rps"] for o in results["open_loop"]]
            )
        finally:
            service.close()
    # The levers, one at a time: each variant is ours with one of them taken away.
    variants = {} if args.smoke else lever_variants(full=mode == "full")
    for name, (config, env) in variants.items():
        service = LocalService(config, env=env)
        try:
            closed[name] = sweep(service.url, conns, dur, script)
        finally:
            service.close()
        print(f"{name}: {[round(r['rps']) for r in closed[name]]}", flush=True)
    results["closed_loop"] = closed
    report(results, args.out)


def report(results: dict[str, Any], out: Path) -> None:
    closed = results["closed_loop"]
    conns = results["connections"]
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    plot_xy(
        out / f"compare-throughput-{stamp}.png",
        "Throughput against concurrency (closed loop, wrk; log scale)",
        "connections",
        "requests/s",
        {name: (conns, [r["rps"] for r in rows]) for name, rows in closed.items()},
        logy=True,
    )
    ol = results.get("open_loop", [])
    hops = results.get("open_loop_hops", [])
    if ol:
        plot_xy(
            out / f"compare-latency-{stamp}.png",
            "latency against offered load (open loop, from the scheduled send)",
            "offered requests/s",
            "latency ms",
            {
                **{
                    f"ours {q}": ([o["rate_rps"] for o in ol], [o[f"{q}_ms"] for o in ol])
                    for q in ("p50", "p90", "p99")
                },
                **{
                    f"{HOPS} {q}": ([o["rate_rps"] for o in hops], [o[f"{q}_ms"] for o in hops])
                    for q in ("p50", "p99")
                    if hops
                },
            },
            logy=True,
        )
    lines = [
        f"Mode {results['mode']}, {results['duration_s']} s per point "
        f"({time.strftime('%Y-%m-%d %H:%M')}); raw forward pass "
        f"{results['raw_rows_per_s']:.0f} rows/s; "
        f"ours deploy->ready {results.get('ours_startup_s', float('nan')):.1f} s",
        "",
        "| system | " + " | ".join(f"rps @{c}" for c in conns) + " | p99 ms @max | errors |",
        "| --- | " + " | ".join("---" for _ in conns) + " | --- | --- |",
    ]
    for name, rows in closed.items():
        errors = sum(r["non_2xx"] + r["socket_errors"] for r in rows)
        rps = " | ".join(f"{r['rps']:.1f}" for r in rows)
        lines.append(f"| {name} | {rps} | {rows[-1]['p99_ms']:.0f} | {errors} |")
    baselines = [n for n in closed if not n.startswith("ours")]
    lines += [
        "",
        "| best rps over the sweep, ratio | "
        + " | ".join(f"÷ {b}" for b in baselines)
        + " | rows/s ÷ raw forward |",
        "| --- | " + " | ".join("---" for _ in baselines) + " | --- |",
    ]
    for name, rows in closed.items():
        if not name.startswith("ours"):
            continue
        best = max(r["rps"] for r in rows)
        ratios = " | ".join(f"{best / max(r['rps'] for r in closed[b]):.3f}" for b in baselines)
        lines.append(f"| {name} | {ratios} | {best / results['raw_rows_per_s']:.4f} |")
    lines += [
        "",
        f"| open loop, offered req/s | ours: p50 / p99 ms, ok/sent | {HOPS}: p50 / p99 ms |",
        "| --- | --- | --- |",
    ]
    for o, h in zip(ol, hops or [None] * len(ol), strict=True):
        bound = f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f}" if h else "-"
        lines.append(
            f"| {o['rate_rps']:.1f} | {o['p50_ms']:.1f} / {o['p99_ms']:.1f}, "
            f"{o['ok']}/{o['sent']} | {bound} |"
        )
    if cpu := results.get("ours_cpu_ms_per_request"):
        lines += ["", "| ours: CPU ms per request, by process | ms |", "| --- | --- |"]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in cpu.items()]
    if skipped := results.get("skipped_peers"):
        lines += ["", *(f"- peer {name} skipped: {why}" for name, why in skipped.items())]
    write_report("compare", results, "\n".join(lines), out)


if __name__ == "__main__":
    main()
