"""Autoscaling on live traffic, and configuration changes under load, on a real local Ray.

The autoscaling numbers here are the test's own (seconds, not the minute serve_config.yaml
waits before giving capacity back); the mechanism is the shipped one.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import (
    APP,
    wait_for_config,
    with_autoscaling,
    with_model,
    with_user_config,
)
from tests.integration.load import SteadyLoad
from tests.support import MODEL, wait_until

pytestmark = pytest.mark.slow
REPLICA = f"ModelReplica-{MODEL}"


def replicas(deployment: str) -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP].deployments[deployment].replica_states)


@pytest.fixture
def restore(service):
    yield
    service.deploy(service.config)
    wait_for_config(service, lambda r: r["sample_rate"] == 1.0, "the standard application")
    wait_until(lambda: replicas(REPLICA) == {"RUNNING": 1}, 120, "one ModelReplica")


def test_model_replicas_scale_up_under_load_and_back_down(service, restore, record_property):
    quick = with_autoscaling(
        # Every request reaches the model (no cached answers), so the load is the model's.
        with_user_config(service.config, "Ingress", cache_mode="off"),
        MODEL,
        # The model is the cheap stage here (the ingress costs more CPU), so the requests in
        # flight there, averaged over time (what the shipped policy scales on:
        # deployments/roles/autoscaling.py), stay around one under this load: a target of
        # 0.25 asks for more replicas.
        target_ongoing_requests=0.25,
        upscale_delay_s=1,
        # Longer than a replica takes to start under this load (13 s seen on a busy 2-core
        # CI machine): a shorter delay removed the new replica before it ever served.
        downscale_delay_s=30,
        look_back_period_s=2,
        # Replicas report to the controller within the look-back (10 s by default).
        metrics_interval_s=0.5,
    )
    service.deploy(quick)
    wait_for_config(service, lambda r: True, "the quick-scaling config")
    timeline: list[tuple[float, int]] = []

    def running() -> int:
        n = replicas(REPLICA).get("RUNNING", 0)
        timeline.append((time.monotonic(), n))
        return n

    # 32 instances a request: the model replica, not only the ingress, has work to hold.
    with SteadyLoad(service.base_url, clients=16, instances_per_request=32) as load:
        started = time.monotonic()
        wait_until(lambda: running() >= 2, 120, "a second ModelReplica serving", interval_s=0.5)
        up_s = time.monotonic() - started
        load.wait_for_more(100)
    stopped = time.monotonic()
    wait_until(lambda: running() == 1, 150, "scaling back to one replica", interval_s=0.5)
    down_s = time.monotonic() - stopped
    record_property("scale_up_s", round(up_s, 1))
    record_property("scale_down_s", round(down_s, 1))
    print(f"\nload start -> 2nd replica RUNNING {up_s:.1f}s; load stop -> 1 replica {down_s:.1f}s")
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed while scaling: {failed[:3]}"


def test_user_config_changes_under_load_fail_no_request(service, handles, restore) -> None:
    model = handles(REPLICA)
    with SteadyLoad(service.base_url, clients=4) as load:
        service.deploy(with_model(service.config, MODEL, batch={"max_batch_size": 16}))
        wait_until(
            lambda: model.describe.remote().result(timeout_s=10)["batch"]["max_batch_size"] == 16,
            60,
            "the new batch size in the model replica",
        )
        load.wait_for_more(30)
        service.deploy(service.config)
        wait_until(
            lambda: model.describe.remote().result(timeout_s=10)["batch"]["max_batch_size"] == 64,
            60,
            "the batch size restored",
        )
        load.wait_for_more(30)
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed during updates: {failed[:3]}"
    assert len(load.outcomes) >= 70
