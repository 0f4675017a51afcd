"""Property-based requests generated from the service's own /openapi.json (schemathesis):
whatever a client sends, the answer is a JSON 4xx or a 200, never a 5xx other than a 503
carrying Retry-After, and no ERROR in any serve actor's log. One hypothesis run per
documented operation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 30


def test_no_server_errors_for_any_documented_operation(service, error_lines) -> None:
    schema = schemathesis.openapi.from_url(service.url("/openapi.json"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, "the whole contract is documented"
    failures: list[str] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case) -> None:
            response = case.call(base_url=service.base_url, timeout=30)
            where = f"{case.method} {case.formatted_path}"
            headers = {k.lower(): v[0] for k, v in response.headers.items()}
            if response.status_code == 503:
                assert "retry-after" in headers, where
            else:
                assert response.status_code < 500, (
                    f"{where} -> {response.status_code}: {response.text[:300]}"
                )
            assert headers.get("content-type", "").startswith("application/json"), where

        try:
            exercise()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)
    logged = error_lines.since()
    assert not logged, "a client's request logged an ERROR:\n" + "\n".join(logged[:5])
