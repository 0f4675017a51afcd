"""Where Serve's gRPC servers listen: where HTTP does, when that is loopback.

Ray Serve binds every gRPC server it starts for clients (each Ingress replica's, which
HAProxy forwards to, and each proxy's: the fallback proxy in HAProxy mode, the proxy itself
without HAProxy) on every interface (`[::]`), whatever `http_options.host` says, and has no
setting to change that. Both bind through `default_impl.add_grpc_address`, at the moment
they start their servers; `grpc_on_http_host` replaces it in this process so that they bind
127.0.0.1 instead. It runs:

- in every Ray worker that `inference-serve` starts, as Ray's `worker_process_setup_hook`
  (`grpc_on_loopback`), before any actor's constructor: the proxies included;
- in the Ingress's constructor, for a plain `serve run` (which gives its proxy no hook).

Beyond loopback the service needs an API key (`build_app` refuses otherwise), which every
RPC checks.
"""

from __future__ import annotations

from typing import Any

from deployments.admission.auth import is_loopback


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


def grpc_on_loopback() -> None:
    """Ray's `worker_process_setup_hook` for a Ray that serves on loopback (the launcher
    sets it only then)."""
    grpc_on_http_host("127.0.0.1")
