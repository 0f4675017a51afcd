"""A real Prometheus (Debian's, installed by tests/install-tools.sh) scraping the README's
service at its documented /metrics, with the shipped alert rules loaded.

Ordinary traffic first: every query of the shipped dashboard returns data, and no drift alert
fires. Then one feature shifted (amounts 3x): its drift alert fires, and only its. The rules
are the shipped expressions; only their hold times (`for: 5m`) are shortened to seconds, and
Prometheus scrapes and evaluates every second, so that the test takes a minute, not ten.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from tests.support import MODEL, REPO, sample_transactions, wait_until

pytestmark = pytest.mark.slow
RULES = REPO / "cluster" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "cluster" / "grafana" / "inference-dashboard.json"
PREDICT = f"/v1/models/{MODEL}:predict"
PER_REQUEST = 20
HOLD = "3s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        assert resp.status_code == 200, (expr, resp.text)
        return resp.json()["data"]["result"]

    def firing(self, alertname: str) -> list[dict[str, str]]:
        resp = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return [
            a["labels"]
            for a in resp["data"]["alerts"]
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]

    def pending_or_firing(self, alertname: str) -> list[dict[str, str]]:
        resp = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return [
            a["labels"] for a in resp["data"]["alerts"] if a["labels"]["alertname"] == alertname
        ]


@pytest.fixture(scope="module")
def prometheus(served, tmp_path_factory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is not installed: run tests/install-tools.sh")
    work = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = HOLD
    (work / "alerts.yml").write_text(yaml.safe_dump(rules))
    base_url, _ = served
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "inference-laptop",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [base_url.removeprefix("http://")]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (work / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def scraping() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited:\n{(work / 'prometheus.log').read_text()[-3000:]}")
            try:
                return bool(prom.query('up{job="inference-laptop"} == 1'))
            except requests.ConnectionError:
                return False

        wait_until(scraping, 60, "prometheus to scrape the service")
        yield prom
    finally:
        proc.terminate()  # the pid this fixture started, nothing else
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def send(base_url: str, records: list[dict[str, Any]]) -> None:
    with requests.Session() as http:
        for i in range(0, len(records), PER_REQUEST):
            resp = http.post(
                base_url + PREDICT, json={"instances": records[i : i + PER_REQUEST]}, timeout=30
            )
            assert resp.status_code == 200, resp.text


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$model", ".*").replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def scored_rows(prom: Prometheus) -> float:
    result = prom.query(f'max(ray_drift_window_rows{{model="{MODEL}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def drift_alerts(prom: Prometheus) -> list[str]:
    return sorted(a["feature"] for a in prom.pending_or_firing("InferenceFeatureDrift"))


def test_ordinary_traffic_answers_every_dashboard_query_and_fires_no_drift(
    served, prometheus
) -> None:
    base_url, _ = served
    # The training distribution, new draws: enough rows to be scored (min_rows 500), and a
    # shadow sample (10%) for the shadow panels. Invalid inputs are part of ordinary traffic.
    send(base_url, sample_transactions(1200, seed=41))
    bad = requests.post(base_url + PREDICT, json={"instances": [{"amount_usd": -1}]}, timeout=30)
    assert bad.status_code == 422
    wait_until(lambda: scored_rows(prometheus) >= 1200, 90, "the window's rows in Prometheus")

    def answered() -> list[str]:
        return [title for title, expr in dashboard_queries() if not prometheus.query(expr)]

    try:
        wait_until(lambda: not answered(), 60, "every dashboard query to return data")
    except AssertionError:
        raise AssertionError(f"dashboard panels with no data: {answered()}") from None

    scores = prometheus.query(f'max by (feature) (ray_input_feature_drift_psi{{model="{MODEL}"}})')
    assert len(scores) >= 9 and all(float(s["value"][1]) < 0.1 for s in scores), scores
    # Some evaluations later (rules every second, held for HOLD), still nothing.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert drift_alerts(prometheus) == []
        time.sleep(1)


def test_one_shifted_feature_fires_its_drift_alert_and_only_its(served, prometheus) -> None:
    base_url, _ = served
    before = scored_rows(prometheus)
    shifted = [
        {**r, "amount_usd": min(r["amount_usd"] * 3, 50000.0)}
        for r in sample_transactions(12000, seed=42)
    ]
    send(base_url, shifted)

    def fired() -> list[str]:
        return sorted(a["feature"] for a in prometheus.firing("InferenceFeatureDrift"))

    wait_until(lambda: scored_rows(prometheus) >= before + 12000, 90, "the shifted rows scored")
    firing = wait_until(fired, 90, "the drift alert to fire")
    assert firing == ["amount_usd"], firing
    scores = {
        s["metric"]["feature"]: float(s["value"][1])
        for s in prometheus.query(
            f'max by (feature) (ray_input_feature_drift_psi{{model="{MODEL}"}})'
        )
    }
    assert scores["amount_usd"] > 0.2
    assert all(v < 0.2 for k, v in scores.items() if k != "amount_usd"), scores
