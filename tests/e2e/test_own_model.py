"""Serving a model of one's own, following only the README: a torch module in a package
outside this repository (tests/fixtures/iris_model, pip-installed into a folder of its own),
packaged with the packaging API, listed in a copy of serve_config.yaml next to the shipped
models, served by the README's command, and called over v1, OIP v2 (tritonclient) and the
shadow report CLI with an auth token."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
import yaml
from safetensors.torch import load_file
from tritonclient.utils import InferenceServerException

from tests.e2e.service import BASE_URL, GRPC_ADDRESS, readme_service
from tests.support import REPO, wait_until

pytestmark = pytest.mark.slow
READY_TIMEOUT_S = 300
TOKEN = "e2e-own-model-token"
FIXTURE = REPO / "tests" / "fixtures" / "iris_model"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width", "stem_length"]


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("own-model")
    site = work / "site"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    # Step 1 of the README: the user's package, installed (here into a folder of its own,
    # built from a copy: a build writes beside its sources).
    source = shutil.copytree(FIXTURE, work / "iris_model_src")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        env,
        work,
    )
    # Step 2: package it, a primary and a candidate, into a model repository of one's own
    # that also holds the shipped models.
    models = work / "models"
    shutil.copytree(REPO / "models", models)
    for version, seed in (("1", 0), ("2", 1)):
        run(
            [
                sys.executable,
                "-m",
                "iris_model.package",
                "--model-dir",
                str(models),
                "--version",
                version,
                "--seed",
                str(seed),
            ],
            env,
            work,
        )
    # Step 3: list it in serve_config.yaml, allowing its architecture.
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    args = config["applications"][0]["args"]
    args["model_dir"] = str(models)
    args["allowed_architectures"] = ["iris_model.nets:*"]
    args["models"].append({"name": "iris", "primary_version": "1", "candidate_version": "2"})
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] == "Ingress":
            deployment["user_config"]["shadow_sample_rate"] = 1.0
    (work / "serve_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"work": work, "env": {**env, "INFERENCE_AUTH_TOKEN": TOKEN}, "models": models}


@pytest.fixture(scope="module")
def served(workdir: dict[str, Any]) -> Iterator[str]:
    config = workdir["work"] / "serve_config.yaml"
    log_path = workdir["work"] / "serve.log"
    with readme_service(log_path, READY_TIMEOUT_S, workdir["env"], config, workdir["work"]):
        yield BASE_URL


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def direct(workdir: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """The user's module run directly on the packaged weights, normalised by hand."""
    sys.path.insert(0, str(workdir["work"] / "site"))
    try:
        from iris_model.nets import IrisNet
        from iris_model.package import MEANS, STDS
    finally:
        sys.path.pop(0)
    net = IrisNet()
    net.load_state_dict(load_file(str(workdir["models"] / "iris" / "1" / "model.safetensors")))
    x = (rows - np.array(MEANS)) / np.array(STDS)
    with torch.inference_mode():
        return torch.softmax(net.eval()(torch.tensor(x, dtype=torch.float32)), 1).numpy()


def test_the_own_model_is_listed_next_to_the_shipped_ones(served: str) -> None:
    assert requests.get(f"{served}/v1/models", timeout=10).status_code == 401
    listed = requests.get(f"{served}/v1/models", headers=auth(), timeout=10).json()["models"]
    assert {"fraud-risk", "iris"} <= set(listed)
    info = requests.get(f"{served}/v1/models/iris", headers=auth(), timeout=10).json()
    assert info["kind"] == "tabular_classification" and info["ready"] is True


def test_v1_predictions_equal_the_module_run_directly(served: str, workdir: dict) -> None:
    rng = np.random.default_rng(5)
    rows = rng.uniform(1, 12, size=(6, 5)).round(3)
    instances = [dict(zip(FEATURES, map(float, row))) for row in rows]
    resp = requests.post(
        f"{served}/v1/models/iris:predict",
        json={"instances": instances},
        headers=auth(),
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    expected = direct(workdir, rows)
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, rtol=1e-5)
    labels = np.array(["setosa", "versicolor", "virginica"])[expected.argmax(1)]
    assert [p["label"] for p in predictions] == labels.tolist()


def test_triton_client_infers_the_own_model(served: str, workdir: dict) -> None:
    client = triton.InferenceServerClient(served.removeprefix("http://"))
    try:
        assert client.is_model_ready("iris", headers=auth())
        metadata = client.get_model_metadata("iris", headers=auth())
        assert [i["name"] for i in metadata["inputs"]] == FEATURES
        rows = np.array([[5.1, 3.5, 1.4, 0.2, 9.0], [6.7, 3.0, 5.2, 2.3, 11.0]])
        inputs = []
        for j, name in enumerate(FEATURES):
            tensor = triton.InferInput(name, [2], "FP32")
            tensor.set_data_from_numpy(rows[:, j].astype(np.float32), binary_data=False)
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=False)]
        result = client.infer("iris", inputs, outputs=outputs, headers=auth())
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), direct(workdir, rows.astype(np.float32)), rtol=1e-5
        )
    finally:
        client.close()


def test_grpc_and_binary_clients_infer_the_own_model(served: str, workdir: dict) -> None:
    rows = np.array([[5.9, 3.0, 4.2, 1.5, 10.0], [4.6, 3.1, 1.5, 0.2, 8.0]], dtype=np.float32)
    expected = direct(workdir, rows)
    grpc_client = triton_grpc.InferenceServerClient(GRPC_ADDRESS)
    http_client = triton.InferenceServerClient(served.removeprefix("http://"))
    try:
        with pytest.raises(InferenceServerException) as info:
            grpc_client.get_model_metadata("iris")  # no key
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert grpc_client.is_server_ready()  # the health RPCs are open, as over HTTP
        for module, client in ((triton_grpc, grpc_client), (triton, http_client)):
            inputs = []
            for j, name in enumerate(FEATURES):
                tensor = module.InferInput(name, [2], "FP32")
                tensor.set_data_from_numpy(rows[:, j])  # binary: both libraries' default
                inputs.append(tensor)
            result = client.infer("iris", inputs, headers=auth())
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
        assert grpc_client.get_model_config("iris", headers=auth()).config.name == "iris"
    finally:
        grpc_client.close()
        http_client.close()


def test_bad_input_to_the_own_model_is_a_4xx_naming_the_field(served: str) -> None:
    bad = dict.fromkeys(FEATURES, 5.0) | {"petal_width": -1.0}
    resp = requests.post(
        f"{served}/v1/models/iris:predict", json={"instances": [bad]}, headers=auth(), timeout=30
    )
    assert resp.status_code == 422
    assert [d["field"] for d in resp.json()["details"]] == ["petal_width"]


def test_the_shadow_report_of_the_own_model(served: str, workdir: dict) -> None:
    rng = np.random.default_rng(6)
    for _ in range(20):
        rows = rng.uniform(1, 12, size=(5, 5))
        instances = [dict(zip(FEATURES, map(float, row))) for row in rows]
        requests.post(
            f"{served}/v1/models/iris:predict",
            json={"instances": instances},
            headers=auth(),
            timeout=30,
        ).raise_for_status()

    def compared() -> dict[str, Any] | None:
        done = subprocess.run(
            [sys.executable, "-m", "deployments.shadow.report", "--model", "iris", "--json"],
            env=workdir["env"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode not in (0, 3):
            raise AssertionError(done.stderr)
        report = json.loads(done.stdout)
        return report if report["compared_rows"] >= 100 else None

    report = wait_until(compared, 60, "the candidate to compare 100 rows")
    assert report["kind"] == "tabular_classification"
    assert (report["primary_version"], report["candidate_version"]) == ("1", "2")
    assert report["agreement_rule"] == "label" and 0 <= report["agreement"] <= 1
    assert report["recommendation"] in ("promote", "hold")
    no_token = {k: v for k, v in workdir["env"].items() if k != "INFERENCE_AUTH_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-m", "deployments.shadow.report", "--model", "iris"],
        env=no_token,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 4 and "401" in refused.stderr
    rendered = subprocess.run(
        [sys.executable, "-m", "deployments.shadow.report", "--model", "minilm"],
        env=workdir["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode in (0, 3), rendered.stderr
    assert "cosine" in rendered.stdout
