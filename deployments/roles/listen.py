"""Where the Ingress listens: Serve's HTTP host, and the replica's own gRPC server held to it.

Ray Serve starts a gRPC server in each Ingress replica (HAProxy forwards gRPC to it) and
binds it on every interface (`[::]`) whatever `http_options.host` says, with no setting to
change that. Where the host is loopback, `grpc_on_http_host` has it bind 127.0.0.1 instead:
Ray binds through `default_impl.add_grpc_address`, called when the replica starts its
servers, after the Ingress's constructor. Beyond loopback the service needs an API key
(`build_app` refuses otherwise), and every RPC checks it.
"""

from __future__ import annotations

import logging
from typing import Any

from deployments.admission.auth import is_loopback

logger = logging.getLogger("ray.serve")


def serve_http_host() -> str:
    """Where Serve's HTTP front listens, as the controller has it (`serve deploy` builds the
    app in a task on the cluster, so the config file is not at hand)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not ray.is_initialized():
        return "127.0.0.1"  # built outside Ray (tests, `serve build`): nothing listens
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        host = ray.get(controller.get_http_config.remote()).host
    except ValueError:
        return "127.0.0.1"  # no Serve controller yet: nothing listens
    # Serve reads an unset host as its default, all interfaces.
    return host if host else "0.0.0.0"


def grpc_on_http_host(host: str) -> None:
    """In this process, Serve's gRPC servers bind `host`'s loopback rather than `[::]`."""
    if not is_loopback(host):
        return
    from ray.serve._private import default_impl

    original = default_impl.add_grpc_address
    if getattr(original, "held_to_loopback", False):
        return

    def add_grpc_address(server: Any, address: str) -> None:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        original(server, address)

    add_grpc_address.held_to_loopback = True  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address
