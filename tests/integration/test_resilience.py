"""Admission, backpressure and faults on a real local Ray, over real HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import time

import pytest
import requests

from tests.integration.conftest import (
    APP,
    replica_actors,
    wait_for_config,
    with_autoscaling,
    with_model,
    with_user_config,
)
from tests.integration.load import RECORDS, SteadyLoad
from tests.support import MODEL, wait_until

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"
REPLACEMENT_DEADLINE_S = 30
TOKEN = "t0k3n-integration-0001"
REPLICA = f"ModelReplica-{MODEL}"
SHADOW = f"ShadowReplica-{MODEL}"


def running(deployment: str) -> int:
    from ray import serve

    states = serve.status().applications[APP].deployments[deployment].replica_states
    return states.get("RUNNING", 0) if set(states) == {"RUNNING"} else -1


def kill(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def two_model_replicas(config: dict) -> dict:
    return with_autoscaling(config, MODEL, min_replicas=2, initial_replicas=2, max_replicas=2)


@pytest.fixture
def restore(service):
    yield
    service.deploy(service.config)
    wait_for_config(service, lambda r: r["sample_rate"] == 1.0, "the standard application")
    wait_until(lambda: running(REPLICA) == 1, 120, "one ModelReplica again")


def test_killing_a_model_replica_under_load_loses_no_request(service, restore) -> None:
    service.deploy(two_model_replicas(service.config))
    # A change to a model's spec (the application's args) rolls out every deployment, the
    # other model's too: kill only once nothing else is starting, so that the replacement
    # is not queued behind that rollout's replicas.
    wait_for_config(service, lambda r: True, "the two-replica application", timeout_s=240)
    wait_until(lambda: running(REPLICA) == 2, 120, "two ModelReplicas")
    before = replica_actors(REPLICA)
    with SteadyLoad(service.base_url) as load:
        load.wait_for_more(20)
        killed_at = time.monotonic()
        kill(sorted(before)[0])
        wait_until(
            lambda: len(replica_actors(REPLICA) - before) == 1 and running(REPLICA) == 2,
            REPLACEMENT_DEADLINE_S,
            "a replacement ModelReplica to serve",
        )
        replaced_s = time.monotonic() - killed_at
        load.wait_for_more(20)
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed: {failed[:3]}"
    print(f"\nreplacement ModelReplica serving {replaced_s:.1f}s after the kill")


def test_killing_the_shadow_leaves_the_primary_untouched(service) -> None:
    (shadow,) = replica_actors(SHADOW)
    with SteadyLoad(service.base_url) as load:
        load.wait_for_more(10)
        kill(shadow)
        wait_until(
            lambda: replica_actors(SHADOW) - {shadow} and running(SHADOW) == 1,
            60,
            "the shadow to be replaced",
        )
        load.wait_for_more(20)
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} failed: {failed[:3]}"


def post(service, body=None, headers=None) -> requests.Response:
    return requests.post(
        service.url(PREDICT), json=body or {"instances": [RECORDS[0]]}, headers=headers, timeout=30
    )


SQUEEZE = {"max_system_used_fraction": 0.001, "retry_after_s": 4}


@pytest.mark.parametrize("deployment", ["Ingress", REPLICA])
def test_memory_pressure_is_a_503_with_retry_after_and_recovers(
    service, restore, deployment
) -> None:
    if deployment == "Ingress":
        squeezed = with_user_config(service.config, "Ingress", memory=SQUEEZE)
    else:  # the model replica's guard is part of its batching config, in the model's spec
        squeezed = with_model(service.config, MODEL, batch={"memory": SQUEEZE})
    service.deploy(squeezed)

    def rejected() -> list[requests.Response]:
        resp = post(service)
        return [resp] if resp.status_code == 503 else []  # a Response is falsy when not ok

    (resp,) = wait_until(rejected, 60, f"memory pressure to be reported by the {deployment}")
    assert resp.headers["Retry-After"] == "4"
    assert "memory pressure" in resp.json()["error"] and resp.json()["code"] == "overloaded"
    service.deploy(service.config)
    wait_until(lambda: post(service).status_code == 200, 60, "recovery once pressure clears")


def test_inflight_cap_sheds_with_retry_after(service, restore) -> None:
    # A user_config change does not restart the replica, so RUNNING alone does not say it
    # was applied: the sample rate, reconfigured in the same call as the cap, does. Cache
    # off: a cached answer leaves the ingress without ever yielding its event loop, so the
    # same body sent 96 times would never have two requests in flight to refuse.
    capped = with_user_config(
        service.config,
        "Ingress",
        max_inflight_requests=2,
        shadow_sample_rate=0.5,
        cache_mode="off",
    )
    service.deploy(capped)
    wait_for_config(service, lambda r: r["sample_rate"] == 0.5, "the capped ingress")
    wait_until(lambda: post(service).status_code == 200, 30, "the capped ingress to answer")
    with cf.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda _: post(service), range(96)))
    codes = {r.status_code for r in responses}
    assert codes <= {200, 503} and 503 in codes and 200 in codes, codes
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["details"][0]["reason"] == "inflight_limit"


def test_a_client_over_its_rate_gets_429_and_is_admitted_after_its_retry_after(
    service, restore
) -> None:
    limited = with_user_config(
        service.config,
        "Ingress",
        rate_limit={"enabled": True, "requests_per_s": 1, "burst": 3},
        shadow_sample_rate=0.25,
        cache_mode="off",
    )
    service.deploy(limited)
    wait_for_config(service, lambda r: r["sample_rate"] == 0.25, "the rate-limited ingress")
    # Without auth the client is its address: this test's, as HAProxy forwards it.
    answers = [post(service) for _ in range(8)]
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 429} and codes.index(429) <= 3, codes
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["code"] == "rate_limited"
    wait_s = int(refused.headers["Retry-After"])
    assert 1 <= wait_s <= 2
    # Honouring the header is the contract under test: wait exactly what it said.
    time.sleep(wait_s)
    assert post(service).status_code == 200
    # Health probes are never rate limited: an orchestrator must always reach them.
    probes = [requests.get(service.url("/v2/health/live"), timeout=10) for _ in range(10)]
    assert {r.status_code for r in probes} == {200}


def test_deadline_header(service) -> None:
    resp = post(service, headers={"x-request-deadline-ms": "1"})
    assert resp.status_code in (200, 504)  # 1 ms is usually, not always, too short
    if resp.status_code == 504:
        assert resp.json()["code"] == "deadline_exceeded"
    assert post(service, headers={"x-request-deadline-ms": "10000"}).status_code == 200
    bad = post(service, headers={"x-request-deadline-ms": "soon"})
    assert bad.status_code == 400 and "x-request-deadline-ms" in bad.json()["error"]


def test_result_cache_hits_are_counted(service) -> None:
    body = {"instances": [dict(RECORDS[5], amount_usd=1234.5)]}
    first, second = post(service, body), post(service, body)
    assert first.json()["predictions"] == second.json()["predictions"]

    def hits() -> float:
        text = requests.get(service.metrics_url, timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ray_result_cache_lookups") and 'result="hit"' in line
        )

    wait_until(lambda: hits() >= 1, 30, "a cache hit in the metrics export", interval_s=1)


def test_bearer_auth_when_a_token_is_configured(service, restore) -> None:
    secured = copy.deepcopy(service.config)
    env_vars = {"INFERENCE_AUTH_TOKEN": TOKEN}
    secured["applications"][0]["runtime_env"] = {"env_vars": env_vars}
    service.deploy(secured)
    wait_until(lambda: post(service).status_code == 401, 120, "auth to be enforced")
    resp = post(service)
    assert resp.headers["WWW-Authenticate"] == "Bearer" and resp.json()["code"] == "unauthorized"
    assert post(service, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(service, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Health probes stay open to kubelets and load balancers without the token (the fresh
    # ingress's first probes may still see a model warming its handles: poll, briefly).
    wait_until(
        lambda: requests.get(service.url("/v2/health/ready"), timeout=10).status_code == 200,
        60,
        "readiness without a token",
    )
    assert requests.get(service.url("/v1/models"), timeout=10).status_code == 401
