"""Requests/s and p50/p99 of the shipped config at a few concurrencies, plus startup time.

python -m benchmarks orientation [--duration-s 15] [--connections 8 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.harness import LocalService, run_wrk, shipped_config, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks orientation", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    service = LocalService(shipped_config())
    print(f"deploy -> ready: {service.startup_s:.1f}s (Ray already started)")
    try:
        run_wrk(service.url, 8, 3)  # warm-up, discarded
        results = [run_wrk(service.url, c, args.duration_s) for c in args.connections]
    finally:
        service.close()
    rows = ["| connections | rps | p50 ms | p99 ms | errors |", "| --- | --- | --- | --- | --- |"]
    rows += [
        f"| {r.connections} | {r.rps:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
        f"{r.non_2xx + r.socket_errors} |"
        for r in results
    ]
    table = (
        f"Shipped serve_config.yaml, v1 predict, one instance per request "
        f"({time.strftime('%Y-%m-%d %H:%M')})\n\n" + "\n".join(rows)
    )
    write_report(
        "orientation", {"startup_s": service.startup_s, "results": results}, table, args.out
    )
