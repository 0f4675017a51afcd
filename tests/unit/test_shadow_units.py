"""Shadow mode's parts: the comparison of a candidate's rows with the primary's (the kind's),
the summable counts they go into (`shadow/ledger.py`), the report computed from those
(`shadow/compare.py`), the diff log's bound, and the ingress-side mirror's isolation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from deployments.config import IngressConfig, ShadowConfig
from deployments.kinds.base import ComparePolicy
from deployments.kinds.tabular import DELTA_EDGES, ClassificationKind
from deployments.repository.store import load_kind
from deployments.shadow.compare import Thresholds, histogram_quantiles, report, wilson_interval
from deployments.shadow.diff_log import DiffLog, row_hash
from deployments.shadow.ledger import LATENCY_EDGES_MS, ShadowCounts
from deployments.shadow.mirror import Mirror
from tests.support import MODEL, MODELS

KIND = load_kind(MODELS, MODEL, "1")
assert isinstance(KIND, ClassificationKind)
POLICY = ComparePolicy()


def outputs(labels: list[str], scores: list[float]) -> dict:
    return {
        "label": np.array(labels, dtype=object),
        "fraud_probability": np.array(scores, dtype=np.float32),
    }


def compared(counts: ShadowCounts, primary: dict, candidate: dict, p_ms: float, c_ms: float):
    """What the ShadowReplica does with one mirrored request's answers."""
    comparison = KIND.compare(primary, candidate, POLICY)
    counts.mirrored_requests += 1
    counts.add_rows(comparison.agree, comparison.metric, comparison.labels)
    counts.add_latency("primary", p_ms)
    counts.add_latency("candidate", c_ms)
    return comparison


def test_compare_counts_agreement_confusion_and_deltas() -> None:
    counts = ShadowCounts(KIND.comparison.edges)
    comparison = compared(
        counts,
        outputs(["legit", "fraud", "legit"], [0.1, 0.8, 0.4]),
        outputs(["legit", "legit", "fraud"], [0.15, 0.45, 0.6]),
        5.0,
        7.0,
    )
    assert comparison.agree.tolist() == [True, False, False]
    assert np.round(comparison.metric, 6).tolist() == [0.05, 0.35, 0.2]
    assert counts.compared_requests == 1
    assert counts.compared_rows == 3 and counts.agreeing_rows == 1
    assert counts.confusion["fraud\u2192legit"] == 1 and counts.confusion["legit\u2192fraud"] == 1
    assert counts.confusion["legit\u2192legit"] == 1
    # Each |delta| lands in the bucket whose upper edge is the first at or above it.
    assert sum(counts.metric_counts) == 3
    for delta in comparison.metric:
        bucket = int(np.searchsorted(DELTA_EDGES, delta))
        assert DELTA_EDGES[bucket - 1] < delta <= DELTA_EDGES[bucket]
        assert counts.metric_counts[bucket] >= 1
    assert counts.latency_counts["primary"][LATENCY_EDGES_MS.index(5)] == 1
    assert counts.latency_counts["candidate"][LATENCY_EDGES_MS.index(10)] == 1


def test_row_count_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        KIND.compare(outputs(["a"], [0.1]), outputs(["a", "b"], [0.1, 0.2]), POLICY)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-3) and high == pytest.approx(0.9785, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.65 < low < 0.75


def test_histogram_quantiles_of_empty_and_filled() -> None:
    edges = (1.0, 2.0, 5.0, 10.0)
    assert histogram_quantiles(edges, [0] * 5, (0.5, 0.99)) == {"p50": None, "p99": None}
    # 0..100 counted into buckets <=1, <=2, <=5, <=10, >10.
    values = np.arange(101, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=5).tolist()
    assert counts == [2, 1, 3, 5, 90]
    q = histogram_quantiles(edges, counts, (0.01, 0.05, 0.1, 0.5, 0.99))
    # Each quantile is the upper edge of its bucket (the overflow bucket: the last edge).
    assert q == {"p1": 1.0, "p5": 5.0, "p10": 10.0, "p50": 10.0, "p99": 10.0}
    assert q["p1"] >= float(np.quantile(values, 0.01))
    assert q["p10"] >= float(np.quantile(values, 0.1))


def filled(agree: int, disagree: int, candidate_ms: float = 2.0) -> ShadowCounts:
    counts = ShadowCounts(KIND.comparison.edges)
    for i in range(agree + disagree):
        label = "legit" if i < agree else "fraud"
        compared(counts, outputs(["legit"], [0.1]), outputs([label], [0.12]), 2.0, candidate_ms)
    return counts


def verdict(counts: ShadowCounts, thresholds: Thresholds, drops: dict) -> dict:
    spec = KIND.comparison
    return report(counts, spec.metric, spec.agreement, thresholds, drops)


def test_recommendation_promotes_only_when_every_threshold_holds() -> None:
    t = Thresholds(
        min_compared_rows=100,
        min_agreement=0.9,
        max_candidate_failure_rate=0.05,
        max_p99_latency_ratio=2.0,
    )
    good = verdict(filled(999, 1), t, {})
    assert good["recommendation"] == "promote" and good["reasons"] == []
    assert good["agreement_rule"] == "label" and good["metric"] == "abs_score_delta"
    assert good["agreement"] == pytest.approx(0.999)
    assert good["agreement_ci95"][0] < 0.999 < good["agreement_ci95"][1]
    assert good["metric_quantiles"]["p50"] == pytest.approx(0.02)  # |0.12 - 0.1| <= 0.02
    assert good["confusion"] == [
        {"primary": "legit", "candidate": "fraud", "rows": 1},
        {"primary": "legit", "candidate": "legit", "rows": 999},
    ]

    few = verdict(filled(50, 0), t, {})
    assert few["recommendation"] == "hold" and "only 50 rows" in few["reasons"][0]

    disagreeing = verdict(filled(800, 200), t, {})
    assert any("agreement lower bound" in r for r in disagreeing["reasons"])

    slow = verdict(filled(1000, 0, candidate_ms=10.0), t, {})
    assert any("latency" in r for r in slow["reasons"]) and slow["latency_ms"]["p99_ratio"] == 5

    dropped = verdict(filled(1000, 0), t, {"queue_full": 100})
    assert dropped["candidate_failure_rate"] == pytest.approx(100 / 1100)
    assert any("failure rate" in r for r in dropped["reasons"])
    assert dropped["dropped"] == {"queue_full": 100}

    failing = filled(1000, 0)
    failing.candidate_errors, failing.candidate_timeouts = 30, 30
    failed = verdict(failing, t, {})
    assert failed["candidate_failure_rate"] == pytest.approx(60 / 1000)
    assert failed["recommendation"] == "hold"


def test_the_report_thresholds_come_from_the_shadow_config() -> None:
    config = ShadowConfig(min_agreement=0.5, min_compared_rows=10)
    t = Thresholds(
        config.min_compared_rows,
        config.min_agreement,
        config.max_candidate_failure_rate,
        config.max_p99_latency_ratio,
    )
    body = verdict(filled(70, 30), t, {})
    assert body["thresholds"]["min_agreement"] == 0.5 and body["recommendation"] == "promote"


def test_an_empty_report_holds_and_says_why() -> None:
    body = verdict(ShadowCounts(KIND.comparison.edges), Thresholds(), {})
    assert body["agreement"] is None and body["agreement_ci95"] is None
    assert body["metric_quantiles"] == {"p1": None, "p50": None, "p90": None, "p99": None}
    assert body["latency_ms"]["p99_ratio"] is None
    assert body["recommendation"] == "hold" and "only 0 rows" in body["reasons"][0]


def test_counts_from_many_replicas_merge_into_the_same_report() -> None:
    whole = filled(900, 100)
    first, second = filled(500, 0), filled(400, 100)
    second.candidate_timeouts = 3
    merged = first.merged(second)
    for name in ("mirrored_requests", "compared_requests", "compared_rows", "agreeing_rows"):
        assert getattr(merged, name) == getattr(whole, name), name
    assert merged.metric_counts == whole.metric_counts
    assert merged.latency_counts == whole.latency_counts
    assert merged.confusion == whole.confusion
    assert merged.candidate_timeouts == 3
    t = Thresholds(min_compared_rows=100)
    whole.candidate_timeouts = 3
    assert verdict(merged, t, {}) == verdict(whole, t, {})


def test_counts_survive_a_json_round_trip() -> None:
    counts = filled(10, 3, candidate_ms=40.0)
    counts.candidate_errors = 2
    copy = ShadowCounts.from_json(counts.to_json())
    assert copy == counts
    assert isinstance(copy.metric_edges, tuple) and copy.confusion["legit\u2192fraud"] == 3
    # A restored replica carries on counting from its totals.
    compared(copy, outputs(["legit"], [0.1]), outputs(["legit"], [0.1]), 1.0, 1.0)
    assert copy.compared_rows == counts.compared_rows + 1
    assert json.loads(copy.to_json())["mirrored_requests"] == 14


def test_diff_log_rotates_within_its_bound(tmp_path: Path) -> None:
    log = DiffLog(tmp_path / "diff.jsonl", max_bytes=4096, backups=2)
    for i in range(500):
        log.write({"request_id": f"r{i}", "primary": {"label": "legit"}, "pad": "x" * 50})
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["diff.jsonl", "diff.jsonl.1", "diff.jsonl.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    last = json.loads((tmp_path / "diff.jsonl").read_text().splitlines()[-1])
    assert last["request_id"] == "r499" and "ts" in last


def test_row_hash_is_stable_and_distinguishes_rows() -> None:
    a, b = np.zeros(4, np.float32), np.ones(4, np.float32)
    assert row_hash(a) == row_hash(a.copy()) != row_hash(b)


class _Shadow:
    """Stands in for the shadow's handle: the unit under test is the Mirror in front of it."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.received: list[dict] = []
        self.calls = 0
        self.cancelled = 0
        self.mirror_many = self

    def remote(self, batch: list[dict]):
        self.calls += 1
        self.received.extend(batch)
        return _Response(self)


class _Response:
    def __init__(self, shadow: _Shadow) -> None:
        self.shadow = shadow

    def __await__(self):
        if self.shadow.behaviour == "hang":
            yield from asyncio.Event().wait().__await__()
        if self.shadow.behaviour == "raise":
            raise RuntimeError("replica died")
        return None

    def cancel(self) -> None:
        self.shadow.cancelled += 1


async def _drain(mirror: Mirror, expect: int) -> None:
    for _ in range(200):
        if mirror.sent + sum(mirror.drops.values()) >= expect:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "behaviour,reason", [("ok", None), ("raise", "unavailable"), ("hang", "timeout")]
)
def test_mirror_counts_every_outcome_and_never_raises(behaviour: str, reason: str | None) -> None:
    async def run() -> Mirror:
        shadow = _Shadow(behaviour)
        mirror = Mirror(shadow, IngressConfig(shadow_sample_rate=1.0, shadow_timeout_s=0.05))
        for i in range(5):
            assert mirror.offer({"request_id": str(i)}) is True
        await _drain(mirror, 5)
        return mirror

    mirror = asyncio.run(run())
    if reason is None:
        assert mirror.sent == 5 and not mirror.drops
    else:
        assert mirror.drops[reason] == 5 and mirror.sent == 0
    # Offered together, the five went in one call, each payload with its (unsampled) trace.
    assert mirror.shadow.calls == 1
    assert [p["request_id"] for p in mirror.shadow.received] == [str(i) for i in range(5)]
    assert all(p["traceparent"] is None for p in mirror.shadow.received)
    if behaviour == "hang":
        assert mirror.shadow.cancelled == 1


def test_full_queue_drops_instead_of_blocking() -> None:
    async def run() -> Mirror:
        mirror = Mirror(
            _Shadow("hang"),
            IngressConfig(
                shadow_sample_rate=1.0,
                shadow_queue_size=3,
                shadow_concurrency=1,
                shadow_timeout_s=30,
            ),
        )
        results = [mirror.offer({"i": i}) for i in range(10)]
        assert results.count(False) >= 6  # 1 in flight at most, 3 queued, the rest dropped
        return mirror

    mirror = asyncio.run(run())
    assert mirror.drops["queue_full"] >= 6


def test_sampling_rate_is_respected() -> None:
    async def run() -> int:
        mirror = Mirror(_Shadow("ok"), IngressConfig(shadow_sample_rate=0.0))
        return sum(mirror.offer({}) for _ in range(100))

    assert asyncio.run(run()) == 0


def test_one_call_carries_at_most_shadow_batch_max_requests() -> None:
    async def run() -> Mirror:
        config = IngressConfig(
            shadow_sample_rate=1.0, shadow_concurrency=1, shadow_batch_max_requests=2
        )
        mirror = Mirror(_Shadow("ok"), config)
        for i in range(5):
            mirror.offer({"request_id": str(i)})
        await _drain(mirror, 5)
        return mirror

    mirror = asyncio.run(run())
    assert mirror.sent == 5 and mirror.shadow.calls == 3


def _offered_apart(count: int, gap_s: float, wait_s: float) -> Mirror:
    """A mirror (sixteen senders) offered `count` mirrors `gap_s` apart, once all are sent."""

    async def run() -> Mirror:
        config = IngressConfig(shadow_sample_rate=1.0, shadow_batch_wait_s=wait_s)
        mirror = Mirror(_Shadow("ok"), config)
        for i in range(count):
            mirror.offer({"request_id": str(i)})
            await asyncio.sleep(gap_s)
        await _drain(mirror, count)
        return mirror

    return asyncio.run(run())


def test_mirrors_arriving_apart_share_a_call_within_the_wait() -> None:
    """With sixteen idle senders, one gathers: ten mirrors 2 ms apart go in one call."""
    mirror = _offered_apart(10, 0.002, wait_s=0.2)
    assert mirror.sent == 10 and mirror.shadow.calls == 1
    assert [p["request_id"] for p in mirror.shadow.received] == [str(i) for i in range(10)]


def test_without_a_wait_each_idle_sender_takes_what_is_there() -> None:
    mirror = _offered_apart(4, 0.01, wait_s=0)
    assert mirror.sent == 4 and mirror.shadow.calls == 4


def test_a_sender_resized_away_while_gathering_leaves_nothing_pending() -> None:
    async def run() -> tuple[int, float]:
        mirror = Mirror(_Shadow("ok"), IngressConfig(shadow_sample_rate=1.0, shadow_batch_wait_s=5))
        mirror.offer({"request_id": "0"})
        await asyncio.sleep(0.05)  # a sender took it and waits for company
        mirror.reconfigure(IngressConfig(shadow_sample_rate=1.0, shadow_concurrency=4))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        left = await mirror.drain(timeout_s=1.0)
        return left, time.monotonic() - started

    left, waited_s = asyncio.run(run())
    assert left == 0 and waited_s < 0.5


def test_drain_sends_what_is_queued_before_the_replica_stops() -> None:
    async def run() -> tuple[Mirror, int]:
        config = IngressConfig(
            shadow_sample_rate=1.0, shadow_concurrency=1, shadow_batch_max_requests=2
        )
        mirror = Mirror(_Shadow("ok"), config)
        for i in range(7):
            mirror.offer({"request_id": str(i)})
        left = await mirror.drain()  # no polling: drain itself waits for the sends
        return mirror, left

    mirror, left = asyncio.run(run())
    assert left == 0 and mirror.sent == 7 and not mirror.drops


def test_drain_gives_up_after_its_timeout_and_counts_what_was_left() -> None:
    async def run() -> tuple[Mirror, int]:
        config = IngressConfig(shadow_sample_rate=1.0, shadow_concurrency=1, shadow_timeout_s=30)
        mirror = Mirror(_Shadow("hang"), config)
        for i in range(4):
            mirror.offer({"request_id": str(i)})
        return mirror, await mirror.drain(timeout_s=0.05)

    mirror, left = asyncio.run(run())
    assert left == 4 and mirror.drops["shutdown"] == 4 and mirror.sent == 0


def test_ledger_writes_a_change_inside_its_interval_when_the_interval_ends() -> None:
    from deployments.shadow.ledger import shadow_ledger
    from tests.unit.test_drift_scores import MemoryStore

    memory = MemoryStore()  # the cluster KV store, in memory
    store = memory.data

    async def run() -> None:
        book = shadow_ledger("m/1/2", "replica-a", (0.5,), memory)
        book.flush_s = 0.1
        book.counts.mirrored_requests = 1
        book.flush()  # the first write goes at once
        book.counts.mirrored_requests = 2
        book.flush()  # inside the interval: deferred, not dropped
        assert ShadowCounts.from_json(store["m/1/2/replica-a"]).mirrored_requests == 1
        await asyncio.sleep(0.3)
        assert ShadowCounts.from_json(store["m/1/2/replica-a"]).mirrored_requests == 2

    asyncio.run(run())
