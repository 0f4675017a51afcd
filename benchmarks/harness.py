"""Start the service from serve_config.yaml on a local Ray and drive it with wrk.

The service is deployed exactly as `serve run serve_config.yaml` deploys it (serve_start +
deploy_apps of the parsed config), on a free loopback port, so every variant a benchmark
measures is a config edit of the shipped file, applied the way `serve deploy` applies it.
wrk generates the load: a C client, so the 2-core machine measures the server, not Python.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from deployments.launch import FAST_PATH_ENV, HaproxyTracker, haproxy_wrapper_env

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "predict_v1.lua"
OVERLOAD_LUA = Path(__file__).resolve().parent / "overload.lua"
APP = "inference"
MODEL = "fraud-risk"


@dataclass
class LoadResult:
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    statuses: dict[str, int] | None = None

    @property
    def goodput_rps(self) -> float:
        ok = self.statuses["200"] if self.statuses else self.requests - self.non_2xx
        return ok / self.duration_s


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `sudo apt-get install -y wrk` (Debian/Ubuntu)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shipped_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    """An entry of the application's `deployments:` section (only the Ingress has one:
    each model's deployments are configured in its spec, see `model_spec`)."""
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def model_spec(config: dict[str, Any], name: str = MODEL) -> dict[str, Any]:
    """The spec of model `name` under the application's `args.models`: its versions,
    batching, shadow and the resources of its deployments (named `<Role>-<name>`)."""
    return next(m for m in config["applications"][0]["args"]["models"] if m["name"] == name)


def model_autoscaling(config: dict[str, Any], name: str = MODEL) -> dict[str, Any]:
    """The autoscaling_config of model `name`'s ModelReplica, written into `config` (the
    shipped default when its spec sets none) so that it can be edited in place."""
    from deployments.config import ModelSpec

    spec = model_spec(config, name)
    autoscaling = ModelSpec.model_validate(spec).replica.autoscaling_config
    if autoscaling is None:
        raise ValueError(f"model {name!r} runs a fixed number of ModelReplicas")
    replica = spec.setdefault("replica", {})
    replica["autoscaling_config"] = dict(autoscaling)
    return replica["autoscaling_config"]


def variant(
    config: dict[str, Any], import_path: str | None = None, **user_configs: dict[str, Any]
) -> dict[str, Any]:
    new = copy.deepcopy(config)
    if import_path:
        new["applications"][0]["import_path"] = import_path
    for name, values in user_configs.items():
        d = deployment(new, name)
        d["user_config"] = {**d.get("user_config", {}), **values}
    return new


class LocalService:
    """A local Ray + Serve serving a config; `deploy` applies a new one and waits."""

    def __init__(
        self,
        config: dict[str, Any],
        num_cpus: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        import ray
        from ray.serve._private.api import serve_start
        from ray.serve.schema import ServeDeploySchema

        # By default, the serving path the README's `inference-serve` starts.
        env = {**FAST_PATH_ENV, **haproxy_wrapper_env()} if env is None else env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        if port_in_use(self.port):
            raise RuntimeError(f"a stale listener holds 127.0.0.1:{self.port}; stop it first")
        # Ray's processes inherit the environment at ray.init: that is where modes such as
        # RAY_SERVE_ENABLE_HA_PROXY take effect. Restored on close.
        self._saved_env = {key: os.environ.get(key) for key in env or {}}
        os.environ.update(env or {})
        self._haproxies = HaproxyTracker(os.getpid()).start()
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        schema = ServeDeploySchema.model_validate(self._on_port(config))
        self._client = serve_start(
            http_options=schema.http_options.model_dump(),
            grpc_options=schema.grpc_options.model_dump(),
            proxy_location=schema.proxy_location,
        )
        started = time.monotonic()
        self.deploy(config)
        self.startup_s = time.monotonic() - started

    def _on_port(self, config: dict[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(config)
        config["http_options"]["port"] = self.port
        if "grpc_options" in config:
            config["grpc_options"]["port"] = self.grpc_port
        return config

    def deploy(self, config: dict[str, Any], timeout_s: float = 240) -> None:
        from ray import serve
        from ray.serve.schema import ServeDeploySchema

        self._client.deploy_apps(
            ServeDeploySchema.model_validate(self._on_port(config)), _blocking=False
        )
        time.sleep(1.0)  # let the controller take the new config before we poll its status
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = serve.status().applications.get(APP)
            if status is not None and status.status == "DEPLOY_FAILED":
                raise RuntimeError(f"deploy failed: {status.message}")
            if (
                status is not None
                and status.status == "RUNNING"
                and all(set(d.replica_states) == {"RUNNING"} for d in status.deployments.values())
                and self._ready()
            ):
                return
            time.sleep(0.5)
        raise TimeoutError(f"application not RUNNING within {timeout_s}s")

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/v2/health/ready", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        # An haproxy started for this service can outlive Ray and keep the port (measured in
        # ../shared/DESIGN.md): stop the ones Ray started under this process, by pid.
        self._haproxies.stop()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def mixed_script(n_bodies: int = 256, seed: int = 99, extra: Path | None = None) -> Path:
    """predict_v1.lua preceded by `n_bodies` one-instance bodies drawn from the training
    distribution, so the load exercises real inputs (and the shadow sees disagreements)."""
    from deployments.training.fraud_data import generate

    records, _ = generate(n_bodies, seed)
    bodies = ",\n".join("[[" + json.dumps({"instances": [r]}) + "]]" for r in records)
    suffix = f"_{extra.stem}" if extra else ""
    path = Path(tempfile.gettempdir()) / f"predict_v1_mixed_{n_bodies}_{seed}{suffix}.lua"
    path.write_text(
        f"bodies = {{\n{bodies}\n}}\n"
        + LUA.read_text()
        + ("\n" + extra.read_text() if extra else "")
    )
    return path


def run_wrk(
    url: str,
    connections: int,
    duration_s: int,
    threads: int = 2,
    script: Path | None = None,
    niceness: int = 0,
) -> LoadResult:
    wrk = require_wrk()
    script = script or mixed_script()
    out = subprocess.run(
        [
            *(["nice", "-n", str(niceness)] if niceness else []),
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--latency",
            "--timeout",
            # The server's own request_timeout_s: an answer later than this is a failure
            # of ours; one earlier is not the client's to give up on.
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration_s + 60,
    ).stdout
    summary = json.loads(re.search(r"^JSON (.*)$", out, re.M).group(1))
    statuses = re.search(r"^STATUS (.*)$", out, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return LoadResult(
        connections=connections,
        duration_s=summary["duration_s"],
        requests=summary["requests"],
        rps=summary["rps"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        statuses=json.loads(statuses.group(1)) if statuses else None,
    )


def write_report(name: str, payload: dict[str, Any], table: str, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out_dir / f"{name}-{stamp}.json").write_text(json.dumps(payload, indent=2, default=_jsonable))
    md = out_dir / f"{name}-{stamp}.md"
    md.write_text(table + "\n")
    print(table)
    print(f"written: {md}")
    return md


def _jsonable(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else str(obj)
