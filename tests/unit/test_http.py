"""The HTTP adapter and the data plane, without Ray: the FastAPI app over httpx's ASGI
transport, the real kinds behind in-process handles (tests/unit/graph_fakes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch

from deployments.nets import MLPClassifier
from deployments.protocol.json_body import json_response_bytes
from deployments.repository.package import package_model
from tests.support import MODELS, REPO, sample_transactions
from tests.unit.graph_fakes import RecordingMetrics, http_app, served_model
from tests.unit.test_kinds import WIDTH, homes, multiclass_spec


@pytest.fixture(scope="module")
def home_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    torch.manual_seed(4)
    package_model(MLPClassifier(WIDTH, [8], 3), multiclass_spec(), repo)
    return repo


@pytest.fixture(scope="module")
def models(home_repo: Path) -> dict[str, Any]:
    return {
        "fraud-risk": served_model(MODELS, "fraud-risk", "1"),
        "minilm": served_model(MODELS, "minilm", "1"),
        "home-type": served_model(home_repo, "home-type", "1"),
    }


def run(models: dict[str, Any], scenario: Callable[[httpx.AsyncClient], Any], **kw: Any) -> Any:
    app, plane = http_app(models, **kw)

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await scenario(client)

    return asyncio.run(go())


def test_every_model_is_listed_and_described_by_its_kind(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        listed = (await client.get("/v1/models")).json()
        assert listed == {"models": ["fraud-risk", "home-type", "minilm"]}
        info = (await client.get("/v1/models/home-type")).json()
        assert info["kind"] == "tabular_classification" and info["ready"] is True
        assert set(info["input_schema"]["properties"]) == {"rooms", "area_m2", "district", "garden"}
        text = (await client.get("/v2/models/minilm")).json()
        assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        fraud = (await client.get("/v2/models/fraud-risk/versions/1")).json()
        assert {t["name"] for t in fraud["outputs"]} == {"label", "fraud_probability"}
        assert (await client.get("/v2/models/fraud-risk/versions/9")).status_code == 404

    run(models, scenario)


def test_two_tabular_models_with_different_schemas_answer_side_by_side(
    models: dict[str, Any],
) -> None:
    transactions = sample_transactions(3)
    houses = homes(4)

    async def scenario(client: httpx.AsyncClient) -> tuple[Any, Any]:
        # Sent together, so the caller batch carries both models at once.
        return await asyncio.gather(
            client.post("/v1/models/fraud-risk:predict", json={"instances": transactions}),
            client.post("/v1/models/home-type:predict", json={"instances": houses}),
        )

    fraud, home = run(models, scenario)
    assert fraud.status_code == 200 and home.status_code == 200, (fraud.text, home.text)
    kind = models["home-type"].kind
    runtime = models["home-type"].model._target.runtime
    expected = orjson.loads(
        json_response_bytes(kind.encode_v1(runtime.forward(kind.decode_v1(houses))))
    )
    assert home.json()["predictions"] == expected
    assert [set(p) for p in fraud.json()["predictions"]] == [{"label", "fraud_probability"}] * 3
    assert home.json()["model_name"] == "home-type"


def test_v2_infer_for_each_kind(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[Any, Any]:
        text = await client.post(
            "/v2/models/minilm/infer",
            json={
                "id": "t1",
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a cat", "a dog"]}
                ],
            },
        )
        r = homes(2)
        home = await client.post(
            "/v2/models/home-type/infer",
            json={
                "inputs": [
                    {
                        "name": "rooms",
                        "datatype": "INT64",
                        "shape": [2],
                        "data": [x["rooms"] for x in r],
                    },
                    {
                        "name": "area_m2",
                        "datatype": "FP64",
                        "shape": [2],
                        "data": [x["area_m2"] for x in r],
                    },
                    {
                        "name": "district",
                        "datatype": "BYTES",
                        "shape": [2],
                        "data": [x["district"] for x in r],
                    },
                ],
                "outputs": [{"name": "probabilities"}],
            },
        )
        return text, home

    text, home = run(models, scenario)
    assert text.status_code == 200, text.text
    body = text.json()
    assert body["id"] == "t1" and body["outputs"][0]["shape"] == [2, 384]
    embedding = np.array(body["outputs"][0]["data"]).reshape(2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    assert home.status_code == 200, home.text
    assert [o["name"] for o in home.json()["outputs"]] == ["probabilities"]
    assert home.json()["outputs"][0]["shape"] == [2, 3]


def test_bad_input_gets_a_4xx_naming_the_field(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
        good = homes(1)[0]
        return {
            "schema": await client.post(
                "/v1/models/home-type:predict", json={"instances": [{**good, "rooms": 99}]}
            ),
            "text": await client.post("/v1/models/minilm:predict", json={"instances": [{"t": 1}]}),
            "tensor": await client.post(
                "/v2/models/home-type/infer",
                json={"inputs": [{"name": "rooms", "datatype": "FP32", "shape": [1], "data": [1]}]},
            ),
            "json": await client.post(
                "/v1/models/home-type:predict",
                content=b"[" * 5000,
                headers={"content-type": "application/json"},
            ),
            "unknown": await client.post("/v1/models/nope:predict", json={"instances": [{}]}),
        }

    answers = run(models, scenario)
    assert answers["schema"].status_code == 422
    assert answers["schema"].json()["details"][0]["field"] == "rooms"
    assert answers["text"].status_code == 422
    assert {d["field"] for d in answers["text"].json()["details"]} == {"text", "t"}
    assert answers["tensor"].status_code == 422
    fields = {d["field"] for d in answers["tensor"].json()["details"]}
    assert {"rooms", "area_m2", "district"} <= fields
    assert answers["json"].status_code == 400
    assert answers["unknown"].status_code == 404
    assert "home-type" in answers["unknown"].json()["error"]


def test_a_wrong_method_is_405_with_allow(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get("/v1/models/fraud-risk:predict"),
            await client.post("/v1/models"),
            await client.get("/v2/models/fraud-risk/infer"),
        ]

    for response, allow in zip(run(models, scenario), ("POST", "GET", "POST")):
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == allow
        assert response.json()["code"] == "method_not_allowed"


def test_each_request_is_counted_under_its_own_model(models: dict[str, Any]) -> None:
    """Before the kinds, text requests' cache and rejection metrics carried the tabular
    model's name, and text caller batches recorded no batch size."""
    metrics = RecordingMetrics()

    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post("/v1/models/minilm:predict", json={"instances": [{"text": "hello"}]})
        await client.post(
            "/v1/models/fraud-risk:predict", json={"instances": sample_transactions(1)}
        )

    run(models, scenario, metrics=metrics)
    caches = [tags["model"] for name, tags in metrics.seen if name == "cache"]
    assert caches == ["minilm", "fraud-risk"]
    assert sum(1 for name, _ in metrics.seen if name == "caller_batch") == 2


def test_auth_is_checked_on_data_and_metadata_routes(models: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [
            (await client.get("/v1/models")).status_code,
            (await client.post("/v1/models/minilm:predict", json={"instances": []})).status_code,
            (
                await client.get("/v1/models", headers={"authorization": "Bearer s3cret"})
            ).status_code,
            (await client.get("/v2/health/live")).status_code,
        ]

    assert run(models, scenario, token="s3cret") == [401, 401, 200, 200]


def test_the_http_layer_has_no_per_kind_branch() -> None:
    """Kinds decode and encode themselves: the roles above them never name one."""
    for module in (
        "http.py",
        "dataplane.py",
        "ingress.py",
        "validator.py",
        "replica.py",
        "shadow.py",
    ):
        source = (REPO / "deployments" / "roles" / module).read_text()
        for word in ("text_embedding", "tabular", "embedding", "TextEncoder", "minilm"):
            assert word not in source, f"roles/{module} names {word!r}"
