"""Every metric this service exports, in one place, through Ray Serve's metrics API.

Ray exports them in Prometheus format from each node's metrics agent (names gain a `ray_`
prefix there) and adds the deployment, replica and application tags itself. Constructed
inside replicas only: a metric object needs a running Ray worker.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.serve import metrics

LATENCY_MS_BOUNDARIES = [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_ROWS_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
SCORE_BOUNDARIES = [round(0.05 * i, 2) for i in range(1, 20)]
# Standardised feature values (after the training transform) fall into these bands: a drifting
# feature moves its rows away from the training distribution's mean 0 / std 1. Counted by band
# label rather than as a histogram because Ray's histograms take positive boundaries only.
ZSCORE_BAND_EDGES = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
ZSCORE_BANDS = ["(-inf,-3]", "(-3,-2]", "(-2,-1]", "(-1,0]", "(0,1]", "(1,2]", "(2,3]", "(3,inf)"]
DELTA_BOUNDARIES = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75]
_VERSIONS = ("model", "primary_version", "candidate_version")
# The label values each counter is started at zero with, so that a quiet service's series
# exist (a rate of 0) before anything happens, rather than being absent.
REJECTION_REASONS = (
    "inflight_limit",
    "inflight_bytes",
    "memory_pressure",
    "downstream_queue_full",
)
MIRROR_DROP_REASONS = (
    "queue_full",
    "timeout",
    "shadow_queue_full",
    "unavailable",
    "reconfigured",
    "shutdown",
)
CANDIDATE_FAILURE_KINDS = ("timeout", "error")


def start_at_zero(counter: Any, label_sets: Any) -> None:
    """Export `counter` at 0 for each of `label_sets` (dicts of tags).

    Ray's `Counter.inc` refuses 0, and a counter that has never been incremented is absent
    from the scrape, so a rate over it is "no data" instead of 0 and an alert on it cannot
    tell a quiet service from a broken one. Recording 0 through the metric's own record path
    creates the series with every tag Ray adds."""
    for tags in label_sets:
        counter._record(0, tags=dict(tags))


class ShadowMetrics:
    """Shadow comparison, recorded in the ShadowReplica, labelled with both versions: one
    class for every kind; the per-row metric goes to the histogram its kind names."""

    def __init__(
        self, model: str, primary_version: str, candidate_version: str, metric: str
    ) -> None:
        tags = {
            "model": model,
            "primary_version": primary_version,
            "candidate_version": candidate_version,
        }
        self.rows = metrics.Counter(
            "shadow_compared_rows",
            "Rows compared, by whether they agreed (same label, |delta| within tolerance, or "
            "cosine above the minimum, by kind).",
            tag_keys=(*_VERSIONS, "agreement"),
        )
        self.confusion = metrics.Counter(
            "shadow_confusion_rows",
            "Rows by primary label x candidate label (classifiers).",
            tag_keys=(*_VERSIONS, "primary_label", "candidate_label"),
        )
        if metric == "cosine":
            self.metric = metrics.Histogram(
                "shadow_embedding_cosine",
                "Cosine similarity of the candidate's embedding to the primary's, per row.",
                boundaries=COSINE_BOUNDARIES,
                tag_keys=_VERSIONS,
            )
        else:
            self.metric = metrics.Histogram(
                "shadow_abs_score_delta",
                "|candidate - primary| per row (score for classifiers, value for regressors).",
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
        for m in (self.rows, self.confusion, self.metric, self.latency, self.failures):
            # A copy each: Ray Serve writes its own tags into the dict it is given.
            m.set_default_tags(dict(tags))
        start_at_zero(self.rows, ({"agreement": a} for a in ("agree", "disagree")))
        start_at_zero(self.failures, ({"kind": k} for k in CANDIDATE_FAILURE_KINDS))
        self.clip = metric == "cosine"

    def compared(self, comparison: Any) -> None:
        """One compared batch of rows (a `deployments.kinds.base.Comparison`)."""
        agree = int(np.count_nonzero(comparison.agree))
        disagree = len(comparison.agree) - agree
        values = np.clip(comparison.metric, 0.0, 1.0) if self.clip else comparison.metric
        for value in values.tolist():
            self.metric.observe(value)
        if comparison.labels is not None:
            pairs: dict[tuple[str, str], int] = {}
            for p, c in zip(*comparison.labels):
                pairs[(str(p), str(c))] = pairs.get((str(p), str(c)), 0) + 1
            for (p, c), n in pairs.items():
                self.confusion.inc(n, {"primary_label": p, "candidate_label": c})
        if agree:
            self.rows.inc(agree, {"agreement": "agree"})
        if disagree:
            self.rows.inc(disagree, {"agreement": "disagree"})

    def latencies(self, primary_ms: float, candidate_ms: float) -> None:
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
        start_at_zero(self.sent, [{}])
        start_at_zero(self.dropped, ({"reason": r} for r in MIRROR_DROP_REASONS))


class IngressMetrics:
    """Admission, cache and retries, as one ingress replica sees them, by the model each
    request was for (a caller batch may carry several models)."""

    def __init__(self, models: Any = ()) -> None:
        self.cache = metrics.Counter(
            "result_cache_lookups",
            "Result-cache lookups, by result (hit or miss); none while the cache is off or paused.",
            tag_keys=("model", "result"),
        )
        self.rejections = metrics.Counter(
            "admission_rejections",
            "Requests refused before work, by reason.",
            tag_keys=("model", "reason"),
        )
        self.rate_limited = metrics.Counter(
            "rate_limited_requests",
            "Requests refused with 429 because their client was over its rate limit, by the "
            "client's class (a configured override, or the default limit); never by client.",
            tag_keys=("client_class",),
        )
        self.cache_bytes = metrics.Gauge(
            "result_cache_bytes", "Bytes the result cache holds (estimated).", tag_keys=()
        )
        self.retries = metrics.Counter(
            "inference_retries",
            "Inference calls retried after a replica failure.",
            tag_keys=("model",),
        )
        self.caller_batch = metrics.Histogram(
            "caller_batch_requests",
            "Requests sent together in one caller batch (one Validator and one ModelReplica "
            "call each batch).",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
            tag_keys=("model",),
        )
        for model in models:
            start_at_zero(self.cache, ({"model": model, "result": r} for r in ("hit", "miss")))
            start_at_zero(
                self.rejections, ({"model": model, "reason": r} for r in REJECTION_REASONS)
            )
            start_at_zero(self.retries, [{"model": model}])
        start_at_zero(self.rate_limited, ({"client_class": c} for c in ("default", "override")))


class RequestMetrics:
    """Requests as the ingress answers them: by model, version, endpoint and status."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "inference_requests",
            "Requests answered, by model, version, endpoint and HTTP status.",
            tag_keys=("model", "version", "endpoint", "status"),
        )
        self.latency = metrics.Histogram(
            "inference_request_latency_ms",
            "Ingress total: from the handler's start to the answer, by endpoint and status.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model", "version", "endpoint", "status"),
        )

    def answered(
        self, model: str, version: str, endpoint: str, status: int, elapsed_ms: float
    ) -> None:
        tags = {"model": model, "version": version, "endpoint": endpoint, "status": str(status)}
        self.requests.inc(1, tags)
        self.latency.observe(elapsed_ms, tags)


class StageMetrics:
    """One stage of the graph (validation, queue wait, compute, ...): latency and outcomes.

    Written only through `deployments.telemetry.monitoring.Monitor`, the one place that times,
    logs and counts a call.
    """

    def __init__(self, model: str, version: str) -> None:
        tags = {"model": model, "version": version}
        self.latency = metrics.Histogram(
            "inference_stage_latency_ms",
            "Time spent in one stage of the graph, by stage.",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("model", "version", "stage"),
        )
        self.calls = metrics.Counter(
            "inference_stage_calls",
            "Calls of one stage, by outcome (ok or the error code).",
            tag_keys=("model", "version", "stage", "outcome"),
        )
        for metric in (self.latency, self.calls):
            metric.set_default_tags(dict(tags))

    def record(self, stage: str, elapsed_ms: float, outcome: str) -> None:
        self.latency.observe(elapsed_ms, {"stage": stage})
        self.calls.inc(1, {"stage": stage, "outcome": outcome})


class BatchMetrics:
    """What a model replica's batches look like and what it predicts, by version: one class
    for every kind (rows, requests, cost units such as tokens; scores and labels)."""

    def __init__(self, model: str, version: str, cost_unit: str = "rows") -> None:
        tags = {"model": model, "version": version}
        self.rows = metrics.Histogram(
            "inference_batch_rows",
            "Rows per forward pass.",
            boundaries=BATCH_ROWS_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.requests = metrics.Histogram(
            "inference_batch_requests",
            "Requests (or chunks of one) sharing a forward pass.",
            boundaries=BATCH_ROWS_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.scores = metrics.Histogram(
            "prediction_score",
            "Score per predicted row (the positive or top class's probability).",
            boundaries=SCORE_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.labels = metrics.Counter(
            "prediction_labels",
            "Predicted rows by label.",
            tag_keys=("model", "version", "label"),
        )
        self.tokens = None
        if cost_unit == "tokens":
            # Named for the text kind, whose cost unit it is: the dashboards query it.
            self.tokens = metrics.Histogram(
                "text_batch_tokens",
                "Real tokens per batch.",
                boundaries=TOKEN_BOUNDARIES,
                tag_keys=("model", "version"),
            )
        for metric in (self.rows, self.requests, self.scores, self.labels, self.tokens):
            if metric is not None:
                metric.set_default_tags(dict(tags))

    def batch(self, requests: int, rows: int, cost: int) -> None:
        self.requests.observe(requests)
        self.rows.observe(rows)
        if self.tokens is not None:
            self.tokens.observe(cost)

    def predicted(self, scores: Any, labels: Any) -> None:
        """One forward pass's predictions: a score per row, and labels (None: a regressor)."""
        for score in np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0).tolist():
            self.scores.observe(score)
        if labels is None:
            return
        values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
        for label, n in zip(values.tolist(), counts.tolist()):
            self.labels.inc(n, {"label": label})


class DriftMetrics:
    """Input distributions seen by the Validator, against which drift shows before accuracy
    drops: numeric features as standardised values, categories by value, absent optional
    fields, and invalid values by field and error type."""

    def __init__(self, model: str, version: str) -> None:
        tags = {"model": model, "version": version}
        self.rows = metrics.Counter(
            "input_rows",
            "Instances validated, by outcome (valid or invalid): the denominator for rates.",
            tag_keys=("model", "version", "outcome"),
        )
        self.numeric = metrics.Counter(
            "input_feature_zscore_rows",
            "Rows by band of a numeric feature's value after the training transform and "
            "normalisation (training data: mean 0, std 1).",
            tag_keys=("model", "version", "feature", "band"),
        )
        self.category = metrics.Counter(
            "input_feature_category_rows",
            "Rows by value of a categorical or boolean feature.",
            tag_keys=("model", "version", "feature", "value"),
        )
        self.missing = metrics.Counter(
            "input_feature_missing_rows",
            "Rows where an optional feature was absent and its default was used.",
            tag_keys=("model", "version", "feature"),
        )
        self.invalid = metrics.Counter(
            "input_feature_invalid_values",
            "Invalid values refused, by field and error type.",
            tag_keys=("model", "version", "feature", "error_type"),
        )
        for metric in (self.rows, self.numeric, self.category, self.missing, self.invalid):
            metric.set_default_tags(dict(tags))
        start_at_zero(self.rows, ({"outcome": o} for o in ("valid", "invalid")))


class DriftScoreMetrics:
    """The drift scores of one model version: the window merged across replicas, so every
    Validator replica exports the same values (aggregate with max, not sum)."""

    def __init__(self, model: str, version: str) -> None:
        tags = {"model": model, "version": version}
        self.feature = metrics.Gauge(
            "input_feature_drift_psi",
            "Population stability index of a feature's live window against its training "
            "reference (0 while the window holds fewer than min_rows rows).",
            tag_keys=("model", "version", "feature"),
        )
        self.prediction = metrics.Gauge(
            "prediction_drift_psi",
            "Population stability index of the predicted score (or first target) against "
            "the training predictions.",
            tag_keys=("model", "version"),
        )
        self.threshold = metrics.Gauge(
            "drift_psi_threshold",
            "The PSI above which a distribution counts as drifted (the alert rules compare "
            "against it).",
            tag_keys=("model", "version"),
        )
        self.rows = metrics.Gauge(
            "drift_window_rows",
            "Validated rows in the scored window.",
            tag_keys=("model", "version"),
        )
        for metric in (self.feature, self.prediction, self.threshold, self.rows):
            metric.set_default_tags(dict(tags))

    def publish(self, scores: Any) -> None:
        """A `deployments.telemetry.drift_window.DriftScores`. An unscored distribution
        (too few rows) is exported as 0: Ray drops a NaN gauge from the scrape altogether,
        and a quiet service must look quiet, not absent; `drift_window_rows` says why."""
        for name, value in scores.features.items():
            self.feature.set(_scored(value), {"feature": name})
        self.prediction.set(_scored(scores.prediction))
        self.threshold.set(scores.threshold)
        self.rows.set(scores.rows)


def _scored(value: float) -> float:
    return 0.0 if math.isnan(value) else value


COSINE_BOUNDARIES = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0]
TOKEN_BOUNDARIES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
