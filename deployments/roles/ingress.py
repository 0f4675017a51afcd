"""Ingress deployment: the graph's front door. Wires the data plane to its handles and serves
the HTTP adapter and Triton's gRPC service; holds no route and no per-model logic of its own.

`__serve_build_asgi_app__` is Serve's late-bound ingress: the app is built after the
constructor, in the replica, around this replica's own data plane.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from deployments.admission.auth import BearerAuth, load_keys
from deployments.admission.door import Door
from deployments.config import AppArgs, IngressConfig
from deployments.protocol.v2 import server_metadata
from deployments.repository.store import load_kind
from deployments.roles.dataplane import DataPlane, ServedModel
from deployments.roles.grpc_front import GrpcFront, GrpcMethods
from deployments.roles.http import build_http_app
from deployments.roles.http_inference import Inference
from deployments.roles.listen import grpc_on_http_host, serve_http_host
from deployments.shadow.mirror import Mirror
from deployments.telemetry.metrics import IngressMetrics, MirrorMetrics, RequestMetrics
from deployments.telemetry.node_metrics import NodeMetrics
from deployments.telemetry.request_telemetry import TelemetryTarget
from deployments.telemetry.tracing import install_log_correlation, install_tracer_provider

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress(GrpcMethods):
    """HTTP through `__serve_build_asgi_app__`; Triton's gRPC RPCs through the methods of
    `GrpcMethods`, named as the RPCs (grpc_options in serve_config.yaml)."""

    def __init__(self, args: AppArgs, models: list[dict[str, Any]]) -> None:
        """`models`: per served model, `{name, version, validator, model, shadow}` (handles)."""
        install_log_correlation(logger)
        install_tracer_provider(roots=True)
        # Before Serve starts this replica's servers: its gRPC server where HTTP listens.
        grpc_on_http_host(serve_http_host())
        config = IngressConfig()
        served = {}
        for entry in models:
            kind = load_kind(args.model_dir, entry["name"], entry["version"])
            mirror = None
            if entry.get("shadow") is not None:
                mirror = Mirror(entry["shadow"], config, MirrorMetrics(entry["name"]))
            served[entry["name"]] = ServedModel(
                kind=kind,
                versions=[entry["version"]],
                model=entry["model"],
                validator=entry.get("validator"),
                mirror=mirror,
                max_rows=entry["max_rows"],
            )
        self.plane = DataPlane(served, IngressMetrics(list(served)))
        self.auth = BearerAuth(load_keys(args.auth_token_env, args.auth_token_file))
        self.node_metrics = NodeMetrics()
        self.args = args
        versions = {name: m.kind.metadata.version for name, m in self.plane.models.items()}
        self.telemetry = TelemetryTarget(
            RequestMetrics(), versions, self.plane.config.trace_sampling_ratio
        )
        self.grpc = GrpcFront(
            self.plane,
            Inference(self.plane, args.max_request_bytes),
            Door(self.auth, self.plane.limiter, self.plane.rate_limited),
            server_metadata(),
            args.auth_open_paths,
            self.telemetry,
        )

    def __serve_build_asgi_app__(self) -> Any:
        app = build_http_app(
            self.plane,
            self.auth,
            self.args.max_request_bytes,
            self.node_metrics.scrape,
            self.args.auth_open_paths,
        )
        app.state.telemetry = self.telemetry
        return app

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = IngressConfig.model_validate(user_config or {})
        self.plane.reconfigure(config)
        self.telemetry.trace_sampling_ratio = config.trace_sampling_ratio

    async def __del__(self) -> None:
        # Serve awaits this once the replica has drained its requests (a rollout, scaling
        # down): mirrors queued after their answers went out are sent rather than lost.
        await self.plane.drain_mirrors()
