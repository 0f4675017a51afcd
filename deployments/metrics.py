"""Every metric this service exports, in one place, through Ray Serve's metrics API.

Ray exports them in Prometheus format from each node's metrics agent (names gain a `ray_`
prefix there) and adds the deployment, replica and application tags itself. Constructed
inside replicas only: a metric object needs a running Ray worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from ray.serve import metrics

LATENCY_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
DELTA_BOUNDARIES = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75]
_VERSIONS = ("model", "primary_version", "candidate_version")


class ShadowMetrics:
    """Shadow comparison, recorded in the ShadowReplica, labelled with both versions."""

    def __init__(self, model: str, primary_version: str, candidate_version: str) -> None:
        tags = {
            "model": model,
            "primary_version": primary_version,
            "candidate_version": candidate_version,
        }
        self.rows = metrics.Counter(
            "shadow_compared_rows",
            "Rows compared, by whether the labels agreed.",
            tag_keys=(*_VERSIONS, "agreement"),
        )
        self.confusion = metrics.Counter(
            "shadow_confusion_rows",
            "Rows by primary label x candidate label.",
            tag_keys=(*_VERSIONS, "primary_label", "candidate_label"),
        )
        self.delta = metrics.Histogram(
            "shadow_abs_score_delta",
            "|candidate score - primary score| per row.",
            boundaries=DELTA_BOUNDARIES,
            tag_keys=_VERSIONS,
        )
        self.latency = metrics.Histogram(
            "shadow_latency_ms",
            "Inference latency of a mirrored request, by role.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=(*_VERSIONS, "role"),
        )
        self.failures = metrics.Counter(
            "shadow_candidate_failures",
            "Mirrored requests the candidate did not answer.",
            tag_keys=(*_VERSIONS, "kind"),
        )
        for metric in (self.rows, self.confusion, self.delta, self.latency, self.failures):
            # A copy each: Ray Serve writes its own tags into the dict it is given.
            metric.set_default_tags(dict(tags))

    def compared(self, rows: Iterable, primary_ms: float, candidate_ms: float) -> None:
        agree = disagree = 0
        for row in rows:
            if row.agrees:
                agree += 1
            else:
                disagree += 1
            self.confusion.inc(
                1,
                {
                    "primary_label": str(row.primary_label),
                    "candidate_label": str(row.candidate_label),
                },
            )
            self.delta.observe(row.abs_delta)
        if agree:
            self.rows.inc(agree, {"agreement": "agree"})
        if disagree:
            self.rows.inc(disagree, {"agreement": "disagree"})
        self.latency.observe(primary_ms, {"role": "primary"})
        self.latency.observe(candidate_ms, {"role": "candidate"})

    def failed(self, kind: str) -> None:
        self.failures.inc(1, {"kind": kind})


class MirrorMetrics:
    """Mirroring as the ingress sees it: sent, and dropped by reason."""

    def __init__(self, model: str) -> None:
        self.sent = metrics.Counter(
            "shadow_mirrored_requests", "Requests handed to the shadow.", tag_keys=("model",)
        )
        self.dropped = metrics.Counter(
            "shadow_mirror_dropped",
            "Mirrors not delivered, by reason.",
            tag_keys=("model", "reason"),
        )
        self.sent.set_default_tags({"model": model})
        self.dropped.set_default_tags({"model": model})


class IngressMetrics:
    """Admission, cache and retries, as one ingress replica sees them."""

    def __init__(self, model: str) -> None:
        self.cache = metrics.Counter(
            "result_cache_lookups",
            "TTL result-cache lookups, by result (hit or miss).",
            tag_keys=("model", "result"),
        )
        self.rejections = metrics.Counter(
            "admission_rejections",
            "Requests refused before work, by reason.",
            tag_keys=("model", "reason"),
        )
        self.retries = metrics.Counter(
            "inference_retries",
            "Inference calls retried after a replica failure.",
            tag_keys=("model",),
        )
        for metric in (self.cache, self.rejections, self.retries):
            metric.set_default_tags({"model": model})
