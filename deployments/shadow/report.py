"""Print the shadow report of a running service, and exit 0 on "promote", 3 on "hold".

    python -m deployments.shadow.report                        # http://127.0.0.1:8000
    python -m deployments.shadow.report --url http://host:8000 --model minilm --json
    python -m deployments.shadow.report --token-file /var/run/secrets/inference/token

One report schema for every kind (deployments/shadow/compare.py); the exit status lets a
rollout pipeline gate a promotion on the candidate's record (4: no report; the token as in
deployments/report_cli.py).
"""

from __future__ import annotations

import sys
from typing import Any

from deployments.report_cli import EXIT_UNREACHABLE, report_main

EXIT_PROMOTE, EXIT_HOLD = 0, 3
__all__ = ["EXIT_HOLD", "EXIT_PROMOTE", "EXIT_UNREACHABLE", "main", "render"]


def render(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def num(x: float | None, fmt: str = ".4f") -> str:
        return "n/a" if x is None else format(x, fmt)

    ci = report.get("agreement_ci95") or [None, None]
    quantiles = report["metric_quantiles"]
    lat = report["latency_ms"]
    metric = report["metric"]
    bound = "<=" if metric != "cosine" else ">="
    lines = [
        f"shadow report  {report['model']} ({report['kind']}): primary "
        f"v{report['primary_version']} vs candidate v{report['candidate_version']}  "
        f"(sample rate {report.get('sample_rate', 'n/a')})",
        f"  compared        {report['compared_requests']} requests, {report['compared_rows']} rows",
        f"  agreement       {pct(report['agreement'])} by {report['agreement_rule']}  "
        f"95% CI [{pct(ci[0])}, {pct(ci[1])}]",
        f"  {metric:<15} " + "  ".join(f"{q} {bound} {num(v)}" for q, v in quantiles.items()),
    ]
    if report["confusion"]:
        lines.append(
            "  confusion       "
            + ", ".join(
                f"{c['primary']}->{c['candidate']}: {c['rows']}" for c in report["confusion"]
            )
        )
    lines += [
        f"  candidate       errors {report['candidate_errors']}, timeouts "
        f"{report['candidate_timeouts']}, dropped {sum(report['dropped'].values())} "
        f"(failure rate {pct(report['candidate_failure_rate'])})",
        f"  latency ms      primary p50 <= {num(lat['primary']['p50'], '.0f')} p99 <= "
        f"{num(lat['primary']['p99'], '.0f')} | candidate p50 <= "
        f"{num(lat['candidate']['p50'], '.0f')} p99 <= {num(lat['candidate']['p99'], '.0f')}"
        f" | p99 ratio {num(lat['p99_ratio'], '.2f')}",
        f"  recommendation  {report['recommendation'].upper()}",
    ]
    lines += [f"    - {reason}" for reason in report["reasons"]]
    if report.get("diff_log"):
        lines.append(f"  diff log        {report['diff_log']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return report_main(
        argv,
        "Shadow-mode report of a running service.",
        "/v1/shadow/report",
        render,
        lambda report: EXIT_PROMOTE if report["recommendation"] == "promote" else EXIT_HOLD,
    )


if __name__ == "__main__":
    sys.exit(main())
