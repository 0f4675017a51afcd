"""The KubeRay RayService is generated from serve_config.yaml and valid against KubeRay's
real CRD, read as data from outside this repository, never copied.

The CRD tests are opt-in: set `KUBERAY_CRDS_DIR` to a folder holding KubeRay's CRD files
(`ray.io_rayservices.yaml`, `ray.io_rayclusters.yaml`, from ray-project/kuberay
`ray-operator/config/crd/bases/`). Unset, or a missing folder, skips them, naming the variable;
with `REQUIRE_EXTERNAL_DATA=1` (as .ci/run sets it, pointing the variable at
../shared/reference/kuberay-crds) that skip is a failure. See tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.support import REPO

CRDS_VAR = "KUBERAY_CRDS_DIR"
MANIFEST = REPO / "cluster" / "kuberay" / "rayservice.yaml"


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


def test_serve_config_v2_is_serve_config_yaml(manifest: dict[str, Any]) -> None:
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    shipped = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert embedded["http_options"]["host"] == "0.0.0.0"
    (app,), (shipped_app,) = embedded["applications"], shipped["applications"]
    assert app["args"]["model_dir"] == "/app/models"
    assert app["deployments"] == shipped_app["deployments"]
    assert {k: v for k, v in app["args"].items() if k != "model_dir"} == {
        k: v for k, v in shipped_app["args"].items() if k != "model_dir"
    }


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
