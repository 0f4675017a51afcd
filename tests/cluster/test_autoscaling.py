"""Autoscaling past two replicas on a local two-node Ray: load drives the ModelReplica to at
least four replicas (placed across both nodes), and without load it gives them back.

The policy is the shipped one (deployments/roles/autoscaling.py: requests in flight in the
replicas). The ingress keeps as many caller batches on their way as the replicas it sees can
take, so the requests in flight, and with them the replicas asked for, grow with the
deployment instead of stopping at what one replica's pipeline holds. The numbers (the target,
delays in seconds) are this test's, so that it runs in a minute; the second model is left out
so that the two cores serve the one under test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.support import REPLICA, model_nodes, running, serving_cluster, shipped_config
from tests.integration.load import SteadyLoad
from tests.support import MODEL, wait_until

pytestmark = pytest.mark.slow
MAX_REPLICAS = 4


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
            # The model is cheap next to the ingress on two cores: under this load its
            # replicas hold about one request on average (time-averaged in flight), so a
            # low target is what asks for four.
            "target_ongoing_requests": 0.25,
            "policy": {
                "policy_function": "deployments.roles.autoscaling:requests_in_flight_policy"
            },
            "upscale_delay_s": 1,
            # Longer than a replica takes to start here, so a new one serves before it goes.
            "downscale_delay_s": 20,
            "look_back_period_s": 2,
            # How often replicas send their reports to the controller (10 s by default):
            # within the look-back, so the policy sees the load it averages.
            "metrics_interval_s": 0.5,
        },
    }
    # At most two per node: four replicas need both nodes.
    app["deployments"].append({"name": REPLICA, "max_replicas_per_node": 2})
    app["args"]["models"] = [m for m in app["args"]["models"] if m["name"] == MODEL]
    for d in app["deployments"]:
        if d["name"] == "Ingress":
            # Every request reaches the model: cached answers would take the load away.
            d["user_config"]["cache_mode"] = "off"
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    with serving_cluster(autoscaling_config, lambda: running(REPLICA) == 1) as served:
        yield served


def test_model_replicas_scale_past_two_under_load_and_back_down(cluster, record_property):
    ray_cluster, base = cluster
    timeline: list[tuple[float, int]] = []

    def replicas() -> int:
        n = running(REPLICA)
        timeline.append((time.monotonic(), n))
        return n

    # 64 instances a request: the model replica, not only the ingress, has work to hold.
    with SteadyLoad(base, clients=16, max_seconds=240, instances_per_request=64) as load:
        started = time.monotonic()
        wait_until(
            lambda: replicas() >= MAX_REPLICAS,
            180,
            f"{MAX_REPLICAS} ModelReplicas",
            interval_s=1,
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
