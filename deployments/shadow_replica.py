"""ShadowReplica deployment: the candidate model, fed mirrored traffic after the primary answered.

It answers nobody. For each mirrored request it runs the candidate on the same validated
features (under its own timeout), compares the outputs with the primary's, records
Prometheus metrics labelled with both versions, appends disagreements to a bounded diff
log, and keeps running totals for `report()`. A candidate that raises, hangs or crawls is
counted here; the ingress never waits on any of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.batched_model import BatchedModel
from deployments.config import BatchConfig, ShadowConfig
from deployments.runner import Outputs
from deployments.shadow.compare import ShadowStats, Thresholds
from deployments.shadow.diff_log import DiffLog, row_hash
from deployments.shadow.mirror_batch import mirror_each
from deployments.telemetry.metrics import ShadowMetrics
from deployments.telemetry.tracing import current_trace_id

logger = logging.getLogger("ray.serve")


@serve.deployment(name="ShadowReplica")
class ShadowReplica(BatchedModel):
    def __init__(
        self, model_dir: str, model_name: str, version: str, device: str, primary_version: str
    ) -> None:
        super().__init__(model_dir, model_name, version, device)
        self.primary_version = primary_version
        self.config = ShadowConfig()
        self.stats = ShadowStats(self.runner.score_output)
        self.metrics = ShadowMetrics(model_name, primary_version, version)
        self.diff_log: DiffLog | None = None
        self._open_diff_log()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ShadowConfig.model_validate(user_config or {})
        super().reconfigure(config.model_dump(include=set(BatchConfig.model_fields)))
        reopen = (config.diff_log_dir, config.diff_log_max_bytes, config.diff_log_backups) != (
            self.config.diff_log_dir,
            self.config.diff_log_max_bytes,
            self.config.diff_log_backups,
        )
        self.config = config
        if reopen:
            self._open_diff_log()

    async def mirror(
        self,
        features: np.ndarray,
        primary: Outputs,
        primary_latency_ms: float,
        request_id: str = "",
        trace_id: str = "",
    ) -> None:
        self.stats.mirrored_requests += 1
        with self.monitor.call("shadow_compare") as span:
            started = time.perf_counter()
            try:
                candidate = await asyncio.wait_for(
                    self.infer(features), self.config.candidate_timeout_s
                )
            except TimeoutError:
                self.stats.candidate_timeouts += 1
                self.metrics.failed("timeout")
                span.set_attribute("shadow.outcome", "timeout")
                return
            except Exception as exc:  # noqa: BLE001 - a failing candidate is data, not an error
                self.stats.candidate_errors += 1
                self.metrics.failed("error")
                span.set_attribute("shadow.outcome", "error")
                logger.warning("candidate failed on request %s: %s", request_id, exc)
                return
            candidate_ms = (time.perf_counter() - started) * 1000
            rows = self.stats.compare(primary, candidate, primary_latency_ms, candidate_ms)
            self.metrics.compared(rows, primary_latency_ms, candidate_ms)
            agreed = sum(1 for row in rows if row.agrees)
            span.set_attribute("shadow.outcome", "compared")
            span.set_attribute("shadow.rows", len(rows))
            span.set_attribute("shadow.rows_agreed", agreed)
            for row in rows:
                if not row.agrees or row.abs_delta >= self.config.diff_log_min_abs_delta:
                    self._log_diff(row, features, request_id, trace_id or current_trace_id())

    async def mirror_many(self, payloads: list[dict[str, Any]]) -> None:
        """Many mirrored requests in one call (see deployments/shadow/mirror_batch.py)."""
        await mirror_each(self.mirror, payloads)

    def report(self, ingress_drops: dict[str, int] | None = None) -> dict[str, Any]:
        cfg = self.config
        thresholds = Thresholds(
            cfg.min_compared_rows,
            cfg.min_label_agreement,
            cfg.max_candidate_failure_rate,
            cfg.max_p99_latency_ratio,
        )
        return {
            "model": self.metadata.name,
            "primary_version": self.primary_version,
            "candidate_version": self.metadata.version,
            **self.stats.report(thresholds, dict(ingress_drops or {})),
            "diff_log": str(self.diff_log.path) if self.diff_log else None,
        }

    def _log_diff(self, row: Any, features: np.ndarray, request_id: str, trace_id: str) -> None:
        if self.diff_log is None:
            return
        # DiffLog writes through a logging handler: a disk error is reported, never raised.
        self.diff_log.write(
            {
                "request_id": request_id,
                "trace_id": trace_id,
                "row": row.index,
                "input_sha256": row_hash(features[row.index]),
                "primary": {
                    "version": self.primary_version,
                    "label": row.primary_label,
                    "score": row.primary_score,
                },
                "candidate": {
                    "version": self.metadata.version,
                    "label": row.candidate_label,
                    "score": row.candidate_score,
                },
            }
        )

    def _open_diff_log(self) -> None:
        if self.diff_log is not None:
            self.diff_log.close()
        cfg = self.config
        path = cfg.diff_log_dir / f"shadow-diff-{self.metadata.name}-{self.metadata.version}.jsonl"
        try:
            self.diff_log = DiffLog(path, cfg.diff_log_max_bytes, cfg.diff_log_backups)
        except OSError as exc:
            logger.warning("shadow diff log disabled, cannot create %s: %s", path, exc)
            self.diff_log = None
