"""The autoscaling policy: replicas sized on the requests the replicas report in flight."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from deployments.roles.autoscaling import REQUESTS_IN_FLIGHT, requests_in_flight_policy
from deployments.roles.replica import TimeAveraged
from tests.support import REPO


def context(replicas: int, reported: dict | None, ongoing_calls: float = 2.0, target: float = 64):
    # The fields of ray.serve.config.AutoscalingContext the policy reads.
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=replicas or 1,
        aggregated_metrics=reported,
        total_num_requests=ongoing_calls,
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target),
    )


def test_desired_replicas_follow_the_requests_in_flight_not_the_calls() -> None:
    # Two caller batches (2 ongoing calls) carrying 150 requests: 150 / 64 replicas' worth.
    reported = {REQUESTS_IN_FLIGHT: {"replica-a": 150.0}}
    desired, _ = requests_in_flight_policy(context(1, reported, ongoing_calls=2))
    assert desired == pytest.approx(150 / 64)
    reported = {REQUESTS_IN_FLIGHT: {"replica-a": 10.0, "replica-b": 22.0}}
    desired, _ = requests_in_flight_policy(context(2, reported))
    assert desired == pytest.approx(0.5), "quiet: Serve's downscale delay decides when"


def test_without_reports_serves_own_count_is_used() -> None:
    desired, _ = requests_in_flight_policy(context(1, None, ongoing_calls=128))
    assert desired == pytest.approx(2)
    desired, _ = requests_in_flight_policy(context(0, None))
    assert desired == 1, "no replica: Serve's own target stands"


def test_the_shipped_model_deployment_uses_this_policy() -> None:
    from deployments.app import build_app
    from deployments.config import AppArgs
    from tests.unit.test_config import bound_deployments

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    args = AppArgs.model_validate(config["applications"][0]["args"])
    (fraud,) = [m for m in args.models or [] if m.name == "fraud-risk"]
    assert "replica" not in fraud.model_fields_set, "the shipped fraud model takes the default"
    model = bound_deployments(build_app(args))["ModelReplica-fraud-risk"]
    autoscaling = model._deployment_config.autoscaling_config
    assert autoscaling is not None and autoscaling.max_replicas > autoscaling.min_replicas
    policy = autoscaling.policy.policy_function
    assert policy == "deployments.roles.autoscaling:requests_in_flight_policy"


def test_requests_in_flight_are_averaged_over_time_not_read_at_an_instant() -> None:
    now = [0.0]
    held = TimeAveraged(clock=lambda: now[0])
    held.add(10)  # a batch of 10 arrives at t=0 ...
    now[0] = 0.25
    held.add(-10)  # ... and leaves at 0.25 s
    now[0] = 1.0
    # Read at t=1 the count is 0, but the replica held 10 requests a quarter of the time.
    assert held.value == 0
    assert held.average_since_last() == 2.5
    now[0] = 2.0
    assert held.average_since_last() == 0.0  # nothing since the last reading
