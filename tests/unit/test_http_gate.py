"""The gate in front of every route: auth denies by default, then each client's own rate
limit. Over httpx's ASGI transport, the real app and the real fraud-risk model behind
in-process handles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from deployments.admission.door import client_address
from deployments.config import IngressConfig
from tests.support import MODELS, sample_transactions
from tests.unit.graph_fakes import RecordingMetrics, http_app, served_model

KEYS = {"aaaa": "team-a", "bbbb": "team-b"}
PREDICT = "/v1/models/fraud-risk:predict"


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"fraud-risk": served_model(MODELS, "fraud-risk", "1")}


def run(
    models: dict[str, Any],
    scenario: Callable[[httpx.AsyncClient, Any], Any],
    config: IngressConfig | None = None,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    **kw: Any,
) -> Any:
    app, plane = http_app(models, **kw)
    if config is not None:
        plane.reconfigure(config)

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await scenario(http, plane)

    return asyncio.run(go())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def limited(requests_per_s: float, burst: int, **extra: Any) -> IngressConfig:
    return IngressConfig(
        cache_mode="off",
        rate_limit={"enabled": True, "requests_per_s": requests_per_s, "burst": burst, **extra},
    )


def test_every_path_but_the_health_probes_needs_a_key(models: dict[str, Any]) -> None:
    closed = [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fraud-risk"),
        ("POST", PREDICT),
        ("GET", PREDICT),
        ("POST", "/v2/models/fraud-risk/infer"),
        ("GET", "/v2/models/fraud-risk"),
        ("GET", "/v2/models/fraud-risk/ready"),
        ("GET", "/v2"),
        ("GET", "/v1/shadow/report"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
    ]

    async def scenario(http: httpx.AsyncClient, _plane: Any) -> None:
        for method, path in closed:
            answer = await http.request(method, path)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.json()["code"] == "unauthorized"
            wrong = await http.request(method, path, headers=bearer("nope"))
            assert wrong.status_code == 401, (method, path)
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/v1/models", headers=bearer("bbbb"))).status_code == 200
        answer = await http.post(
            PREDICT, json={"instances": sample_transactions(1)}, headers=bearer("aaaa")
        )
        assert answer.status_code == 200, answer.text

    run(models, scenario, keys=KEYS)


def test_the_client_over_its_rate_gets_429_and_the_other_is_untouched(
    models: dict[str, Any],
) -> None:
    metrics = RecordingMetrics()
    body = {"instances": sample_transactions(1)}

    async def scenario(http: httpx.AsyncClient, _plane: Any) -> None:
        statuses = [
            (await http.post(PREDICT, json=body, headers=bearer("aaaa"))).status_code
            for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        refused = await http.post(PREDICT, json=body, headers=bearer("aaaa"))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()
        assert error["code"] == "rate_limited" and "team-a" in error["error"]
        assert "aaaa" not in refused.text, "the key never appears in an answer"
        others = [
            (await http.post(PREDICT, json=body, headers=bearer("bbbb"))).status_code
            for _ in range(3)
        ]
        assert others == [200, 200, 200]

    run(models, scenario, config=limited(0.01, 3), keys=KEYS, metrics=metrics)
    classes = [tags for name, tags in metrics.seen if name == "rate_limited"]
    assert classes and all(tags == {"client_class": "default"} for tags in classes)


def test_limits_change_at_runtime_and_an_override_names_its_class(models: dict[str, Any]) -> None:
    metrics = RecordingMetrics()
    generous = {"team-a": {"requests_per_s": 1000, "burst": 50}}
    strict = {"team-a": {"requests_per_s": 0.01, "burst": 2}}

    async def scenario(http: httpx.AsyncClient, plane: Any) -> None:
        async def statuses(key: str, n: int) -> list[int]:
            return [
                (await http.get("/v1/models", headers=bearer(key))).status_code for _ in range(n)
            ]

        assert await statuses("aaaa", 20) == [200] * 20, "team-a's own, larger burst"
        assert await statuses("bbbb", 2) == [200, 429], "the default for everyone else"
        # Off, with the same limits kept for when it is back on.
        off = {"enabled": False, "requests_per_s": 0.01, "burst": 1, "clients": generous}
        plane.reconfigure(IngressConfig(rate_limit=off))
        assert await statuses("bbbb", 5) == [200] * 5
        # A change keeps each bucket's level: team-a still holds most of its 50.
        plane.reconfigure(limited(0.01, 1, clients=strict))
        assert await statuses("aaaa", 3) == [200, 200, 429]
        assert await statuses("bbbb", 1) == [429], "its debt was not forgiven"

    run(models, scenario, config=limited(0.01, 1, clients=generous), keys=KEYS, metrics=metrics)
    classes = [tags["client_class"] for name, tags in metrics.seen if name == "rate_limited"]
    assert classes == ["default", "override", "default"]


def test_without_auth_the_limit_is_per_client_address(models: dict[str, Any]) -> None:
    async def scenario(http: httpx.AsyncClient, _plane: Any) -> list[int]:
        return [(await http.get("/v1/models")).status_code for _ in range(3)]

    config = limited(0.01, 2)
    assert run(models, scenario, config=config, client=("10.0.0.7", 5000)) == [200, 200, 429]


def test_a_proxy_on_loopback_names_the_client_and_anyone_else_cannot() -> None:
    via_proxy = "127.0.0.1"
    assert client_address(via_proxy, b"203.0.113.9, 198.51.100.4") == "198.51.100.4"
    assert client_address(via_proxy, None) == "127.0.0.1"
    direct = "198.51.100.4"
    assert client_address(direct, b"127.0.0.1") == "198.51.100.4", "a claim is not trusted"


def test_open_paths_are_matched_as_routing_sees_them() -> None:
    from deployments.roles.http_gate import route_path

    assert route_path({"path": "/api/v2/health/live", "root_path": "/api"}) == "/v2/health/live"
    assert route_path({"path": "/v2/health/live", "root_path": ""}) == "/v2/health/live"


def test_guessing_keys_costs_the_guesser_its_bucket(models: dict[str, Any]) -> None:
    async def scenario(http: httpx.AsyncClient, _plane: Any) -> list[int]:
        return [
            (await http.get("/v1/models", headers=bearer("guess"))).status_code for _ in range(4)
        ]

    statuses = run(models, scenario, config=limited(0.01, 2), keys=KEYS, client=("10.0.0.9", 1))
    assert statuses == [401, 401, 429, 429]


def test_a_refusal_at_the_gate_is_counted_by_its_status(models: dict[str, Any]) -> None:
    from deployments.telemetry.request_telemetry import TelemetryTarget

    answered: list[int] = []

    class Recorder:
        def answered(self, model, version, endpoint, status, elapsed_ms) -> None:  # noqa: ANN001
            answered.append(status)

    async def scenario(http: httpx.AsyncClient, _plane: Any) -> None:
        await http.get("/v1/models")

    app, plane = http_app(models, keys=KEYS)
    app.state.telemetry = TelemetryTarget(Recorder(), {"fraud-risk": "1"})

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await scenario(http, plane)

    asyncio.run(go())
    assert answered == [401]


def test_a_websocket_without_a_key_is_closed() -> None:
    from deployments.admission.auth import BearerAuth
    from deployments.admission.rate_limit import RateLimitConfig, RateLimiter
    from deployments.roles.http import error_parts
    from deployments.roles.http_gate import Gate

    reached: list[str] = []

    async def inner(scope, receive, send) -> None:  # noqa: ANN001
        reached.append(scope["type"])

    sent: list[dict] = []

    async def send(message) -> None:  # noqa: ANN001
        sent.append(message)

    gate = Gate(inner, BearerAuth(KEYS), RateLimiter(RateLimitConfig()), error_parts)
    scope = {"type": "websocket", "path": "/ws", "root_path": "", "headers": []}
    asyncio.run(gate(scope, None, send))
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]
    asyncio.run(gate({"type": "lifespan"}, None, send))
    assert reached == ["lifespan"]
