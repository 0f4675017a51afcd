"""cluster/launcher/aws.yaml is a valid Ray cluster launcher config, judged by the installed
Ray's own schema and config preparation (what `ray up` runs before touching AWS), and it
installs and starts this package the way the README and the KubeRay manifest do."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start_cli

from tests.support import REPO
from tests.unit.test_dockerfile import readme_pip_install_spec

LAUNCHER = REPO / "cluster" / "launcher" / "aws.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
AWS_DEFAULTS = Path(ray.autoscaler.__file__).parent / "aws" / "defaults.yaml"
KUBERAY = REPO / "cluster" / "kuberay" / "rayservice.yaml"
# Instance type -> (vCPUs, GPUs), from AWS's published specs: what `resources` must say.
INSTANCE_SHAPES = {"m6i.2xlarge": (8, 0), "g5.xlarge": (4, 1)}
REMOTE_ROOT = "~/ray-serve-inference"
VENV_RAY = f"{REMOTE_ROOT}/.venv/bin/ray"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER.read_text())


@pytest.fixture(scope="module")
def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """The config as `ray up` sees it: AWS defaults filled in, setup commands merged."""
    return prepare_config(json.loads(json.dumps(config)))


def node_setup_commands(prepared: dict[str, Any], node_type: str) -> list[str]:
    """What actually runs on a node of this type (a type's own list replaces the global one)."""
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    spec = prepared["available_node_types"][node_type]
    return spec.get("worker_setup_commands", prepared["worker_setup_commands"])


def ray_start_args(commands: list[str]) -> dict[str, Any]:
    """Parse the `ray start` in a start-command list with the installed Ray's own CLI."""
    (line,) = [c for c in commands if " start " in c]
    invocation = line.split(";")[-1].strip()
    argv = shlex.split(invocation)
    assert argv[:2] == [VENV_RAY, "start"], argv
    return ray_start_cli.make_context("start", argv[2:]).params


def test_valid_against_the_installed_ray_schema(config: dict[str, Any]) -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(config)


def test_ray_up_config_preparation_accepts_it(prepared: dict[str, Any]) -> None:
    # Ray's own checks beyond the schema: head type exists, sum(min_workers) <= max_workers.
    validate_config(prepared)


def test_no_aws_default_leaks_in(config: dict[str, Any], prepared: dict[str, Any]) -> None:
    # fillout_defaults() copies every top-level key we leave out from defaults.yaml, whose
    # setup commands install an anaconda env and a nightly Ray wheel.
    defaults = yaml.safe_load(AWS_DEFAULTS.read_text())
    assert set(defaults) - set(config) == set()
    everything = json.dumps(prepared)
    for leaked in ("anaconda", "ray-wheels", "ray.head.default", "ray.worker.default"):
        assert leaked not in everything


def test_a_typo_would_be_caught(config: dict[str, Any]) -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    broken = json.loads(json.dumps(config))
    broken["available_node_types"]["cpu_worker"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(config))
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_head_cpu_and_gpu_types_with_resources_matching_the_instances(
    config: dict[str, Any],
) -> None:
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    # No replicas on the head, as in KubeRay; every worker advertises its whole instance.
    assert types["head"]["resources"] == {"CPU": 0}
    for name in ("cpu_worker", "gpu_worker"):
        node = types[name]
        cpus, gpus = INSTANCE_SHAPES[node["node_config"]["InstanceType"]]
        assert node["resources"].get("CPU") == cpus, name
        assert node["resources"].get("GPU", 0) == gpus, name
        assert 0 <= node["min_workers"] <= node["max_workers"], name
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert types["gpu_worker"]["min_workers"] == 0  # no GPU bill until a replica asks
    assert config["max_workers"] == sum(t.get("max_workers", 0) for t in types.values())
    assert {t["labels"]["node_role"] for t in types.values()} == {
        "head",
        "cpu-worker",
        "gpu-worker",
    }


def test_same_group_bounds_as_the_kuberay_rayservice(config: dict[str, Any]) -> None:
    cluster = yaml.safe_load(KUBERAY.read_text())["spec"]["rayClusterConfig"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    types = config["available_node_types"]
    for launcher_type, group in (("cpu_worker", "cpu-workers"), ("gpu_worker", "gpu-workers")):
        bounds = (groups[group]["minReplicas"], groups[group]["maxReplicas"])
        assert (types[launcher_type]["min_workers"], types[launcher_type]["max_workers"]) == bounds
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_every_node_installs_the_package_like_the_readme(
    config: dict[str, Any], prepared: dict[str, Any]
) -> None:
    readme_spec = readme_pip_install_spec()  # ["-e", "."]
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [p for p in pins if p.startswith("torch==")]
    for node_type in config["available_node_types"]:
        commands = node_setup_commands(prepared, node_type)
        joined = "\n".join(commands)
        assert "python3.11 -m venv .venv" in joined, node_type
        installs = [shlex.split(c.split("&&")[-1]) for c in commands if "pip install" in c]
        specs = [argv[argv.index("install") + 1 :] for argv in installs]
        assert readme_spec in specs, (node_type, specs)
        gpu = config["available_node_types"][node_type]["resources"].get("GPU", 0) > 0
        cpu_torch = [s for s in specs if "https://download.pytorch.org/whl/cpu" in s]
        if gpu:
            assert cpu_torch == [], "GPU nodes take PyPI's CUDA torch"
        else:
            # The CPU wheel at pyproject's pin, installed before the package.
            assert cpu_torch and cpu_torch[0][-1] == torch_pin, (node_type, cpu_torch)
            assert specs.index(cpu_torch[0]) < specs.index(readme_spec)
    assert any("boto3==" in c for c in prepared["head_setup_commands"])


def test_file_mounts_carry_what_the_install_and_deploy_need(config: dict[str, Any]) -> None:
    mounts = config["file_mounts"]
    for remote, local in mounts.items():
        assert remote.startswith(REMOTE_ROOT + "/"), remote
        assert (REPO / local).exists(), local
        assert remote.removeprefix(REMOTE_ROOT + "/") == Path(local).as_posix().removeprefix("./")
    mounted = {Path(local).as_posix().removeprefix("./") for local in mounts.values()}
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    assert {"pyproject.toml", readme, "serve_config.yaml", "deployments", "models"} <= mounted
    # Never the local venv or git history.
    assert not mounted & {".", ".venv", ".git"}


def test_ray_start_commands_parse_and_match_the_cluster_ports(config: dict[str, Any]) -> None:
    head = ray_start_args(config["head_start_ray_commands"])
    worker = ray_start_args(config["worker_start_ray_commands"])
    assert head["head"] is True and worker["head"] is False
    assert head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert head["dashboard_host"] == "0.0.0.0" and head["dashboard_port"] == 8265
    # The port KubeRay's Prometheus annotations and metrics container ports name.
    assert head["metrics_export_port"] == worker["metrics_export_port"] == 8080
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        # `ray stop` is fine on these dedicated machines, and must be the venv's Ray, started
        # on the launcher's serving path (the settings Ray reads as each process starts).
        print_env = f'eval "$({REMOTE_ROOT}/.venv/bin/inference-serve --print-env)"; '
        prefix = rf"^(ulimit -n \d+; )?({re.escape(print_env)})?{re.escape(VENV_RAY)} "
        assert all(re.match(prefix, c) for c in commands)
        (start,) = [c for c in commands if " start " in c]
        assert print_env in start
