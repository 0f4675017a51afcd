"""Print the shadow report of a running service, and exit 0 on "promote", 3 on "hold".

    python -m deployments.shadow.report                        # http://127.0.0.1:8000
    python -m deployments.shadow.report --url http://host:8000 --model minilm --json
    python -m deployments.shadow.report --token-file /var/run/secrets/inference/token

One report schema for every kind (deployments/shadow/compare.py); the exit status lets a
rollout pipeline gate a promotion on the candidate's record. The token comes from
--token-file, else the INFERENCE_AUTH_TOKEN environment variable (a token on the command
line would show in `ps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

EXIT_PROMOTE, EXIT_HOLD, EXIT_UNREACHABLE = 0, 3, 4
TOKEN_ENV = "INFERENCE_AUTH_TOKEN"


def fetch(
    url: str, model: str | None, timeout_s: float, token: str | None = None
) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode({'model': model})}" if model else ""
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/shadow/report{query}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)


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
    parser = argparse.ArgumentParser(description="Shadow-mode report of a running service.")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="model name (default: the first served)")
    parser.add_argument(
        "--token-file", type=Path, default=None, help=f"bearer token file (else ${TOKEN_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON report")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get(TOKEN_ENV)
    try:
        report = fetch(args.url, args.model, args.timeout_s, token)
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
