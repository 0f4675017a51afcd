"""`python -m benchmarks ingress_cpu` on a few requests: both ingresses answer every request,
and the report says what each cost."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import ingress_cpu


def test_both_ingresses_answer_every_request_and_the_report_is_written(tmp_path: Path) -> None:
    ingress_cpu.main(["--requests", "300", "--concurrency", "8", "--out", str(tmp_path)])
    (report,) = tmp_path.glob("ingress_cpu-*.json")
    results = json.loads(report.read_text())
    assert set(results) == {"ours", "serve-hops ingress"}
    for result in results.values():
        assert result["statuses"] == {"200": 300}
        assert result["cpu_us_per_request"] > 0
    assert (tmp_path / report.name.replace(".json", ".md")).read_text().startswith("The ingress")
