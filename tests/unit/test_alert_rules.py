"""cluster/prometheus: the alert rules pass promtool's checks and its unit tests on synthetic
series (alerts.test.yml), every alert has a runbook, and the scrape config loads them.

promtool comes with Debian's `prometheus` package, which tests/install-tools.sh installs (the
README's test command runs it); without it these tests fail and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

PROMETHEUS = REPO / "cluster" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run tests/install-tools.sh (Debian's prometheus)")
    done = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_the_rules_are_valid() -> None:
    assert f"{len(alerts())} rules found" in promtool("check", "rules", str(RULES))


def test_each_alert_fires_when_it_should_and_not_otherwise() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_severity_a_summary_a_runbook_and_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = [rule["alert"] for rule in alerts()]
    assert {
        "InferenceFeatureDrift",
        "InferencePredictionDrift",
        "Inference5xxShare",
        "InferenceShedding",
        "InferenceShadowDisagreement",
        "InferenceReplicaUnhealthy",
    } <= set(names)
    for rule in alerts():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["runbook"].strip(), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} is never shown firing in alerts.test.yml"


def test_the_scrape_config_loads_the_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    # Debian's build has no Kubernetes service discovery: the KubeRay job is checked by the
    # cluster's own Prometheus, the rest here.
    config["scrape_configs"] = [
        job for job in config["scrape_configs"] if "kubernetes_sd_configs" not in job
    ]
    config["rule_files"] = [str(RULES)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    assert "SUCCESS" in promtool("check", "config", str(checked))
