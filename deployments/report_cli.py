"""What the report CLIs share: fetch one of the service's report endpoints and print it.

The token comes from --token-file, else the INFERENCE_AUTH_TOKEN environment variable (a token
on the command line would show in `ps`). Exit status: the report's own verdict, or
`EXIT_UNREACHABLE` when the service did not answer with a report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_UNREACHABLE = 4
TOKEN_ENV = "INFERENCE_AUTH_TOKEN"


def fetch(
    url: str, path: str, model: str | None, timeout_s: float, token: str | None = None
) -> dict[str, Any]:
    query = f"?{urllib.parse.urlencode({'model': model})}" if model else ""
    request = urllib.request.Request(f"{url.rstrip('/')}{path}{query}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)


def report_main(
    argv: list[str] | None,
    description: str,
    path: str,
    render: Callable[[dict[str, Any]], str],
    verdict: Callable[[dict[str, Any]], int],
) -> int:
    parser = argparse.ArgumentParser(description=description)
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
        report = fetch(args.url, path, args.model, args.timeout_s, token)
    except urllib.error.HTTPError as exc:
        print(
            f"{args.url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    except (urllib.error.URLError, OSError) as exc:
        print(f"{args.url}: cannot reach the service: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(report, indent=2) if args.json else render(report))
    return verdict(report)
