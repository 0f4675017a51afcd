"""The application graph, wired. Nothing else lives here.

    client -> Ingress -> Validator -> ModelReplica (primary)
                     \\-(sampled, after answering)-> ShadowReplica (candidate)
                     \\-> TextEncoder (text model)  \\-(sampled)-> TextShadow (int8)

`serve run serve_config.yaml` calls `build_app` with the config's `args`, which Serve
validates into `AppArgs` first; artifacts are checked here, before any replica starts.
(No `from __future__ import annotations` here: Serve inspects the real annotation class.)
"""

import importlib.util
import logging

from ray.serve import Application, Deployment

from deployments.config import AppArgs, TextModelArgs
from deployments.errors import ArtifactError
from deployments.ingress import Ingress
from deployments.metadata import read_metadata
from deployments.model_replica import ModelReplica
from deployments.shadow_replica import ShadowReplica
from deployments.validator import Validator

logger = logging.getLogger("ray.serve")


# glibc hands a forward pass's large activation buffers back to the OS (mmap/munmap above its
# adaptive threshold, heap trimming) and page-faults them in again on the next pass. With the
# buffers kept in the process, 6 s of single-thread MiniLM passes over 48 short sentences
# spent 0.03 s in the kernel instead of 0.36-0.40 s. The memory kept is what a replica uses
# at its peak anyway (bounded by the token budget).
ENCODER_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's maximum for this setting
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}


def build_app(args: AppArgs) -> Application:
    return bind_graph(args, ShadowReplica)


def bind_graph(args: AppArgs, shadow_deployment: Deployment) -> Application:
    """Bind the graph with a given candidate deployment (a ShadowReplica or a subclass)."""
    model_dir = str(args.model_dir)
    primary = read_metadata(model_dir, args.model_name, args.primary_version)
    shadow = None
    if args.candidate_version is not None:
        candidate = read_metadata(model_dir, args.model_name, args.candidate_version)
        if candidate.schema_fingerprint() != primary.schema_fingerprint():
            raise ArtifactError(
                f"schema mismatch: candidate {args.model_name}:{args.candidate_version} expects "
                f"a different feature schema than primary {args.model_name}:"
                f"{args.primary_version}; a shadow must accept the primary's validated input"
            )
        shadow = shadow_deployment.bind(
            model_dir, args.model_name, args.candidate_version, args.device, args.primary_version
        )
    validator = Validator.bind(
        model_dir, args.model_name, args.primary_version, args.max_instances_per_request
    )
    model = ModelReplica.bind(model_dir, args.model_name, args.primary_version, args.device)
    text_encoder, text_shadow = bind_text(args, model_dir)
    return Ingress.bind(args, validator, model, shadow, text_encoder, text_shadow)


def bind_text(args: AppArgs, model_dir: str) -> tuple[Application | None, Application | None]:
    """The text-embedding model, when enabled and its extra is installed."""
    spec: TextModelArgs = args.text_model
    if spec.enabled is False:
        return None, None
    from deployments.text.metadata import read_text_metadata

    metadata = read_text_metadata(model_dir, spec.model_name, spec.version)
    missing = [
        module
        for module in ("transformers", "tokenizers", metadata.source.module)
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        message = (
            f"text model {spec.model_name}:{spec.version} needs {missing}: install the text "
            "extra (pip install -e '.[text]')"
        )
        if spec.enabled is True:
            raise ArtifactError(message + ", or set text_model.enabled to false")
        logger.warning("%s; serving without it (text_model.enabled: auto)", message)
        return None, None
    from deployments.text_replica import TextEncoderReplica, TextShadowReplica

    actor = {
        "num_cpus": spec.encoder_num_cpus,
        "memory": spec.encoder_memory_bytes,
        "runtime_env": {"env_vars": dict(ENCODER_MALLOC_ENV)},
    }
    encoder = TextEncoderReplica.options(
        num_replicas=spec.encoder_replicas,
        ray_actor_options={**actor, "num_gpus": spec.encoder_num_gpus},
        max_ongoing_requests=256,
        max_queued_requests=1024,
        user_config=spec.batch.model_dump(mode="json"),
    ).bind(model_dir, spec.model_name, spec.version, args.device, spec.encoder_torch_threads)
    shadow = None
    if spec.shadow_int8:
        shadow = TextShadowReplica.options(
            ray_actor_options=actor,
            max_ongoing_requests=64,
            max_queued_requests=64,
            user_config=spec.shadow.model_dump(mode="json"),
        ).bind(model_dir, spec.model_name, spec.version, "cpu", spec.encoder_torch_threads)
    return encoder, shadow
