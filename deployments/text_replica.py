"""Text encoder deployments: the primary (fp32, or fp16 on cuda) and its int8 shadow.

Batched by tokens, not requests. Each request is tokenized once, here, and split into
chunks of at most the token budget; chunks from many requests join one `@serve.batch` whose
size is counted in tokens (`batch_size_fn`), so a batch of long texts holds fewer of them.
Inside a batch, rows are sorted by length into sub-batches whose padded size stays within
the budget, capped again by memory headroom (bytes per padded token, estimated from the
architecture), so padding stays small and a burst of long texts cannot run the replica out
of memory. Needs the `text` extra (transformers, tokenizers, the packaged MiniLM).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from deployments.admission.memory_guard import MemoryGuard, memory_guarded
from deployments.config import TextBatchConfig, TextShadowConfig
from deployments.errors import InvalidInput, ServingError, returned_not_raised
from deployments.kinds.torch_threads import ThreadCount
from deployments.runner import resolve_device
from deployments.shadow.mirror_batch import mirror_each
from deployments.telemetry.metrics import StageMetrics, TextBatchMetrics, TextShadowMetrics
from deployments.telemetry.monitoring import Monitor, monitored, replica_deployment_name
from deployments.telemetry.tracing import (
    context_of_link,
    current_trace_id,
    install_log_correlation,
    link_from_traceparent,
    link_to_current,
)

logger = logging.getLogger("ray.serve")


@dataclass
class TextItem:
    encodings: list[Any]  # tokenizers.Encoding
    enqueued_at: float = field(default_factory=time.perf_counter)
    link: Any = field(default_factory=link_to_current)

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


def _tokens(items: list[TextItem]) -> int:
    return sum(item.tokens for item in items)


def chunk_by_tokens(encodings: list[Any], budget: int) -> list[list[Any]]:
    """Consecutive chunks of at most `budget` tokens (a longer single text goes alone)."""
    chunks: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for enc in encodings:
        n = len(enc.ids)
        if current and used + n > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(enc)
        used += n
    if current:
        chunks.append(current)
    return chunks


class BatchedTextEncoder:
    int8 = False

    def __init__(
        self, model_dir: str, model_name: str, version: str, device: str, torch_threads: int = 0
    ) -> None:
        from deployments.text.encoder import TextEncoder
        from deployments.text.metadata import read_text_metadata

        self.threads = ThreadCount(torch_threads)
        self.threads.apply()  # this thread too: warm-up runs here
        self.metadata = read_text_metadata(model_dir, model_name, version)
        encoder = TextEncoder.from_metadata(self.metadata, resolve_device(device))
        if self.int8:
            from deployments.text.quantized import int8_encoder

            encoder = int8_encoder(encoder)
        self.encoder = encoder
        self.batch = TextBatchConfig()
        probe = None
        if encoder.device.type == "cuda":
            import torch

            probe = lambda: torch.cuda.mem_get_info(encoder.device)  # noqa: E731
        self.memory_guard = MemoryGuard(self.batch.memory, probe)
        encoder.warm_up()
        self.monitor = Monitor(
            replica_deployment_name(type(self).__name__), StageMetrics(model_name, version)
        )
        self.batch_metrics = TextBatchMetrics(model_name, version)
        install_log_correlation(logger)
        logger.info(
            "loaded %s:%s (%s) on %s, CPU threads per forward pass: %s",
            model_name,
            version,
            encoder.variant,
            encoder.device,
            torch_threads or f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.batch = TextBatchConfig.model_validate(user_config or {})
        self._configure_batching(self.batch)

    def _configure_batching(self, config: TextBatchConfig) -> None:
        self.memory_guard.config = config.memory
        self._run_batch.set_max_batch_size(config.token_budget)
        self._run_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    def token_budget(self) -> int:
        """The configured budget, or fewer padded tokens when memory headroom is short."""
        from deployments.text.token_budget import cap_token_budget

        return cap_token_budget(
            self.batch.token_budget,
            self.memory_guard.headroom_bytes(),
            self.encoder.bytes_per_token,
            min_tokens=self.encoder.max_seq_length,
        )

    @memory_guarded(lambda self: self.memory_guard)
    async def encode(self, texts: list[str], link: Any = None) -> np.ndarray:
        """Embeddings for one request; `link` is its trace (default: the current one)."""
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("expected a list of strings to embed")
        if not texts:
            return np.empty((0, self.encoder.dim), dtype=np.float32)
        if link is None:
            link = link_to_current()
        encodings = self.encoder.tokenize(texts)
        chunks = chunk_by_tokens(encodings, self.batch.token_budget)
        parts = await asyncio.gather(*(self._run_batch(TextItem(c, link=link)) for c in chunks))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.005, batch_size_fn=_tokens)
    async def _run_batch(self, items: list[TextItem]) -> list[np.ndarray]:
        from deployments.text.token_budget import padded_tokens, plan_sub_batches

        started = time.perf_counter()
        for item in items:
            self.monitor.record("queue_wait", (started - item.enqueued_at) * 1000)
        rows = [enc for item in items for enc in item.encodings]
        lengths = [len(e.ids) for e in rows]
        plan = plan_sub_batches(lengths, self.token_budget())
        padded = sum(padded_tokens([lengths[i] for i in sub]) for sub in plan)
        self.batch_metrics.batch(len(items), len(rows), sum(lengths), padded)
        links = [item.link for item in items if item.link is not None]
        attributes = {
            "batch.requests": len(items),
            "batch.rows": len(rows),
            "batch.tokens": sum(lengths),
            "batch.padded_tokens": padded,
            "batch.forward_passes": len(plan),
        }
        out = np.empty((len(rows), self.encoder.dim), dtype=np.float32)
        import torch

        parent = context_of_link(links[0]) if links else None
        self.threads.apply()
        with (
            self.monitor.call("compute", attributes, links, parent=parent),
            torch.inference_mode(),
        ):
            for sub in plan:
                out[sub] = self.encoder._forward([rows[i] for i in sub]).cpu().numpy()
        results, start = [], 0
        for item in items:
            results.append(out[start : start + len(item.encodings)])
            start += len(item.encodings)
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.metadata.name,
            "version": self.metadata.version,
            "variant": self.encoder.variant,
            "device": str(self.encoder.device),
            "batch": self.batch.model_dump(),
            "token_budget_now": self.token_budget(),
        }

    def ready(self) -> bool:
        return True


@serve.deployment(name="TextEncoder")
class TextEncoderReplica(BatchedTextEncoder):
    @returned_not_raised
    @monitored("predict")
    async def embed(self, texts: list[str]) -> dict[str, Any]:
        return await self._embed(texts, link_to_current())

    async def embed_many(
        self, batch: list[list[str]], traceparents: list[str | None]
    ) -> list[dict[str, Any] | ServingError]:
        """One call carrying many requests' texts (the ingress batches its callers): each
        joins the token-budget batch queue as if it had come alone; answers in order, each
        its own embeddings or its own typed error."""
        return list(
            await asyncio.gather(
                *(
                    self._embed_one(texts, link_from_traceparent(traceparent))
                    for texts, traceparent in zip(batch, traceparents, strict=True)
                )
            )
        )

    @returned_not_raised
    async def _embed_one(self, texts: list[str], link: Any) -> dict[str, Any]:
        with self.monitor.call("predict", parent=context_of_link(link)):
            return await self._embed(texts, link)

    async def _embed(self, texts: list[str], link: Any) -> dict[str, Any]:
        started = time.perf_counter()
        embeddings = await self.encode(texts, link)
        return {
            "embeddings": embeddings,
            "model_version": self.metadata.version,
            "infer_ms": (time.perf_counter() - started) * 1000,
        }


@serve.deployment(name="TextShadow")
class TextShadowReplica(BatchedTextEncoder):
    """The int8 candidate: same texts, compared with the primary's embeddings by cosine."""

    int8 = True

    def __init__(
        self, model_dir: str, model_name: str, version: str, device: str, torch_threads: int = 0
    ) -> None:
        # int8 kernels are CPU-only
        super().__init__(model_dir, model_name, version, "cpu", torch_threads)
        self.config = TextShadowConfig()
        self.metrics = TextShadowMetrics(model_name, version, self.encoder.variant)
        self.compared_rows = self.agreeing_rows = self.mirrored = 0
        self.failures = {"timeout": 0, "error": 0}
        self.cosines: list[float] = []
        self.latency_ms: dict[str, list[float]] = {"primary": [], "candidate": []}

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = TextShadowConfig.model_validate(user_config or {})
        self.batch = self.config
        self._configure_batching(self.config)

    async def mirror(
        self,
        features: list[str],
        primary: dict[str, Any],
        primary_latency_ms: float,
        request_id: str = "",
        trace_id: str = "",
    ) -> None:
        self.mirrored += 1
        with self.monitor.call("shadow_compare") as span:
            started = time.perf_counter()
            try:
                candidate = await asyncio.wait_for(
                    self.encode(features), self.config.candidate_timeout_s
                )
            except TimeoutError:
                self.failures["timeout"] += 1
                self.metrics.failed("timeout")
                span.set_attribute("shadow.outcome", "timeout")
                return
            except Exception as exc:  # noqa: BLE001 - a failing candidate is data
                self.failures["error"] += 1
                self.metrics.failed("error")
                span.set_attribute("shadow.outcome", "error")
                logger.warning("candidate failed on request %s: %s", request_id, exc)
                return
            candidate_ms = (time.perf_counter() - started) * 1000
            reference = np.asarray(primary["embedding"], dtype=np.float32)
            # Both sides are L2-normalised: cosine is the row-wise dot product.
            cosines = np.einsum("ij,ij->i", reference, candidate).astype(float).tolist()
            agree = sum(1 for c in cosines if c >= self.config.min_cosine)
            self.compared_rows += len(cosines)
            self.agreeing_rows += agree
            self.cosines = (self.cosines + cosines)[-10_000:]
            for role, ms in (("primary", primary_latency_ms), ("candidate", candidate_ms)):
                self.latency_ms[role] = (self.latency_ms[role] + [ms])[-10_000:]
            self.metrics.compared(cosines, self.config.min_cosine, primary_latency_ms, candidate_ms)
            span.set_attribute("shadow.outcome", "compared")
            span.set_attribute("shadow.rows", len(cosines))
            span.set_attribute("shadow.rows_agreed", agree)
            if agree < len(cosines):
                logger.info(
                    "candidate disagrees on %d of %d rows (min cosine %.4f), request %s trace %s",
                    len(cosines) - agree,
                    len(cosines),
                    min(cosines),
                    request_id,
                    trace_id or current_trace_id(),
                )

    async def mirror_many(self, payloads: list[dict[str, Any]]) -> None:
        """Many mirrored requests in one call (see deployments/shadow/mirror_batch.py)."""
        await mirror_each(self.mirror, payloads)

    def report(self, ingress_drops: dict[str, int] | None = None) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return float(np.percentile(values, q)) if values else None

        drops = sum((ingress_drops or {}).values())
        failed = sum(self.failures.values()) + drops
        return {
            "model": self.metadata.name,
            "primary_version": self.metadata.version,
            "candidate_version": f"{self.metadata.version}-{self.encoder.variant}",
            "comparison": "cosine",
            "min_cosine": self.config.min_cosine,
            "mirrored_requests": self.mirrored,
            "compared_rows": self.compared_rows,
            "agreement_rate": self.agreeing_rows / self.compared_rows
            if self.compared_rows
            else None,
            "cosine": {
                "min": min(self.cosines, default=None),
                "p1": pct(self.cosines, 1),
                "p50": pct(self.cosines, 50),
            },
            "failures": {**self.failures, "ingress_drops": drops},
            "failure_rate": failed / (self.mirrored + drops) if self.mirrored + drops else None,
            "latency_ms": {
                role: {"p50": pct(v, 50), "p99": pct(v, 99)} for role, v in self.latency_ms.items()
            },
        }
