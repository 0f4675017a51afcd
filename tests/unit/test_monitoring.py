"""Monitor / @monitored: one measurement feeds the metric, the outcome count and the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from deployments.errors import InvalidInput
from deployments.telemetry.monitoring import Monitor, monitored


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def record(self, stage: str, elapsed_ms: float, outcome: str) -> None:
        self.calls.append((stage, elapsed_ms, outcome))


class Stage:
    def __init__(self, slow_call_ms: float = 1000.0) -> None:
        self.monitor = Monitor("Validator", Recorder(), slow_call_ms)

    @monitored("validation")
    def check(self, value: int) -> int:
        if value < 0:
            raise InvalidInput("negative")
        if value == 0:
            raise ZeroDivisionError("zero")
        return value * 2

    @monitored("inference")
    async def infer(self, value: int) -> int:
        await asyncio.sleep(0)
        return value + 1


def test_sync_and_async_calls_are_timed_and_counted_by_outcome() -> None:
    stage = Stage()
    assert stage.check(2) == 4
    assert asyncio.run(stage.infer(1)) == 2
    with pytest.raises(InvalidInput):
        stage.check(-1)
    with pytest.raises(ZeroDivisionError):
        stage.check(0)
    calls = stage.monitor.sink.calls
    assert [(s, o) for s, _, o in calls] == [
        ("validation", "ok"),
        ("inference", "ok"),
        ("validation", "invalid_input"),
        ("validation", "ZeroDivisionError"),
    ]
    assert all(elapsed >= 0 for _, elapsed, _ in calls)
    assert Stage.check.__name__ == "check"  # wraps keeps the method's identity for Serve


def test_slow_calls_are_logged_once_with_structured_fields(caplog) -> None:
    fast, slow = Stage(slow_call_ms=1e9), Stage(slow_call_ms=0.0)
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        fast.check(1)
        slow.check(1)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.stage == "validation" and record.outcome == "ok" and record.elapsed_ms >= 0
    assert "Validator validation took" in record.getMessage()


def test_a_measurement_taken_elsewhere_goes_through_the_same_place() -> None:
    stage = Stage()
    stage.monitor.record("queue_wait", 3.5)
    assert stage.monitor.sink.calls == [("queue_wait", 3.5, "ok")]
