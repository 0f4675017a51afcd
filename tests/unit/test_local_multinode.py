"""cluster/local_multinode.py without a live Ray: the commands `--dry-run` prints, argument
validation, the refusal to start over a busy head port, and `down` stopping exactly the
process groups it recorded (stand-in `sleep` processes, never Ray)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
from ray._private.label_utils import parse_node_labels_string
from ray.scripts.scripts import start as ray_start_cli
from ray.serve.scripts import cli as serve_cli

from tests.support import REPO

SCRIPT = REPO / "cluster" / "local_multinode.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_multinode", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lm = load()
POPEN = subprocess.Popen  # for the stand-ins: the fixture below bars the script from it


@pytest.fixture(autouse=True)
def nothing_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may start a process through the script: Ray must never run."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the script tried to run {args[0] if args else kwargs}")

    monkeypatch.setattr(lm.subprocess, "Popen", refuse)
    monkeypatch.setattr(lm.subprocess, "run", refuse)


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    """A fresh, not yet existing --temp-dir, short enough for Ray's socket paths."""
    path = Path(tempfile.mkdtemp(prefix="rmn-", dir="/tmp"))
    path.rmdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert lm.main([*argv, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def start_commands(lines: list[str]) -> list[list[str]]:
    """`ray start` argv of each node, from the printed `setsid ... > log 2>&1 &` lines."""
    commands = []
    for line in lines:
        if line.startswith("setsid "):
            argv = shlex.split(line.removeprefix("setsid ").split(" > ")[0])
            commands.append(argv)
    return commands


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def test_dry_run_prints_a_head_and_n_workers_with_their_own_ports_and_labels(
    capsys: pytest.CaptureFixture[str], temp_dir: Path
) -> None:
    lines = dry_run(capsys, "up", "--workers", "3", "--temp-dir", str(temp_dir))
    commands = start_commands(lines)
    assert len(commands) == 4
    head, workers = commands[0], commands[1:]
    assert head[1:4] == ["start", "--block", f"--temp-dir={temp_dir}"]
    assert "--head" in head and flags(head)["num-cpus"] == "0"

    seen_ports: set[int] = set()
    roles = []
    for argv in commands:
        assert Path(argv[0]) == Path(sys.executable).parent / "ray"
        options = flags(argv)
        assert options["temp-dir"] == str(temp_dir)
        assert options["node-ip-address"] == "127.0.0.1"
        roles.append(parse_node_labels_string(options["labels"])["node_role"])
        assert json.loads(options["resources"]) == {roles[-1]: 1}
        ports = {int(v) for k, v in options.items() if k.endswith("port") and "worker" not in k}
        assert not ports & seen_ports, f"{roles[-1]} reuses {ports & seen_ports}"
        seen_ports |= ports
        low, high = int(options["min-worker-port"]), int(options["max-worker-port"])
        assert not set(range(low, high + 1)) & seen_ports
    assert roles == ["head", "worker-1", "worker-2", "worker-3"]
    for argv in workers:
        assert flags(argv)["address"] == f"127.0.0.1:{flags(head)['port']}"
        assert flags(argv)["num-cpus"] == "1"
        assert "--head" not in argv
    # Never Ray's defaults, which `serve run` or a test suite's ray.init() may hold.
    assert not seen_ports & {6379, 8265, 10001, 52365}


def test_dry_run_commands_parse_with_the_installed_ray_and_serve_clis(
    capsys: pytest.CaptureFixture[str], temp_dir: Path
) -> None:
    lines = dry_run(capsys, "up", "--temp-dir", str(temp_dir))
    for argv in start_commands(lines):
        params = ray_start_cli.make_context("start", argv[2:]).params
        assert params["block"] is True
        assert params["temp_dir"] == str(temp_dir)
    (deploy,) = [shlex.split(line) for line in lines if " deploy " in line]
    params = serve_cli.commands["deploy"].make_context("deploy", deploy[2:]).params
    assert params["config_or_import_path"] == str(REPO / "serve_config.yaml")
    head = flags(start_commands(lines)[0])
    assert params["address"] == f"http://127.0.0.1:{head['dashboard-port']}"
    assert any("serve status --address" in line for line in lines)


def test_dry_run_touches_nothing(capsys: pytest.CaptureFixture[str], temp_dir: Path) -> None:
    dry_run(capsys, "up", "--temp-dir", str(temp_dir))
    dry_run(capsys, "down", "--temp-dir", str(temp_dir))
    assert not temp_dir.exists()


def test_another_http_port_deploys_a_copy_of_the_config(
    capsys: pytest.CaptureFixture[str], temp_dir: Path
) -> None:
    lines = dry_run(capsys, "up", "--http-port", "8123", "--temp-dir", str(temp_dir))
    (deploy,) = [shlex.split(line) for line in lines if " deploy " in line]
    assert deploy[2] == str(temp_dir / "multinode" / "serve_config.yaml")
    assert any("http_options.port 8123" in line for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["up", "--workers", "0"], "head runs no replicas"),
        (["up", "--workers", "9"], "at most 8"),
        (["up", "--worker-cpus", "0.5"], "whole number"),
        (["up", "--head-cpus", "-1"], "below 0"),
        (["up", "--object-store-mb", "10"], "75 MiB"),
        (["up", "--port", "80"], "below 1024"),
        (["up", "--port", "70000"], "not a TCP port"),
        (["up", "--port", "8080"], "port 8080 is both"),  # the head's metrics port
        (["up", "--http-port", "30001"], "port 30001 is both"),  # the head's object manager
        (["up", "--metrics-port", "30100"], "is both"),  # inside worker-1's block
        (["up", "--port-base", "65500"], "lower --port-base"),
        (["up", "--serve-config", "/nonexistent.yaml"], "does not exist"),
        (["up", "--temp-dir", "relative/dir"], "must be absolute"),
        (["down", "--temp-dir", "/tmp/ray"], "Ray's default"),
        (["up", "--temp-dir", "/tmp/ray/sub"], "Ray's default"),
        (["up", "--temp-dir", "/tmp/" + "x" * 40], "107-byte"),
        (["sideways"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        lm.main([*argv, "--dry-run"] if argv[0] in ("up", "down") else argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_to_start_over_a_busy_head_port(
    capsys: pytest.CaptureFixture[str], temp_dir: Path
) -> None:
    with socket.socket() as stale:
        stale.bind(("127.0.0.1", 0))
        stale.listen()
        port = stale.getsockname()[1]
        code = lm.main(["up", "--port", str(port), "--temp-dir", str(temp_dir)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"head port {port} is already in use" in err
    assert not temp_dir.exists()  # refused before writing anything


@pytest.fixture
def stand_ins(temp_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two `sleep` process groups recorded as nodes, and one bystander that is not."""
    processes = [POPEN(["sleep", "60"], start_new_session=True) for _ in range(3)]
    nodes = [
        {
            "name": name,
            "pid": p.pid,
            "pgid": p.pid,
            "create_time": psutil.Process(p.pid).create_time(),
            "log": "/dev/null",
            "ports": {},
            "command": ["sleep", "60"],
        }
        for name, p in zip(["head", "worker-1"], processes)
    ]
    lm.write_state(temp_dir / "multinode" / "state.json", {"dashboard": "", "nodes": nodes})
    yield processes
    for p in processes:
        p.kill()
        p.wait()


def test_down_dry_run_names_the_recorded_groups(
    capsys: pytest.CaptureFixture[str], temp_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    lines = dry_run(capsys, "down", "--temp-dir", str(temp_dir))
    head, worker, bystander = stand_ins
    kills = [line for line in lines if line.startswith("kill ")]
    assert kills[0].startswith(f"kill -TERM -- -{worker.pid} ")  # workers before the head
    assert kills[1].startswith(f"kill -TERM -- -{head.pid} ")
    assert all(p.poll() is None for p in stand_ins)


def test_up_refuses_while_a_recorded_node_runs(
    capsys: pytest.CaptureFixture[str], temp_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    assert lm.main(["up", "--temp-dir", str(temp_dir)]) == 1
    assert "is still running (head, worker-1)" in capsys.readouterr().err


def test_down_stops_exactly_the_recorded_groups(
    capsys: pytest.CaptureFixture[str], temp_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    head, worker, bystander = stand_ins
    assert lm.main(["down", "--temp-dir", str(temp_dir)]) == 0
    assert head.wait(timeout=10) is not None and worker.wait(timeout=10) is not None
    assert bystander.poll() is None
    assert not (temp_dir / "multinode" / "state.json").exists()
    capsys.readouterr()
    assert lm.main(["down", "--temp-dir", str(temp_dir)]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_down_leaves_a_reused_pid_alone(
    capsys: pytest.CaptureFixture[str], temp_dir: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    state_file = temp_dir / "multinode" / "state.json"
    state = json.loads(state_file.read_text())
    for node in state["nodes"]:
        node["create_time"] -= 1000  # as if each PID now belonged to a newer process
    lm.write_state(state_file, state)
    assert lm.main(["down", "--temp-dir", str(temp_dir)]) == 0
    assert all(p.poll() is None for p in stand_ins)


def test_the_callers_environment_is_left_alone(capsys, temp_dir) -> None:
    # Ray caches its auth mode at import: a script that set RAY_AUTH_MODE in its own process
    # broke every later ray.init() there. Only the child processes' environment carries it.
    import os

    before = dict(os.environ)
    dry_run(capsys, "up", "--workers", "1", "--temp-dir", str(temp_dir))
    assert dict(os.environ) == before
    assert lm.ray_env()["RAY_AUTH_MODE"] == os.environ.get("RAY_AUTH_MODE", "token")
