"""What drift scoring costs the serving path: the shipped config with drift scoring on and
off, side by side in one run, rounds interleaved (off, on, off, on, ...) so that a drifting
machine does not favour either; 64 connections, one instance per request, result cache off
(so that every request is validated, counted and predicted, whatever repeats).

"On" counts every validated row into the training reference's bins, every prediction into
the score's bins, writes the windows to Ray's key-value store and scores them every 10 s.
The z-score band counters of the dashboard run in both.

    python -m benchmarks drift_cost [--duration-s 20] [--rounds 2] [--connections 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.harness import (
    MODEL,
    LoadResult,
    LocalService,
    model_spec,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)


class _Discard:
    """A metric sink that drops what it is given: the window's cost is what is measured."""

    rows = numeric = category = missing = invalid = None

    def __init__(self) -> None:
        for name in ("rows", "numeric", "category", "missing", "invalid"):
            setattr(self, name, self)

    def inc(self, *args: object, **kwargs: object) -> None:
        pass


class _NoStore:
    def put(self, key: str, value: bytes) -> None: ...
    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {}

    def keys(self, prefix: str) -> list[str]:
        return []

    def delete(self, key: str) -> None: ...


def per_call_us(calls: int = 3000) -> dict[int, tuple[float, float]]:
    """The Validator's recording per call, in-process, without and with the drift window,
    by rows per call: {rows: (off_us, on_us)}."""
    from deployments.kinds.tabular import FEATURES
    from deployments.repository.store import load_kind
    from deployments.telemetry.drift import DriftRecorder
    from deployments.telemetry.drift_window import WindowWriter
    from deployments.training.fraud_data import generate

    kind = load_kind("models", MODEL, "1")
    reference = kind.drift_reference("models")
    out = {}
    for rows in (1, 8, 64):
        matrix = kind.decode_v1(generate(rows, 3)[0])[FEATURES]
        window = WindowWriter(_NoStore(), MODEL, "1", "bench")
        timings = []
        for recorder in (
            DriftRecorder(kind.metadata, _Discard()),
            DriftRecorder(kind.metadata, _Discard(), reference, window),
        ):
            started = time.perf_counter()
            for _ in range(calls):
                recorder.record(matrix)
            timings.append((time.perf_counter() - started) / calls * 1e6)
        out[rows] = (timings[0], timings[1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks drift_cost", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    base = variant(shipped_config(), Ingress={"cache_mode": "off"})
    variants = {"drift off": variant(base), "drift on": variant(base)}
    model_spec(variants["drift off"]).setdefault("drift", {})["enabled"] = False
    model_spec(variants["drift on"]).setdefault("drift", {})["enabled"] = True
    micro = per_call_us()
    results: dict[str, list[LoadResult]] = {name: [] for name in variants}
    service = LocalService(variants["drift off"])
    try:
        for _ in range(args.rounds):
            for name, config in variants.items():
                service.deploy(config)
                run_wrk(service.url, args.connections, 3)  # warm-up, discarded
                result = run_wrk(service.url, args.connections, args.duration_s)
                results[name].append(result)
                print(f"{name:10s} {result}")
    finally:
        service.close()

    def mean(name: str, field: str) -> float:
        return statistics.fmean(getattr(r, field) for r in results[name])

    rows = [
        "| variant | rps (each round) | mean rps | ratio vs off | mean p50 ms | mean p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    off_rps = mean("drift off", "rps")
    for name in variants:
        each = ", ".join(f"{r.rps:.0f}" for r in results[name])
        rows.append(
            f"| {name} | {each} | {mean(name, 'rps'):.1f} | {mean(name, 'rps') / off_rps:.3f} | "
            f"{mean(name, 'p50_ms'):.1f} | {mean(name, 'p99_ms'):.1f} |"
        )
    rows += [
        "",
        "| rows per Validator call | recording, drift off (us) | drift on (us) | added (us) |",
        "| --- | --- | --- | --- |",
    ]
    for n, (off_us, on_us) in micro.items():
        rows.append(f"| {n} | {off_us:.1f} | {on_us:.1f} | {on_us - off_us:.1f} |")
    table = (
        f"Drift scoring cost, {args.connections} connections, {args.rounds} rounds of "
        f"{args.duration_s}s each ({time.strftime('%Y-%m-%d %H:%M')})\n\n" + "\n".join(rows)
    )
    payload = {"connections": args.connections, "results": results, "per_call_us": micro}
    write_report("drift_cost", payload, table, args.out)


if __name__ == "__main__":
    main()
