"""Every metric this service exports, in one place, through Ray Serve's metrics API.

Ray exports them in Prometheus format from each node's metrics agent (names gain a `ray_`
prefix there) and adds the deployment, replica and application tags itself. Constructed
inside replicas only: a metric object needs a running Ray worker.
"""

from __future__ import annotations

from collections.abc import Iterable

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
        self.caller_batch = metrics.Histogram(
            "caller_batch_requests",
            "Requests sent together in one caller batch (one Validator and one ModelReplica "
            "call each batch).",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
            tag_keys=("model",),
        )
        for metric in (self.cache, self.rejections, self.retries, self.caller_batch):
            metric.set_default_tags({"model": model})


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
    """What a model replica's batches look like and what it predicts, by version."""

    def __init__(self, model: str, version: str, labels: Iterable[str]) -> None:
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
            "Positive-class score per predicted row.",
            boundaries=SCORE_BOUNDARIES,
            tag_keys=("model", "version"),
        )
        self.labels = metrics.Counter(
            "prediction_labels",
            "Predicted rows by label.",
            tag_keys=("model", "version", "label"),
        )
        for metric in (self.rows, self.requests, self.scores, self.labels):
            metric.set_default_tags(dict(tags))
        self._labels = list(labels)

    def batch(self, requests: int, rows: int) -> None:
        self.requests.observe(requests)
        self.rows.observe(rows)

    def predicted(self, scores: Iterable[float], labels: Iterable[str]) -> None:
        for score in scores:
            self.scores.observe(score)
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
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


COSINE_BOUNDARIES = [0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0]
TOKEN_BOUNDARIES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


class TextBatchMetrics:
    """Token-budget batches of a text encoder: size in tokens and how much is padding."""

    def __init__(self, model: str, version: str) -> None:
        tags = {"model": model, "version": version}
        self.tokens = metrics.Histogram(
            "text_batch_tokens",
            "Real tokens per batch.",
            boundaries=TOKEN_BOUNDARIES,
            tag_keys=("model", "version"),
        )
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
        self.padding = metrics.Counter(
            "text_batch_token_slots",
            "Token slots computed, by kind (real or padding): padding share = padding / all.",
            tag_keys=("model", "version", "kind"),
        )
        for metric in (self.tokens, self.rows, self.requests, self.padding):
            metric.set_default_tags(dict(tags))

    def batch(self, requests: int, rows: int, tokens: int, padded: int) -> None:
        self.requests.observe(requests)
        self.rows.observe(rows)
        self.tokens.observe(tokens)
        self.padding.inc(tokens, {"kind": "real"})
        if padded > tokens:
            self.padding.inc(padded - tokens, {"kind": "padding"})


class TextShadowMetrics:
    """The int8 text candidate against the primary: cosine per row, agreement, latency."""

    def __init__(self, model: str, version: str, variant: str) -> None:
        tags = {
            "model": model,
            "primary_version": version,
            "candidate_version": f"{version}-{variant}",
        }
        self.cosine = metrics.Histogram(
            "shadow_embedding_cosine",
            "Cosine similarity of the candidate's embedding to the primary's, per row.",
            boundaries=COSINE_BOUNDARIES,
            tag_keys=_VERSIONS,
        )
        self.rows = metrics.Counter(
            "shadow_compared_rows",
            "Rows compared, by whether they agreed.",
            tag_keys=(*_VERSIONS, "agreement"),
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
        for metric in (self.cosine, self.rows, self.latency, self.failures):
            metric.set_default_tags(dict(tags))

    def compared(
        self, cosines: list[float], threshold: float, primary_ms: float, candidate_ms: float
    ) -> None:
        agree = 0
        for value in cosines:
            self.cosine.observe(min(max(value, 0.0), 1.0))
            agree += value >= threshold
        if agree:
            self.rows.inc(agree, {"agreement": "agree"})
        if len(cosines) - agree:
            self.rows.inc(len(cosines) - agree, {"agreement": "disagree"})
        self.latency.observe(primary_ms, {"role": "primary"})
        self.latency.observe(candidate_ms, {"role": "candidate"})

    def failed(self, kind: str) -> None:
        self.failures.inc(1, {"kind": kind})
