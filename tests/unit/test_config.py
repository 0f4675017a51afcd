"""Typed configuration: serve_config.yaml is valid for Serve and for our builder."""

from __future__ import annotations

import pickle

import pytest
import yaml
from pydantic import ValidationError

from deployments.config import AppArgs, BatchConfig, IngressConfig, ShadowConfig
from deployments.errors import (
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


def test_serve_config_args_and_user_config_validate(serve_config: dict) -> None:
    (app,) = serve_config["applications"]
    assert app["import_path"] == "deployments.app:build_app"
    args = AppArgs.model_validate(app["args"])
    assert args.model_dir.is_dir() and args.candidate_version == "2"
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {"Ingress", "Validator", "ModelReplica", "ShadowReplica"}
    for d in deployments.values():
        assert d["max_ongoing_requests"] > 5, "Serve's default of 5 collapses under load"
        assert d["max_queued_requests"] > 0, "every queue is bounded"
        assert 0 < d["ray_actor_options"]["num_cpus"] < 1
        assert d["max_surge_percent"] == 100, "replacements start before old replicas stop"
    IngressConfig.model_validate(deployments["Ingress"]["user_config"])
    BatchConfig.model_validate(deployments["ModelReplica"]["user_config"])
    ShadowConfig.model_validate(deployments["ShadowReplica"]["user_config"])
    assert "autoscaling_config" in deployments["ModelReplica"]
    assert serve_config["http_options"]["host"] == "127.0.0.1"


def test_builder_binds_the_four_deployments(serve_config: dict) -> None:
    from deployments.app import build_app

    app = build_app(AppArgs.model_validate(serve_config["applications"][0]["args"]))
    assert app is not None


@pytest.mark.parametrize(
    "args,needle",
    [
        ({"model_dir": "/nonexistent"}, "model_dir '/nonexistent' is not a directory"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda'"),
        ({"candidate_version": "1"}, "candidate_version equals primary_version"),
        ({"max_batch": 3}, "Extra inputs are not permitted"),
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
    with pytest.raises(ValidationError, match="batch_wait_timeout_s"):
        BatchConfig(batch_wait_timeout_s=-0.1)


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
    from deployments.app import build_app

    args = serve_config["applications"][0]["args"]
    args = {**args, "text_model": {**args["text_model"], "enabled": True, "encoder_replicas": 2}}
    app = build_app(AppArgs.model_validate(args))
    bound = {
        arg._bound_deployment.name: arg._bound_deployment
        for arg in app._bound_deployment.init_args
        if hasattr(arg, "_bound_deployment")
    }
    assert bound["TextEncoder"]._deployment_config.num_replicas == 2
    # Both encoders keep their activation buffers (no mmap/munmap page faults per pass).
    for name in ("TextEncoder", "TextShadow"):
        env = bound[name].ray_actor_options["runtime_env"]["env_vars"]
        assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 << 20), name
