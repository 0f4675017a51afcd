"""Shadow comparison maths, the diff log's bound, and the ingress-side mirror's isolation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from deployments.config import IngressConfig
from deployments.shadow.compare import ShadowStats, Thresholds, quantiles, wilson_interval
from deployments.shadow.diff_log import DiffLog, row_hash
from deployments.shadow.mirror import Mirror


def outputs(labels: list[str], scores: list[float]) -> dict:
    return {"label": labels, "fraud_probability": scores}


def test_compare_counts_agreement_confusion_and_deltas() -> None:
    stats = ShadowStats("fraud_probability")
    rows = stats.compare(
        outputs(["legit", "fraud", "legit"], [0.1, 0.8, 0.4]),
        outputs(["legit", "legit", "fraud"], [0.15, 0.45, 0.6]),
        5.0,
        7.0,
    )
    assert [r.agrees for r in rows] == [True, False, False]
    assert [round(r.abs_delta, 6) for r in rows] == [0.05, 0.35, 0.2]
    assert stats.compared_rows == 3 and stats.agreeing_rows == 1
    assert stats.confusion[("fraud", "legit")] == 1 and stats.confusion[("legit", "fraud")] == 1


def test_row_count_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        ShadowStats("fraud_probability").compare(
            outputs(["a"], [0.1]), outputs(["a", "b"], [0.1, 0.2]), 1, 1
        )


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-3) and high == pytest.approx(0.9785, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.65 < low < 0.75


def test_quantiles_of_empty_and_filled() -> None:
    assert quantiles([], (0.5, 1.0)) == {"p50": None, "max": None}
    q = quantiles(range(101), (0.5, 0.99, 1.0))
    assert q == {"p50": 50.0, "p99": 99.0, "max": 100.0}


def filled(agree: int, disagree: int, candidate_ms: float = 2.0) -> ShadowStats:
    stats = ShadowStats("fraud_probability")
    for i in range(agree + disagree):
        label = "legit" if i < agree else "fraud"
        stats.mirrored_requests += 1
        stats.compare(outputs(["legit"], [0.1]), outputs([label], [0.12]), 2.0, candidate_ms)
    return stats


def test_recommendation_promotes_only_when_every_threshold_holds() -> None:
    t = Thresholds(
        min_compared_rows=100,
        min_label_agreement=0.9,
        max_candidate_failure_rate=0.05,
        max_p99_latency_ratio=2.0,
    )
    good = filled(999, 1).report(t, {})
    assert good["recommendation"] == "promote" and good["reasons"] == []

    few = filled(50, 0).report(t, {})
    assert few["recommendation"] == "hold" and "only 50 rows" in few["reasons"][0]

    disagreeing = filled(800, 200).report(t, {})
    assert any("agreement lower bound" in r for r in disagreeing["reasons"])

    slow = filled(1000, 0, candidate_ms=10.0).report(t, {})
    assert any("latency" in r for r in slow["reasons"]) and slow["latency_ms"]["p99_ratio"] == 5

    dropped = filled(1000, 0).report(t, {"queue_full": 100})
    assert dropped["candidate_failure_rate"] == pytest.approx(100 / 1100)
    assert any("failure rate" in r for r in dropped["reasons"])


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
