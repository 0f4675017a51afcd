"""Open-loop load at a constant rate, with honest latency accounting.

Requests are sent on a fixed schedule whatever the server does (a slow answer does not delay
the next send), and each latency is measured from the request's *scheduled* start, so a
stalled server shows up in the percentiles instead of hiding (no coordinated omission).
asyncio + aiohttp: fine at the few hundred requests/s this is used for here; a Python client
on two cores measures itself well before a thousand, which is why the closed-loop sweep uses
wrk.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OpenLoopResult:
    rate_rps: float
    duration_s: float
    sent: int
    ok: int
    errors: int
    status_counts: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


async def _run(
    url: str,
    bodies: list[bytes],
    rate_rps: float,
    duration_s: float,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    interval = 1.0 / rate_rps
    total = int(rate_rps * duration_s)
    sent_headers = {"content-type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(body: bytes, scheduled: float) -> None:
            try:
                async with session.post(url, data=body, headers=sent_headers) as resp:
                    await resp.read()
                    key = str(resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
            latencies.append((time.perf_counter() - scheduled) * 1000)
            statuses[key] = statuses.get(key, 0) + 1

        start = time.perf_counter()
        tasks = []
        for i, body in zip(range(total), itertools.cycle(bodies), strict=False):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    arr = np.array(latencies) if latencies else np.array([0.0])
    ok = statuses.get("200", 0)
    return OpenLoopResult(
        rate_rps=rate_rps,
        duration_s=elapsed,
        sent=total,
        ok=ok,
        errors=total - ok,
        status_counts=statuses,
        p50_ms=float(np.percentile(arr, 50)),
        p90_ms=float(np.percentile(arr, 90)),
        p99_ms=float(np.percentile(arr, 99)),
        max_ms=float(arr.max()),
    )


def run_open_loop(
    url: str,
    bodies: list[dict[str, Any]],
    rate_rps: float,
    duration_s: float,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    encoded = [json.dumps(b).encode() for b in bodies]
    return asyncio.run(_run(url, encoded, rate_rps, duration_s, timeout_s, headers))
