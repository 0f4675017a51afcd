"""Typed configuration: serve_config.yaml is valid for Serve and for our builder."""

from __future__ import annotations

import importlib.util
import inspect
import pickle
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from deployments.config import AppArgs, BatchConfig, IngressConfig, ShadowConfig
from deployments.errors import (
    ArtifactError,
    BadRequest,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServingError,
)
from tests.support import REPO


@pytest.fixture(scope="module")
def serve_config() -> dict:
    return yaml.safe_load((REPO / "serve_config.yaml").read_text())


def test_serve_config_is_a_valid_serve_deploy_schema(serve_config: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)


def bound_deployments(app: Any) -> dict[str, Any]:
    """Every deployment an application binds, by name: the Ingress and, through the model
    entries it is bound with, each model's deployments."""
    ingress = app._bound_deployment
    bound = {ingress.name: ingress}
    for entry in ingress.init_args[1]:
        for value in entry.values():
            if hasattr(value, "_bound_deployment"):
                bound[value._bound_deployment.name] = value._bound_deployment
    return bound


def init_arguments(deployment: Any) -> dict[str, Any]:
    """A bound replica deployment's constructor arguments, by parameter name (every replica
    role takes BatchedReplica's; the shadow adds its primary's version by keyword)."""
    from deployments.roles.replica import BatchedReplica

    signature = inspect.signature(BatchedReplica.__init__)
    own = {k: v for k, v in deployment.init_kwargs.items() if k in signature.parameters}
    bound = signature.bind(None, *deployment.init_args, **own)
    bound.apply_defaults()
    return {**bound.arguments, **deployment.init_kwargs}


def text_extra_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "tokenizers"))


def test_serve_config_args_and_user_config_validate(serve_config: dict) -> None:
    from deployments.app import build_app

    (app,) = serve_config["applications"]
    assert app["import_path"] == "deployments.app:build_app"
    args = AppArgs.model_validate(app["args"])
    assert args.model_dir.is_dir()
    specs = {m.name: m for m in args.models or []}
    assert set(specs) == {"fraud-risk", "minilm"}
    assert specs["fraud-risk"].primary_version == "1"
    assert specs["fraud-risk"].candidate_version == "2"
    assert specs["minilm"].optional and specs["minilm"].candidate_variant == "int8"
    # Per-model deployments are configured in the args; only the Ingress is listed here.
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {"Ingress"}
    ingress = deployments["Ingress"]
    assert ingress["max_ongoing_requests"] > 5, "Serve's default of 5 collapses under load"
    assert ingress["max_queued_requests"] > 0, "every queue is bounded"
    assert 0 < ingress["ray_actor_options"]["num_cpus"] < 1
    assert ingress["max_surge_percent"] == 100, "replacements start before old replicas stop"
    IngressConfig.model_validate(ingress["user_config"])

    bound = bound_deployments(build_app(args))
    expected = {
        "Ingress",
        "Validator-fraud-risk",
        "ModelReplica-fraud-risk",
        "ShadowReplica-fraud-risk",
    }
    if text_extra_installed():  # minilm is optional: served with the `text` extra
        expected |= {"ModelReplica-minilm", "ShadowReplica-minilm"}  # validated in the Ingress
    assert set(bound) == expected
    for name, d in bound.items():
        if name == "Ingress":  # its options come from the deployments section above
            continue
        config = d._deployment_config
        assert config.max_ongoing_requests > 5, (name, "Serve's default of 5 collapses")
        assert config.max_queued_requests > 0, (name, "every queue is bounded")
        assert 0 < d.ray_actor_options["num_cpus"] < 1, name
        assert config.max_surge_percent == 100, (name, "replacements start before old stop")
    # The per-model user_config: `batch` for the ModelReplica, `shadow` for the ShadowReplica.
    batch = BatchConfig.model_validate(bound["ModelReplica-fraud-risk"].user_config)
    assert batch == specs["fraud-risk"].batch
    shadow = ShadowConfig.model_validate(bound["ShadowReplica-fraud-risk"].user_config)
    assert shadow.max_batch_size == batch.max_batch_size
    assert bound["ModelReplica-fraud-risk"]._deployment_config.autoscaling_config is not None
    if text_extra_installed():
        text_batch = BatchConfig.model_validate(bound["ModelReplica-minilm"].user_config)
        assert text_batch.max_batch_size == 1024  # tokens per forward pass
        text_shadow = ShadowConfig.model_validate(bound["ShadowReplica-minilm"].user_config)
        assert text_shadow.min_cosine == 0.98 and text_shadow.max_batch_size == 4096
    assert serve_config["http_options"]["host"] == "127.0.0.1"


def test_builder_binds_every_models_deployments(serve_config: dict) -> None:
    from deployments.app import build_app

    app = build_app(AppArgs.model_validate(serve_config["applications"][0]["args"]))
    ingress = app._bound_deployment
    assert ingress.name == "Ingress"
    entries = {e["name"]: e for e in ingress.init_args[1]}
    fraud = entries["fraud-risk"]
    assert fraud["version"] == "1" and fraud["max_rows"] == 1024
    assert {"validator", "model", "shadow"} <= set(fraud)
    # The shadow serves the candidate version, and knows the primary it is compared with.
    shadow = init_arguments(fraud["shadow"]._bound_deployment)
    assert (shadow["name"], shadow["version"], shadow["primary_version"]) == (
        "fraud-risk",
        "2",
        "1",
    )
    assert shadow["variant"] is None
    primary = init_arguments(fraud["model"]._bound_deployment)
    assert (primary["name"], primary["version"], primary["device"]) == ("fraud-risk", "1", "auto")


def test_without_a_models_list_every_model_is_served_at_its_highest_version() -> None:
    from deployments.app import build_app

    bound = bound_deployments(build_app(AppArgs()))
    assert "ModelReplica-fraud-risk" in bound and "ShadowReplica-fraud-risk" not in bound
    assert init_arguments(bound["ModelReplica-fraud-risk"])["version"] == "2"


def test_a_candidate_that_is_the_resolved_primary_is_refused() -> None:
    # primary_version unset: the highest version (2) is the primary; 2 cannot shadow itself.
    from deployments.app import bind_model

    args = AppArgs(models=[{"name": "fraud-risk", "candidate_version": "2"}])
    with pytest.raises(ArtifactError, match="candidate_version '2' is the primary version"):
        bind_model(args, args.models[0])


@pytest.mark.parametrize(
    "args,needle",
    [
        ({"model_dir": "/nonexistent"}, "model_dir '/nonexistent' is not a directory"),
        ({"models": [{"name": "fraud-risk", "device": "tpu"}]}, "device must be 'auto', 'cpu'"),
        (
            {"models": [{"name": "fraud-risk", "primary_version": "1", "candidate_version": "1"}]},
            "candidate_version equals primary_version",
        ),
        (
            {"models": [{"name": "m", "candidate_version": "2", "candidate_variant": "int8"}]},
            "set candidate_version or candidate_variant, not both",
        ),
        ({"models": [{"name": "m"}, {"name": "m"}]}, r"models lists \['m'\] more than once"),
        ({"allowed_architectures": ["mypkg"]}, "is not 'package.module:Class'"),
        ({"max_batch": 3}, "Extra inputs are not permitted"),
        ({"models": [{"name": "m", "max_batch": 3}]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_args_say_what_to_change(args: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        AppArgs.model_validate(args)


def test_user_config_bounds() -> None:
    with pytest.raises(ValidationError, match="shadow_sample_rate"):
        IngressConfig(shadow_sample_rate=1.5)
    with pytest.raises(ValidationError, match="candidate_timeout_s"):
        ShadowConfig(candidate_timeout_s=0)


def test_batch_config_bounds() -> None:
    with pytest.raises(ValidationError, match="max_batch_size"):
        BatchConfig(max_batch_size=0)
    # One batching layer, at the ingress: the replica's old window is refused by name.
    with pytest.raises(ValidationError, match="batch_wait_timeout_s no longer applies"):
        BatchConfig(batch_wait_timeout_s=0.002)


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput("bad", [{"instance": 0, "field": "x", "reason": "r"}]),
        BadRequest("not json"),
        ModelNotFound("nope"),
        PayloadTooLarge("big"),
        NotReady("warming"),
        Overloaded("full", [], 3.5),
    ],
)
def test_errors_survive_a_process_boundary(error: ServingError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.status_code, copy.message, copy.details) == (
        error.status_code,
        error.message,
        error.details,
    )
    assert getattr(copy, "retry_after_s", None) == getattr(error, "retry_after_s", None)
    assert copy.to_body()["error"] == error.message


def test_typed_errors_cross_replicas_as_values() -> None:
    import asyncio

    from deployments.errors import raise_if_error, returned_not_raised

    @returned_not_raised
    def validate(x: int) -> int:
        if x < 0:
            raise InvalidInput("x: must be >= 0")
        return x

    @returned_not_raised
    async def infer(x: int) -> int:
        if x > 9:
            raise Overloaded("busy", [], 2.0)
        if x == 5:
            raise RuntimeError("a real fault still raises")
        return x

    assert validate(3) == 3 and isinstance(validate(-1), InvalidInput)
    assert isinstance(asyncio.run(infer(10)), Overloaded)
    with pytest.raises(RuntimeError):
        asyncio.run(infer(5))
    assert raise_if_error(7) == 7
    with pytest.raises(InvalidInput):
        raise_if_error(validate(-1))


def test_text_encoder_replicas_reach_the_bound_deployment(serve_config: dict) -> None:
    pytest.importorskip("transformers")  # the `text` extra
    pytest.importorskip("tokenizers")
    from deployments.app import build_app

    args = serve_config["applications"][0]["args"]
    models = [
        {**m, "replica": {**m.get("replica", {}), "num_replicas": 3}}
        if m["name"] == "minilm"
        else m
        for m in args["models"]
    ]
    bound = bound_deployments(build_app(AppArgs.model_validate({**args, "models": models})))
    assert bound["ModelReplica-minilm"]._deployment_config.num_replicas == 3
    assert "Validator-minilm" not in bound, "text is validated in the Ingress"
    # Both encoders keep their activation buffers (no mmap/munmap page faults per pass).
    for name in ("ModelReplica-minilm", "ShadowReplica-minilm"):
        env = bound[name].ray_actor_options["runtime_env"]["env_vars"]
        assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 << 20), name
    # The shadow's candidate is the int8 variant of the primary's own weights.
    shadow = init_arguments(bound["ShadowReplica-minilm"])
    assert (shadow["version"], shadow["variant"], shadow["primary_version"]) == ("1", "int8", "1")
    assert "runtime_env" not in bound["ModelReplica-fraud-risk"].ray_actor_options
