"""The application graph, wired. Nothing else lives here.

    client -> Ingress -> Validator[m] -> ModelReplica[m]       for every served model m
                     \\-(sampled, after answering)-> ShadowReplica[m] (its candidate)

`serve run serve_config.yaml` calls `build_app` with the config's `args`, which Serve
validates into `AppArgs` first; every artifact's metadata is checked here, before any
replica starts. Each model's deployments are named `<Role>-<model>`.
(No `from __future__ import annotations` here: Serve inspects the real annotation class.)
"""

import importlib.util
import logging
from typing import Any

from ray.serve import Application, Deployment

from deployments.admission.auth import load_keys, refuse_exposure_without_auth
from deployments.config import AppArgs, ModelSpec, ShadowConfig
from deployments.errors import ArtifactError
from deployments.kinds.base import ModelKind
from deployments.repository import architectures
from deployments.repository.metadata import available_models
from deployments.repository.store import latest_version, load_kind
from deployments.roles.ingress import Ingress
from deployments.roles.listen import serve_http_host
from deployments.roles.replica import ModelReplica
from deployments.roles.shadow import ShadowReplica
from deployments.roles.validator import Validator

logger = logging.getLogger("ray.serve")


def build_app(args: AppArgs) -> Application:
    refuse_exposure_without_auth(
        serve_http_host(),
        bool(load_keys(args.auth_token_env, args.auth_token_file)),
        "http_options.host",
    )
    return bind_graph(args, ShadowReplica)


def bind_graph(args: AppArgs, shadow_deployment: Deployment) -> Application:
    """The graph with a given candidate deployment (a ShadowReplica or a subclass)."""
    specs = model_specs(args)
    if not specs:
        raise ArtifactError(f"no models to serve: {args.model_dir} holds none")
    entries = [e for spec in specs if (e := bind_model(args, spec, shadow_deployment)) is not None]
    if not entries:
        raise ArtifactError("none of the configured models can be served here (see the log)")
    return Ingress.bind(args, entries)


def model_specs(args: AppArgs) -> list[ModelSpec]:
    """The models to serve: those listed, or every model under model_dir at its highest
    version, each optional (one whose kind cannot run here is skipped with a warning)."""
    if args.models is not None:
        return args.models
    return [ModelSpec(name=name, optional=True) for name in available_models(args.model_dir)]


def bind_model(
    args: AppArgs, spec: ModelSpec, shadow_deployment: Deployment = ShadowReplica
) -> dict[str, Any] | None:
    """One model's deployments, bound; None when an optional model's kind cannot run here."""
    model_dir = str(args.model_dir)
    version = spec.primary_version or latest_version(model_dir, spec.name)
    kind = load_kind(model_dir, spec.name, version)
    missing = [m for m in kind.requirements if importlib.util.find_spec(m) is None]
    if missing:
        message = f"model {spec.name}:{version} ({kind.kind}) needs {missing}"
        if not spec.optional:
            raise ArtifactError(f"{message}: install them ({kind.requirements_hint})")
        logger.warning("%s; serving without it (optional: true)", message)
        return None
    check_architecture(kind, args.allowed_architectures)
    defaults = kind.batch_defaults
    batch = {
        **defaults,
        **(spec.batch.model_dump(mode="json", exclude_unset=True) if spec.batch else {}),
    }
    env = {"env_vars": dict(kind.replica_env)}
    allowed = list(args.allowed_architectures)
    name = spec.name
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "max_rows": spec.max_instances_per_request,
    }
    if kind.validates_at == "validator":
        entry["validator"] = Validator.options(
            **spec.validator.options(f"Validator-{name}", spec.drift.model_dump(mode="json"))
        ).bind(model_dir, name, version, spec.max_instances_per_request)
    entry["model"] = ModelReplica.options(
        **_with_env(spec.replica.options(f"ModelReplica-{name}", batch), env)
    ).bind(
        model_dir,
        name,
        version,
        spec.device,
        allowed,
        batch,
        spec.replica.torch_threads,
        drift_predictions=spec.drift.enabled,
    )
    candidate = candidate_of(kind, spec, model_dir, version)
    if candidate is not None:
        shadow_config = ShadowConfig.model_validate(
            {**defaults, **spec.shadow.model_dump(exclude_unset=True)}
        ).model_dump(mode="json")
        entry["shadow"] = shadow_deployment.options(
            **_with_env(spec.shadow_replica.options(f"ShadowReplica-{name}", shadow_config), env)
        ).bind(
            model_dir,
            name,
            candidate[0],
            spec.device,
            allowed,
            shadow_config,
            spec.shadow_replica.torch_threads,
            candidate[1],
            primary_version=version,
        )
    return entry


def candidate_of(
    kind: ModelKind, spec: ModelSpec, model_dir: str, primary: str
) -> tuple[str, str | None] | None:
    """(version, variant) of the model's shadow candidate, checked against the primary."""
    if spec.candidate_variant is not None:
        if spec.candidate_variant not in kind.variants:
            raise ArtifactError(
                f"model {spec.name!r}: candidate_variant {spec.candidate_variant!r} is not one "
                f"its kind {kind.kind} derives; it offers {list(kind.variants)}"
            )
        return primary, spec.candidate_variant
    if spec.candidate_version is None:
        return None
    if spec.candidate_version == primary:
        raise ArtifactError(
            f"model {spec.name!r}: candidate_version {primary!r} is the primary version (the "
            "highest under model_dir when primary_version is unset); set another version, or "
            "null to disable the shadow"
        )
    candidate = load_kind(model_dir, spec.name, spec.candidate_version)
    if candidate.kind != kind.kind or (
        candidate.metadata.schema_fingerprint() != kind.metadata.schema_fingerprint()
    ):
        raise ArtifactError(
            f"schema mismatch: candidate {spec.name}:{spec.candidate_version} expects a "
            f"different input schema (or kind) than primary {spec.name}:{primary}; a shadow "
            "must accept the primary's validated input"
        )
    return spec.candidate_version, None


def check_architecture(kind: ModelKind, allowed: list[str]) -> None:
    """Refuse at startup, not in a replica, an architecture the operator has not allowed."""
    arch = getattr(kind.metadata, "architecture", None)
    path = getattr(arch, "import_path", None)
    if path is not None and not architectures.is_allowed(path, allowed):
        architectures.resolve(path, allowed)  # raises, naming the setting to change


def _with_env(options: dict[str, Any], runtime_env: dict[str, Any]) -> dict[str, Any]:
    if runtime_env["env_vars"]:
        options["ray_actor_options"]["runtime_env"] = runtime_env
    return options
