"""Benchmarks. `python -m benchmarks <name> [options]`; `--help` on each. Needs wrk
(`benchmarks/install-wrk.sh`). Results: benchmarks/results/<name>-<time>.{json,md}.

compare       ours vs FastAPI (1, 2 workers), naive Serve and the raw model; --quick, --smoke
orientation   requests/s and p50/p99 at 8 and 64 connections, deploy-to-ready time
shadow        primary throughput/p99: shadow off vs 10% vs 10% with a 10x slower candidate
overload      goodput at 256 connections vs the low-concurrency peak; rejection latency
scaling       autoscaling timeline on live load: replicas, offered load, rps, latency (PNG)
text          the text model: served items/s vs its raw forward pass and a FastAPI baseline
rate_limit    two clients, one over its per-client limit: the other's goodput and p99
ingress_memory  10,000 distinct large text requests: the ingress's RSS against its memory
ingress_cpu   the ingress's own Python per request, in-process, beside the empty graph's
drift_cost    throughput and p99 with drift scoring on vs off
protocols     v1 JSON vs v2 JSON vs v2 binary tensors (fraud-risk, MiniLM): rps and p99
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "compare": "benchmarks.compare",
    "orientation": "benchmarks.orientation",
    "shadow": "benchmarks.shadow",
    "overload": "benchmarks.overload",
    "scaling": "benchmarks.scaling",
    "text": "benchmarks.text",
    "rate_limit": "benchmarks.rate_limit",
    "ingress_memory": "benchmarks.ingress_memory",
    "ingress_cpu": "benchmarks.ingress_cpu",
    "drift_cost": "benchmarks.drift_cost",
    "protocols": "benchmarks.protocols",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        raise SystemExit(2)
    importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
