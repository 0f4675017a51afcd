"""The README's serve command as a real process: started, awaited until ready, stopped with
Ctrl-C as a person would, and checked to leave no port or haproxy behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deployments.launch import HaproxyTracker
from tests.support import REPO, wait_until

BASE_URL = "http://127.0.0.1:8000"
GRPC_ADDRESS = "127.0.0.1:8001"  # serve_config.yaml's grpc_options.port
GRPC_PORT = 8001
STOP_TIMEOUT_S = 90


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def serve_part(command: str) -> list[str]:
    """The part of the README's first command that starts the service (after installing)."""
    last = command.split("&&")[-1].strip()
    argv = shlex.split(last)
    assert argv == [".venv/bin/inference-serve", "serve_config.yaml"], (
        f"README's first command does not end in the service launcher: {last}"
    )
    # `.venv/bin/...` in the README; here, the launcher of the interpreter running the tests.
    argv[0] = str(Path(sys.executable).parent / "inference-serve")
    return argv


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Running:
    ready_s: float  # from the command's start to /v2/health/ready answering 200
    pid: int  # the launcher's: every process of the service is below it


@contextmanager
def readme_service(
    log_path: Path,
    ready_timeout_s: float,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    cwd: Path = REPO,
) -> Iterator[Running]:
    """Run the README's serve command (on `config` instead of serve_config.yaml if given)."""
    for port in (8000, GRPC_PORT):
        if port_open(port):
            pytest.fail(f"something already listens on 127.0.0.1:{port}; stop it before this test")
    argv = serve_part(readme_commands()[0])
    if config is not None:
        argv[-1] = str(config)
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    # Watches, never stops: stopping them is the launcher's job, and this checks it did.
    haproxies = HaproxyTracker(proc.pid).start()

    def ready_or_exited() -> bool:
        if proc.poll() is not None:
            return True
        return requests.get(f"{BASE_URL}/v2/health/ready", timeout=5).status_code == 200

    try:
        wait_until(ready_or_exited, ready_timeout_s, "the README's serve command to be ready")
        assert proc.poll() is None, f"serve run exited early:\n{log_path.read_text()[-4000:]}"
        yield Running(time.monotonic() - started, proc.pid)
    finally:
        stop(proc)
        if proc.returncode not in (0, -signal.SIGINT):
            print(log_path.read_text()[-4000:])
    assert proc.returncode is not None
    for port in (8000, GRPC_PORT):
        wait_until(
            lambda p=port: not port_open(p), 30, f"port {port} to be released after shutdown"
        )
    # HAProxy can outlive Ray; the launcher stops the ones it started.
    haproxies.close()
    assert haproxies.ever_seen, "no haproxy ran under the README's command (HAProxy mode off?)"
    assert not haproxies.running(), f"haproxy outlived the service: {haproxies.running()}"


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a person would; escalate only if serve run does not shut down."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
