"""The README's serve command, run as a newcomer runs it, called over real HTTP.

Started with the standard OpenTelemetry variables pointing at a real OTLP receiver on
loopback, as an operator with a collector would start it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

import grpc
import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.e2e.service import GRPC_ADDRESS, readme_commands
from tests.support import MODEL, REPO, instance_from_schema, wait_until

pytestmark = pytest.mark.slow


def test_readme_has_the_two_commands() -> None:
    serve_cmd, test_cmd = readme_commands()
    assert "pip install" in serve_cmd and serve_cmd.endswith("inference-serve serve_config.yaml")
    assert "pip install" in test_cmd and "pytest" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text(), ".ci/run must run the README's command"


def test_v1_predict_built_from_the_published_schema(served, record_property) -> None:
    base, running = served
    record_property("serve_run_to_ready_s", round(running.ready_s, 1))
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
            tensor.set_data_from_numpy(array)  # the library's default: binary tensors
            inputs.append(tensor)
        result = client.infer(MODEL, inputs, request_id="e2e-1")
        assert result.get_response()["id"] == "e2e-1"
        assert result.as_numpy("fraud_probability").shape == (2,)
        # Triton's tools read the config first; the statistics count what was served.
        assert client.get_model_config(MODEL)["name"] == MODEL
        wait_until(
            lambda: client.get_inference_statistics(MODEL)["model_stats"][0]["inference_stats"][
                "success"
            ]["count"]
            >= 1,
            30,
            "the statistics to count the inference (each replica writes within a second)",
        )
    finally:
        client.close()


def test_triton_grpc_client_speaks_to_it(served) -> None:
    base, _ = served
    schema = requests.get(f"{base}/v1/models/{MODEL}", timeout=10).json()["input_schema"]
    instance = instance_from_schema(schema)
    client = triton_grpc.InferenceServerClient(GRPC_ADDRESS)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL) and client.is_model_ready("minilm")
        metadata = client.get_model_metadata(MODEL)
        assert client.get_model_config(MODEL).config.name == MODEL
        dtypes = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": object}
        inputs = []
        for spec in metadata.inputs:
            array = np.array([instance[spec.name]] * 3, dtype=dtypes[spec.datatype])
            tensor = triton_grpc.InferInput(spec.name, [3], spec.datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(MODEL, inputs, request_id="e2e-grpc")
        assert result.get_response().id == "e2e-grpc"
        assert result.as_numpy("fraud_probability").shape == (3,)
        text = triton_grpc.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"a train leaves at noon"], dtype=object))
        assert client.infer("minilm", [text]).as_numpy("embedding").shape == (1, 384)
        with pytest.raises(InferenceServerException) as info:
            client.infer("nope", inputs)
        assert info.value.status() == "StatusCode.NOT_FOUND"
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

    # Each model's deployments are named <Role>-<model>.
    wanted = {"Ingress", f"Validator-{MODEL}", f"ModelReplica-{MODEL}"}
    wait_until(lambda: wanted <= deployments(), 30, f"spans of {sorted(wanted)} over OTLP")

    def scraped() -> str:
        text = requests.get(f"{base}/metrics", timeout=10).text
        # Each process reports on its own interval: wait for the ingress's and the model's.
        wanted = ("ray_inference_requests_total{", "ray_inference_stage_latency_ms_bucket{")
        return text if all(name in text for name in wanted) else ""

    wait_until(scraped, 90, "service metrics at 127.0.0.1:8000/metrics")


def test_every_listener_is_on_loopback_or_refuses_a_caller_without_ray_s_token(served) -> None:
    """Every socket the README's command listens on, by process: on loopback, or (the
    replicas' gRPC servers, which Ray binds to every interface) refusing a caller without
    Ray's token, asked from this machine's outward address where it has one."""
    _, running = served
    listeners = listening_sockets(running.pid)
    assert any(port == 8000 for _, port, _ in listeners), listeners
    exposed = [(ip, port, name) for ip, port, name in listeners if not is_loopback(ip)]
    outward = outward_address()
    refused = {}
    for _ip, port, name in exposed:
        refused[(port, name)] = grpc_refuses_without_token(outward, port)
    assert all(refused.values()), f"listening beyond loopback without auth: {refused}"
    # What is left beyond loopback is Ray's inter-deployment gRPC, one server per replica.
    assert all(name.startswith("ray::ServeReplica") for _, _, name in exposed), exposed
    print(f"\n{len(listeners)} listeners, {len(exposed)} beyond loopback, each refusing")


def test_the_ingress_and_validators_never_load_torch(served) -> None:
    """The roles that only parse, validate and route stay free of torch after answering: its
    import would stall a request and take memory budgeted for requests (the ingress's is
    512 MiB). Checked in the running processes' mapped libraries."""
    base, running = served
    schema = requests.get(f"{base}/v1/models/{MODEL}", timeout=10).json()["input_schema"]
    body = {"instances": [instance_from_schema(schema)]}
    for _ in range(3):
        resp = requests.post(f"{base}/v1/models/{MODEL}:predict", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
    root = psutil.Process(running.pid)
    light = {}
    for proc in root.children(recursive=True):
        try:
            title = proc.cmdline()[0]
            if ":Ingress" in title or ":Validator-" in title:
                light[title] = [m.path for m in proc.memory_maps() if "libtorch" in m.path]
        except (psutil.Error, IndexError):
            continue
    assert any(":Ingress" in t for t in light) and any(":Validator-" in t for t in light), light
    assert not any(light.values()), {t: maps[:1] for t, maps in light.items() if maps}


def listening_sockets(root_pid: int) -> list[tuple[str, int, str]]:
    root = psutil.Process(root_pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            try:
                name = procs[conn.pid].cmdline()[0]
            except (psutil.Error, IndexError):
                name = "?"
            found.append((conn.laddr.ip, conn.laddr.port, name))
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def outward_address() -> str:
    """The address another machine would reach this one at (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            return sock.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def grpc_refuses_without_token(host: str, port: int) -> bool:
    # A real method of the replicas' service: an unknown one would be UNIMPLEMENTED.
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        channel.unary_unary("/ray.serve.ASGIService/HandleRequest")(b"", timeout=10)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
    return False
