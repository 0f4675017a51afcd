"""A Ray cluster of one head and N worker nodes on this machine, serving serve_config.yaml.

    .venv/bin/python cluster/local_multinode.py up [--workers 2] [--dry-run]
    .venv/bin/python cluster/local_multinode.py status
    .venv/bin/python cluster/local_multinode.py down [--dry-run]

`serve run` puts everything in one node, so a laptop never sees replicas scheduled across
nodes, a proxy on another node than its replicas, or a node dying. `up` starts real
`ray start` nodes, each with its own raylet, object store, ports, `node_role` label and
custom resource (named after the node, so a deployment can be pinned to one), runs
`serve deploy` against the head's dashboard and waits until every application is RUNNING.

It stays out of the way of `serve run` and of a test suite's own local Ray:
- everything lives in its own --temp-dir (default /tmp/ray-multinode): sessions, logs, this
  script's state, and the `ray_current_cluster` file that `ray start` writes, so
  `ray.init()` and address-less `ray` commands keep reading /tmp/ray and never find this
  cluster. (`ray.init(address="auto")` with no /tmp/ray/ray_current_cluster still falls
  back to any running GCS, this one included.)
- none of its ports is a Ray default, every one is checked free before anything starts
  (a listener on the head port is a stale head: run `down`), and everything binds to
  127.0.0.1;
- `down` stops only what `up` started. Each node is one `ray start --block` in its own
  session (setsid); `down` signals those process groups and their descendants after
  checking that each recorded PID is still the process it started. It never runs
  `ray stop`, which stops every Ray process on the machine.

Logical CPUs are whole numbers per node (`ray start --num-cpus` takes an integer, and Ray
refuses CPU in --resources): the fractions live in serve_config.yaml's per-deployment
num_cpus. Two workers of 1 logical CPU hold every deployment, surge included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"
HOST = "127.0.0.1"
DEFAULT_TEMP_DIR = Path("/tmp/ray-multinode")
# Ray's unix sockets live at <temp-dir>/session_<date>_<usec>_<pid>/sockets/plasma_store...;
# a socket path has at most 107 bytes, and the part after the temp dir takes up to ~66.
MAX_TEMP_DIR_CHARS = 40
# Defaults away from Ray's own (6379, 8265, 10001, 52365, workers 10002-19999), so `up`
# can run beside `serve run` or a ray.init() cluster.
GCS_PORT, DASHBOARD_PORT = 6390, 8275
METRICS_PORT = 8080  # node i exports Prometheus metrics on METRICS_PORT + i
# Node i takes PORT_BASE + 100*i .. +99: five agent/manager ports, the head's client port,
# and 90 worker ports. 30000 is below Linux's ephemeral range (32768+), so outgoing
# connections never hold them.
PORT_BASE, PORT_STRIDE, WORKER_PORTS = 30000, 100, (10, 99)
MAX_WORKER_NODES = 8  # each node costs ~0.5 GiB of Ray daemons before any replica
OBJECT_STORE_MB = 200  # per node; Ray's default (30% of RAM) per node would overcommit /dev/shm
MIN_OBJECT_STORE_MB = 80  # Ray refuses less than 75 MiB
STOP_GRACE_S = 15.0
POLL_S = 2.0


class Refused(Exception):
    """`up` will not start: something is in the way. Nothing was started."""


class StartupFailed(Exception):
    """A node, the deploy or the application failed after processes were started."""


@dataclass(frozen=True)
class NodeSpec:
    name: str  # "head", "worker-1", ...
    command: list[str]
    ports: dict[str, int]  # flag -> port, every port this node binds (worker range aside)


@dataclass(frozen=True)
class Plan:
    temp_dir: Path
    nodes: list[NodeSpec]
    dashboard_url: str
    gcs_address: str
    serve_config: Path  # what `serve deploy` is given
    serve_config_override: dict[str, Any] | None  # written to serve_config first, if set
    app_names: list[str]
    http_port: int

    @property
    def state_dir(self) -> Path:
        return self.temp_dir / "multinode"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def deploy_command(self) -> list[str]:
        return [tool("serve"), "deploy", str(self.serve_config), "--address", self.dashboard_url]

    def status_command(self) -> list[str]:
        return [tool("serve"), "status", "--address", self.dashboard_url]


def nodes_command(gcs_address: str) -> list[str]:
    """Ray's own list of alive nodes (JSON, with labels and resources)."""
    return [
        tool("ray"), "list", "nodes", "--address", gcs_address,
        "--format", "json", "--filter", "state=ALIVE", "--detail",
    ]  # fmt: skip


def tool(name: str) -> str:
    """The venv's own `ray`/`serve`, beside this interpreter: the Ray the package runs on."""
    return str(Path(sys.executable).parent / name)


def _int_at_least(low: int, why: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; {why}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}; {why}")
        return value

    return parse


def _port(text: str) -> int:
    value = _int_at_least(1024, "ports below 1024 need root")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--temp-dir",
        type=Path,
        default=DEFAULT_TEMP_DIR,
        help=f"Ray --temp-dir of every node, and this script's state (default {DEFAULT_TEMP_DIR})",
    )
    common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")

    up = sub.add_parser("up", parents=[common], help="start the nodes and deploy")
    up.add_argument("--workers", type=_int_at_least(1, "the head runs no replicas"), default=2)
    up.add_argument(
        "--worker-cpus",
        type=_int_at_least(1, "ray start --num-cpus takes a whole number; fractional shares "
                           "are each deployment's num_cpus in serve_config.yaml"),
        default=1,
        help="logical CPUs per worker node (default 1)",
    )  # fmt: skip
    up.add_argument(
        "--head-cpus",
        type=_int_at_least(0, "ray start --num-cpus takes a whole number"),
        default=0,
        help="logical CPUs on the head (default 0: replicas go to workers, as on a cluster)",
    )
    up.add_argument(
        "--object-store-mb",
        type=_int_at_least(MIN_OBJECT_STORE_MB, "Ray needs at least 75 MiB per object store"),
        default=OBJECT_STORE_MB,
    )
    up.add_argument("--port", type=_port, default=GCS_PORT, help="head GCS port")
    up.add_argument("--dashboard-port", type=_port, default=DASHBOARD_PORT)
    up.add_argument("--metrics-port", type=_port, default=METRICS_PORT, help="node i: +i")
    up.add_argument("--port-base", type=_port, default=PORT_BASE, help="node i: +100*i..+99")
    up.add_argument(
        "--http-port", type=_port, default=None, help="Serve proxy port (default: the config's)"
    )
    up.add_argument("--serve-config", type=Path, default=SERVE_CONFIG)
    up.add_argument("--timeout", type=_int_at_least(10, "seconds"), default=300)
    up.add_argument(
        "--keep-on-failure", action="store_true", help="leave the nodes up if `up` fails"
    )

    sub.add_parser("down", parents=[common], help="stop the nodes `up` started")
    sub.add_parser("status", parents=[common], help="recorded nodes and `serve status`")
    return parser


def validate_temp_dir(parser: argparse.ArgumentParser, temp_dir: Path) -> None:
    if not temp_dir.is_absolute():
        parser.error(f"--temp-dir must be absolute (Ray requires it), got {temp_dir}")
    resolved = Path(os.path.normpath(temp_dir))
    for shared in {Path("/tmp/ray"), Path(tempfile.gettempdir()) / "ray"}:
        if resolved == shared or shared in resolved.parents:
            parser.error(
                f"--temp-dir {temp_dir} is (inside) Ray's default {shared}, which ray.init() "
                "and `ray` commands without an address use: pick a dedicated directory"
            )
    if len(str(resolved)) > MAX_TEMP_DIR_CHARS:
        parser.error(
            f"--temp-dir {temp_dir} is longer than {MAX_TEMP_DIR_CHARS} characters: Ray's "
            "unix socket paths under it would exceed the 107-byte limit"
        )


def make_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    """Every command and port of `up`, from the arguments alone: nothing is touched."""
    if args.workers > MAX_WORKER_NODES:
        parser.error(f"--workers {args.workers}: at most {MAX_WORKER_NODES} on one machine")
    if not args.serve_config.is_file():
        parser.error(f"--serve-config {args.serve_config} does not exist")
    config = yaml.safe_load(args.serve_config.read_text())
    app_names = [app["name"] for app in config.get("applications", [])]
    if not app_names:
        parser.error(f"{args.serve_config} has no applications")
    config_port = int(config.get("http_options", {}).get("port", 8000))
    http_port = args.http_port or config_port

    temp_dir = Path(os.path.normpath(args.temp_dir))
    nodes: list[NodeSpec] = []
    for i in range(args.workers + 1):
        head = i == 0
        name = "head" if head else f"worker-{i}"
        block = args.port_base + PORT_STRIDE * i
        ports = {
            "node-manager-port": block,
            "object-manager-port": block + 1,
            "dashboard-agent-listen-port": block + 2,
            "dashboard-agent-grpc-port": block + 3,
            "runtime-env-agent-port": block + 4,
            "metrics-export-port": args.metrics_port + i,
        }
        command = [tool("ray"), "start", "--block", f"--temp-dir={temp_dir}"]
        if head:
            ports |= {
                "port": args.port,
                "dashboard-port": args.dashboard_port,
                "ray-client-server-port": block + 5,
            }
            command += [
                "--head",
                "--include-dashboard=true",
                f"--dashboard-host={HOST}",
                f"--num-cpus={args.head_cpus}",
            ]
        else:
            command += [
                f"--address={HOST}:{args.port}",
                f"--num-cpus={args.worker_cpus}",
                # All nodes share the head's session log directory; one monitor is enough
                # (two would print every log line twice).
                "--include-log-monitor=false",
            ]
        command += [
            f"--node-ip-address={HOST}",
            f"--resources={json.dumps({name: 1})}",
            f"--labels=node_role={name}",
            f"--object-store-memory={args.object_store_mb * 1024 * 1024}",
            f"--min-worker-port={block + WORKER_PORTS[0]}",
            f"--max-worker-port={block + WORKER_PORTS[1]}",
            "--disable-usage-stats",
        ]
        command += [f"--{flag}={port}" for flag, port in ports.items()]
        nodes.append(NodeSpec(name, command, ports))

    taken: dict[int, str] = {http_port: "Serve HTTP (--http-port)"}
    for i, node in enumerate(nodes):
        low, high = (args.port_base + PORT_STRIDE * i + w for w in WORKER_PORTS)
        named = [(p, f"{node.name} --{f}") for f, p in node.ports.items()]
        named += [(p, f"{node.name} worker ports") for p in range(low, high + 1)]
        for port, what in named:
            if port > 65535:
                parser.error(f"{what} would be port {port}: lower --port-base/--metrics-port")
            if port in taken:
                parser.error(f"port {port} is both {taken[port]} and {what}")
            taken[port] = what

    override = None
    serve_config = args.serve_config.resolve()
    if http_port != config_port:
        # serve_config.yaml fixes the proxy port; deploy a copy that differs only there.
        override = {**config, "http_options": {**config["http_options"], "port": http_port}}
        serve_config = temp_dir / "multinode" / "serve_config.yaml"
    return Plan(
        temp_dir=temp_dir,
        nodes=nodes,
        dashboard_url=f"http://{HOST}:{args.dashboard_port}",
        gcs_address=f"{HOST}:{args.port}",
        serve_config=serve_config,
        serve_config_override=override,
        app_names=app_names,
        http_port=http_port,
    )


# --- what is running ------------------------------------------------------------------


def port_in_use(port: int) -> bool:
    """True if anything is bound to the port on any local address (a bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_state(state_file: Path) -> dict[str, Any] | None:
    if not state_file.is_file():
        return None
    return json.loads(state_file.read_text())


def write_state(state_file: Path, state: dict[str, Any]) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    scratch = state_file.with_suffix(".tmp")
    scratch.write_text(json.dumps(state, indent=2) + "\n")
    scratch.replace(state_file)


def _leader(node: dict[str, Any]) -> psutil.Process | None:
    """The recorded `ray start` process if it is still that process (not a reused PID)."""
    try:
        process = psutil.Process(node["pid"])
        if abs(process.create_time() - node["create_time"]) < 0.01:
            return process
    except psutil.Error:
        pass
    return None


def node_processes(node: dict[str, Any], temp_dir: Path) -> list[psutil.Process]:
    """The node's `ray start`, its descendants, and what is left of its process group.

    Without a live leader, a group member counts only if its command line names this
    cluster's temp dir: the group ID could, in principle, have been reused.
    """
    found: dict[int, psutil.Process] = {}
    leader = _leader(node)
    if leader is not None:
        found[leader.pid] = leader
        for child in leader.children(recursive=True):
            found[child.pid] = child
    for process in psutil.process_iter():
        if process.pid in found or process.pid == os.getpid():
            continue
        try:
            if os.getpgid(process.pid) != node["pgid"]:
                continue
            if leader is None and str(temp_dir) not in " ".join(process.cmdline()):
                continue
            if process.create_time() < node["create_time"] - 0.01:
                continue
            found[process.pid] = process
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def stop_nodes(nodes: list[dict[str, Any]], temp_dir: Path, grace_s: float) -> bool:
    """SIGTERM (graceful, as `ray stop` does), SIGKILL what is left after grace_s.

    Workers first, then the head. Returns True when nothing of these nodes is left.
    """
    clean = True
    workers = [n for n in nodes if n["name"] != "head"]
    heads = [n for n in nodes if n["name"] == "head"]
    for wave in (workers, heads):
        victims: list[psutil.Process] = []
        for node in wave:
            processes = node_processes(node, temp_dir)
            if not processes:
                print(f"{node['name']}: not running")
                continue
            print(f"{node['name']}: stopping {len(processes)} processes (group {node['pgid']})")
            victims += processes
            signalled = _leader(node) is not None
            if signalled:
                # The whole group, including a worker process forked since the listing.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node["pgid"], signal.SIGTERM)
            for process in processes:  # descendants that left the group, or no leader
                try:
                    if not signalled or os.getpgid(process.pid) != node["pgid"]:
                        process.send_signal(signal.SIGTERM)
                except (psutil.Error, OSError):
                    pass
        _, alive = psutil.wait_procs(victims, timeout=grace_s)
        late = [p for node in wave for p in node_processes(node, temp_dir)]
        leftover = list({p.pid: p for p in alive + late}.values())
        for process in leftover:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _, still = psutil.wait_procs(leftover, timeout=5)
        if leftover:
            print(f"  {len(leftover)} outlived SIGTERM by {grace_s:.0f} s: sent SIGKILL")
        if still:
            clean = False
            print(f"  still alive: {[p.pid for p in still]}", file=sys.stderr)
    return clean


# --- up -------------------------------------------------------------------------------


def preflight(plan: Plan) -> None:
    if not Path(tool("ray")).is_file():
        raise Refused(f"no {tool('ray')}: run this with the venv's python (.venv/bin/python)")
    state = read_state(plan.state_file)
    if state is not None:
        running = [n["name"] for n in state["nodes"] if _leader(n) is not None]
        if running:
            raise Refused(
                f"a cluster from {plan.state_file} is still running ({', '.join(running)}): "
                f"run `down --temp-dir {plan.temp_dir}` first"
            )
    head = plan.nodes[0]
    if port_in_use(head.ports["port"]):
        raise Refused(
            f"head port {head.ports['port']} is already in use: a stale Ray head (run `down`) "
            "or another service; pick another --port"
        )
    busy = [
        f"{port} ({node.name} --{flag})"
        for node in plan.nodes
        for flag, port in node.ports.items()
        if flag != "port" and port_in_use(port)
    ]
    if port_in_use(plan.http_port):
        busy.append(f"{plan.http_port} (Serve HTTP; is `serve run` up? pass --http-port)")
    if busy:
        raise Refused("ports in use: " + ", ".join(busy))


def _wait(
    what: str,
    probe: Callable[[], bool],
    timeout_s: float,
    started: list[tuple[str, subprocess.Popen[bytes], Path]],
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, process, log in started:
            if process.poll() is not None:
                raise StartupFailed(f"{name} exited with {process.returncode}; see {log}")
        if probe():
            return
        time.sleep(POLL_S)
    raise StartupFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _alive_nodes(gcs_address: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        nodes_command(gcs_address), capture_output=True, text=True, timeout=60, env=ray_env()
    )
    if out.returncode != 0:
        return []
    try:
        nodes = json.loads(out.stdout)
    except json.JSONDecodeError:
        return []
    return [n for n in nodes if n.get("state") == "ALIVE"]


def _app_statuses(plan: Plan) -> dict[str, str]:
    out = subprocess.run(
        plan.status_command(), capture_output=True, text=True, timeout=60, env=ray_env()
    )
    if out.returncode != 0:
        return {}
    try:
        status = yaml.safe_load(out.stdout) or {}
    except yaml.YAMLError:
        return {}
    apps = status.get("applications") or {}
    return {name: str((apps.get(name) or {}).get("status", "NOT_STARTED")) for name in apps}


def _start(
    node: NodeSpec, plan: Plan, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    log = plan.state_dir / f"{node.name}.log"
    with log.open("ab") as out:
        # Its own session and process group (setsid): `down` signals exactly this group.
        process = subprocess.Popen(
            node.command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    print(f"started {node.name} (pid {process.pid}), log {log}")
    record = {
        "name": node.name,
        "pid": process.pid,
        "pgid": process.pid,
        "create_time": psutil.Process(process.pid).create_time(),
        "log": str(log),
        "ports": node.ports,
        "command": node.command,
    }
    return process, record


def up(plan: Plan, timeout_s: float, keep_on_failure: bool) -> int:
    try:
        preflight(plan)
    except Refused as refused:
        print(f"refusing to start: {refused}", file=sys.stderr)
        return 1
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "temp_dir": str(plan.temp_dir),
        "dashboard": plan.dashboard_url,
        "gcs": plan.gcs_address,
        "nodes": [],
    }
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    env = ray_env()

    def start(node: NodeSpec) -> None:
        process, record = _start(node, plan, env)
        started.append((node.name, process, Path(record["log"])))
        state["nodes"].append(record)
        write_state(plan.state_file, state)  # after every start: `down` can always clean up

    def head_listening() -> bool:
        head = plan.nodes[0].ports
        return listening(head["port"]) and listening(head["dashboard-port"])

    def nodes_alive(n: int) -> Callable[[], bool]:
        return lambda: len(_alive_nodes(plan.gcs_address)) >= n

    def apps_running() -> bool:
        statuses = _app_statuses(plan)
        failed = [name for name, status in statuses.items() if status == "DEPLOY_FAILED"]
        if failed:
            raise StartupFailed(f"DEPLOY_FAILED: {', '.join(failed)}; see `serve status`")
        return all(statuses.get(name) == "RUNNING" for name in plan.app_names)

    try:
        start(plan.nodes[0])
        _wait("the head's GCS and dashboard", head_listening, timeout_s, started)
        # One node at a time: on a small machine, raylets starting together can miss Ray's
        # registration deadline (RAY_raylet_start_wait_time_s) and exit.
        for count, node in enumerate(plan.nodes[1:], start=2):
            start(node)
            _wait(f"{count} alive nodes", nodes_alive(count), timeout_s, started)
        if plan.serve_config_override is not None:
            plan.serve_config.write_text(yaml.safe_dump(plan.serve_config_override))
        print("$ " + shlex.join(plan.deploy_command()))
        subprocess.run(plan.deploy_command(), check=True, timeout=120, env=ray_env())
        _wait(f"applications {plan.app_names} RUNNING", apps_running, timeout_s, started)
    except (
        StartupFailed,
        subprocess.SubprocessError,
        psutil.Error,
        OSError,
        KeyboardInterrupt,
    ) as error:
        print(f"up failed: {error!r}", file=sys.stderr)
        if started and not keep_on_failure:
            print("stopping what was started (--keep-on-failure keeps it)", file=sys.stderr)
            if stop_nodes(state["nodes"], plan.temp_dir, STOP_GRACE_S):
                plan.state_file.unlink(missing_ok=True)
        return 1
    print_status(state)
    print(f"Serve: http://{HOST}:{plan.http_port}/   dashboard: {plan.dashboard_url}")
    down = [sys.executable, __file__, "down", "--temp-dir", str(plan.temp_dir)]
    print(f"stop with: {shlex.join(down)}")
    return 0


def print_status(state: dict[str, Any]) -> None:
    """This script's view (processes, logs), then Ray's (nodes) and Serve's (applications)."""
    for node in state["nodes"]:
        alive = "running" if _leader(node) is not None else "NOT RUNNING"
        metrics = node["ports"].get("metrics-export-port")
        print(
            f"{node['name']:<9} pid {node['pid']:<8} {alive:<12} :{metrics}/metrics {node['log']}"
        )
    if not state["nodes"] or _leader(state["nodes"][0]) is None:
        return
    ray_nodes = _alive_nodes(state["gcs"])
    print(f"\nRay: {len(ray_nodes)} alive nodes")
    for ray_node in sorted(ray_nodes, key=lambda n: n.get("labels", {}).get("node_role", "")):
        role = ray_node.get("labels", {}).get("node_role", "?")
        cpus = ray_node.get("resources_total", {}).get("CPU", 0)
        print(f"  {role:<9} {ray_node.get('node_id', '')[:12]}  CPU {cpus:g}")
    out = subprocess.run(
        [tool("serve"), "status", "--address", state["dashboard"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=ray_env(),
    )
    print(out.stdout or out.stderr)


# --- dry run --------------------------------------------------------------------------


def dry_run_up(plan: Plan) -> None:
    print(f"# state and logs: {plan.state_dir}")
    ports = sorted([p for node in plan.nodes for p in node.ports.values()] + [plan.http_port])
    print(f"# refuses to start if a previous run is alive or any of these ports is in use: {ports}")
    for node in plan.nodes:
        log = plan.state_dir / f"{node.name}.log"
        print(f"setsid {shlex.join(node.command)} > {shlex.quote(str(log))} 2>&1 &")
        if node.name == "head":
            print(f"# wait for {plan.gcs_address} (GCS) and {plan.dashboard_url} (dashboard)")
    listing = shlex.join(nodes_command(plan.gcs_address))
    print(f"# wait until `{listing}` lists {len(plan.nodes)} nodes")
    if plan.serve_config_override is not None:
        print(f"# write {plan.serve_config}: the config with http_options.port {plan.http_port}")
    print(shlex.join(plan.deploy_command()))
    print(f"# poll until {plan.app_names} RUNNING: {shlex.join(plan.status_command())}")


def dry_run_down(temp_dir: Path, state: dict[str, Any] | None) -> None:
    if state is None:
        print(f"# no state under {temp_dir}: nothing to stop")
        return
    nodes = sorted(state["nodes"], key=lambda n: n["name"] == "head")  # workers first
    for node in nodes:
        live = "running" if _leader(node) is not None else "not running: strays only"
        print(f"kill -TERM -- -{node['pgid']}  # {node['name']} (ray start {node['pid']}), {live}")
    print(f"# then SIGKILL whatever is left after {STOP_GRACE_S:.0f} s, and remove the state file")


# --- main -----------------------------------------------------------------------------


def ray_env() -> dict[str, str]:
    """The environment of every Ray process this script starts (this process's is left
    alone: Ray caches its auth mode at import, so changing it here would break a later
    `ray.init()` in the same process).

    Ray 2.60 turns token auth on for a head when ~/.ray/auth_token exists, but a worker's
    `ray start` (and `serve deploy`, `ray list`) only follow RAY_AUTH_MODE: say it for all of
    them, token by default, so workers can join their head. Raylets get longer to register:
    a busy small machine misses the default deadline.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_raylet_start_wait_time_s", "120")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate_temp_dir(parser, args.temp_dir)
    temp_dir = Path(os.path.normpath(args.temp_dir))
    state_file = temp_dir / "multinode" / "state.json"

    if args.action == "up":
        plan = make_plan(parser, args)
        if args.dry_run:
            dry_run_up(plan)
            return 0
        return up(plan, args.timeout, args.keep_on_failure)

    state = read_state(state_file)
    if args.action == "down":
        if args.dry_run:
            dry_run_down(temp_dir, state)
            return 0
        if state is None:
            print(f"no state under {temp_dir}: nothing to stop")
            return 0
        if not stop_nodes(state["nodes"], temp_dir, STOP_GRACE_S):
            return 1
        state_file.unlink()
        print(f"stopped; logs kept in {temp_dir}")
        return 0

    # status
    if state is None:
        print(f"no cluster recorded under {temp_dir}")
        return 1
    print_status(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
