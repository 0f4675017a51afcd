"""One real local Ray for the integration tier, serving serve_config.yaml as `serve run` does.

The application is deployed through the same path `serve run serve_config.yaml` takes
(`serve_start` + `deploy_apps` of the parsed config), on a free loopback port, with the
shadow sampling every request so mirroring is observable. Tracing is on as an operator
turns it on: the standard OpenTelemetry variables point at a real OTLP receiver on loopback,
set before Ray starts so every Ray process inherits them. Package-scoped: Ray is shut down
when this tier finishes, before the e2e tier starts its own.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from deployments.launch import FAST_PATH_ENV, HaproxyTracker, haproxy_wrapper_env
from tests.otlp_receiver import OtlpReceiver
from tests.support import MODEL, REPO, free_port, wait_until

APP = "inference"
READY_TIMEOUT_S = 180


@dataclass
class Service:
    base_url: str
    grpc_address: str
    metrics_url: str
    config: dict[str, Any]
    http: requests.Session
    deploy: Callable[[dict[str, Any]], None]
    otlp: OtlpReceiver

    def url(self, path: str) -> str:
        return self.base_url + path


def base_config(port: int) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    config["grpc_options"]["port"] = free_port()
    config = with_user_config(config, "Ingress", shadow_sample_rate=1.0)
    # Drift scored every second over a short window, so that a test sees a shift within
    # seconds (tests/integration/test_drift_scores.py).
    return with_model(config, MODEL, drift=DRIFT)


DRIFT = {"window_s": 30, "min_rows": 200, "score_interval_s": 1.0}


@pytest.fixture(scope="package")
def service() -> Iterator[Service]:
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    otlp = OtlpReceiver().start()
    tracing_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        # Spans reach the receiver within 0.2 s instead of the default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # The serving path the README's command runs: HAProxy, user code on the replica's
        # loop, gRPC handle calls (Ray's processes read these at start).
        **FAST_PATH_ENV,
        **haproxy_wrapper_env(),
    }
    saved_env = {key: os.environ.get(key) for key in tracing_env}
    os.environ.update(tracing_env)
    # Ray's processes are this process's children; each haproxy they start is recorded.
    haproxies = HaproxyTracker(os.getpid()).start()
    metrics_port = free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    port = free_port()
    config = base_config(port)
    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=schema.grpc_options.model_dump(),
        proxy_location=schema.proxy_location,
    )

    def deploy(new_config: dict[str, Any]) -> None:
        client.deploy_apps(ServeDeploySchema.model_validate(new_config), _blocking=False)

    http = requests.Session()
    svc = Service(
        f"http://127.0.0.1:{port}",
        f"127.0.0.1:{config['grpc_options']['port']}",
        f"http://127.0.0.1:{metrics_port}/metrics",
        config,
        http,
        deploy,
        otlp,
    )
    try:
        deploy(config)
        wait_until(
            lambda: http.get(svc.url("/v2/health/ready"), timeout=5).status_code == 200,
            READY_TIMEOUT_S,
            "the application to report ready",
        )
        yield svc
    finally:
        http.close()
        serve.shutdown()
        ray.shutdown()
        # HAProxy can outlive Ray: stop the ones this session started, by pid.
        haproxies.stop()
        otlp.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_settled() -> bool:
    """The application is RUNNING with no replica starting or stopping: a rollout is over."""
    from ray import serve

    status = serve.status().applications[APP]
    if status.status == "DEPLOY_FAILED":
        pytest.fail(f"deploying the application failed: {status.message}")
    return status.status == "RUNNING" and all(
        set(d.replica_states) == {"RUNNING"} for d in status.deployments.values()
    )


@pytest.fixture(autouse=True)
def _settled_before_each_test(request: pytest.FixtureRequest) -> None:
    """A test that restores the config leaves a rollout behind it (Ingress and shadow
    replicas replaced); the next test starts once it is over, not in the middle of it."""
    if "service" in request.fixturenames or "handles" in request.fixturenames:
        request.getfixturevalue("service")
        wait_until(is_settled, 180, "the application's rollout to settle", interval_s=0.5)


@pytest.fixture(scope="package")
def handles(service: Service) -> Callable[[str], Any]:
    from ray import serve

    return lambda name: serve.get_deployment_handle(name, app_name=APP)


def wait_for_config(
    service: Service, expected: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 120
) -> None:
    """Wait until the app is RUNNING again and `expected` holds for a fresh report."""

    def settled() -> bool:
        if not is_settled():
            return False
        return expected(service.http.get(service.url("/v1/shadow/report"), timeout=10).json())

    wait_until(settled, timeout_s, what, interval_s=0.5)


def with_import_path(config: dict[str, Any], import_path: str) -> dict[str, Any]:
    new = copy.deepcopy(config)
    new["applications"][0]["import_path"] = import_path
    return new


def with_user_config(config: dict[str, Any], deployment: str, **values: Any) -> dict[str, Any]:
    new = copy.deepcopy(config)
    for d in new["applications"][0]["deployments"]:
        if d["name"] == deployment:
            d["user_config"] = {**d.get("user_config", {}), **values}
    return new


def with_model(config: dict[str, Any], model: str, **sections: Any) -> dict[str, Any]:
    """`config` with the entry of `model` under the application's `args.models` updated: each
    keyword is a field of the model's spec (`batch`, `shadow`, `replica`, ...); dict values
    are merged into what is there."""
    new = copy.deepcopy(config)
    for spec in new["applications"][0]["args"]["models"]:
        if spec["name"] == model:
            for key, value in sections.items():
                if isinstance(value, dict):
                    spec[key] = {**spec.get(key, {}), **value}
                else:
                    spec[key] = value
            return new
    raise AssertionError(f"serve_config.yaml serves no model {model!r}")


def with_autoscaling(config: dict[str, Any], model: str, **values: Any) -> dict[str, Any]:
    """`config` with `values` merged into the autoscaling of `model`'s ModelReplica (the
    shipped default policy when the spec sets none)."""
    from deployments.config import ModelSpec

    (spec,) = [m for m in config["applications"][0]["args"]["models"] if m["name"] == model]
    autoscaling = ModelSpec.model_validate(spec).replica.autoscaling_config
    assert autoscaling is not None, f"{model}'s ModelReplica does not autoscale"
    return with_model(config, model, replica={"autoscaling_config": {**autoscaling, **values}})


def replica_actors(deployment: str) -> set[str]:
    """Names of the live replica actors of `deployment` (each replica has its own)."""
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#{deployment}#")
    }


class ErrorLines:
    """ERROR records the serve actors (proxy, controller, every replica) log from now on:
    Ray writes each actor's log under the session's logs/serve/, one JSON record a line."""

    def __init__(self) -> None:
        import ray

        self.folder = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
        self.offsets = {path: path.stat().st_size for path in self.folder.glob("*.log")}

    def since(self) -> list[str]:
        found = []
        for path in self.folder.glob("*.log"):
            with path.open("rb") as log:
                log.seek(self.offsets.get(path, 0))
                for line in log:
                    # JSON records (replicas) or Ray's text format (controller, proxy).
                    if b'"levelname": "ERROR"' in line or line.startswith(b"ERROR "):
                        found.append(f"{path.name}: {line[:400].decode(errors='replace')}")
        return found


@pytest.fixture
def error_lines(service: Service) -> ErrorLines:
    return ErrorLines()
