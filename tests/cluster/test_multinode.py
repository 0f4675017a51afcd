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

from deployments.config import ModelSpec
from tests.cluster.support import (
    HEAD,
    REPLICA,
    WORKER_NODE,
    model_nodes,
    running,
    serving_cluster,
    shipped_config,
)
from tests.integration.load import RECORDS, SteadyLoad
from tests.support import MODEL, wait_until

pytestmark = pytest.mark.slow


def two_node_config(port: int) -> dict[str, Any]:
    config = shipped_config(port)
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
            d["user_config"]["cache_mode"] = "off"
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    with serving_cluster(two_node_config, lambda: running(REPLICA) == 2) as served:
        yield served


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
    ray_cluster.add_node(**WORKER_NODE)
    # RUNNING counts can include the lost replica until its health check fails: ask the
    # replicas themselves where they run.
    wait_until(lambda: len(model_nodes()) == 2, 180, "model replicas on two nodes again")
    resp = requests.post(
        f"{base}/v1/models/{MODEL}:predict",
        json={"instances": [RECORDS[0]]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
