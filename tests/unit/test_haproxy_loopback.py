"""The haproxy wrapper: Ray's stats and metrics pages moved to loopback, the client's address
forwarded, nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deployments.haproxy_loopback import loopback_config, rewrite_in_place

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
    assert config.read_text() == loopback_config(RAY_CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.lock"]


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
