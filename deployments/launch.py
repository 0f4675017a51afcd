"""`inference-serve`: `serve run` on the measured fast serving path, with a clean lifecycle.

    inference-serve [serve_config.yaml] [--python-proxy]

- HAProxy in front (Ray Serve's `RAY_SERVE_ENABLE_HA_PROXY=1`; the binary comes with
  `ray[serve]` on Linux): HTTP goes from HAProxy straight to the Ingress replica, and Ray's
  Python proxy actor (about a third of the CPU per request on two cores) leaves the path.
  `benchmarks/compare.py` measures both modes side by side.
- Refuses to start into a port something already listens on, naming the holder: an haproxy
  left by an earlier run keeps the port and answers every request with an error.
- Ctrl-C (or SIGTERM) stops `serve run`, which shuts Ray down; then each haproxy that ran
  under `serve run`'s process tree is stopped by its pid (it can outlive Ray).

- Refuses an `http_options.host` beyond loopback without an API key, and keeps a local Ray
  on loopback (`loopback_env`; docs/operations.md, "What listens where").

`--python-proxy` (or `RAY_SERVE_ENABLE_HA_PROXY=0` in the environment) keeps Ray's Python
proxy. HAProxy and the Ingress replica's own HTTP port listen where `http_options.host` says
(127.0.0.1 in serve_config.yaml; with no host, Serve's HAProxy mode uses every interface).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from deployments.admission.auth import is_loopback, load_keys, refuse_exposure_without_auth

HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def haproxy_threads(cpus: int | None = None) -> int:
    """HAProxy's threads on a node with `cpus` cores (this machine's by default): half of them,
    1 to 4 (Ray's own default is 4). HAProxy shares the node with the replicas; on 2 cores, 4
    threads cost the replicas more than they gave HAProxy (docs/benchmarks.md)."""
    return min(4, max(1, (cpus or os.cpu_count() or 2) // 2))


def fast_path_env(cpus: int | None = None) -> dict[str, str]:
    """The serving path's settings for a node with `cpus` cores (this machine's by default).

    Each was measured (benchmarks/compare.py runs ours without HAProxy and at Ray's niceness;
    docs/benchmarks.md has the A/B runs of the others). Ray reads them when each process
    starts, so on a cluster every node needs them: cluster/render_rayservice.py puts them in
    each Ray container's environment, sized to its CPU limit. An operator's own value in the
    environment wins over each of these (`serve_env`).
    """
    return {
        # HAProxy in front; HTTP straight to the Ingress replica, not through a Python proxy.
        HA_PROXY_ENV: "1",
        "RAY_SERVE_HAPROXY_NBTHREAD": str(haproxy_threads(cpus)),
        # Without this HAProxy writes a log line per request to a socket that Serve's HAProxy
        # manager parses into its own HTTP request metrics: a second count of what the
        # Ingress already counts (`inference_requests_total`, `inference_request_latency_ms`),
        # paid per request in a third process.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        # User code on the replica's own event loop: no thread hop per request and per call.
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        # Handle calls between deployments over gRPC rather than Ray actor calls.
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        # Ray starts workers (every replica) at nice 15, so on a busy node anything else --
        # the metrics agent, a log shipper, the load generator -- runs first and requests
        # wait behind it. Replicas are this node's work (measurements: docs/benchmarks.md).
        "RAY_worker_niceness": "0",
    }


FAST_PATH_ENV = fast_path_env()
STOP_TIMEOUT_S = 10.0
GRPC_HOOK = "deployments.roles.listen.grpc_on_loopback"


class StaleListener(RuntimeError):
    pass


def http_address(config_path: Path, haproxy: bool = False) -> tuple[str, int]:
    """Where Serve will listen. With no host set, Serve's default: loopback, but every
    interface in HAProxy mode (so that HAProxy on other nodes can reach the replicas)."""
    config: dict[str, Any] = yaml.safe_load(config_path.read_text()) or {}
    http = config.get("http_options") or {}
    host = http.get("host") or ("0.0.0.0" if haproxy else "127.0.0.1")
    return str(host), int(http.get("port") or 8000)


def grpc_port(config_path: Path) -> int | None:
    """Where Serve's gRPC front will listen, when the config serves gRPC."""
    config: dict[str, Any] = yaml.safe_load(config_path.read_text()) or {}
    grpc = config.get("grpc_options") or {}
    if not grpc.get("grpc_servicer_functions"):
        return None
    return int(grpc.get("port") or 9000)


def refuse_exposure(config_path: Path, host: str) -> None:
    """Before Ray starts: a host beyond loopback needs every application's token at hand
    (the application builder checks the same again, for `serve deploy`)."""
    if is_loopback(host):
        return
    config: dict[str, Any] = yaml.safe_load(config_path.read_text()) or {}
    for app in config.get("applications") or []:
        args = app.get("args") or {}
        token_file = args.get("auth_token_file")
        keys = load_keys(
            args.get("auth_token_env", "INFERENCE_AUTH_TOKEN"),
            Path(token_file) if token_file else None,
        )
        refuse_exposure_without_auth(host, bool(keys), f"http_options.host in {config_path}")


def listener_on(port: int) -> str | None:
    """Who listens on `port` (any address), or None. Names the process when it can."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "a process of another user"
                try:
                    name = psutil.Process(conn.pid).name()
                except psutil.Error:
                    name = "a process"
                return f"{name} (pid {conn.pid})"
    except psutil.AccessDenied:
        pass
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return "a process" if sock.connect_ex(("127.0.0.1", port)) == 0 else None


def refuse_stale_listener(port: int, setting: str = "http_options.port") -> None:
    holder = listener_on(port)
    if holder is not None:
        hint = " (an haproxy left by an earlier run?)" if "haproxy" in holder else ""
        raise StaleListener(
            f"port {port} is already taken by {holder}{hint}; stop it, or set another "
            f"{setting} in the config, before starting the service"
        )


class HaproxyTracker:
    """The haproxy processes started under one process tree, recorded while they run.

    Ray's HAProxyManager actor starts haproxy as its child, and each graceful reload starts a
    new one (`-sf`), so the pids change while the service runs. When Ray shuts down first, an
    haproxy is re-parented away from our tree and can keep the port. So a thread records each
    haproxy among `root`'s descendants as it appears (as a psutil.Process, which refuses to
    signal a recycled pid), and `stop()` stops exactly those: never an haproxy by name, never
    one another user or another run started.
    """

    def __init__(self, root_pid: int, interval_s: float = 0.5) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        # Held, not looked up again: once the root exits its pid may name someone else.
        try:
            self._root: psutil.Process | None = psutil.Process(root_pid)
        except psutil.Error:
            self._root = None
        # The ones still running (each reload starts one and retires one).
        self.seen: dict[int, psutil.Process] = {}
        self.ever_seen = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HaproxyTracker:
        self._thread = threading.Thread(target=self._watch, name="haproxy-tracker", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> HaproxyTracker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def sample(self) -> None:
        self.seen = {pid: proc for pid, proc in self.seen.items() if proc.is_running()}
        root = self._root
        if root is None or not root.is_running():
            return
        try:
            descendants = root.children(recursive=True)
        except psutil.Error:
            return
        for proc in descendants:
            if proc.pid in self.seen:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.name() == "haproxy":
                    self.seen[proc.pid] = proc
                    self.ever_seen += 1

    def running(self) -> list[psutil.Process]:
        return [proc for proc in self.seen.values() if proc.is_running()]

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.sample()

    def close(self) -> None:
        """Stop watching (a last look first); what was seen stays in `seen`."""
        self.sample()
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def stop(self, grace_s: float = STOP_TIMEOUT_S) -> None:
        """Give Ray's own shutdown `grace_s` to stop its haproxy, then stop what is left."""
        self.close()
        deadline = time.monotonic() + grace_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_processes(self.running())


def stop_processes(procs: list[psutil.Process], timeout_s: float = STOP_TIMEOUT_S) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def loopback_env(base: dict[str, str]) -> dict[str, str]:
    """What keeps a Ray that `serve run` starts here on loopback (docs/operations.md lists
    each port and its protection). None of it applies when RAY_ADDRESS names a cluster."""
    if base.get("RAY_ADDRESS"):
        return {}
    env = {
        # Ray resolves its node address to the machine's outward IP, and its GCS, raylet,
        # object manager, agents and workers listen there. With this flag off (as on macOS)
        # a single node uses 127.0.0.1; it only stops `ray start` joining a cluster as a
        # worker, which a `serve run` here never does.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    return {**env, **haproxy_wrapper_env()}


def haproxy_wrapper_env() -> dict[str, str]:
    """Ray's haproxy through `inference-haproxy` (deployments/haproxy_loopback.py): its stats
    and metrics pages on loopback, the client's address forwarded, its own errors as JSON, and
    its queue for the Ingress bounded."""
    beside = Path(sys.executable).parent / "inference-haproxy"
    wrapper = str(beside) if beside.exists() else shutil.which("inference-haproxy")
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": wrapper} if wrapper else {}


def serve_env(python_proxy: bool, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in {**FAST_PATH_ENV, **loopback_env(env)}.items():
        env.setdefault(key, value)
    if python_proxy:
        env[HA_PROXY_ENV] = "0"
    return env


def shell_exports(env: dict[str, str]) -> str:
    """`export` lines for a POSIX shell; a value already in the environment is kept."""
    return "\n".join(
        f'[ -n "${{{key}:-}}" ] || {key}={shlex.quote(value)}; export {key}'
        for key, value in env.items()
    )


def serve_executable() -> str:
    beside = Path(sys.executable).parent / "serve"
    return str(beside) if beside.exists() else "serve"


def serve_run_argv(config: Path, loopback: bool) -> list[str]:
    hook = ["--runtime-env-json", json.dumps({"worker_process_setup_hook": GRPC_HOOK})]
    return [serve_executable(), "run", *(hook if loopback else []), str(config)]


def start_serve_run(
    config: Path, env: dict[str, str], loopback: bool = False
) -> subprocess.Popen[bytes]:
    """`serve run config` as a child that stops cleanly on SIGINT.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    across exec: `serve run` would then never see the SIGINT this launcher forwards and would
    keep Ray and HAProxy up. The child gets the default disposition back before it starts.

    `loopback`: a local Ray serving on loopback; every Ray worker then binds Serve's gRPC
    servers there too (`deployments/roles/listen.py`), through Ray's worker setup hook.
    """
    return subprocess.Popen(
        serve_run_argv(config, loopback),
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inference-serve", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="serve_config.yaml", type=Path)
    parser.add_argument(
        "--python-proxy", action="store_true", help="keep Ray's Python proxy (no HAProxy)"
    )
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print this node's serving-path settings as shell exports and exit, for a Ray "
        "node started by hand or by the cluster launcher: "
        'eval "$(inference-serve --print-env)"; ray start ...',
    )
    args = parser.parse_args(argv)
    if args.print_env:
        print(shell_exports({**FAST_PATH_ENV, **haproxy_wrapper_env()}))
        return 0
    if not args.config.is_file():
        parser.error(f"no config file at {args.config}")
    env = serve_env(args.python_proxy)
    host, port = http_address(args.config, haproxy=env[HA_PROXY_ENV] == "1")
    try:
        refuse_exposure(args.config, host)
        refuse_stale_listener(port)
        grpc = grpc_port(args.config)
        if grpc is not None:
            refuse_stale_listener(grpc, "grpc_options.port")
    except (StaleListener, ValueError) as exc:
        print(f"inference-serve: {exc}", file=sys.stderr)
        return 2
    if env[HA_PROXY_ENV] == "1" and "RAY_SERVE_HAPROXY_BINARY_PATH" not in env:
        print(
            "inference-serve: warning: inference-haproxy is not installed beside this Python "
            "or on PATH; HAProxy's stats (8404) and metrics (9101) pages will listen on every "
            "interface",
            file=sys.stderr,
        )
    mode = "HAProxy" if env[HA_PROXY_ENV] == "1" else "Python proxy"
    print(f"inference-serve: serve run {args.config} ({mode} on port {port})", flush=True)
    local = not env.get("RAY_ADDRESS")
    proc = start_serve_run(args.config, env, loopback=local and is_loopback(host))
    tracker = HaproxyTracker(proc.pid)

    def forward(signum: int, _frame: Any) -> None:
        # `serve run` shuts Ray down on SIGINT; a terminal's Ctrl-C reaches it directly too.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    with tracker:
        try:
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
