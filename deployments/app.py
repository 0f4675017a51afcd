"""The application graph, wired. Nothing else lives here.

    client -> Ingress -> Validator -> ModelReplica (primary)
                     \\-(sampled, after answering)-> ShadowReplica (candidate)

`serve run serve_config.yaml` calls `build_app` with the config's `args`, which Serve
validates into `AppArgs` first; artifacts are checked here, before any replica starts.
(No `from __future__ import annotations` here: Serve inspects the real annotation class.)
"""

from ray.serve import Application, Deployment

from deployments.config import AppArgs
from deployments.errors import ArtifactError
from deployments.ingress import Ingress
from deployments.metadata import read_metadata
from deployments.model_replica import ModelReplica
from deployments.shadow_replica import ShadowReplica
from deployments.validator import Validator


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
    return Ingress.bind(args, validator, model, shadow)
