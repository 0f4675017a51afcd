"""The graph's behaviour between actors: batching, isolation, reconfigure, shadow wiring."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import psutil
import pytest

from deployments.errors import InferenceFailed, InvalidInput
from deployments.kinds.base import Batch, Columns
from deployments.kinds.tabular import TabularKind
from deployments.repository.store import load_kind
from tests.integration.conftest import with_model
from tests.support import MODEL, MODELS, sample_transactions, wait_until

pytestmark = pytest.mark.slow
MODEL_REPLICA = f"ModelReplica-{MODEL}"
SHADOW_REPLICA = f"ShadowReplica-{MODEL}"


@functools.cache
def kind() -> TabularKind:
    return load_kind(MODELS, MODEL, "1")  # type: ignore[return-value]


def features(n: int, seed: int) -> Columns:
    return kind().decode_v1(sample_transactions(n, seed))


def test_one_bad_item_never_fails_its_batch(handles) -> None:
    model = handles(MODEL_REPLICA)
    good = [features(3, seed=s) for s in range(20)]
    # Valid shape, but the forward pass cannot answer it: it fails the pass it shares.
    poisoned = {name: column[:2] for name, column in good[0].items()}
    poisoned["features"] = np.full_like(poisoned["features"], np.nan)
    parts = [*good[:10], poisoned, *good[10:]]  # 62 rows: one forward pass of 64

    async def calls():
        together = model.predict_many.remote(Batch.of(parts), [None] * len(parts))
        # A matrix of the wrong shape is the caller's error, refused by itself.
        misshapen = {"features": np.zeros((2, 5), dtype=np.float32)}
        alone = model.predict_many.remote(Batch.of([misshapen]), [None])
        return await together, await alone

    answer, refused = asyncio.run(calls())
    # Typed errors come back as values, by request index, beside the others' outputs.
    assert list(answer.failures) == [10] and isinstance(answer.failures[10], InferenceFailed)
    assert answer.answered == [i for i in range(len(parts)) if i != 10]
    assert [len(p["label"]) for p in answer.outputs.parts()] == [3] * 20
    assert answer.model_version == "1"
    assert refused.answered == [] and isinstance(refused.failures[0], InvalidInput)


def test_user_config_changes_batching_at_runtime(service, handles) -> None:
    model = handles(MODEL_REPLICA)
    assert model.describe.remote().result(timeout_s=30)["batch"]["max_batch_size"] == 64
    service.deploy(with_model(service.config, MODEL, batch={"max_batch_size": 8}))
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
    shadow = handles(SHADOW_REPLICA)
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
    assert stats["agreement_rule"] == "label"
    assert 0.0 <= stats["agreement"] <= 1.0 and stats["compared_rows"] >= 20


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
