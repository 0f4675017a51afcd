"""Autoscaling on the requests a replica is actually working on, not on the calls it holds.

With batching at the caller (deployments/admission/caller_batch.py) one handle call carries a whole
batch of requests, so Serve's own signal, ongoing calls per replica, stays at one or two
whether the batch holds 2 requests or 60: a replica at capacity would never look busy. The
ModelReplica reports `requests_in_flight` itself (`record_autoscaling_stats`), averaged over
time since its last report (a batch is in a replica for milliseconds, so an instant's count is
mostly zero), and this policy sizes the deployment on it:

    desired replicas = requests in flight, summed over replicas / target_ongoing_requests

Serve wraps a custom policy with the config's bounds, upscale/downscale delays and scaling
factors, so `autoscaling_config` keeps its meaning. Until replicas have reported (or for a
deployment that reports nothing) Serve's ongoing-requests count is used instead.
"""

from __future__ import annotations

from typing import Any

REQUESTS_IN_FLIGHT = "requests_in_flight"


def requests_in_flight_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """A Ray Serve autoscaling policy (`ctx` is ray.serve.config.AutoscalingContext)."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    reported = (ctx.aggregated_metrics or {}).get(REQUESTS_IN_FLIGHT) or {}
    in_flight = sum(reported.values()) if reported else ctx.total_num_requests
    return in_flight / ctx.config.get_target_ongoing_requests(), {}
