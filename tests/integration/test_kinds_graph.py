"""Every model's replicas through the one generic role, on a real local Ray: health checks
and autoscaling stats for every kind (the text encoder had neither before the kinds), and
shadow counts that survive the shadow replica's restart."""

from __future__ import annotations

import secrets

import pytest
import ray

from tests.support import MODEL, sample_transactions, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["fraud-risk", "minilm"])
def test_each_models_replica_checks_its_health_and_reports_its_load(handles, model) -> None:
    replica = handles(f"ModelReplica-{model}")
    assert replica.check_health.remote().result(timeout_s=60) is None
    stats = replica.record_autoscaling_stats.remote().result(timeout_s=30)
    assert set(stats) == {"requests_in_flight"} and stats["requests_in_flight"] >= 0
    described = replica.describe.remote().result(timeout_s=30)
    assert described["name"] == model and described["device"] == "cpu"


def _report(service) -> dict:
    resp = service.http.get(service.url(f"/v1/shadow/report?model={MODEL}"), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _mirror(service, n: int) -> None:
    records = sample_transactions(n, seed=secrets.randbelow(10**6))
    for record in records:  # never sent before: a cached answer is not mirrored
        resp = service.http.post(
            service.url(f"/v1/models/{MODEL}:predict"), json={"instances": [record]}, timeout=30
        )
        assert resp.status_code == 200, resp.text


def test_shadow_counts_survive_the_shadow_replicas_restart(service) -> None:
    before = _report(service)["compared_rows"]
    _mirror(service, 20)  # the test config mirrors every request
    counted = wait_until(
        lambda: (r := _report(service))["compared_rows"] >= before + 20 and r,
        60,
        "20 more compared rows",
    )
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if f"#ShadowReplica-{MODEL}#" in a["name"]
    ]
    assert replicas, "no ShadowReplica actor found"
    for actor in replicas:
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)

    def restarted() -> bool:
        names = {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if f"#ShadowReplica-{MODEL}#" in a["name"]
        }
        return bool(names) and not names & {a["name"] for a in replicas}

    wait_until(restarted, 120, "a new ShadowReplica to replace the killed one")
    after = wait_until(lambda: _report(service), 60, "the report from the new replica")
    assert after["compared_rows"] >= counted["compared_rows"]
    assert after["mirrored_requests"] >= counted["mirrored_requests"]
    # And the new replica adds to the same totals.
    _mirror(service, 5)
    wait_until(
        lambda: _report(service)["compared_rows"] >= counted["compared_rows"] + 5,
        60,
        "the new replica's comparisons added to the totals",
    )
