"""Two Ray nodes on this machine (ray.cluster_utils.Cluster): replicas on both, then the worker
node is removed under load.

Its own Ray (a head and a worker node), started after the integration tier's has shut down.
The ingress, validator and shadow are pinned to the head (custom resource `head`); the model
runs two replicas, at most one per node, so one of them is on the node that goes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from deployments.config import ModelSpec
from tests.integration.load import RECORDS, SteadyLoad
from tests.support import MODEL, REPO, free_port, wait_until

pytestmark = pytest.mark.slow
APP = "inference"
REPLICA = f"ModelReplica-{MODEL}"
HEAD = {"head": 0.01}


def two_node_config(port: int) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    (raw,) = [m for m in app["args"]["models"] if m["name"] == MODEL]
    raw["replica"] = {**raw.get("replica", {}), "num_replicas": 2}  # fixed: no autoscaling
    spec = ModelSpec.model_validate(raw)
    # Options the model spec has no field for go in the deployments section, by name, as
    # `serve deploy` applies them: at most one model replica per node, and the model's other
    # deployments pinned to the head (their actor options given whole, with the head's
    # resource added: Serve replaces ray_actor_options rather than merging them).
    app["deployments"].append({"name": REPLICA, "max_replicas_per_node": 1})
    for name, replica in (
        (f"Validator-{MODEL}", spec.validator),
        (f"ShadowReplica-{MODEL}", spec.shadow_replica),
    ):
        actor = replica.options(name, None)["ray_actor_options"]
        app["deployments"].append({"name": name, "ray_actor_options": {**actor, "resources": HEAD}})
    for d in app["deployments"]:
        if d["name"] == "Ingress":
            d["ray_actor_options"]["resources"] = HEAD
            # Every request reaches the model: the cache must not hide a lost replica.
            d["user_config"]["cache_enabled"] = False
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
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
    cluster.add_node(num_cpus=1, object_store_memory=128 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    port = free_port()
    config = two_node_config(port)
    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema, _blocking=False)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
            and running(REPLICA) == 2,
            240,
            "the application on two nodes",
        )
        yield cluster, base
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def test_replicas_span_both_nodes_and_losing_one_loses_no_request(cluster, record_property):
    ray_cluster, base = cluster
    worker = ray_cluster.list_all_nodes()[1]
    nodes = model_nodes()
    assert nodes == {n.node_id for n in ray_cluster.list_all_nodes()}, nodes

    with SteadyLoad(base, clients=8) as load:
        load.wait_for_more(50)
        before = len(load.outcomes)
        ray_cluster.remove_node(worker, allow_graceful=False)
        load.wait_for_more(100, timeout_s=120)
    during = load.outcomes[before:]
    failed = load.failures()
    record_property("requests_during_node_loss", len(during))
    record_property("requests_failed", len(failed))
    print(f"\n{len(during)} requests after the node went away; {len(failed)} failed")
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed: {failed[:3]}"

    # Capacity comes back when a node does: the second replica is placed on the new node.
    ray_cluster.add_node(num_cpus=1, object_store_memory=128 * 2**20)
    # RUNNING counts can include the lost replica until its health check fails: ask the
    # replicas themselves where they run.
    wait_until(lambda: len(model_nodes()) == 2, 180, "model replicas on two nodes again")
    resp = requests.post(
        f"{base}/v1/models/{MODEL}:predict",
        json={"instances": [RECORDS[0]]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
