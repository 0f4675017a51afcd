"""Open-loop load at a constant rate, with honest latency accounting.

Requests are sent on a fixed schedule whatever the server does (a slow answer does not delay
the next send), and each latency is measured from the request's *scheduled* start, so a
stalled server shows up in the percentiles instead of hiding (no coordinated omission).

The client is lean on purpose: on two cores it shares the machine with the server it
measures, so its own CPU per request is taken from the server's latency. Requests are encoded
once up front and written over keep-alive HTTP/1.1 connections (a new one whenever none is
idle, so a slow server never delays a send), answers parsed by httptools, on uvloop: less
than half the CPU per request of the aiohttp client it replaced (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
import numpy as np
import uvloop


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


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer's status handed to the
    waiting future once the whole body has arrived."""

    def __init__(self, idle: list[_Connection]) -> None:
        self._idle = idle
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[int]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())
        if self._parser.should_keep_alive():
            self._idle.append(self)
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _encode(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _run(
    url: str,
    bodies: list[bytes],
    rate_rps: float,
    duration_s: float,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    requests = [_encode(url, body, sent_headers) for body in bodies]
    idle: list[_Connection] = []
    open_connections: list[_Connection] = []
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def connection() -> _Connection:
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        _, conn = await loop.create_connection(lambda: _Connection(idle), host, port)
        open_connections.append(conn)
        return conn

    async def one(request: bytes, scheduled: float) -> None:
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await connection()
                key = str(await conn.send(request))
        except TimeoutError:
            key = "TimeoutError"
            if conn is not None:
                conn.close()  # an answer may still come; this connection is not reused
        except (OSError, httptools.HttpParserError) as exc:
            key = type(exc).__name__
        latencies.append((time.perf_counter() - scheduled) * 1000)
        statuses[key] = statuses.get(key, 0) + 1

    interval = 1.0 / rate_rps
    total = int(rate_rps * duration_s)
    tasks = []
    start = time.perf_counter()
    for i, request in zip(range(total), itertools.cycle(requests), strict=False):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(request, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in open_connections:
        conn.close()
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
    return uvloop.run(_run(url, encoded, rate_rps, duration_s, timeout_s, headers))
