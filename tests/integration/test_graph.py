"""The graph's behaviour between actors: batching, isolation, reconfigure, shadow wiring."""

from __future__ import annotations

import asyncio

import numpy as np
import psutil
import pytest

from deployments.errors import InvalidInput
from deployments.metadata import read_metadata
from deployments.schema import InputSchema
from tests.integration.conftest import with_user_config
from tests.support import MODEL, MODELS, sample_transactions, wait_until

pytestmark = pytest.mark.slow


def features(n: int, seed: int) -> np.ndarray:
    return InputSchema(read_metadata(MODELS, MODEL, "1")).to_features(sample_transactions(n, seed))


def test_one_bad_item_never_fails_its_batch(handles) -> None:
    model = handles("ModelReplica")

    async def burst() -> list:
        good = [features(3, seed=s) for s in range(20)]
        calls = [model.predict.remote(x) for x in good[:10]]
        calls.append(model.predict.remote(np.zeros((2, 5), dtype=np.float32)))
        calls += [model.predict.remote(x) for x in good[10:]]
        # Typed errors come back as values (returned_not_raised), not as exceptions.
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    assert isinstance(results[10], InvalidInput), results[10]
    ok = [r for i, r in enumerate(results) if i != 10]
    assert all(isinstance(r, dict) and len(r["outputs"]["label"]) == 3 for r in ok), ok
    assert {r["model_version"] for r in ok} == {"1"}


def test_user_config_changes_batching_at_runtime(service, handles) -> None:
    model = handles("ModelReplica")
    assert model.describe.remote().result(timeout_s=30)["batch"]["max_batch_size"] == 64
    service.deploy(
        with_user_config(
            service.config, "ModelReplica", max_batch_size=8, batch_wait_timeout_s=0.01
        )
    )
    try:
        wait_until(
            lambda: model.describe.remote().result(timeout_s=30)["batch"]["max_batch_size"] == 8,
            60,
            "ModelReplica to apply max_batch_size=8",
        )
        records = sample_transactions(30, seed=4)  # now split into 4 chunks
        resp = service.http.post(
            service.url(f"/v1/models/{MODEL}:predict"), json={"instances": records}
        )
        assert resp.status_code == 200 and len(resp.json()["predictions"]) == 30
    finally:
        service.deploy(service.config)
        wait_until(
            lambda: model.describe.remote().result(timeout_s=30)["batch"]["max_batch_size"] == 64,
            60,
            "ModelReplica to return to max_batch_size=64",
        )


def test_mirrored_requests_reach_the_shadow(service, handles) -> None:
    shadow = handles("ShadowReplica")
    before = shadow.report.remote().result(timeout_s=30)["mirrored_requests"]
    for seed in range(5):
        resp = service.http.post(
            service.url(f"/v1/models/{MODEL}:predict"),
            json={"instances": sample_transactions(4, seed)},
        )
        assert resp.status_code == 200
    stats = wait_until(
        lambda: (s := shadow.report.remote().result(timeout_s=30))["mirrored_requests"]
        >= before + 5
        and s,
        30,
        "five mirrored requests at sample rate 1.0",
    )
    assert stats["candidate_version"] == "2"
    assert 0.0 <= stats["label_agreement"] <= 1.0 and stats["compared_rows"] >= 20


def test_replicas_run_at_normal_priority(service) -> None:
    """The fast path's RAY_worker_niceness=0 reaches every replica process (Ray's default
    starts workers at nice 15, behind everything else on the node)."""
    replicas = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("ServeReplica:" in part for part in (p.info["cmdline"] or []))
    ]
    assert replicas, "no replica processes found"
    assert {p.nice() for p in replicas} == {0}
