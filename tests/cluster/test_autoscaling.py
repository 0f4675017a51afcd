"""Autoscaling past two replicas on a local two-node Ray: load drives the ModelReplica to at
least four replicas (placed across both nodes), and without load it gives them back.

The policy is the shipped one (deployments/roles/autoscaling.py: requests in flight in the
replicas). The ingress keeps as many caller batches on their way as the replicas it sees can
take, so the requests in flight, and with them the replicas asked for, grow with the
deployment instead of stopping at what one replica's pipeline holds. The numbers (a target of
two requests per replica, delays in seconds) are this test's, so that it runs in a minute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.support import REPLICA, model_nodes, running, serving_cluster, shipped_config
from tests.integration.load import SteadyLoad
from tests.support import MODEL, wait_until

pytestmark = pytest.mark.slow
MAX_REPLICAS = 4
# Replicas report their autoscaling metrics every 10 s by default; the processes of the
# cluster below inherit this, so the policy sees load within the test's look-back.
PUSH_INTERVAL_ENV = {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}


def autoscaling_config(port: int) -> dict[str, Any]:
    config = shipped_config(port)
    app = config["applications"][0]
    (raw,) = [m for m in app["args"]["models"] if m["name"] == MODEL]
    raw["replica"] = {
        **raw.get("replica", {}),
        "autoscaling_config": {
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": MAX_REPLICAS,
            "target_ongoing_requests": 2,
            "policy": {
                "policy_function": "deployments.roles.autoscaling:requests_in_flight_policy"
            },
            "upscale_delay_s": 1,
            # Longer than a replica takes to start here, so a new one serves before it goes.
            "downscale_delay_s": 20,
            "look_back_period_s": 2,
        },
    }
    # At most two per node: four replicas need both nodes.
    app["deployments"].append({"name": REPLICA, "max_replicas_per_node": 2})
    for d in app["deployments"]:
        if d["name"] == "Ingress":
            # Every request reaches the model: cached answers would take the load away.
            d["user_config"]["cache_enabled"] = False
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    saved = {key: os.environ.get(key) for key in PUSH_INTERVAL_ENV}
    os.environ.update(PUSH_INTERVAL_ENV)
    try:
        with serving_cluster(autoscaling_config, lambda: running(REPLICA) == 1) as served:
            yield served
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_model_replicas_scale_past_two_under_load_and_back_down(cluster, record_property):
    ray_cluster, base = cluster
    timeline: list[tuple[float, int]] = []

    def replicas() -> int:
        n = running(REPLICA)
        timeline.append((time.monotonic(), n))
        return n

    with SteadyLoad(base, clients=24, max_seconds=240) as load:
        started = time.monotonic()
        wait_until(
            lambda: replicas() >= MAX_REPLICAS, 180, f"{MAX_REPLICAS} ModelReplicas", interval_s=1
        )
        up_s = time.monotonic() - started
        nodes = model_nodes()
        load.wait_for_more(100)
    stopped = time.monotonic()
    wait_until(lambda: replicas() == 1, 180, "scaling back to one replica", interval_s=1)
    down_s = time.monotonic() - stopped
    peak = max(n for _, n in timeline)
    record_property("scale_up_to_4_s", round(up_s, 1))
    record_property("scale_down_to_1_s", round(down_s, 1))
    print(
        f"\nload start -> {MAX_REPLICAS} replicas RUNNING {up_s:.1f}s (on {len(nodes)} nodes); "
        f"load stop -> 1 replica {down_s:.1f}s; peak {peak}"
    )
    assert peak <= MAX_REPLICAS
    # At most two per node: the four replicas serve from both nodes.
    assert nodes == {n.node_id for n in ray_cluster.list_all_nodes()}, nodes
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed while scaling: {failed[:3]}"
