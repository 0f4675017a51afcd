"""Print the drift scores of a running service; exit 0 when nothing drifted, 3 when
something did, 4 when there is no report (the token as in deployments/report_cli.py).

    python -m deployments.telemetry.drift_report                    # http://127.0.0.1:8000
    python -m deployments.telemetry.drift_report --model fraud-risk --json

Scores are the population stability index of the live window (every Validator replica's
rows, merged) against the training reference packaged with the model.
"""

from __future__ import annotations

import sys
from typing import Any

from deployments.report_cli import report_main

EXIT_STABLE, EXIT_DRIFTED = 0, 3
TOP = 5


def render(report: dict[str, Any]) -> str:
    def num(x: float | None) -> str:
        return "  n/a " if x is None else f"{x:6.3f}"

    lines = [
        f"drift  {report['model']} v{report['version']}: {report['rows']} rows in the last "
        f"{report['window_s']} s (scored from {report['min_rows']}), PSI threshold "
        f"{report['threshold']}",
    ]
    if not report["enough_rows"]:
        lines.append("  too few rows in the window to score yet")
    features = report["features"]
    for entry in features[:TOP]:
        flag = "  DRIFTED" if entry["drifted"] else ""
        lines.append(f"  {entry['feature']:<28} PSI {num(entry['psi'])}{flag}")
    if len(features) > TOP:
        lines.append(f"  ... {len(features) - TOP} more below")
    prediction = report["prediction"]
    flag = "  DRIFTED" if prediction["drifted"] else ""
    lines.append(f"  {'(prediction)':<28} PSI {num(prediction['psi'])}{flag}")
    return "\n".join(lines)


def drifted(report: dict[str, Any]) -> bool:
    return report["prediction"]["drifted"] or any(f["drifted"] for f in report["features"])


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "Drift scores of a running service, most drifted features first.",
        "/v1/drift/report",
        render,
        lambda report: EXIT_DRIFTED if drifted(report) else EXIT_STABLE,
    )


if __name__ == "__main__":
    sys.exit(main())
