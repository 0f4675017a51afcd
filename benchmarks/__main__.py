"""Benchmarks. `python -m benchmarks <name> [options]`; `--help` on each.

orientation   requests/s and p50/p99 at 8 and 64 connections
shadow        primary throughput/p99: shadow off vs 10% vs 10% with a slow candidate
"""

from __future__ import annotations

import sys


def main() -> None:
    commands = {"orientation": "benchmarks.orientation", "shadow": "benchmarks.shadow"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        raise SystemExit(2)
    import importlib

    importlib.import_module(commands[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
