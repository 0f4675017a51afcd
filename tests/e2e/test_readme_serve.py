"""The README's serve command, run as a newcomer runs it, called over real HTTP.

Started with the standard OpenTelemetry variables pointing at a real OTLP receiver on
loopback, as an operator with a collector would start it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton

from deployments.launch import haproxy_pids
from tests.otlp_receiver import OtlpReceiver
from tests.support import MODEL, REPO, instance_from_schema, wait_until

pytestmark = pytest.mark.slow
READY_TIMEOUT_S = 240
STOP_TIMEOUT_S = 90


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def serve_part(command: str) -> list[str]:
    """The part of the README's first command that starts the service (after installing)."""
    last = command.split("&&")[-1].strip()
    argv = shlex.split(last)
    assert argv == [".venv/bin/inference-serve", "serve_config.yaml"], (
        f"README's first command does not end in the service launcher: {last}"
    )
    # `.venv/bin/...` in the README; here, the launcher of the interpreter running the tests.
    argv[0] = str(Path(sys.executable).parent / "inference-serve")
    return argv


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, otlp) -> Iterator[tuple[str, float]]:
    if port_open(8000):
        pytest.fail("something already listens on 127.0.0.1:8000; stop it before this test")
    haproxy_before = haproxy_pids()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    argv = serve_part(readme_commands()[0])
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            },
        )
    base = "http://127.0.0.1:8000"

    def ready_or_exited() -> bool:
        if proc.poll() is not None:
            return True
        return requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200

    try:
        wait_until(ready_or_exited, READY_TIMEOUT_S, "the README's serve command to be ready")
        assert proc.poll() is None, f"serve run exited early:\n{log_path.read_text()[-4000:]}"
        ready_s = time.monotonic() - started
        print(f"\nserve run -> ready in {ready_s:.1f}s")
        yield base, ready_s
    finally:
        stop(proc)
        if proc.returncode not in (0, -signal.SIGINT):
            print(log_path.read_text()[-4000:])
    assert proc.returncode is not None
    wait_until(lambda: not port_open(8000), 30, "port 8000 to be released after shutdown")
    # HAProxy can outlive Ray; the launcher stops the one it started.
    assert haproxy_pids() - haproxy_before == set(), "an haproxy outlived the service"


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a person would; escalate only if serve run does not shut down."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_readme_has_the_two_commands() -> None:
    serve_cmd, test_cmd = readme_commands()
    assert "pip install" in serve_cmd and serve_cmd.endswith("inference-serve serve_config.yaml")
    assert "pip install" in test_cmd and "pytest" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text(), ".ci/run must run the README's command"


def test_v1_predict_built_from_the_published_schema(served, record_property) -> None:
    base, ready_s = served
    record_property("serve_run_to_ready_s", round(ready_s, 1))
    info = requests.get(f"{base}/v1/models/{MODEL}", timeout=10).json()
    assert info["ready"] is True
    instance = instance_from_schema(info["input_schema"])
    resp = requests.post(
        f"{base}/v1/models/{MODEL}:predict", json={"instances": [instance]}, timeout=30
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0]["label"] in ("legit", "fraud")
    assert resp.headers["x-request-id"]


def test_triton_client_speaks_to_it(served) -> None:
    base, _ = served
    client = triton.InferenceServerClient(base.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL)
        metadata = client.get_model_metadata(MODEL)
        schema = requests.get(f"{base}/v1/models/{MODEL}", timeout=10).json()["input_schema"]
        instance = instance_from_schema(schema)
        dtypes = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}
        inputs = []
        for spec in metadata["inputs"]:
            array = np.array([instance[spec["name"]]] * 2, dtype=dtypes[spec["datatype"]])
            tensor = triton.InferInput(spec["name"], [2], spec["datatype"])
            tensor.set_data_from_numpy(array, binary_data=False)
            inputs.append(tensor)
        result = client.infer(MODEL, inputs, request_id="e2e-1")
        assert result.get_response()["id"] == "e2e-1"
        assert result.as_numpy("fraud_probability").shape == (2,)
    finally:
        client.close()


def test_a_sampled_request_is_traced_over_otlp_and_metrics_are_at_the_fixed_address(
    served, otlp
) -> None:
    base, _ = served
    schema = requests.get(f"{base}/v1/models/{MODEL}", timeout=10).json()["input_schema"]
    trace_id = secrets.token_hex(16)
    instance = {**instance_from_schema(schema), "amount_usd": 1234.5}
    resp = requests.post(
        f"{base}/v1/models/{MODEL}:predict",
        json={"instances": [instance]},
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.headers["x-trace-id"] == trace_id

    def deployments() -> set[str]:
        return {s.attributes.get("serve.deployment") for s in otlp.trace(trace_id)}

    wanted = {"Ingress", "Validator", "ModelReplica"}
    wait_until(lambda: wanted <= deployments(), 30, f"spans of {sorted(wanted)} over OTLP")

    def scraped() -> str:
        text = requests.get(f"{base}/metrics", timeout=10).text
        # Each process reports on its own interval: wait for the ingress's and the model's.
        wanted = ("ray_inference_requests_total{", "ray_inference_stage_latency_ms_bucket{")
        return text if all(name in text for name in wanted) else ""

    wait_until(scraped, 90, "service metrics at 127.0.0.1:8000/metrics")
