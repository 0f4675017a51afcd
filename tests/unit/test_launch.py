"""The service launcher's lifecycle checks, against real sockets and real processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

from deployments import launch


@pytest.fixture
def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def launch_with(folder, options: str) -> subprocess.CompletedProcess:
    """The launcher on a config of `options` and no application."""
    config = folder / "serve_config.yaml"
    config.write_text(options + "applications: []\n")
    return subprocess.run(
        [sys.executable, "-m", "deployments.launch", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_stale_listener_is_refused_and_named(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    holder = launch.listener_on(port)
    assert holder is not None and f"pid {os.getpid()}" in holder
    with pytest.raises(launch.StaleListener, match=f"port {port} is already taken by"):
        launch.refuse_stale_listener(port)


def test_a_free_port_is_not_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert launch.listener_on(port) is None
    launch.refuse_stale_listener(port)


def test_the_launcher_exits_with_a_clear_message_when_the_port_is_taken(
    listening: socket.socket, tmp_path
) -> None:
    port = listening.getsockname()[1]
    result = launch_with(tmp_path, f"http_options:\n  host: 127.0.0.1\n  port: {port}\n")
    assert result.returncode == 2
    assert f"port {port} is already taken" in result.stderr


def test_the_launcher_refuses_a_taken_grpc_port_naming_its_setting(
    listening: socket.socket, tmp_path
) -> None:
    port = listening.getsockname()[1]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        http_port = free.getsockname()[1]
    result = launch_with(
        tmp_path,
        f"http_options:\n  host: 127.0.0.1\n  port: {http_port}\n"
        f"grpc_options:\n  port: {port}\n  grpc_servicer_functions: [a.b:c]\n",
    )
    assert result.returncode == 2
    assert f"port {port} is already taken" in result.stderr
    assert "grpc_options.port" in result.stderr


def test_on_loopback_every_ray_worker_binds_serve_s_grpc_there_too(tmp_path) -> None:
    """Ray binds Serve's gRPC servers on [::]; on loopback the launcher gives every worker
    the hook that binds them on 127.0.0.1 (the e2e tier lists the sockets)."""
    from ray._common.utils import load_class

    argv = launch.serve_run_argv(tmp_path / "c.yaml", loopback=True)
    hook = json.loads(argv[argv.index("--runtime-env-json") + 1])["worker_process_setup_hook"]
    assert callable(load_class(hook)), "Ray loads the hook by this dotted path"
    assert "--runtime-env-json" not in launch.serve_run_argv(tmp_path / "c.yaml", loopback=False)


def test_fast_path_settings_are_defaults_an_operator_can_override() -> None:
    env = launch.serve_env(python_proxy=False, base={"RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"})
    assert env[launch.HA_PROXY_ENV] == "1"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "0"  # the operator's value wins
    assert launch.serve_env(python_proxy=True, base={})[launch.HA_PROXY_ENV] == "0"


def test_print_env_gives_a_hand_started_ray_node_the_same_path() -> None:
    """`eval "$(inference-serve --print-env)"; ray start ...` (the cluster launcher's nodes):
    the launcher's settings, sized to this node, each yielding to the operator's own."""
    script = [sys.executable, "-m", "deployments.launch", "--print-env"]
    shown = "; ".join(
        f"echo {k}=${k}" for k in [*launch.FAST_PATH_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH"]
    )
    env = {"PATH": os.environ["PATH"], "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0"}
    out = subprocess.run(
        [
            "sh",
            "-c",
            f'eval "$("$@")" && {shown} && sh -c "echo child=\\$RAY_worker_niceness"',
            "sh",
            *script,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "0"  # the operator's value wins
    assert got[launch.HA_PROXY_ENV] == "1"
    assert got["RAY_SERVE_HAPROXY_NBTHREAD"] == str(launch.haproxy_threads())
    assert got["child"] == "0", "exported: `ray start` and the processes it starts see it"
    assert got["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("inference-haproxy")


def test_the_http_address_comes_from_the_config(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("http_options:\n  port: 8123\n")
    assert launch.http_address(config) == ("127.0.0.1", 8123)
    config.write_text("applications: []\n")
    assert launch.http_address(config) == ("127.0.0.1", 8000)


@pytest.fixture
def fake_haproxy(tmp_path) -> str:
    """An executable named haproxy (a copy of sleep), so the tracker's name check sees it."""
    path = tmp_path / "haproxy"
    shutil.copy(shutil.which("sleep"), path)
    return str(path)


def test_the_tracker_stops_the_haproxy_under_its_tree_even_once_orphaned(fake_haproxy) -> None:
    # root starts an "haproxy" and exits: the haproxy is re-parented away from the tree, as
    # one is when Ray shuts down before it.
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"p = subprocess.Popen([{fake_haproxy!r}, '60'], stdout=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    bystander = subprocess.Popen([fake_haproxy, "60"])  # an haproxy outside root's tree
    try:
        child_pid = int(root.stdout.readline())
        tracker = launch.HaproxyTracker(root.pid, interval_s=0.05)
        with tracker:
            deadline = time.monotonic() + 10
            while child_pid not in tracker.seen and time.monotonic() < deadline:
                time.sleep(0.05)
            assert set(tracker.seen) == {child_pid}
            root.stdin.write("\n")  # root exits; its haproxy lives on
            root.stdin.close()
            root.wait(10)
            assert psutil.Process(child_pid).is_running()
        # Leaving the tracker stopped exactly the haproxy it saw.
        assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == "zombie"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        root.kill()
        root.wait()


def test_the_tracker_grace_lets_a_clean_shutdown_finish_first() -> None:
    tracker = launch.HaproxyTracker(os.getpid())
    started = time.monotonic()
    tracker.stop(grace_s=5)  # nothing was seen: returns at once
    assert time.monotonic() - started < 2


def test_serve_run_gets_sigint_back_when_started_from_a_background_job(tmp_path) -> None:
    """A shell's background job starts with SIGINT ignored; the launcher's forwarded Ctrl-C
    must still reach `serve run` (measured: without this it kept Ray and HAProxy up)."""
    probe = tmp_path / "bin"
    probe.mkdir()
    # Stands in for `serve`: reports the SIGINT disposition it started with.
    fake_serve = probe / "serve"
    fake_serve.write_text(
        f"#!{sys.executable}\nimport signal\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    fake_serve.chmod(0o755)
    parent = (
        "import os, pathlib, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"  # as a background job has it
        "from deployments import launch\n"
        f"launch.serve_executable = lambda: {str(fake_serve)!r}\n"
        "proc = launch.start_serve_run(pathlib.Path('c.yaml'), dict(os.environ))\n"
        "sys.exit(proc.wait())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
