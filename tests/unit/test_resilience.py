"""Admission, deadlines, memory guard, retry and the cache key: each on its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from deployments.admission.inflight import Admission, Deadline
from deployments.admission.memory_guard import MemoryGuard, cgroup_memory, memory_guarded
from deployments.admission.resilience import ResultCache, retry_transient
from deployments.config import MemoryGuardConfig
from deployments.errors import BadRequest, DeadlineExceeded, Overloaded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- admission ------------------------------------------------------------------------


def test_admission_refuses_beyond_the_inflight_cap_with_a_computed_retry_after() -> None:
    clock = Clock()
    admission = Admission(max_inflight=2, max_retry_after_s=30, window_s=10, clock=clock)
    for _ in range(40):  # 40 completions in 10 s: drains at 4/s
        with admission.admit():
            clock.now += 0.25
    with admission.admit(), admission.admit(), pytest.raises(Overloaded) as info:  # noqa: SIM117
        with admission.admit():  # the third one
            pass
    assert info.value.status_code == 503
    assert 3.9 < admission.drain_rate_per_s() < 4.5
    # 2 in flight at 4/s drain: the floor of 1 s applies.
    assert info.value.retry_after_s == 1.0
    assert info.value.headers()["Retry-After"] == "1"
    assert admission.inflight == 0 and admission.rejected == 1


def test_retry_after_grows_with_queue_depth_and_is_capped() -> None:
    clock = Clock()
    admission = Admission(max_inflight=1000, max_retry_after_s=30, window_s=10, clock=clock)
    for _ in range(10):  # 10 completions over 10 s: 1/s
        with admission.admit():
            clock.now += 1.0
    admission.inflight = 12
    assert admission.retry_after_s() == pytest.approx(12, abs=1.5)
    admission.inflight = 500
    assert admission.retry_after_s() == 30
    clock.now += 100  # nothing drained lately: the cap, not a guess
    assert admission.retry_after_s() == 30


def test_deadline_header_parsing() -> None:
    assert Deadline.from_header(None, 1000).remaining_s() is None
    assert 0 < Deadline.from_header("250", 1000).remaining_s() <= 0.25
    for bad in ("soon", "0", "5000"):
        with pytest.raises(BadRequest, match="x-request-deadline-ms"):
            Deadline.from_header(bad, 1000)


class _Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cancelled = False

    def __await__(self):
        return asyncio.sleep(self.seconds, result="done").__await__()

    def cancel(self) -> None:
        self.cancelled = True


def test_deadline_cancels_late_work_with_504() -> None:
    slow = _Slow(5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        asyncio.run(Deadline(50).run(slow, "inference"))
    assert time.monotonic() - started < 1 and slow.cancelled
    assert info.value.status_code == 504
    assert asyncio.run(Deadline(500).run(_Slow(0.01), "inference")) == "done"


# ---- memory guard ---------------------------------------------------------------------


def test_memory_guard_refuses_under_pressure_and_names_the_resource() -> None:
    guard = MemoryGuard(MemoryGuardConfig(max_system_used_fraction=0.0001, retry_after_s=3))
    with pytest.raises(Overloaded) as info:
        guard.check()
    assert "system memory" in info.value.message and info.value.retry_after_s == 3
    assert info.value.details[0]["reason"] == "memory_pressure"
    relaxed = MemoryGuard(MemoryGuardConfig(max_system_used_fraction=1.0))
    relaxed.check()
    assert relaxed.headroom_bytes() > 0


def test_under_pressure_gc_runs_at_most_once_per_interval(monkeypatch) -> None:
    import gc

    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or 0)
    guard = MemoryGuard(MemoryGuardConfig(max_system_used_fraction=0.0001, gc_interval_s=60))
    for _ in range(50):
        with pytest.raises(Overloaded):
            guard.check()
    assert len(collections) == 1  # refused 50 times, collected once


def test_memory_guard_reads_gpu_through_its_probe() -> None:
    guard = MemoryGuard(
        MemoryGuardConfig(max_system_used_fraction=1.0, min_gpu_free_fraction=0.1),
        gpu_probe=lambda: (1 << 20, 100 << 20),
    )  # 1% free
    with pytest.raises(Overloaded, match="gpu memory"):
        guard.check()


def _cgroup_tree(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(proc_line + "\n")
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "proc", tmp_path / "cg"


def test_cgroup_v2_and_v1_are_read(tmp_path: Path) -> None:
    proc, cg = _cgroup_tree(
        tmp_path / "v2",
        "0::/pod/app",
        {"pod/app/memory.max": "1000", "pod/app/memory.current": "950"},
    )
    reading = cgroup_memory(proc, cg)
    assert (reading.used_bytes, reading.limit_bytes) == (950, 1000)

    proc, cg = _cgroup_tree(
        tmp_path / "v1",
        "7:memory:/docker/abc",
        {
            "memory/docker/abc/memory.limit_in_bytes": "2000",
            "memory/docker/abc/memory.usage_in_bytes": "500",
        },
    )
    assert cgroup_memory(proc, cg).used_fraction == 0.25

    proc, cg = _cgroup_tree(
        tmp_path / "unlimited", "0::/", {"memory.max": "max", "memory.current": "5"}
    )
    assert cgroup_memory(proc, cg) is None


def test_memory_guarded_decorator_checks_before_running() -> None:
    ran = []

    class Replica:
        def __init__(self, fraction: float) -> None:
            self.guard = MemoryGuard(MemoryGuardConfig(max_system_used_fraction=fraction))

        @memory_guarded(lambda self: self.guard)
        async def work(self) -> str:
            ran.append(1)
            return "ok"

    assert asyncio.run(Replica(1.0).work()) == "ok"
    with pytest.raises(Overloaded):
        asyncio.run(Replica(0.0001).work())
    assert ran == [1]


# ---- retry ----------------------------------------------------------------------------


class Transient(Exception):
    pass


def test_retry_absorbs_transient_failures_then_gives_up() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Transient()
        return "ok"

    retried = []
    result = asyncio.run(
        retry_transient(
            flaky,
            attempts=3,
            max_wait_s=0.01,
            retryable=lambda e: isinstance(e, Transient),
            on_retry=retried.append,
        )
    )
    assert result == "ok" and len(calls) == 3 and len(retried) == 2

    calls.clear()

    async def always() -> str:
        calls.append(1)
        raise Transient()

    with pytest.raises(Transient):
        asyncio.run(retry_transient(always, 2, 0.01, lambda e: isinstance(e, Transient)))
    assert len(calls) == 2


def test_non_transient_errors_are_not_retried() -> None:
    calls = []

    async def bad() -> None:
        calls.append(1)
        raise ValueError("client mistake")

    with pytest.raises(ValueError):
        asyncio.run(retry_transient(bad, 5, 0.01))
    assert calls == [1]


# ---- result cache key ------------------------------------------------------------------------


def test_cache_key_is_canonical_and_versioned() -> None:
    a = ResultCache.key("m", "1", [{"x": 1, "y": 2}])
    assert a == ResultCache.key("m", "1", [{"y": 2, "x": 1}])
    assert a != ResultCache.key("m", "2", [{"x": 1, "y": 2}])
    assert a != ResultCache.key("m", "1", [{"x": 1, "y": 3}])


def test_admission_weighs_request_bytes() -> None:
    admission = Admission(max_inflight=100, max_inflight_bytes=1000)
    with admission.hold_bytes(600), admission.hold_bytes(400):
        assert admission.inflight_bytes == 1000
        with pytest.raises(Overloaded) as info, admission.hold_bytes(1):
            pass
        assert info.value.details[0]["reason"] == "inflight_bytes"
        assert info.value.headers()["Retry-After"]
    assert admission.inflight_bytes == 0
    # A body alone is admitted whatever it weighs: the body-size limit bounds it.
    with admission.hold_bytes(5000):
        pass


def test_the_inflight_limit_follows_the_queue_delay_budget() -> None:
    clock = Clock()
    admission = Admission(
        max_inflight=500, window_s=10, clock=clock, max_queue_delay_s=1.0, min_inflight=8
    )
    assert admission.limit() == 8, "nothing measured yet: the floor, so a burst gets in"
    for _ in range(1000):  # 1000 completions in 10 s: drains at 100/s
        with admission.admit():
            clock.now += 0.01
    assert admission.limit() == pytest.approx(100, abs=2), "what drains within 1 s"
    admission.inflight = admission.limit()
    with pytest.raises(Overloaded) as info, admission.admit():
        pass
    assert info.value.details[0]["limit"] == admission.limit()
    assert info.value.retry_after_s == 1.0  # ~100 in flight at 100/s
    admission.max_queue_delay_s = 20.0
    assert admission.limit() == 500, "the hard cap wins over the budget"
    admission.max_inflight = 4
    assert admission.limit() == 4, "and over the floor"
