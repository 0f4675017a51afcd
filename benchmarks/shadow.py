"""Primary throughput and p99 with the shadow off, at 10%, and at 10% with a 10x slower
candidate, measured side by side in one run (64 connections, one instance per request).

    python -m benchmarks shadow [--duration-s 20] [--connections 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.harness import LocalService, run_wrk, shipped_config, variant, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shadow", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    base = shipped_config()
    variants = {
        "shadow off": variant(base, Ingress={"shadow_sample_rate": 0.0}),
        "shadow 10%": variant(base, Ingress={"shadow_sample_rate": 0.1}),
        "shadow 10%, candidate 10x slower": variant(
            base,
            import_path="deployments.shadow.chaos:build_slow",
            Ingress={"shadow_sample_rate": 0.1},
        ),
    }
    service = LocalService(variants["shadow off"])
    results = {}
    try:
        for name, config in variants.items():
            service.deploy(config)
            run_wrk(service.url, args.connections, 3)  # warm-up, discarded
            results[name] = run_wrk(service.url, args.connections, args.duration_s)
            print(f"{name:36s} {results[name]}")
    finally:
        service.close()

    off = results["shadow off"]
    rows = [
        "| variant | rps | ratio vs off | p50 ms | p99 ms | p99 ratio | non-2xx |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r.rps:.1f} | {r.rps / off.rps:.2f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.p99_ms / off.p99_ms:.2f} | {r.non_2xx + r.socket_errors} |"
        )
    table = (
        f"Shadow overhead, {args.connections} connections, {args.duration_s}s each "
        f"({time.strftime('%Y-%m-%d %H:%M')})\n\n" + "\n".join(rows)
    )
    write_report("shadow", {"connections": args.connections, "results": results}, table, args.out)


if __name__ == "__main__":
    main()
