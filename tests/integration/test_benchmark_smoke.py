"""The comparison benchmark's smoke mode runs end to end (seconds): baselines started and
stopped, wrk and the open-loop client driving real HTTP, reports and plots written. Numbers
live in the benchmark's reports, not here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow


def smoke(benchmark: str, out, *options: str) -> dict:
    """`python -m benchmarks <benchmark> --smoke <options>`: its JSON report."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", benchmark, "--smoke", *options, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (report,) = out.glob(f"{benchmark}-*.json")
    return json.loads(report.read_text())


def test_compare_smoke_writes_table_json_and_plot(service, tmp_path) -> None:
    out = tmp_path / "results"
    data = smoke("compare", out, "--ours-url", service.base_url)
    assert {"fastapi-1w", "ours"} <= set(data["closed_loop"])
    for rows in data["closed_loop"].values():
        assert rows[0]["requests"] > 0 and rows[0]["non_2xx"] == 0
    assert data["raw_rows_per_s"] > 0
    assert data["open_loop"][0]["ok"] == data["open_loop"][0]["sent"]
    assert list(out.glob("compare-*.md")) and list(out.glob("compare-throughput-*.png"))


def test_protocols_smoke_every_encoding_answers(service, tmp_path) -> None:
    """The encodings benchmark's bodies (built by tritonclient's encoders) are all answered,
    over HTTP and gRPC: a benchmark of errors would measure nothing."""
    options = ("--url", service.base_url, "--grpc-address", service.grpc_address)
    results = smoke("protocols", tmp_path / "results", *options)["results"]
    assert set(results) == {
        "v1 json",
        "v2 json",
        "v2 binary",
        "v2 grpc",
        "minilm v2 json",
        "minilm v2 binary",
        "minilm v2 grpc",
    }
    for rounds in results.values():
        assert rounds[0]["requests"] > 0
        assert rounds[0]["non_2xx"] == 0 and rounds[0]["socket_errors"] == 0
