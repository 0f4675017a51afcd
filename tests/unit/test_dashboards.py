"""cluster/: the Grafana dashboard is current and well-formed; the Prometheus config parses.

That every panel queries a metric the service really exports is checked against a live
scrape in tests/integration/test_observability.py.
"""

from __future__ import annotations

import importlib.util
import json
import re

import yaml

from tests.support import REPO

GRAFANA = REPO / "cluster" / "grafana"


def render_module():
    spec = importlib.util.spec_from_file_location(
        "render_dashboard", GRAFANA / "render_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_what_the_renderer_writes() -> None:
    on_disk = json.loads((GRAFANA / "inference-dashboard.json").read_text())
    assert on_disk == render_module().dashboard(), "run: python cluster/grafana/render_dashboard.py"


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads((GRAFANA / "inference-dashboard.json").read_text())
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time"} <= set(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model"} <= variables
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', target["expr"])  # label values aside
            assert code.count("(") == code.count(")"), target["expr"]
            assert "$model" in target["expr"], (panel["title"], "every query filters by model")


def test_prometheus_config_scrapes_the_fixed_laptop_address_and_ray_nodes() -> None:
    config = yaml.safe_load((REPO / "cluster" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    laptop = jobs["inference-laptop"]
    assert laptop["metrics_path"] == "/metrics"
    assert laptop["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    assert jobs["ray-nodes"]["file_sd_configs"][0]["files"]
    # KubeRay pods carry the annotations the kubernetes job keeps.
    manifest = (REPO / "cluster" / "kuberay" / "rayservice.yaml").read_text()
    assert "prometheus.io/scrape: 'true'" in manifest
