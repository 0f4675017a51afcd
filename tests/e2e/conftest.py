"""The README's service, started once for the e2e modules that call it as it is shipped
(test_readme_serve.py, test_prometheus.py). test_own_model.py runs its own on another config
first (modules run in name order, and port 8000 holds one service at a time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.service import BASE_URL, Running, readme_service
from tests.otlp_receiver import OtlpReceiver

READY_TIMEOUT_S = 240


@pytest.fixture(scope="package")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="package")
def served(tmp_path_factory, otlp) -> Iterator[tuple[str, Running]]:
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with readme_service(log_path, READY_TIMEOUT_S, env) as running:
        print(f"\nserve run -> ready in {running.ready_s:.1f}s")
        yield BASE_URL, running
