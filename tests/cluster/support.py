"""A local multi-node Ray (ray.cluster_utils.Cluster) serving an application, for the tests
of this tier: each module starts its own, after the integration tier's Ray has shut down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import yaml

from tests.support import MODEL, REPO, free_port, wait_until

APP = "inference"
REPLICA = f"ModelReplica-{MODEL}"
HEAD = {"head": 0.01}
WORKER_NODE = {"num_cpus": 1, "object_store_memory": 128 * 2**20}


def shipped_config(port: int) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    config["grpc_options"]["port"] = free_port()
    return config


def model_nodes() -> set[str]:
    """Nodes the ModelReplica replicas report running on (each call reaches one replica;
    the router spreads sequential calls, so 30 reach both with certainty in practice)."""
    from ray import serve

    handle = serve.get_deployment_handle(REPLICA, app_name=APP)
    return {handle.describe.remote().result(timeout_s=30)["node_id"] for _ in range(30)}


def running(deployment: str) -> int:
    from ray import serve

    states = serve.status().applications[APP].deployments[deployment].replica_states
    return states.get("RUNNING", 0)


@contextmanager
def serving_cluster(
    make_config: Any, ready: Any = lambda: True, worker_nodes: int = 1
) -> Iterator[tuple[Any, str]]:
    """A head node (2 CPUs, custom resource `head`) and `worker_nodes` worker nodes serving
    `make_config(port)`; yields the cluster and the base URL once ready and `ready()`."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "resources": {"head": 1},
            "object_store_memory": 256 * 2**20,
            "include_dashboard": False,
        },
    )
    for _ in range(worker_nodes):
        cluster.add_node(**WORKER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    port = free_port()
    schema = ServeDeploySchema.model_validate(make_config(port))
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=schema.grpc_options.model_dump(),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema, _blocking=False)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
            and ready(),
            240,
            "the application on the cluster",
        )
        yield cluster, base
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
