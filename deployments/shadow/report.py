"""Print the shadow report of a running service, and exit 0 on "promote", 3 on "hold".

    python -m deployments.shadow.report                       # http://127.0.0.1:8000
    python -m deployments.shadow.report --url http://host:8000 --model fraud-risk --json

The exit status lets a rollout pipeline gate a promotion on the candidate's record.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

EXIT_PROMOTE, EXIT_HOLD, EXIT_UNREACHABLE = 0, 3, 4


def fetch(url: str, model: str | None, timeout_s: float) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode({'model': model})}" if model else ""
    with urllib.request.urlopen(
        f"{url.rstrip('/')}/v1/shadow/report{query}", timeout=timeout_s
    ) as r:
        return json.load(r)


def render(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    def num(x: float | None, fmt: str = ".4f") -> str:
        return "n/a" if x is None else format(x, fmt)

    ci = report.get("label_agreement_ci95") or [None, None]
    delta = report["abs_score_delta"]
    lat = report["latency_ms"]
    lines = [
        f"shadow report  {report['model']}: primary v{report['primary_version']} "
        f"vs candidate v{report['candidate_version']}  (sample rate {report['sample_rate']})",
        f"  compared        {report['compared_requests']} requests, {report['compared_rows']} rows",
        f"  label agreement {pct(report['label_agreement'])}  95% CI [{pct(ci[0])}, {pct(ci[1])}]",
        f"  |score delta|   p50 {num(delta['p50'])}  p90 {num(delta['p90'])}  "
        f"p99 {num(delta['p99'])}  max {num(delta['max'])}",
        "  confusion       "
        + ", ".join(f"{c['primary']}->{c['candidate']}: {c['rows']}" for c in report["confusion"]),
        f"  candidate       errors {report['candidate_errors']}, timeouts "
        f"{report['candidate_timeouts']}, dropped {report['dropped'] or 0} "
        f"(failure rate {pct(report['candidate_failure_rate'])})",
        f"  latency ms      primary p50 {num(lat['primary']['p50'], '.1f')} p99 "
        f"{num(lat['primary']['p99'], '.1f')} | candidate p50 {num(lat['candidate']['p50'], '.1f')}"
        f" p99 {num(lat['candidate']['p99'], '.1f')} | p99 ratio {num(lat['p99_ratio'], '.2f')}",
        f"  recommendation  {report['recommendation'].upper()}",
    ]
    lines += [f"    - {reason}" for reason in report["reasons"]]
    if report.get("diff_log"):
        lines.append(f"  diff log        {report['diff_log']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Shadow-mode report of a running service.")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model name (default: the first served)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON report")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        report = fetch(args.url, args.model, args.timeout_s)
    except urllib.error.HTTPError as exc:
        print(
            f"{args.url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    except (urllib.error.URLError, OSError) as exc:
        print(f"{args.url}: cannot reach the service: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_PROMOTE if report["recommendation"] == "promote" else EXIT_HOLD


if __name__ == "__main__":
    sys.exit(main())
