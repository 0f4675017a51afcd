"""The KubeRay manifests are generated from serve_config.yaml, valid against KubeRay's real
CRDs (read as data from outside this repository, never copied), and secure by default: the
bearer token comes from a mounted Secret, Ray's token auth is on, a NetworkPolicy limits who
reaches which port, and the pods run as non-root.

The CRD tests are opt-in: set `KUBERAY_CRDS_DIR` to a folder holding KubeRay's CRD files
(`ray.io_rayservices.yaml`, `ray.io_rayclusters.yaml`, from ray-project/kuberay
`ray-operator/config/crd/bases/`). Unset, or a missing folder, skips them, naming the variable;
with `REQUIRE_EXTERNAL_DATA=1` (as .ci/run sets it, pointing the variable at
../shared/reference/kuberay-crds) that skip is a failure. See tests/conftest.py.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments import launch
from deployments.config import AppArgs
from tests.support import REPO

CRDS_VAR = "KUBERAY_CRDS_DIR"
KUBERAY = REPO / "cluster" / "kuberay"
MANIFEST = KUBERAY / "rayservice.yaml"
NETWORK_POLICY = KUBERAY / "networkpolicy.yaml"
SECRET_EXAMPLE = KUBERAY / "auth-secret.example.yaml"
AUTH_SECRET, AUTH_KEY, AUTH_FILE = "inference-auth", "token", "/etc/inference-auth/token"
RAY_AUTH_SECRET, RAY_AUTH_KEY = "ray-cluster-auth", "auth_token"
SERVE, DASHBOARD, METRICS, GRPC = 8000, 8265, 8080, 8001


def crd_schema(file: str) -> dict[str, Any]:
    """The v1 OpenAPI schema of one KubeRay CRD file in $KUBERAY_CRDS_DIR; skips without it."""
    hint = (
        f"set {CRDS_VAR} to a folder holding KubeRay's CRDs (ray.io_rayservices.yaml, "
        "ray.io_rayclusters.yaml), e.g. ../shared/reference/kuberay-crds"
    )
    value = os.environ.get(CRDS_VAR, "")
    if not value:
        pytest.skip(f"{CRDS_VAR} is unset: {hint}")
    path = Path(value).expanduser() / file
    if not path.is_file():
        pytest.skip(f"{CRDS_VAR}={value}: no {file} there: {hint}")
    crd = yaml.safe_load(path.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Kubernetes silently prunes fields its schema lacks; a typo would vanish. Find them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return yaml.safe_load(NETWORK_POLICY.read_text())


@pytest.fixture(scope="module")
def secrets() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SECRET_EXAMPLE.read_text())}


def pod_templates(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}
    return {"head": cluster["headGroupSpec"]["template"], **groups}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) applied to labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": key not in labels or labels[key] not in values,
        }[op]
        if not ok:
            return False
    return True


def admitted_ports(rule: dict[str, Any]) -> set[int] | None:
    """The ports a NetworkPolicy ingress rule opens; None: every port."""
    return {p["port"] for p in rule["ports"]} if rule.get("ports") else None


def test_manifest_is_the_current_render_of_serve_config() -> None:
    check = subprocess.run(
        [sys.executable, "cluster/render_rayservice.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.external_data
def test_rayservice_is_valid_against_the_kuberay_crd(manifest: dict[str, Any]) -> None:
    schema = crd_schema("ray.io_rayservices.yaml")
    jsonschema.validate(manifest, schema)
    assert unknown_fields(manifest, schema) == []


@pytest.mark.external_data
def test_ray_cluster_config_is_valid_against_the_raycluster_crd(manifest: dict[str, Any]) -> None:
    spec = crd_schema("ray.io_rayclusters.yaml")["properties"]["spec"]
    cluster = manifest["spec"]["rayClusterConfig"]
    jsonschema.validate(cluster, spec)
    assert unknown_fields(cluster, spec) == []


def test_serve_config_v2_is_serve_config_yaml(manifest: dict[str, Any]) -> None:
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    shipped = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert embedded["http_options"]["host"] == "0.0.0.0"
    (app,), (shipped_app,) = embedded["applications"], shipped["applications"]
    assert app["args"]["model_dir"] == "/app/models"
    assert app["args"]["auth_token_file"] == AUTH_FILE
    assert app["deployments"] == shipped_app["deployments"]
    cluster_only = {"model_dir", "auth_token_file"}
    assert {k: v for k, v in app["args"].items() if k not in cluster_only} == {
        k: v for k, v in shipped_app["args"].items() if k not in cluster_only
    }


def test_the_bearer_token_is_the_mounted_secret_file(manifest: dict[str, Any]) -> None:
    """Listening on 0.0.0.0, the ingress must have auth: its token file is the Secret's."""
    (app,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    assert {"auth_token_file", "auth_token_env"} <= set(AppArgs.model_fields)
    assert app["args"]["auth_token_file"] == AUTH_FILE
    assert "auth_token_env" not in app["args"]
    # Every pod: a replica of the ingress may land on any worker; the head builds the app.
    for group, pod in pod_templates(manifest).items():
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        (container,) = pod["spec"]["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/inference-auth"]
        assert mount["readOnly"] is True and "subPath" not in mount, group
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == AUTH_SECRET, group
        (item,) = secret["items"]
        assert item["key"] == AUTH_KEY, group
        assert f"{mount['mountPath']}/{item['path']}" == AUTH_FILE, group
        assert secret["defaultMode"] & 0o007 == 0, f"{group}: the token is not world-readable"


def test_no_token_value_in_any_manifest(manifest: dict[str, Any]) -> None:
    texts = {p.name: p.read_text() for p in (MANIFEST, NETWORK_POLICY, SECRET_EXAMPLE)}
    (app,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    assert not app["runtime_env"].get("env_vars")
    for group, pod in pod_templates(manifest).items():
        for container in pod["spec"]["containers"]:
            literal = [e["name"] for e in container.get("env", []) if "value" in e]
            assert not [n for n in literal if "TOKEN" in n.upper()], group
    autoscaler_env = manifest["spec"]["rayClusterConfig"]["autoscalerOptions"].get("env", [])
    assert not [e for e in autoscaler_env if "TOKEN" in e["name"].upper()]
    for name, text in texts.items():
        assert "INFERENCE_AUTH_TOKEN" not in text, name
        assert "RAY_AUTH_TOKEN" not in text, name
        assert "stringData" not in text, name
        # `token: x`, `auth_token: x`: only the example's placeholders.
        values = re.findall(r"^\s*(?:auth_)?token:\s*(.+)$", text, re.MULTILINE)
        if name == SECRET_EXAMPLE.name:
            assert len(values) == 2 and all("<REPLACE:" in v for v in values), values
        else:
            assert values == [], name


def test_the_secret_example_holds_only_placeholders(secrets: dict[str, dict[str, Any]]) -> None:
    assert set(secrets) == {AUTH_SECRET, RAY_AUTH_SECRET}
    for name, key in ((AUTH_SECRET, AUTH_KEY), (RAY_AUTH_SECRET, RAY_AUTH_KEY)):
        secret = secrets[name]
        assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
        (value,) = secret["data"].values()
        assert list(secret["data"]) == [key]
        assert "REPLACE" in value
        # Not base64: applied by mistake, the API server rejects it; no known token is served.
        with pytest.raises(binascii.Error):
            base64.b64decode(value, validate=True)
    text = SECRET_EXAMPLE.read_text()
    assert (
        f"kubectl create secret generic {AUTH_SECRET} "
        f"--from-literal={AUTH_KEY}=$(openssl rand -hex 32)"
    ) in text
    assert f"--from-literal={RAY_AUTH_KEY}=$(openssl rand -hex 32)" in text


def test_ray_token_auth_is_on(manifest: dict[str, Any]) -> None:
    cluster = manifest["spec"]["rayClusterConfig"]
    # KubeRay reads the key `auth_token` of this Secret into every Ray container and uses it
    # for the dashboard; token auth needs Ray >= 2.52.
    assert cluster["authOptions"] == {"mode": "token", "secretName": RAY_AUTH_SECRET}
    major, minor, *_ = (int(part) for part in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52)


def test_the_dashboard_is_not_published(manifest: dict[str, Any], policy: dict[str, Any]) -> None:
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    # The operator deploys serveConfigV2 through the dashboard at the head Service (the pod's
    # IP): a loopback dashboard-host, or no dashboard, would leave the RayService never ready.
    params = head["rayStartParams"]
    assert params.get("dashboard-host", "0.0.0.0") not in {"127.0.0.1", "localhost"}
    assert params.get("include-dashboard", "true") != "false"
    # In-cluster Service only, no Ingress, no Ray Client port.
    assert head["serviceType"] == "ClusterIP"
    assert head["enableIngress"] is False
    assert "serveService" not in manifest["spec"]
    ports = {
        p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports["dashboard"] == DASHBOARD and "client" not in ports
    # Only the operator and the cluster's own pods are let in to the dashboard.
    rules = policy["spec"]["ingress"]
    opening = [r for r in rules if admitted_ports(r) is None or DASHBOARD in admitted_ports(r)]
    own_pods = {"podSelector": policy["spec"]["podSelector"]}
    for rule in opening:
        if admitted_ports(rule) is None:
            assert rule["from"] == [own_pods]
        else:
            assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [
                {"app.kubernetes.io/name": "kuberay-operator"}
            ]


def test_cluster_has_autoscaling_cpu_and_gpu_groups(manifest: dict[str, Any]) -> None:
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1
    for pod in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in groups.values()]:
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"]


@pytest.mark.external_data
def test_a_typo_would_be_caught(manifest: dict[str, Any]) -> None:
    schema = crd_schema("ray.io_rayservices.yaml")
    broken = yaml.safe_load(MANIFEST.read_text())
    broken["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    assert unknown_fields(broken, schema) == [".spec.rayClusterConfig.enableInTreeAutoscalling"]
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_the_network_policy_admits_only_what_is_needed(
    manifest: dict[str, Any], policy: dict[str, Any]
) -> None:
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    # It selects every Ray pod of the RayService, with the label KubeRay adds to each.
    selector = spec["podSelector"]
    assert {"key": "ray.io/cluster", "operator": "Exists"} in selector["matchExpressions"]
    for group, pod in pod_templates(manifest).items():
        labels = {**pod["metadata"]["labels"], "ray.io/cluster": "fraud-risk-inference-x7k2p"}
        assert selects(selector, labels), group
        assert not selects(selector, pod["metadata"]["labels"]), group
    rules = spec["ingress"]
    for rule in rules:
        assert rule.get("from"), "a rule without `from` admits every source"
        assert not [peer for peer in rule["from"] if "ipBlock" in peer]
    by_ports = {frozenset(admitted_ports(r) or ()): r for r in rules}
    assert len(by_ports) == len(rules)
    assert set(by_ports) == {
        frozenset(),
        frozenset({SERVE, GRPC}),
        frozenset({DASHBOARD, SERVE}),
        frozenset({METRICS}),
    }
    # Ray's own ports, all of them: only from the RayService's Ray pods.
    assert by_ports[frozenset()]["from"] == [{"podSelector": selector}]
    # Serve HTTP: pods labelled inference-client in this namespace, or labelled namespaces.
    client = {"matchLabels": {"inference-client": "true"}}
    assert by_ports[frozenset({SERVE, GRPC})]["from"] == [
        {"podSelector": client},
        {"namespaceSelector": client},
    ]
    # The KubeRay operator: the dashboard, and the head's proxy (/-/healthz) it probes.
    (operator,) = by_ports[frozenset({DASHBOARD, SERVE})]["from"]
    assert set(operator) == {"namespaceSelector", "podSelector"}, "both, in one peer (AND)"
    assert set(operator["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
    assert operator["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}
    }
    # Prometheus: Ray's metrics port, as the pods' scrape annotations name it.
    metrics = {"matchLabels": {"inference-metrics": "true"}}
    assert by_ports[frozenset({METRICS})]["from"] == [
        {"podSelector": metrics},
        {"namespaceSelector": metrics},
    ]
    for pod in pod_templates(manifest).values():
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS)
    for rule in rules:
        assert all(p["protocol"] == "TCP" for p in rule.get("ports", []))


def test_pods_run_as_non_root_without_privilege_escalation(manifest: dict[str, Any]) -> None:
    dockerfile_user = re.search(
        r"^USER (\d+):(\d+)$", (REPO / "cluster" / "Dockerfile").read_text(), re.M
    )
    assert dockerfile_user, "the image's USER is numeric"
    uid, gid = (int(x) for x in dockerfile_user.groups())
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    for group, pod in pod_templates(manifest).items():
        context = pod["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True, group
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, group
        for container in pod["spec"]["containers"]:
            assert container["securityContext"] == restricted, group
        # Workers never call the Kubernetes API; the head's autoscaler sidecar does.
        assert pod["spec"].get("automountServiceAccountToken", True) is (group == "head")
    autoscaler = manifest["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert autoscaler["securityContext"] == restricted


def test_every_ray_container_runs_the_launchers_serving_path(manifest: dict[str, Any]) -> None:
    """Ray reads the serving path's settings as each process starts, so a cluster gets the path
    `inference-serve` gives a local Ray only if every Ray container carries them."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for group, pod in pod_templates(manifest).items():
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert set(launch.FAST_PATH_ENV) <= set(env), group
        assert env[launch.HA_PROXY_ENV] == "1", group
        assert env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "1", group
        # HAProxy sized to the pod it shares with the replicas, not to the machine under it.
        cpus = int(container["resources"]["limits"]["cpu"])
        assert int(env["RAY_SERVE_HAPROXY_NBTHREAD"]) == min(4, max(1, cpus // 2)), group
        # Ray's haproxy through the wrapper the image installs (system pip: /usr/local/bin).
        wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        assert wrapper.parent == Path("/usr/local/bin") and wrapper.name in scripts, group
        assert scripts[wrapper.name] == "deployments.haproxy_loopback:main"
