"""256 connections against a 2-core service: every answer is a 200 or a 503/429 with
Retry-After; no 500, no dropped connection; ready right after. Load comes from wrk (a C
client: a Python client on 2 cores would measure itself). Goodput and rejection latency are
printed here and measured properly by `python -m benchmarks overload`: a performance ratio
belongs to the benchmark, the contract to the test."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import requests

from benchmarks.harness import OVERLOAD_LUA, mixed_script, run_wrk
from benchmarks.overload import probe
from tests.integration.conftest import wait_for_config, with_autoscaling, with_user_config
from tests.support import MODEL

pytestmark = pytest.mark.slow


@pytest.fixture
def steady_capacity(service):
    """Every request does real work (cache off) on a fixed replica count (no autoscaling),
    so goodput at low and at high concurrency measure the same thing."""
    config = with_autoscaling(
        with_user_config(service.config, "Ingress", cache_mode="off", shadow_sample_rate=0.1),
        MODEL,
        min_replicas=1,
        initial_replicas=1,
        max_replicas=1,
    )
    service.deploy(config)
    wait_for_config(service, lambda r: r["sample_rate"] == 0.1, "the fixed-capacity application")
    yield
    service.deploy(service.config)
    wait_for_config(service, lambda r: r["sample_rate"] == 1.0, "the standard application")


def test_256_connections_get_200_or_a_fast_503_with_retry_after(service, steady_capacity) -> None:
    script = mixed_script(extra=OVERLOAD_LUA)
    run_wrk(service.base_url, 32, 3, script=script)  # warm-up, discarded
    low = [run_wrk(service.base_url, c, 10, script=script) for c in (8, 32)]
    peak = max(r.goodput_rps for r in low)
    run_wrk(service.base_url, 256, 5, script=script)  # reach the overloaded steady state

    stop, probes = threading.Event(), []
    prober = threading.Thread(target=probe, args=(service.base_url, stop, probes))
    prober.start()
    try:
        heavy = run_wrk(service.base_url, 256, 20, script=script)
    finally:
        stop.set()
        prober.join(60)

    statuses = heavy.statuses
    print(
        f"\nlow-concurrency peak goodput {peak:.1f}/s; at 256: {heavy.goodput_rps:.1f}/s "
        f"(ratio {heavy.goodput_rps / peak:.2f}); statuses {statuses}; p99 {heavy.p99_ms} ms"
    )
    rejected = [s for code, s in probes if code == 503]
    if rejected:
        print(
            f"probe: {len(rejected)} rejections, p50 {1000 * np.percentile(rejected, 50):.0f} "
            f"ms, p99 {1000 * np.percentile(rejected, 99):.0f} ms"
        )
    assert heavy.socket_errors == 0, "no dropped connections or timeouts"
    assert statuses["other"] == 0, "nothing but 200, 503 and 429"
    assert statuses["missing_retry_after"] == 0, "every 503/429 carries Retry-After"
    assert all(code in (200, 503, 429) for code, _ in probes)
    assert statuses["200"] > 0, "overload sheds the excess, not everything"
    ready = requests.get(f"{service.base_url}/v2/health/ready", timeout=10)
    assert ready.status_code == 200, "ready right after the storm"
