"""Drift scores on a real local Ray: validated rows counted into the training reference's
bins, the window written to Ray's key-value store, scored, published as gauges at /metrics,
and reported at /v1/drift/report and by its CLI. The service scores a 30 s window every
second (conftest.DRIFT)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from deployments.telemetry.drift_report import EXIT_DRIFTED, main
from tests.integration.conftest import DRIFT
from tests.support import MODEL, sample_transactions, wait_until

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"
REPORT = "/v1/drift/report"
PER_REQUEST = 20


def send(service, records: list[dict[str, Any]]) -> None:
    for i in range(0, len(records), PER_REQUEST):
        body = {"instances": records[i : i + PER_REQUEST]}
        resp = service.http.post(service.url(PREDICT), json=body, timeout=30)
        assert resp.status_code == 200, resp.text


def report(service) -> dict[str, Any]:
    resp = service.http.get(service.url(REPORT), params={"model": MODEL}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def scores(entry: dict[str, Any]) -> dict[str, float]:
    return {f["feature"]: f["psi"] for f in entry["features"]}


def gauge(text: str, feature: str) -> list[float]:
    pattern = r'ray_input_feature_drift_psi\{[^}]*feature="' + feature + r'"[^}]*\} (\S+)'
    return [float(v) for v in re.findall(pattern, text)]


def test_a_shifted_feature_is_reported_and_exported_as_drifted_and_only_it(service, capsys) -> None:
    # Whatever earlier tests sent leaves the window first: the scores below are this test's.
    wait_until(lambda: report(service)["rows"] == 0, DRIFT["window_s"] + 20, "an empty window")
    training_like = sample_transactions(400, seed=31)
    send(service, training_like)
    stable = wait_until(
        lambda: (r := report(service))["rows"] >= 400 and r, 20, "the window to hold the rows"
    )
    assert stable["enough_rows"] and stable["threshold"] == 0.2
    assert all(not f["drifted"] for f in stable["features"]), stable
    assert max(scores(stable).values()) < 0.1, stable

    shifted = [
        {**r, "amount_usd": min(r["amount_usd"] * 3, 50000.0)}
        for r in sample_transactions(1600, seed=32)
    ]
    send(service, shifted)

    def all_scored() -> dict[str, Any] | None:
        r = report(service)
        return r if r["rows"] >= 2000 and r["prediction"]["rows"] >= 2000 else None

    # The ModelReplicas write their predictions' window every few seconds.
    drifted = wait_until(all_scored, 20, "the shifted rows and their predictions scored")
    by_feature = scores(drifted)
    assert [f["feature"] for f in drifted["features"] if f["drifted"]] == ["amount_usd"], drifted
    assert drifted["features"][0]["feature"] == "amount_usd"  # most drifted first
    assert all(v < 0.1 for k, v in by_feature.items() if k != "amount_usd"), drifted
    assert drifted["prediction"]["psi"] is not None

    def exported() -> bool:
        text = requests.get(service.url("/metrics"), timeout=10).text
        amount, hour = gauge(text, "amount_usd"), gauge(text, "hour_of_day")
        return bool(amount and hour) and max(amount) > 0.2 and max(hour) < 0.1

    wait_until(exported, 30, "the drift gauges at /metrics")

    assert main(["--url", service.base_url, "--model", MODEL]) == EXIT_DRIFTED
    printed = capsys.readouterr().out
    assert "amount_usd" in printed.splitlines()[1] and "DRIFTED" in printed.splitlines()[1]


def test_drift_of_a_model_without_a_reference_is_a_clear_404(service) -> None:
    resp = service.http.get(service.url(REPORT), params={"model": "minilm"}, timeout=10)
    if resp.status_code == 404 and resp.json()["code"] == "model_not_found":
        pytest.skip("the text extra is not installed here: minilm is not served")
    assert resp.status_code == 404
    assert resp.json()["code"] == "drift_not_configured", resp.text
