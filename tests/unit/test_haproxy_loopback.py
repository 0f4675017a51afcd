"""The haproxy wrapper: Ray's stats and metrics pages moved to loopback, the client's address
forwarded, haproxy's own errors answered as this service's JSON, and the front door's queue
bounded in length and time. The last two are checked against a real haproxy."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from deployments.haproxy_loopback import (
    bounded_config,
    error_pages,
    front_door_maxconn,
    loopback_config,
    real_binary,
    rewrite_in_place,
)
from tests.support import free_port, wait_until

# The sections as Ray Serve's template writes them (ray/serve/_private/haproxy_templates.py).
RAY_CONFIG = """global
    stats socket /tmp/x/admin.sock mode 666 level admin expose-fd listeners
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind *:8000
    mode http
backend b1
    server s1 127.0.0.1:35001 check
listen stats
  bind *:8404
  stats enable
"""


def test_only_the_stats_and_metrics_binds_move_to_loopback() -> None:
    out = loopback_config(RAY_CONFIG)
    assert "    bind 127.0.0.1:9101\n" in out
    assert "  bind 127.0.0.1:8404\n" in out
    assert "    bind *:8000\n" in out, "the front door stays where http_options.host says"
    assert "server s1 127.0.0.1:35001 check" in out
    assert loopback_config(out) == out, "idempotent"
    assert len(out.splitlines()) == len(RAY_CONFIG.splitlines()) + 1


def test_the_front_door_passes_the_client_address_on_once() -> None:
    out = loopback_config(RAY_CONFIG)
    front = out.split("frontend http_frontend\n")[1].split("backend")[0]
    assert front.splitlines()[:2] == ["    bind *:8000", "    option forwardfor"]
    assert out.count("option forwardfor") == 1
    assert loopback_config(out).count("option forwardfor") == 1


def test_the_grpc_front_door_passes_the_client_address_on_too() -> None:
    config = (
        RAY_CONFIG + "frontend grpc_frontend\n    bind 127.0.0.1:8001 proto h2\n    mode http\n"
    )
    out = loopback_config(config)
    grpc_front = out.split("frontend grpc_frontend\n")[1]
    assert grpc_front.splitlines()[:2] == [
        "    bind 127.0.0.1:8001 proto h2",
        "    option forwardfor",
    ]
    assert out.count("option forwardfor") == 2
    assert loopback_config(out) == out


def test_the_file_is_rewritten_in_place(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    rewrite_in_place(config)
    assert config.read_text() == bounded_config(loopback_config(RAY_CONFIG), tmp_path, 512, 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "haproxy.cfg",
        "haproxy.cfg.lock",
        "serve-timeout.http",
        "serve-unavailable.http",
    ]


def test_the_wrapper_execs_the_real_binary_with_ray_s_arguments(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    # A stand-in for haproxy that prints the argv it was given and the pid it runs as.
    fake = tmp_path / "haproxy"
    fake.write_text('#!/bin/sh\necho "$$ $*"\n')
    fake.chmod(0o755)
    env = {
        **os.environ,
        "INFERENCE_HAPROXY_REAL_BINARY": str(fake),
        "RAY_SERVE_HAPROXY_BINARY_PATH": "/somewhere/inference-haproxy",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.haproxy_loopback", "-db", "-f", str(config), "-dR"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    pid, argv = out.split(" ", 1)
    assert int(pid) == proc.pid, "exec, not a child: the pid Ray started is haproxy's"
    assert argv.split() == ["-db", "-f", str(config), "-dR"]
    assert "bind 127.0.0.1:8404" in config.read_text()


def test_the_real_binary_is_never_the_wrapper_itself(monkeypatch) -> None:
    from deployments import haproxy_loopback

    wrapper = Path(sys.executable).parent / "inference-haproxy"
    monkeypatch.delenv("INFERENCE_HAPROXY_REAL_BINARY", raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(wrapper))
    found = haproxy_loopback.real_binary()
    assert Path(found).name == "haproxy" and Path(found) != wrapper


# Ray's defaults and backend lines as its template writes them (haproxy_templates.py).
RAY_BACKEND = """global
    maxconn 4096
    nbthread 4
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    option redispatch 1
    retry-on conn-failure
    errorfile 502 /tmp/x/500.http
    errorfile 503 /tmp/x/500.http
    errorfile 504 /tmp/x/500.http
frontend http_frontend
    bind 127.0.0.1:{front}
    default_backend http-inference
backend http-inference
    http-reuse always
    server SERVE_REPLICA_inference-Ingress-abc 127.0.0.1:{replica} check observe layer4
    server SERVE_PROXY_ACTOR-fallback-x 127.0.0.1:{fallback} check backup
"""


def test_the_errors_and_the_queue_are_rewritten_once(tmp_path: Path) -> None:
    config = RAY_BACKEND.format(front=1, replica=2, fallback=3)
    out = bounded_config(config, tmp_path, 7, 0.25)
    assert f"errorfile 503 {tmp_path}/serve-unavailable.http" in out
    assert f"errorfile 502 {tmp_path}/serve-unavailable.http" in out
    assert f"errorfile 504 {tmp_path}/serve-timeout.http" in out
    assert "500.http" not in out
    replica, fallback = [line for line in out.splitlines() if "server SERVE_" in line]
    assert replica.endswith(" maxconn 7") and "maxconn" not in fallback
    assert out.count("timeout queue 250ms") == 1
    wanted = max(4096, front_door_maxconn())
    assert f"    maxconn {wanted}\n" in out.split("defaults")[0], "idle client connections fit"
    assert bounded_config(out, tmp_path, 7, 0.25) == out, "idempotent"


def test_the_error_pages_are_the_service_s_json_with_retry_after() -> None:
    head, body = error_pages()["serve-unavailable.http"].split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Retry-After: 1" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body)["code"] == "overloaded"
    head, body = error_pages()["serve-timeout.http"].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 504 ") and json.loads(body)["code"] == "deadline_exceeded"


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """An ingress that takes its time: each answer after `delay_s`."""

    delay_s = 1.5

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        time.sleep(self.delay_s)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_replica() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _haproxy(tmp_path: Path, config: str) -> subprocess.Popen:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    for name, page in error_pages().items():
        (tmp_path / name).write_bytes(page)
    return subprocess.Popen([real_binary(), "-db", "-f", str(path)], stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _front_door(tmp_path: Path, replica: int, maxconn: int, queue_s: float):
    front = free_port()
    raw = RAY_BACKEND.format(front=front, replica=replica, fallback=free_port())
    proc = _haproxy(tmp_path, bounded_config(raw, tmp_path, maxconn, queue_s))
    url = f"http://127.0.0.1:{front}/"
    wait_until(lambda: _answers(url), 15, "haproxy listening")
    return proc, url


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=5)
        return True
    except requests.ConnectionError:
        return False


def test_haproxy_s_own_refusal_is_a_json_503_with_retry_after(tmp_path: Path) -> None:
    """No replica up (a rollout, a crash): haproxy answers by itself, as this service would."""
    proc, url = _front_door(tmp_path, replica=free_port(), maxconn=4, queue_s=1.0)
    try:
        resp = requests.get(url, timeout=10)
    finally:
        _stop(proc)
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["code"] == "overloaded"


def test_a_request_waits_at_most_the_queue_timeout_for_the_ingress(
    tmp_path: Path, slow_replica: int
) -> None:
    """One request at a time for the ingress (maxconn 1), a queue of 0.3 s: of three requests
    at once, one is answered, and the two queued behind it are refused when their 0.3 s is
    up rather than waiting out the answer before them."""
    proc, url = _front_door(tmp_path, replica=slow_replica, maxconn=1, queue_s=0.3)

    def timed() -> tuple[int, float, str]:
        started = time.monotonic()
        resp = requests.get(url, timeout=30)
        return resp.status_code, time.monotonic() - started, resp.headers.get("Retry-After", "")

    try:
        with ThreadPoolExecutor(3) as pool:
            answers = sorted(pool.map(lambda _: timed(), range(3)))
    finally:
        _stop(proc)
    assert [status for status, _, _ in answers] == [200, 503, 503], answers
    assert answers[0][1] >= _SlowHandler.delay_s
    assert all(waited < 1.2 and retry == "1" for _, waited, retry in answers[1:]), answers
