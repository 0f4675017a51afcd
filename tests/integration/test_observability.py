"""Traces, metrics and dashboards on a real local Ray, over real HTTP and real OTLP export.

The service fixture exports spans to a real OTLP/HTTP receiver on loopback (see conftest);
metrics are scraped from the ingress's fixed `/metrics` address, which relays the node's Ray
metrics agent, after real traffic.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import secrets
from typing import Any

import pytest
import requests

from tests.integration.conftest import wait_for_config, with_user_config
from tests.integration.load import RECORDS
from tests.support import MODEL, REPO, wait_until

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"
INFER = f"/v2/models/{MODEL}/infer"
DASHBOARD = REPO / "cluster" / "grafana" / "inference-dashboard.json"
# Each model's deployments are named <Role>-<model>; spans and their attributes say so.
VALIDATOR, REPLICA, SHADOW = (
    f"{role}-{MODEL}" for role in ("Validator", "ModelReplica", "ShadowReplica")
)
SPAN_TIMEOUT_S = 30


def traceparent(sampled: bool = True) -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


def deployments_in(spans: list[Any]) -> set[str]:
    return {
        s.attributes.get("serve.deployment") or s.attributes.get("deployment") for s in spans
    } - {None}


def fresh(n: int) -> list[dict[str, Any]]:
    """Records nobody sent before: the result cache must not answer for the graph."""
    return [
        {**RECORDS[i % len(RECORDS)], "amount_usd": 10 + secrets.randbelow(10**6) / 100}
        for i in range(n)
    ]


def post(service, body: dict[str, Any], headers: dict[str, str] | None = None):
    return service.http.post(service.url(PREDICT), json=body, headers=headers or {}, timeout=30)


def test_a_sampled_caller_is_traced_through_every_actor(service) -> None:
    trace_id, header = traceparent(sampled=True)
    resp = post(service, {"instances": fresh(2)}, {"traceparent": header})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-trace-id"] == trace_id

    # The shadow samples every request in this tier, so the mirror joins the trace too.
    wanted = {"Ingress", VALIDATOR, REPLICA, SHADOW}
    spans = wait_until(
        lambda: (s := service.otlp.trace(trace_id)) and wanted <= deployments_in(s) and s,
        SPAN_TIMEOUT_S,
        f"spans of trace {trace_id} from {sorted(wanted)}",
    )
    names = {s.name for s in spans}
    for expected in (
        "Ingress POST /v1/models/{name}:predict",
        f"{VALIDATOR} validation",
        f"{REPLICA} predict",
        f"{REPLICA} compute",
        f"{SHADOW} shadow_compare",
    ):
        assert expected in names, (expected, sorted(names))
    # Every span names its deployment (FastAPI's own spans too), or says it is the proxy's.
    for span in spans:
        assert span.attributes.get("serve.deployment") or (
            span.attributes.get("serve.component") == "proxy"
        ), (span.name, span.attributes)
    ingress = next(s for s in spans if s.name.startswith("Ingress POST"))
    assert ingress.attributes["http.response.status_code"] == 200
    assert ingress.resource["service.name"] == "ray-serve-inference"
    compare = next(s for s in spans if s.name == f"{SHADOW} shadow_compare")
    assert compare.attributes["shadow.outcome"] == "compared"


def test_an_unsampled_caller_is_not_traced_and_errors_are_traced(service) -> None:
    quiet_id, quiet = traceparent(sampled=False)
    assert post(service, {"instances": RECORDS[:1]}, {"traceparent": quiet}).status_code == 200
    bad_id, bad = traceparent(sampled=True)
    resp = service.http.post(
        service.url(INFER),
        json={"inputs": [{"name": "amount_usd", "shape": [1], "datatype": "FP32", "data": [-1]}]},
        headers={"traceparent": bad},
        timeout=30,
    )
    assert resp.status_code == 422 and resp.headers["x-trace-id"] == bad_id
    # The refused request's trace arrives; by then the unsampled one would have too.
    spans = wait_until(
        lambda: [s for s in service.otlp.trace(bad_id) if s.name.startswith("Ingress POST")],
        SPAN_TIMEOUT_S,
        "the refused request's ingress span",
    )
    assert spans[0].attributes["http.response.status_code"] == 422
    assert service.otlp.trace(quiet_id) == []


def test_the_ingress_starts_traces_at_its_sampling_ratio(service) -> None:
    """Requests without a traceparent are traced at the Ingress's `trace_sampling_ratio`
    (1.0 here), through every role: each role's own tracer provider, not Ray Serve's."""
    service.deploy(with_user_config(service.config, "Ingress", trace_sampling_ratio=1.0))
    wanted = {"Ingress", VALIDATOR, REPLICA}

    def traced() -> bool:
        resp = post(service, {"instances": fresh(1)})
        assert resp.status_code == 200, resp.text
        trace_id = resp.headers["x-trace-id"]
        try:
            wait_until(
                lambda: wanted <= deployments_in(service.otlp.trace(trace_id)), 5, "its spans"
            )
        except AssertionError:
            return False  # the new ratio has not reached the replica yet
        return True

    try:
        wait_until(traced, 90, "a request without traceparent traced through every role")
    finally:
        service.deploy(service.config)
        wait_for_config(service, lambda r: r["sample_rate"] == 1.0, "the standard application")


def test_one_forward_pass_links_every_member_request(service) -> None:
    ids_headers = [traceparent(sampled=True) for _ in range(12)]
    with cf.ThreadPoolExecutor(12) as pool:
        codes = list(
            pool.map(
                lambda th: post(service, {"instances": fresh(1)}, {"traceparent": th[1]}),
                ids_headers,
            )
        )
    assert {r.status_code for r in codes} == {200}
    for trace_id, _ in ids_headers:
        wait_until(
            lambda t=trace_id: any(s.name == f"{REPLICA} compute" for s in service.otlp.trace(t)),
            SPAN_TIMEOUT_S,
            f"a compute span in or linked to trace {trace_id}",
        )


# ---- metrics ---------------------------------------------------------------------------------

REQUIRED_SERIES = {
    # stage latencies, labelled by version
    'ray_inference_stage_latency_ms_bucket{stage="validation"}',
    'ray_inference_stage_latency_ms_bucket{stage="queue_wait"}',
    'ray_inference_stage_latency_ms_bucket{stage="compute"}',
    'ray_inference_request_latency_ms_bucket{endpoint="/v1/models/{name}:predict"}',
    'ray_inference_requests_total{status="200"}',
    'ray_inference_requests_total{status="422"}',
    "ray_inference_batch_rows_bucket",
    # predictions, primary and candidate versions
    'ray_prediction_score_bucket{version="1"}',
    'ray_prediction_score_bucket{version="2"}',
    'ray_prediction_labels_total{version="1"}',
    # drift
    'ray_input_feature_zscore_rows_total{feature="amount_usd"}',
    'ray_input_feature_category_rows_total{feature="merchant_category"}',
    'ray_input_feature_invalid_values_total{feature="amount_usd"}',
    'ray_input_rows_total{outcome="invalid"}',
    # admission and shadow
    'ray_admission_rejections_total{reason="memory_pressure"}',
    "ray_shadow_compared_rows_total",
}


def series_present(text: str, wanted: str) -> bool:
    """A series of `wanted` that has counted something (counters start at 0, so being
    listed is not enough)."""
    name, _, labels = wanted.partition("{")
    pairs = re.findall(r'(\w+)="([^"]*)"', labels)
    for line in text.splitlines():
        if (
            (line.startswith(name + "{") or line.startswith(name + " "))
            and all(f'{k}="{v}"' in line for k, v in pairs)
            and 'version="' in line
            and float(line.rsplit(" ", 1)[1]) > 0
        ):
            return True
    return False


@pytest.fixture(scope="module")
def scraped(service) -> str:
    """The metrics text after real traffic: good and bad requests, v1 and v2, a rejection."""
    for _ in range(20):
        assert post(service, {"instances": fresh(3)}).status_code == 200
    assert post(service, {"instances": [{**RECORDS[0], "amount_usd": -5}]}).status_code == 422
    squeezed = with_user_config(
        service.config, "Ingress", memory={"max_system_used_fraction": 0.001}
    )
    service.deploy(squeezed)
    wait_until(
        lambda: post(service, {"instances": RECORDS[:1]}).status_code == 503,
        60,
        "memory pressure to be reported",
    )
    service.deploy(service.config)
    wait_for_config(service, lambda r: r["sample_rate"] == 1.0, "the standard application")
    wait_until(lambda: post(service, {"instances": RECORDS[:1]}).status_code == 200, 60, "recovery")

    def complete() -> str:
        resp = requests.get(service.url("/metrics"), timeout=10)
        resp.raise_for_status()
        missing = [w for w in REQUIRED_SERIES if not series_present(resp.text, w)]
        return "" if missing else resp.text

    try:
        return wait_until(complete, 60, "every required series at /metrics")
    except AssertionError:
        text = requests.get(service.url("/metrics"), timeout=10).text
        missing = sorted(w for w in REQUIRED_SERIES if not series_present(text, w))
        raise AssertionError(f"missing series: {missing}") from None


def test_metrics_reveal_stages_batches_predictions_drift_and_rejections(service, scraped) -> None:
    # `scraped` waited for every required series; here, the numbers are checked for sense.
    def total(pattern: str) -> float:
        return sum(float(v) for v in re.findall(pattern + r"\{[^}]*\} ([0-9.e+]+)", scraped))

    assert total(r'ray_input_feature_zscore_rows_total(?=\{[^}]*feature="amount_usd")') >= 60
    assert total(r"ray_inference_batch_rows_count") >= 1
    assert total(r'ray_admission_rejections_total(?=\{[^}]*reason="memory_pressure")') >= 1
    resp = requests.get(service.url("/metrics"), timeout=10)
    assert resp.headers["content-type"].startswith("text/plain")


def metric_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def test_dashboard_is_grafana_json_and_queries_only_scraped_metrics(scraped) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 8
    seen = metric_names(scraped)
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(ray_[a-z0-9_]+)\b", target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= seen, (panel["title"], sorted(names - seen))
