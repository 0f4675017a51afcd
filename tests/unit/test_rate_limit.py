"""Per-client token buckets (deployments/admission/rate_limit.py) on a fake clock: no Ray,
no sleeps."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from deployments.admission.rate_limit import ClientLimit, RateLimitConfig, RateLimiter
from deployments.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **config: Any) -> RateLimiter:
    return RateLimiter(RateLimitConfig(enabled=True, **config), clock=clock)


def admitted(rl: RateLimiter, client_id: str, n: int) -> int:
    """How many of `n` back-to-back requests are admitted."""
    count = 0
    for _ in range(n):
        try:
            rl.check(client_id)
        except RateLimited:
            continue
        count += 1
    return count


def test_a_burst_is_admitted_then_the_next_is_refused_with_retry_after_from_the_bucket() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=0.5, burst=3)
    for _ in range(3):
        rl.check("team-a")
    with pytest.raises(RateLimited) as info:
        rl.check("team-a")
    error = info.value
    # Empty bucket, one token needed at 0.5/s: 2 s.
    assert error.status_code == 429
    assert error.retry_after_s == 2.0
    assert error.headers() == {"Retry-After": "2"}
    assert error.message == (
        "client 'team-a' is over its rate limit of 0.5 requests/s (burst 3); retry after 2 s"
    )
    assert error.details == [
        {"reason": "rate_limited", "client": "team-a", "requests_per_s": 0.5, "burst": 3}
    ]
    assert rl.rejected == 1


def test_retry_after_is_rounded_up_to_whole_seconds_and_never_zero() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=100, burst=200)
    assert admitted(rl, "a", 200) == 200
    with pytest.raises(RateLimited) as info:
        rl.check("a")  # 0.01 s away: the header cannot say less than 1
    assert info.value.retry_after_s == 1.0
    assert "100 requests/s (burst 200); retry after 1 s" in info.value.message

    rl = limiter(clock, requests_per_s=0.3, burst=1)
    rl.check("b")
    with pytest.raises(RateLimited) as info:
        rl.check("b")  # 3.33 s away
    assert info.value.retry_after_s == 4.0


def test_coming_back_after_retry_after_is_admitted_exactly_then() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=0.5, burst=2)
    rl.check("a")
    rl.check("a")
    with pytest.raises(RateLimited) as info:
        rl.check("a")
    clock.now += info.value.retry_after_s - 0.01
    with pytest.raises(RateLimited) as info:
        rl.check("a")  # just short: still refused, now 0.01 s to go
    assert info.value.retry_after_s == 1.0
    clock.now += 0.01
    rl.check("a")  # exactly at Retry-After
    with pytest.raises(RateLimited):
        rl.check("a")  # and it spent the one token it had earned
    assert rl.rejected == 3


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=10, burst=5)
    assert admitted(rl, "a", 5) == 5
    clock.now += 3600
    assert admitted(rl, "a", 10) == 5


def test_a_float_clock_does_not_refuse_a_client_that_waited_exactly_long_enough() -> None:
    clock = Clock()
    clock.now = 1000.1
    rl = limiter(clock, requests_per_s=0.01, burst=1)
    rl.check("a")
    with pytest.raises(RateLimited) as info:
        rl.check("a")
    assert info.value.retry_after_s == 100.0
    clock.now += 100.0  # (1100.1 - 1000.1) * 0.01 is 0.9999999999999989 in floats
    rl.check("a")


def test_clients_are_independent() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=2)
    assert admitted(rl, "greedy", 50) == 2
    assert admitted(rl, "polite", 2) == 2
    assert rl.rejected == 48


def test_a_per_client_override_replaces_the_defaults_for_that_client_only() -> None:
    clock = Clock()
    rl = limiter(
        clock,
        requests_per_s=1,
        burst=2,
        clients={"big": ClientLimit(requests_per_s=10, burst=20)},
    )
    assert admitted(rl, "big", 30) == 20
    assert admitted(rl, "small", 30) == 2
    clock.now += 1
    assert admitted(rl, "big", 30) == 10
    assert admitted(rl, "small", 30) == 1
    with pytest.raises(RateLimited, match=r"'big' .* 10 requests/s \(burst 20\)"):
        rl.check("big")


def test_overrides_validate_from_plain_config_dicts() -> None:
    config = RateLimitConfig.model_validate(
        {"enabled": True, "clients": {"big": {"requests_per_s": 5, "burst": 7}}}
    )
    assert config.clients["big"] == ClientLimit(requests_per_s=5, burst=7)


def test_disabled_never_refuses_and_keeps_nothing() -> None:
    rl = RateLimiter(RateLimitConfig(requests_per_s=1, burst=1), clock=Clock())
    for i in range(1000):
        rl.check(f"client-{i % 3}")
    assert rl.rejected == 0 and len(rl) == 0


def test_a_request_costing_more_than_the_burst_is_admitted_on_a_full_bucket_and_paid_for() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=10)
    rl.check("a", cost=25)  # refused forever otherwise
    with pytest.raises(RateLimited) as info:
        rl.check("a")
    # 15 tokens in debt, one more needed: 16 s at 1/s.
    assert info.value.retry_after_s == 16.0
    clock.now += 16
    rl.check("a")


def test_cost_is_taken_from_the_bucket() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=2, burst=10)
    rl.check("a", cost=8)
    with pytest.raises(RateLimited) as info:
        rl.check("a", cost=4)  # 2 held, 2 short at 2/s
    assert info.value.retry_after_s == 1.0
    rl.check("a", cost=2)


def test_reconfigure_keeps_each_buckets_level_and_applies_the_new_rate_from_then_on() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=10)
    assert admitted(rl, "a", 10) == 10
    clock.now += 4  # 4 tokens refilled at the old rate
    rl.reconfigure(RateLimitConfig(enabled=True, requests_per_s=10, burst=10))
    assert admitted(rl, "a", 20) == 4  # kept, not a fresh burst
    clock.now += 0.5  # 5 more at the new rate
    assert admitted(rl, "a", 20) == 5
    assert rl.config.requests_per_s == 10


def test_reconfigure_caps_levels_at_a_smaller_burst_and_moves_clients_to_new_overrides() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=10)
    rl.check("a")  # 9 held
    rl.check("b")
    rl.reconfigure(
        RateLimitConfig(
            enabled=True,
            requests_per_s=1,
            burst=3,
            clients={"b": ClientLimit(requests_per_s=1, burst=6)},
        )
    )
    assert admitted(rl, "a", 20) == 3
    assert admitted(rl, "b", 20) == 6


def test_reconfigure_keeps_a_clients_debt() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=5)
    rl.check("a", cost=9)  # 4 in debt
    rl.reconfigure(RateLimitConfig(enabled=True, requests_per_s=1, burst=50))
    clock.now += 4
    assert admitted(rl, "a", 5) == 0
    clock.now += 1
    assert admitted(rl, "a", 5) == 1


def test_reconfigure_can_switch_limiting_on_and_off() -> None:
    clock = Clock()
    rl = RateLimiter(RateLimitConfig(requests_per_s=1, burst=1), clock=clock)
    assert admitted(rl, "a", 5) == 5
    rl.reconfigure(RateLimitConfig(enabled=True, requests_per_s=1, burst=1))
    assert admitted(rl, "a", 5) == 1
    rl.reconfigure(RateLimitConfig(enabled=False, requests_per_s=1, burst=1))
    assert admitted(rl, "a", 5) == 5


def test_max_clients_bounds_the_buckets_whatever_the_number_of_clients() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=2, max_clients=3)
    assert admitted(rl, "a", 5) == 2
    for i in range(1000):
        rl.check(f"new-{i}")
        assert len(rl) <= 3
    assert len(rl) == 3
    # "a" was evicted long ago: it starts again with a full bucket.
    assert admitted(rl, "a", 5) == 2


def test_eviction_takes_the_least_recently_used_client() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=2, max_clients=2)
    assert admitted(rl, "a", 5) == 2
    assert admitted(rl, "b", 5) == 2
    assert admitted(rl, "a", 1) == 0  # "a" used last: "b" is the least recent
    rl.check("c")  # evicts "b"
    assert admitted(rl, "a", 1) == 0  # still empty: kept
    assert admitted(rl, "b", 5) == 2  # forgotten: a full bucket again


def test_a_smaller_max_clients_on_reconfigure_keeps_the_most_recent() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=2, max_clients=10)
    for client in ("a", "b", "c", "d"):
        assert admitted(rl, client, 5) == 2
    rl.reconfigure(RateLimitConfig(enabled=True, requests_per_s=1, burst=2, max_clients=2))
    assert len(rl) == 2
    assert admitted(rl, "d", 1) == 0 and admitted(rl, "c", 1) == 0  # kept, still empty
    assert admitted(rl, "a", 5) == 2  # dropped: full


def test_idle_buckets_are_dropped() -> None:
    clock = Clock()
    rl = limiter(clock, requests_per_s=1, burst=2, idle_s=60)
    assert admitted(rl, "idle", 2) == 2
    clock.now += 30
    assert admitted(rl, "busy", 1) == 1
    assert len(rl) == 2
    clock.now += 31  # "idle" unused for 61 s, "busy" for 31 s
    assert len(rl) == 1
    clock.now += 30
    assert len(rl) == 0


def test_a_client_refused_in_a_tight_loop_keeps_its_bucket_past_idle_s() -> None:
    clock = Clock()
    # idle_s shorter than a refill: dropping the bucket would hand out a fresh burst.
    rl = limiter(clock, requests_per_s=0.01, burst=2, idle_s=10)
    assert admitted(rl, "a", 2) == 2
    for _ in range(30):
        clock.now += 1
        assert admitted(rl, "a", 1) == 0
    assert len(rl) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"requests_per_s": 0},
        {"requests_per_s": -1},
        {"burst": 0},
        {"max_clients": 0},
        {"idle_s": 0},
        {"rate": 10},
        {"clients": {"a": {"requests_per_s": 0, "burst": 1}}},
        {"clients": {"a": {"requests_per_s": 1}}},
        {"clients": {"a": {"requests_per_s": 1, "burst": 1, "priority": 3}}},
    ],
)
def test_config_validation_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(bad)


def test_every_config_field_is_described() -> None:
    for model in (RateLimitConfig, ClientLimit):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_rate_limited_survives_a_process_boundary() -> None:
    error = RateLimited("slow down", [{"reason": "rate_limited"}], 7.0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimited
    assert (copy.message, copy.details, copy.retry_after_s) == ("slow down", error.details, 7.0)


def test_the_429_renders_with_retry_after_through_the_one_error_mapping() -> None:
    from deployments.roles.http import error_parts, error_response

    rl = limiter(Clock(), requests_per_s=0.5, burst=1)
    rl.check("team-a")
    with pytest.raises(RateLimited) as info:
        rl.check("team-a")

    status, headers, body = error_parts(info.value)
    assert status == 429
    assert (b"retry-after", b"2") in headers
    assert (b"content-type", b"application/json") in headers
    payload = orjson.loads(body)
    assert payload["code"] == "rate_limited"
    assert payload["retry_after_s"] == 2.0
    assert payload["details"][0]["reason"] == "rate_limited"
    assert "team-a" in payload["error"]

    response = error_response(info.value)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert orjson.loads(response.body) == payload
