"""The ingress's request telemetry middleware: statuses as clients saw them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from deployments.telemetry.request_telemetry import RequestTelemetry, TelemetryTarget


class Answers:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def answered(self, *row) -> None:
        self.rows.append(row)


def scope_for(app_state: TelemetryTarget) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "headers": [],
        "path_params": {"name": "fraud-risk"},
        "app": SimpleNamespace(state=SimpleNamespace(telemetry=app_state)),
    }


def run(app, target: TelemetryTarget) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(RequestTelemetry(app)(scope_for(target), receive, send))
    return sent


def test_a_client_that_hangs_up_is_counted_as_499_not_as_a_server_error() -> None:
    answers = Answers()

    async def hung_up(scope, receive, send):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run(hung_up, TelemetryTarget(answers, {"fraud-risk": "1"}))
    ((model, version, _, status, _),) = answers.rows
    assert (model, version, status) == ("fraud-risk", "1", 499)


def test_the_status_sent_is_the_status_counted() -> None:
    answers = Answers()

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent = run(ok, TelemetryTarget(answers, {"fraud-risk": "1"}))
    assert sent[0]["status"] == 503
    assert answers.rows[0][3] == 503
