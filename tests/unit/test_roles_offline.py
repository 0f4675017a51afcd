"""Pieces of the graph's roles that need no Ray: chunking by cost, which models are served,
and the report CLI's rendering of every kind's report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from deployments.admission.inflight import Deadline
from deployments.app import model_specs
from deployments.config import AppArgs
from deployments.kinds import KINDS, kind_class
from deployments.roles.dataplane import DataPlane, ReplicasSeen
from deployments.roles.replica import _requests_in, chunk_spans
from deployments.shadow.compare import Thresholds, report
from deployments.shadow.ledger import ShadowCounts
from deployments.shadow.report import render
from tests.support import MODELS, sample_transactions
from tests.unit.graph_fakes import served_model


def test_chunk_spans_keep_order_and_bound_each_passes_cost() -> None:
    spans = chunk_spans(np.array([3, 3, 3, 10, 1, 1, 1]), budget=6)
    assert [(start, stop) for start, stop, _ in spans] == [(0, 2), (2, 3), (3, 4), (4, 7)]
    # The row costlier than the budget goes alone and counts as the budget.
    assert [cost for *_, cost in spans] == [6, 3, 6, 3]


def test_each_forward_pass_counts_the_requests_it_serves() -> None:
    offsets = np.array([0, 3, 4, 10])  # requests of 3, 1 and 6 rows
    assert _requests_in(offsets, 0, 4) == 2
    assert _requests_in(offsets, 4, 8) == 1
    assert _requests_in(offsets, 8, 10) == 1
    assert _requests_in(offsets, 0, 10) == 3
    assert _requests_in(offsets, 2, 5) == 3


def test_the_pipeline_depth_follows_the_replicas_that_answer() -> None:
    served = served_model(MODELS, "fraud-risk", "1")
    served.model._target.replicas = 4
    plane = DataPlane({"fraud-risk": served})
    per_replica = plane.config.caller_batch_max_concurrent
    assert served.batcher.max_concurrent == per_replica  # nothing seen yet: one replica

    async def requests(n: int) -> None:
        for instances in [sample_transactions(1) for _ in range(n)]:
            await plane.infer(served, "v1", instances, None, Deadline(None))

    asyncio.run(requests(8))
    assert served.replicas.count() == 4
    assert served.batcher.max_concurrent == 4 * per_replica
    # A replica not heard from within the window no longer counts.
    gone = ReplicasSeen(window_s=0.0)
    gone.saw("a")
    gone.saw("b")
    assert gone.count() == 1  # both expired: at least the one replica there must be


def test_every_model_under_model_dir_is_served_when_none_are_listed() -> None:
    specs = model_specs(AppArgs(model_dir=MODELS))
    assert [s.name for s in specs] == ["fraud-risk", "minilm"]
    # A kind whose packages are missing is skipped with a warning, not a failed start.
    assert all(s.optional for s in specs)
    listed = model_specs(AppArgs(model_dir=MODELS, models=[{"name": "fraud-risk"}]))
    assert [(s.name, s.optional) for s in listed] == [("fraud-risk", False)]


def test_a_model_listed_twice_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="fraud-risk"):
        AppArgs(model_dir=MODELS, models=[{"name": "fraud-risk"}, {"name": "fraud-risk"}])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_report_cli_renders_every_kind(kind: str) -> None:
    """`shadow_report --model minilm` used to die with a KeyError on the text report."""
    spec = kind_class(kind).comparison
    counts = ShadowCounts(spec.edges)
    agree = np.array([True, True, False])
    metric = np.array([spec.edges[0], spec.edges[1], spec.edges[-1]])
    labels = (
        (np.array(["a", "b", "b"]), np.array(["a", "b", "c"]))
        if spec.agreement == "label"
        else None
    )
    counts.add_rows(agree, metric, labels)
    counts.add_latency("primary", 3.0)
    counts.add_latency("candidate", 4.0)
    body = {
        "model": "m",
        "kind": kind,
        "primary_version": "1",
        "candidate_version": "2",
        **report(counts, spec.metric, spec.agreement, Thresholds(), {"queue_full": 1}),
        "diff_log": None,
        "sample_rate": 0.1,
    }
    text = render(body)
    assert f"m ({kind})" in text and spec.metric in text and "HOLD" in text
    assert ("b->c: 1" in text) == (spec.agreement == "label")


def test_counts_survive_a_round_trip_and_add_up(tmp_path: Path) -> None:
    a, b = ShadowCounts((0.1, 1.0)), ShadowCounts((0.1, 1.0))
    a.add_rows(
        np.array([True, False]), np.array([0.05, 0.5]), (np.array(["x", "y"]), np.array(["x", "z"]))
    )
    b.add_rows(np.array([True]), np.array([5.0]))
    b.candidate_timeouts += 2
    total = ShadowCounts.from_json(a.to_json()).merged(b)
    assert (total.compared_rows, total.agreeing_rows, total.candidate_timeouts) == (3, 2, 2)
    assert total.metric_counts == [1, 1, 1]
    assert dict(total.confusion) == {"x\u2192x": 1, "y\u2192z": 1}
