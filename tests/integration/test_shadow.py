"""Shadow mode on a real local Ray: isolation from faulty candidates, sampling, metrics,
and promotion / rollback under steady load with zero failed requests."""

from __future__ import annotations

import concurrent.futures as cf
import math
import secrets
import time

import pytest
import requests

from tests.integration.conftest import (
    replica_actors,
    wait_for_config,
    with_import_path,
    with_model,
    with_user_config,
)
from tests.integration.load import SteadyLoad
from tests.support import MODEL, sample_transactions, wait_until

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"
SHADOW = f"ShadowReplica-{MODEL}"
RECORDS = sample_transactions(64, seed=33)


def report(service) -> dict:
    resp = service.http.get(service.url("/v1/shadow/report"), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def fire(service, n: int, concurrency: int = 8) -> list[tuple[int, float]]:
    """n single-instance predicts of inputs never sent before (a cached answer is not
    mirrored: the shadow compares model outputs); (status, seconds) of each."""
    salt = secrets.randbelow(10**6)

    def one(i: int) -> tuple[int, float]:
        record = {**RECORDS[i % 64], "amount_usd": 1 + (salt * 1000 + i) / 1e6}
        started = time.perf_counter()
        resp = requests.post(service.url(PREDICT), json={"instances": [record]}, timeout=30)
        return resp.status_code, time.perf_counter() - started

    with cf.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture
def restore(service):
    """Deploys the standard application after the test. A test that deployed a candidate
    of its own adds that candidate's replica names: they must be gone, replaced by the real
    candidate's (its counts are kept apart from theirs, so they cannot tell)."""
    replaced: list[set[str]] = []
    yield replaced
    gone = set().union(*replaced)
    service.deploy(service.config)
    wait_for_config(
        service,
        lambda r: (r["primary_version"], r["candidate_version"], r["sample_rate"])
        == ("1", "2", 1.0)
        and not replica_actors(SHADOW) & gone,
        "the standard application to be back",
    )


def test_report_compares_the_real_candidate(service) -> None:
    before = report(service)
    assert [s for s, _ in fire(service, 40)] == [200] * 40
    after = wait_until(
        lambda: (r := report(service))["compared_requests"] >= before["compared_requests"] + 40
        and r,
        30,
        "40 comparisons",
    )
    assert (after["primary_version"], after["candidate_version"]) == ("1", "2")
    assert (after["kind"], after["agreement_rule"]) == ("tabular_classification", "label")
    low, high = after["agreement_ci95"]
    assert 0 <= low <= after["agreement"] <= high <= 1
    assert sum(c["rows"] for c in after["confusion"]) == after["compared_rows"]
    assert after["metric"] == "abs_score_delta" and after["metric_quantiles"]["p50"] is not None
    assert after["latency_ms"]["primary"]["p99"] > 0
    assert after["recommendation"] in ("promote", "hold") and isinstance(after["reasons"], list)


@pytest.mark.parametrize(
    "builder,failure",
    [
        ("deployments.shadow.chaos:build_raising", "candidate_errors"),
        ("deployments.shadow.chaos:build_hanging", "candidate_timeouts"),
        ("deployments.shadow.chaos:build_slow", None),
    ],
    ids=["raises", "hangs", "10x-slower"],
)
def test_a_faulty_candidate_never_touches_the_primary(service, restore, builder, failure) -> None:
    standard = replica_actors(SHADOW)
    service.deploy(with_import_path(service.config, builder))
    # The faulty candidate keeps its own record, from zero: nothing mirrored to it yet.
    wait_for_config(
        service,
        lambda r: not replica_actors(SHADOW) & standard and r["mirrored_requests"] == 0,
        f"{builder} to be serving",
    )
    restore.append(replica_actors(SHADOW))

    results = fire(service, 60)
    assert [s for s, _ in results] == [200] * 60, "the primary answered every request"
    # Every mirror is accounted for: compared, failed, timed out, or dropped.
    final = wait_until(
        lambda: (r := report(service))["mirrored_requests"] + sum(r["dropped"].values()) >= 60
        and (failure is None or r[failure] > 0)
        and r,
        60,
        "the mirrors to be accounted for",
    )
    if failure == "candidate_errors":
        assert (
            final["candidate_errors"] == final["mirrored_requests"] and final["compared_rows"] == 0
        )
    elif failure == "candidate_timeouts":
        assert final["compared_rows"] == 0
    else:
        assert final["latency_ms"]["p99_ratio"] > 3
        assert any("latency" in reason for reason in final["reasons"])
    assert final["recommendation"] == "hold"


def test_mirrored_fraction_matches_the_configured_rate(service, restore) -> None:
    rate, n = 0.3, 400
    # Cache off: answers served from the result cache are not mirrored (no features to send).
    service.deploy(
        with_user_config(service.config, "Ingress", shadow_sample_rate=rate, cache_mode="off")
    )
    wait_for_config(service, lambda r: r["sample_rate"] == rate, "sample rate 0.3")
    before = report(service)
    assert [s for s, _ in fire(service, n)] == [200] * n

    def accounted(r: dict) -> int:
        return r["mirrored_requests"] + sum(r["dropped"].values())

    seen: list[int] = []

    def settled() -> bool:
        seen.append(accounted(report(service)) - accounted(before))
        return len(seen) > 1 and seen[-1] == seen[-2] > 0

    wait_until(settled, 30, "the mirrored count to stop changing", interval_s=1.0)
    count = seen[-1]
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(count / n - rate) < 4 * sigma, f"{count}/{n} mirrored at rate {rate}"


def test_comparison_metrics_reach_the_prometheus_export(service) -> None:
    assert [s for s, _ in fire(service, 20)] == [200] * 20

    def scraped() -> str:
        text = requests.get(service.metrics_url, timeout=10).text
        needed = (
            "ray_shadow_compared_rows",
            "ray_shadow_abs_score_delta_bucket",
            "ray_shadow_latency_ms_bucket",
            "ray_shadow_mirrored_requests",
        )
        return text if all(name in text for name in needed) else ""

    text = wait_until(scraped, 60, "shadow metrics in the Prometheus export", interval_s=1)
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("ray_shadow_compared_rows") and f'model="{MODEL}"' in ln
    )
    assert 'primary_version="1"' in line and 'candidate_version="2"' in line


def test_promotion_and_rollback_under_steady_load_fail_no_request(service, restore) -> None:
    promoted = with_model(service.config, MODEL, primary_version="2", candidate_version="1")
    with SteadyLoad(service.base_url) as load:
        service.deploy(promoted)
        wait_for_config(service, lambda r: r["primary_version"] == "2", "v2 promoted", 180)
        wait_until(lambda: load.versions["2"] > 0, 30, "answers from the promoted v2")
        service.deploy(service.config)
        wait_for_config(service, lambda r: r["primary_version"] == "1", "rolled back to v1", 180)
        load.wait_for_more(20)
    assert set(load.versions) == {"1", "2"}
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.outcomes)} requests failed: {failed[:3]}"


def test_report_cli_prints_and_gates_on_the_recommendation(service) -> None:
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "deployments.shadow.report", "--url", service.base_url]
    text = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert text.returncode in (0, 3), text.stderr
    assert "agreement" in text.stdout and "by label" in text.stdout
    assert "recommendation" in text.stdout
    raw = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=60)
    report = json.loads(raw.stdout)
    assert raw.returncode == (0 if report["recommendation"] == "promote" else 3)
    down = subprocess.run(
        [sys.executable, "-m", "deployments.shadow.report", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 4 and "cannot reach" in down.stderr
