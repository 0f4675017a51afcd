"""Helpers shared by the test tiers: paths, valid instances built from a JSON Schema, polling."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
MODEL = "fraud-risk"
T = TypeVar("T")


def instance_from_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A valid instance for a pydantic-emitted JSON Schema, built only from the schema."""
    instance: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if "enum" in prop:
            instance[name] = prop["enum"][0]
        elif prop.get("type") == "boolean":
            instance[name] = True
        elif prop.get("type") in ("number", "integer"):
            low = prop.get("minimum", 0)
            high = prop.get("maximum", low + 10)
            mid = (low + high) / 2
            instance[name] = int(mid) if prop["type"] == "integer" else float(mid)
        else:
            raise AssertionError(f"unexpected property {name}: {prop}")
    return instance


def sample_transactions(n: int, seed: int = 11) -> list[dict[str, Any]]:
    from deployments.training.fraud_data import generate

    records, _ = generate(n, seed)
    return records


def wait_until(probe: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last_error = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last_error}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
