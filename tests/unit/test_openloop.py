"""The benchmarks' open-loop client against a real local HTTP server: statuses counted,
keep-alive connections reused, a send never waiting for an answer, timeouts bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import pytest

from benchmarks.openloop import run_open_loop


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    delay_s = 0.0
    serial: threading.Lock | None = None  # set: one request at a time, across connections

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        if self.serial is not None:
            with self.serial:
                time.sleep(self.delay_s)
        else:
            time.sleep(self.delay_s)
        status = 503 if self.path == "/busy" else 200
        answer = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def _serve(delay_s: float = 0.0, serial: bool = False) -> Iterator[HTTPServer]:
    lock = threading.Lock() if serial else None
    handler = type("Handler", (_Handler,), {"delay_s": delay_s, "serial": lock})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.connections = 0  # type: ignore[attr-defined]
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    yield from _serve()


def _url(server: HTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_every_request_is_answered_over_few_kept_alive_connections(server: HTTPServer) -> None:
    bodies = [{"i": i} for i in range(100)]
    result = run_open_loop(_url(server, "/ok"), bodies, rate_rps=200, duration_s=0.5)
    assert result.sent == result.ok == 100
    assert result.status_counts == {"200": 100}
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    # Every body went out once, in order; answers came back on connections used again.
    assert server.bodies == [f'{{"i": {i}}}'.encode() for i in range(100)]  # type: ignore[attr-defined]
    assert server.connections < 20  # type: ignore[attr-defined]


def test_refusals_are_counted_by_status(server: HTTPServer) -> None:
    result = run_open_loop(_url(server, "/busy"), [{}], rate_rps=100, duration_s=0.2)
    assert result.status_counts == {"503": 20}
    assert result.ok == 0 and result.errors == 20


def test_a_connection_the_server_closes_is_not_used_again(server: HTTPServer) -> None:
    result = run_open_loop(_url(server, "/close"), [{}], rate_rps=100, duration_s=0.2)
    assert result.status_counts == {"200": 20}
    assert server.connections == 20  # type: ignore[attr-defined]


def test_a_slow_server_does_not_delay_the_sends_and_its_queue_shows_in_the_latency() -> None:
    # One request at a time, 50 ms each, offered 40/s for 0.5 s: the server needs 1 s.
    for slow in _serve(delay_s=0.05, serial=True):
        bodies = [{"i": i} for i in range(20)]
        result = run_open_loop(_url(slow, "/ok"), bodies, rate_rps=40, duration_s=0.5)
        assert result.ok == 20
        # The sends did not wait for answers: each went out on a connection of its own.
        assert slow.connections > 10  # type: ignore[attr-defined]
        # Latency counts from the scheduled send, so the server's queue is in it.
        assert result.max_ms > 400


def test_answers_later_than_the_timeout_count_as_timeouts() -> None:
    for slow in _serve(delay_s=1.0):
        started = time.monotonic()
        result = run_open_loop(_url(slow, "/ok"), [{}], 20, 0.2, timeout_s=0.2)
        assert result.status_counts == {"TimeoutError": 4}
        assert time.monotonic() - started < 0.9
