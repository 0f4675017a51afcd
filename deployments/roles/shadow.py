"""ShadowReplica: the candidate, fed mirrored traffic after the primary answered. Every kind.

It answers nobody. For each call of mirrored requests it runs the candidate once over all of
their rows (under its own timeout), compares with the primary's outputs through the kind's
`compare`, records metrics labelled with both versions, appends disagreements to a bounded
diff log, and adds to counters kept in the cluster's KV store (`shadow.ledger`), from which
`report()` computes the verdict. A candidate that raises, hangs or crawls is counted here;
the ingress never waits on any of it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from ray import serve

from deployments.config import ShadowConfig
from deployments.kinds.base import Batch, ComparePolicy, Comparison
from deployments.roles.replica import BatchedReplica, batch_config
from deployments.shadow.compare import Thresholds, report
from deployments.shadow.diff_log import DiffLog, row_hash
from deployments.shadow.ledger import shadow_ledger
from deployments.telemetry.metrics import ShadowMetrics
from deployments.telemetry.monitoring import replica_unique_id
from deployments.telemetry.tracing import (
    context_of_link,
    current_trace_id,
    link_from_traceparent,
)

logger = logging.getLogger("ray.serve")


@serve.deployment(name="ShadowReplica")
class ShadowReplica(BatchedReplica):
    # Appended to the ledger's key: the counts of one (model, primary, candidate) outlive
    # every replica, so a candidate that is not the real one (the chaos rehearsals) keeps
    # its record apart rather than adding its failures to the real candidate's.
    ledger_scope = ""

    def __init__(self, *args: Any, primary_version: str, **kwargs: Any) -> None:
        """BatchedReplica's arguments for the candidate, and the primary's version."""
        super().__init__(*args, **kwargs)
        self.primary_version = primary_version
        self.config = ShadowConfig.model_validate(self.default_batch)
        name = self.metadata.name
        spec = self.kind.comparison
        self.metrics = ShadowMetrics(name, primary_version, self.version, spec.metric)
        key = f"{name}/{primary_version}/{self.version}{self.ledger_scope}"
        self.ledger = shadow_ledger(key, replica_unique_id(), spec.edges)
        self.diff_log: DiffLog | None = None
        self._open_diff_log()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ShadowConfig.model_validate({**self.default_batch, **(user_config or {})})
        self._apply_batch(batch_config(config.model_dump()))
        reopen = (config.diff_log_dir, config.diff_log_max_bytes, config.diff_log_backups) != (
            self.config.diff_log_dir,
            self.config.diff_log_max_bytes,
            self.config.diff_log_backups,
        )
        self.config = config
        if reopen:
            self._open_diff_log()

    def _ledgers(self) -> list[Any]:
        ledger = getattr(self, "ledger", None)
        return [*super()._ledgers(), *([ledger] if ledger is not None else [])]

    async def mirror_many(self, payloads: list[dict[str, Any]]) -> None:
        """Mirrored requests, each `{columns, primary, primary_latency_ms, request_id,
        trace_id, traceparent}`: the candidate runs once over all of them."""
        counts = self.ledger.counts
        counts.mirrored_requests += len(payloads)
        inputs = Batch.of([p["columns"] for p in payloads])
        # Each mirror carries the traceparent of the request it copies (when sampled): the
        # comparison's span lives in the first sampled one's trace and links to every one's,
        # and the candidate's per-request spans join their own request's trace.
        traceparents = [p.get("traceparent") for p in payloads]
        links = [link for t in traceparents if (link := link_from_traceparent(t)) is not None]
        with self.monitor.call(
            "shadow_compare",
            {"shadow.requests": len(payloads)},
            links,
            parent=context_of_link(links[0]) if links else None,
        ) as span:
            try:
                answer = await asyncio.wait_for(
                    self.infer_many(inputs, traceparents), self.config.candidate_timeout_s
                )
            except TimeoutError:
                self._failed("timeout", len(payloads), span)
                return
            except Exception as exc:  # noqa: BLE001 - a failing candidate is data, not an error
                self._failed("error", len(payloads), span)
                logger.warning("candidate failed on %d mirrored requests: %s", len(payloads), exc)
                return
            if answer.failures:
                self._failed("error", len(answer.failures), span)
            if answer.answered:
                self._compare(payloads, answer)
            span.set_attribute("shadow.outcome", "compared")
        self.ledger.flush()

    def _compare(self, payloads: list[dict[str, Any]], answer: Any) -> None:
        """The candidate's answers against the primary's, over every answered row at once;
        counted and measured once per call, disagreements logged per request."""
        answered = [payloads[i] for i in answer.answered]
        primary = Batch.of([p["primary"] for p in answered])
        policy = ComparePolicy(self.config.max_abs_delta, self.config.min_cosine)
        comparison = self.kind.compare(primary.columns, answer.outputs.columns, policy)
        counts = self.ledger.counts
        counts.add_rows(comparison.agree, comparison.metric, comparison.labels, len(answered))
        self.metrics.compared(comparison)
        for k, payload in enumerate(answered):
            counts.add_latency("primary", payload["primary_latency_ms"])
            counts.add_latency("candidate", answer.infer_ms)
            self.metrics.latencies(payload["primary_latency_ms"], answer.infer_ms)
            if self.diff_log is not None:
                rows = slice(primary.offsets[k], primary.offsets[k + 1])
                self._log_diffs(payload, answer.outputs.part(k), _rows_of(comparison, rows))

    def report(self, ingress_drops: dict[str, int] | None = None) -> dict[str, Any]:
        cfg = self.config
        thresholds = Thresholds(
            cfg.min_compared_rows,
            cfg.min_agreement,
            cfg.max_candidate_failure_rate,
            cfg.max_p99_latency_ratio,
        )
        spec = self.kind.comparison
        return {
            "model": self.metadata.name,
            "kind": self.kind.kind,
            "primary_version": self.primary_version,
            "candidate_version": self.version,
            **report(
                self.ledger.totals(),
                spec.metric,
                spec.agreement,
                thresholds,
                dict(ingress_drops or {}),
            ),
            "diff_log": str(self.diff_log.path) if self.diff_log else None,
        }

    def _failed(self, reason: str, requests: int, span: Any) -> None:
        counts = self.ledger.counts
        if reason == "timeout":
            counts.candidate_timeouts += requests
        else:
            counts.candidate_errors += requests
        for _ in range(requests):
            self.metrics.failed(reason)
        span.set_attribute("shadow.outcome", reason)
        self.ledger.flush()

    def _log_diffs(self, payload: dict[str, Any], candidate: Any, comparison: Any) -> None:
        if self.diff_log is None:
            return
        spec = self.kind.comparison
        metric = comparison.metric
        if spec.metric == "abs_score_delta":
            notable = ~comparison.agree | (metric >= self.config.diff_log_min_abs_delta)
        else:
            notable = ~comparison.agree
        features = next(iter(payload["columns"].values()))
        trace_id = payload.get("trace_id") or current_trace_id()
        for row in np.flatnonzero(notable).tolist():
            # DiffLog writes through a logging handler: a disk error is reported, never raised.
            self.diff_log.write(
                {
                    "request_id": payload.get("request_id", ""),
                    "trace_id": trace_id,
                    "row": row,
                    "input_sha256": row_hash(features[row]),
                    "metric": {spec.metric: float(metric[row])},
                    "primary": {
                        "version": self.primary_version,
                        **_row(payload["primary"], row),
                    },
                    "candidate": {"version": self.version, **_row(candidate, row)},
                }
            )

    def _open_diff_log(self) -> None:
        if self.diff_log is not None:
            self.diff_log.close()
        cfg = self.config
        path = cfg.diff_log_dir / f"shadow-diff-{self.metadata.name}-{self.version}.jsonl"
        try:
            self.diff_log = DiffLog(path, cfg.diff_log_max_bytes, cfg.diff_log_backups)
        except OSError as exc:
            logger.warning("shadow diff log disabled, cannot create %s: %s", path, exc)
            self.diff_log = None


def _rows_of(comparison: Comparison, rows: slice) -> Comparison:
    labels = comparison.labels
    return Comparison(
        comparison.agree[rows],
        comparison.metric[rows],
        None if labels is None else (labels[0][rows], labels[1][rows]),
    )


def _row(outputs: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    """One row's scalar outputs (a vector output is summarised by the row's metric)."""
    out: dict[str, Any] = {}
    for name, array in outputs.items():
        value = array[row]
        if np.ndim(value) == 0:
            out[name] = value.item() if hasattr(value, "item") else value
    return out
