"""The Ingress's own Python per request, without Ray: what our HTTP adapter, admission,
telemetry, data plane, caller batching and mirroring cost, apart from Serve's calls and the
stages' work.

The real ASGI app (`roles/http.py`) and data plane run in this process, in front of Validator,
ModelReplica and ShadowReplica handles that answer at once with a canned batch of the right
shape. Requests (distinct fraud-risk records, v1) go straight through ASGI, `--concurrency` at
a time; the result is this process's CPU time per request. The empty graph's ingress
(`serve-hops`: raw ASGI, the same caller batching, stages that do nothing) is measured beside
it in the same harness. Ray's metric calls need a Ray worker and are left out here (a few
microseconds each, two per request at the ingress).

Far less noisy than a load run on a shared 2-core machine, so a change to the ingress's hot
path can be judged by this before a `compare` run confirms it.

    python -m benchmarks ingress_cpu [--requests 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.compare import MODEL, MODELS, records
from benchmarks.harness import write_report
from deployments.admission.auth import BearerAuth
from deployments.config import IngressConfig
from deployments.kinds.base import Answer, Batch
from deployments.repository.store import load_kind
from deployments.roles.dataplane import DataPlane, ServedModel
from deployments.roles.http import build_http_app
from deployments.roles.validator import decode
from deployments.shadow.mirror import Mirror
from deployments.telemetry.request_telemetry import TelemetryTarget

PREDICT_PATH = f"/v1/models/{MODEL}:predict"
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class _Answers:
    """A stage's handle whose every method answers at once: `handle.<method>.remote(...)`."""

    def __init__(self, **methods: Callable[..., Any]) -> None:
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        method = self._methods[name]

        class _Remote:
            @staticmethod
            async def remote(*args: Any) -> Any:
                return method(*args)

        return _Remote


class _NoMetrics:
    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def ours() -> Asgi:
    kind = load_kind(MODELS, MODEL, "1")
    part = decode(kind, "v1", records(1), 1024)
    runtime = kind.load(str(MODELS), "cpu", [])
    outputs = runtime.forward(runtime.prepare(part))

    def validate_many(requests: list[Any]) -> Any:
        return Batch.of([part] * len(requests)), list(range(len(requests))), {}

    def predict_many(batch: Batch, _traces: Any) -> Answer:
        n = len(batch)
        return Answer(Batch.of([outputs] * n), list(range(n)), {}, "1", 0.5, "replica")

    config = IngressConfig()
    served = ServedModel(
        kind=kind,
        versions=["1"],
        model=_Answers(predict_many=predict_many, ready=lambda: True),
        validator=_Answers(validate_many=validate_many, ready=lambda: True),
        mirror=Mirror(_Answers(mirror_many=lambda batch: None), config),
    )
    plane = DataPlane({MODEL: served}, _NoMetrics())
    app = build_http_app(plane, BearerAuth({}), 1 << 20)
    app.state.telemetry = TelemetryTarget(_NoMetrics(), {MODEL: "1"}, config.trace_sampling_ratio)
    return app


def empty_graph() -> Asgi:
    from benchmarks.baselines.serve_fair import _CONSTANT, _asgi, tabular_batcher
    from benchmarks.baselines.tabular import PREDICT_PATH as HOPS_PATH

    async def flush(bodies: list[bytes]) -> list[bytes]:
        await asyncio.sleep(0)  # a call to the Validator, which parses
        rows = [orjson.loads(body) for body in bodies]
        await asyncio.sleep(0)  # a call to the model, which answers a constant
        return [_CONSTANT for _ in rows]

    batcher = tabular_batcher(flush)

    async def predict(body: bytes) -> tuple[int, bytes]:
        return 200, await batcher.submit(body)

    app = _asgi(predict)

    async def at_our_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app({**scope, "path": HOPS_PATH}, receive, send)

    return at_our_path


def drive(app: Asgi, bodies: list[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    """CPU seconds per request over `bodies`, and the statuses answered."""
    statuses: dict[int, int] = {}

    async def one(body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": PREDICT_PATH,
            "raw_path": PREDICT_PATH.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "http_version": "1.1",
            "scheme": "http",
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    async def run(chunk: list[bytes]) -> None:
        queue = iter(chunk)

        async def connection() -> None:
            for body in queue:
                await one(body)

        await asyncio.gather(*(connection() for _ in range(concurrency)))

    async def main() -> float:
        await run(bodies[:concurrency])  # first calls: imports, caches
        statuses.clear()
        started = time.process_time()
        await run(bodies[concurrency:])
        return (time.process_time() - started) / max(1, len(bodies) - concurrency)

    return asyncio.run(main()), statuses


def bodies_of(n: int) -> list[bytes]:
    """Requests that never repeat: each record's amount drawn anew."""
    base = records(256)
    rng = random.Random(7)
    return [
        orjson.dumps(
            {"instances": [{**base[i % 256], "amount_usd": round(rng.uniform(1, 5e3), 2)}]}
        )
        for i in range(n)
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingress_cpu", description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    bodies = bodies_of(args.requests + args.concurrency)
    results = {}
    for name, build in (("ours", ours), ("serve-hops ingress", empty_graph)):
        cpu_s, statuses = drive(build(), bodies, args.concurrency)
        results[name] = {"cpu_us_per_request": round(cpu_s * 1e6, 1), "statuses": statuses}
    rows = [
        f"| {name} | {r['cpu_us_per_request']} | {r['statuses']} |" for name, r in results.items()
    ]
    table = (
        f"The ingress's own Python per request, in-process, {args.requests} requests "
        f"{args.concurrency} at a time ({time.strftime('%Y-%m-%d %H:%M')})\n\n"
        "| ingress | CPU µs per request | statuses |\n| --- | --- | --- |\n" + "\n".join(rows)
    )
    write_report("ingress_cpu", results, table, args.out)
