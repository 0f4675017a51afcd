"""Typed configuration, validated at startup with messages that say what to change.

`AppArgs` is what `serve_config.yaml` passes under `applications[].args`; Serve converts the
dict into it before calling the application builder, so a typo or an out-of-range value
fails `serve run` / `serve deploy` with pydantic's field-by-field message. `BatchConfig` is
the model replicas' `user_config`, re-validated on every `reconfigure()`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deployments.admission.rate_limit import RateLimitConfig
from deployments.admission.resilience import CacheMode

_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_ARCH_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:(\*|[A-Za-z_][A-Za-z0-9_]*)$")


class MemoryGuardConfig(BaseModel):
    """Memory-aware admission thresholds (see deployments/admission/memory_guard.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_system_used_fraction: float = Field(
        default=0.90,
        gt=0,
        le=1,
        description="Refuse work above this node memory use; Ray's OOM killer acts at 0.95.",
    )
    max_cgroup_used_fraction: float = Field(
        default=0.90, gt=0, le=1, description="Refuse work above this share of the cgroup limit."
    )
    min_gpu_free_fraction: float = Field(
        default=0.05, ge=0, lt=1, description="Refuse work when less GPU memory than this is free."
    )
    retry_after_s: float = Field(default=2.0, gt=0, le=300)
    check_interval_s: float = Field(
        default=0.25, ge=0, le=10, description="Readings are reused for this long."
    )
    gc_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="Under pressure, gc.collect() runs at most once per this long (a full "
        "collection costs milliseconds; per request it would be the outage).",
    )


class BatchConfig(BaseModel):
    """Dynamic batching of one model's replicas; changeable at runtime through user_config."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        default=64,
        ge=1,
        le=1_000_000,
        description="Most cost units one forward pass runs: rows, or tokens for text (the "
        "kind's unit). Larger requests are split into chunks; memory headroom lowers it.",
    )
    memory: MemoryGuardConfig = Field(default_factory=MemoryGuardConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_batch_window(cls, values: Any) -> Any:
        if isinstance(values, dict) and "batch_wait_timeout_s" in values:
            raise ValueError(
                "batch_wait_timeout_s no longer applies: a model's requests are batched once, "
                "at the ingress; remove it and set the Ingress's caller_batch_wait_s instead"
            )
        return values


class IngressConfig(BaseModel):
    """The ingress's `user_config`: shadow mirroring, changeable at runtime."""

    model_config = ConfigDict(extra="forbid")

    shadow_sample_rate: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Fraction of requests mirrored to the candidate."
    )
    shadow_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Backstop on one mirrored call; the shadow's own candidate timeout is shorter.",
    )
    shadow_queue_size: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Mirrors waiting to be sent; when full, new mirrors are dropped and counted.",
    )
    shadow_concurrency: int = Field(
        default=16, ge=1, le=1024, description="Mirrored calls in flight from one ingress replica."
    )
    shadow_batch_max_requests: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Mirrors one call to the shadow may carry.",
    )
    shadow_batch_wait_s: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="How long a mirror waits for others to share its call to the shadow. "
        "Mirrors leave after the answer, so the wait costs clients nothing, and one call per "
        "batch instead of per mirror saves both the ingress's and the shadow's CPU.",
    )
    max_inflight_requests: int = Field(
        default=768,
        ge=1,
        le=100_000,
        description="Hard cap on data-plane requests one ingress replica works on at once "
        "(a memory bound; it wins over min_inflight_requests). Keep it below the Ingress's "
        "max_ongoing_requests so the ingress, not Serve, says no.",
    )
    max_queue_delay_s: float | None = Field(
        default=1.0,
        gt=0,
        le=600,
        description="Queueing-delay budget: admit while the requests in flight would drain "
        "within this at the observed drain rate; beyond it, 503 with a Retry-After. None: "
        "only the fixed max_inflight_requests applies.",
    )
    min_inflight_requests: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Always admitted, whatever the drain rate says (a quiet service must take "
        "a burst before it has measured anything).",
    )
    max_retry_after_s: float = Field(default=30.0, ge=1, le=3600)
    caller_batch_max_requests: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Requests the ingress sends to the Validator and the ModelReplica in one "
        "call each (batching at the caller: two handle calls per batch, not per request).",
    )
    caller_batch_wait_s: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="How long a model's request waits for others to share its call (the one "
        "batching layer); under load a batch fills sooner.",
    )
    caller_batch_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Caller batches on their way at once; while all are out, requests queue "
        "and leave together in the next one (so batches grow with load).",
    )
    trace_sampling_ratio: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of requests that start a recorded trace (OpenTelemetry, every role "
        "of the graph); a caller whose W3C traceparent says sampled is always traced, one "
        "that says not sampled never is. 0: only callers' sampled traces.",
    )
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries of an inference call whose replica died (idempotent, so safe).",
    )
    retry_max_wait_s: float = Field(default=2.0, gt=0, le=60)
    max_deadline_ms: int = Field(
        default=60_000,
        ge=1,
        description="Upper bound accepted for the x-request-deadline-ms header.",
    )
    max_inflight_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        description="Request bodies one ingress replica holds at once, in bytes (each request "
        "weighs its Content-Length, or max_request_bytes when it sends none); beyond, 503 with "
        "a Retry-After. Parsed bodies take several times their size: keep it a fraction of "
        "the Ingress's memory.",
    )
    cache_mode: CacheMode = Field(
        default="auto",
        description="The result cache: 'on', 'off', or 'auto' (on, but after each "
        "cache_probe_lookups lookups whose hit ratio is below cache_min_hit_ratio it empties "
        "itself and stays off for cache_pause_s: a cache of unique requests only costs).",
    )
    cache_ttl_s: float = Field(default=30.0, gt=0, le=86_400)
    cache_max_bytes: int = Field(
        default=32 << 20,
        ge=1 << 16,
        description="Bytes the cached answers may take (estimated per answer, arrays by "
        "their buffers); the least recently used go first.",
    )
    cache_min_hit_ratio: float = Field(default=0.05, ge=0, le=1)
    cache_probe_lookups: int = Field(default=1000, ge=10, le=10_000_000)
    cache_pause_s: float = Field(default=300.0, gt=0, le=86_400)
    rate_limit: RateLimitConfig = Field(
        default_factory=RateLimitConfig,
        description="Per-client token buckets (per API key; per client address without auth); "
        "429 with a Retry-After from the bucket. Per ingress replica.",
    )
    memory: MemoryGuardConfig = Field(default_factory=MemoryGuardConfig)


class ShadowConfig(BatchConfig):
    """The shadow replica's `user_config`: batching, candidate timeout, diff log, verdict."""

    candidate_timeout_s: float = Field(
        default=2.0, gt=0, le=300, description="A candidate slower than this counts as timed out."
    )
    diff_log_dir: Path = Field(
        default=Path("/tmp/ray-serve-inference/shadow"),
        description="Where shadow-diff-<model>-<candidate>.jsonl and its rotations are written.",
    )
    diff_log_max_bytes: int = Field(default=10 << 20, ge=4096)
    diff_log_backups: int = Field(default=3, ge=0, le=100)
    diff_log_min_abs_delta: float = Field(
        default=0.1,
        ge=0,
        description="Classifier rows whose labels agree are still logged when scores differ "
        "this much.",
    )
    max_abs_delta: float = Field(
        default=0.1, ge=0, description="A regression candidate agrees within this |delta|."
    )
    min_cosine: float = Field(
        default=0.98, gt=0, le=1, description="An embedding candidate agrees at this cosine."
    )
    min_compared_rows: int = Field(default=500, ge=1)
    min_agreement: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Promote only when the 95% lower bound of the agreement rate reaches this.",
    )
    max_candidate_failure_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_ratio: float = Field(default=2.0, gt=0)


class DriftConfig(BaseModel):
    """Drift scoring of one model (the Validator's `user_config`, changeable at runtime): the
    live window's population stability index against the training reference in
    reference.json, per feature and for the prediction."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Count rows into the window and score.")
    window_s: int = Field(
        default=900,
        ge=10,
        le=3600,
        description="Seconds of traffic scored (in 10 s slots, summed across replicas).",
    )
    psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="PSI above which a feature counts as drifted (0.1-0.2 reads as a moderate "
        "shift, above 0.2 as a significant one); exported, so the alert rules follow it.",
    )
    min_rows: int = Field(
        default=500, ge=1, description="Fewer rows in the window: no score (NaN), no alert."
    )
    score_interval_s: float = Field(
        default=10.0, ge=0.5, le=300, description="How often the window is written and scored."
    )


class ReplicaSpec(BaseModel):
    """How one of a model's deployments runs: resources, replicas, queue bounds."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(default=None, ge=1, description="None: autoscale.")
    autoscaling_config: dict[str, Any] | None = None
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float = Field(default=0, ge=0, description="1 on GPU nodes (and device auto).")
    memory_bytes: int = Field(default=1 << 30, ge=64 << 20)
    max_ongoing_requests: int = Field(default=256, ge=1)
    max_queued_requests: int = Field(default=1024, ge=-1)
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="CPU threads per forward pass, set on the thread that runs it; 0 keeps "
        "torch's default.",
    )

    def options(self, name: str, user_config: dict[str, Any] | None) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "max_surge_percent": 100,
            "ray_actor_options": {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "memory": self.memory_bytes,
            },
        }
        if self.num_replicas is not None:
            opts["num_replicas"] = self.num_replicas
        elif self.autoscaling_config is not None:
            opts["autoscaling_config"] = self.autoscaling_config
        else:
            opts["num_replicas"] = 1
        if user_config is not None:
            opts["user_config"] = user_config
        return opts


def _default_model_replica() -> ReplicaSpec:
    return ReplicaSpec(
        autoscaling_config={
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 64,
            "policy": {
                "policy_function": "deployments.roles.autoscaling:requests_in_flight_policy"
            },
            "upscale_delay_s": 5,
            "downscale_delay_s": 60,
        }
    )


class ModelSpec(BaseModel):
    """One served model: its versions and how each of its deployments runs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    primary_version: str | None = Field(
        default=None, description="None: the highest version under model_dir/<name>."
    )
    candidate_version: str | None = Field(
        default=None, description="A version served by the shadow replica; null: no shadow."
    )
    candidate_variant: str | None = Field(
        default=None,
        description="A candidate derived from the primary's weights by its kind (e.g. 'int8' "
        "for text); exclusive with candidate_version.",
    )
    optional: bool = Field(
        default=False,
        description="Serve only when its kind's packages are installed (else warn and skip).",
    )
    device: str = Field(
        default="auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:N'."
    )
    max_instances_per_request: int = Field(default=1024, ge=1, description="More get 413.")
    batch: BatchConfig | None = Field(default=None, description="None: the kind's defaults.")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    replica: ReplicaSpec = Field(default_factory=_default_model_replica)
    validator: ReplicaSpec = Field(
        default_factory=lambda: ReplicaSpec(
            num_cpus=0.1, memory_bytes=512 << 20, max_queued_requests=512
        )
    )
    shadow_replica: ReplicaSpec = Field(
        default_factory=lambda: ReplicaSpec(
            num_cpus=0.1, memory_bytes=512 << 20, max_ongoing_requests=64, max_queued_requests=64
        )
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")
        return value

    @model_validator(mode="after")
    def _one_candidate(self) -> ModelSpec:
        if self.candidate_version is not None and self.candidate_variant is not None:
            raise ValueError(
                f"model {self.name!r}: set candidate_version or candidate_variant, not both"
            )
        if self.candidate_version is not None and self.candidate_version == self.primary_version:
            raise ValueError(
                f"model {self.name!r}: candidate_version equals primary_version; set another "
                "version, or null to disable the shadow"
            )
        return self


class AppArgs(BaseModel):
    """Arguments of the application builder (`deployments.app:build_app`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: Path = Field(
        default=Path("models"),
        description="The model repository: <name>/<version>/{model.safetensors,metadata.json}. "
        "Relative paths are tried against the working directory, then the repository.",
    )
    models: list[ModelSpec] | None = Field(
        default=None,
        description="Models to serve; null: every model under model_dir at its highest version.",
    )
    allowed_architectures: list[str] = Field(
        default_factory=list,
        description="Import paths of torch modules artifacts may name, 'pkg.module:Class' or "
        "'pkg.module:*'; the shipped deployments.nets:* are always allowed.",
    )
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="Larger bodies get 413.")
    auth_token_env: str = Field(
        default="INFERENCE_AUTH_TOKEN",
        description="Environment variable holding the bearer token; unset means no auth.",
    )
    auth_token_file: Path | None = Field(
        default=None,
        description="File of API keys (a mounted secret): one per line, '<token>' or "
        "'<client-id>:<token>'. Wins over auth_token_env.",
    )
    auth_open_paths: list[str] = Field(
        default_factory=lambda: ["/v2/health/live", "/v2/health/ready"],
        description="Exact paths answered without a token when auth is on (health probes); "
        "every other path needs one.",
    )

    @field_validator("allowed_architectures")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not _ARCH_PATTERN.match(pattern):
                raise ValueError(
                    f"allowed_architectures entry {pattern!r} is not 'package.module:Class' or "
                    "'package.module:*'"
                )
        return value

    @model_validator(mode="after")
    def _resolve_model_dir(self) -> AppArgs:
        self.model_dir = resolve_model_dir(self.model_dir)
        names = [m.name for m in self.models or []]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"models lists {duplicated} more than once")
        return self


def resolve_model_dir(path: Path) -> Path:
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"model_dir {str(path)!r} is not a directory (tried {tried})")
