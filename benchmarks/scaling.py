"""Autoscaling on live traffic: the ModelReplica count, offered load, throughput and latency
over time, as a timeline (JSON, markdown summary, PNG plot).

Idle, then `--connections` clients for `--load-s` (measured in consecutive 2-second wrk
windows, so throughput and latency are a series), then idle again while the replicas scale
back down. The result cache is off, so every request reaches the model.

Two numbers differ from serve_config.yaml by default, so the run shows scaling within about
two minutes on two cores: the scale-down delay (15 s, not 60) and target_ongoing_requests
(8, not 64: on two cores the ingress, not the model, saturates first, so at the shipped
target the model rightly never scales). `--shipped` keeps the shipped numbers.

    python -m benchmarks scaling [--connections 64] [--load-s 40] [--idle-s 40] [--shipped]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    MODEL,
    LocalService,
    model_autoscaling,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)
from benchmarks.plots import plot_timeline

# Each window is one wrk run: long enough that its p99 is not cut short by the window.
WINDOW_S = 5
REPLICA = f"ModelReplica-{MODEL}"


def replica_count() -> int:
    from ray import serve

    status = serve.status().applications["inference"].deployments[REPLICA]
    return status.replica_states.get("RUNNING", 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling", description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--load-s", type=int, default=40)
    parser.add_argument("--idle-s", type=int, default=40)
    parser.add_argument("--shipped", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    config = variant(shipped_config(), Ingress={"cache_mode": "off"})
    scaling = model_autoscaling(config)
    if not args.shipped:
        scaling["downscale_delay_s"] = 15
        scaling["target_ongoing_requests"] = 8
    autoscaling = dict(scaling)

    service = LocalService(config)
    replicas: list[tuple[float, int]] = []
    windows: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        while not stop.is_set():
            replicas.append((time.monotonic() - t0, replica_count()))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        time.sleep(5)
        load_start = time.monotonic() - t0
        while time.monotonic() - t0 - load_start < args.load_s:
            started = time.monotonic() - t0
            r = run_wrk(service.url, args.connections, WINDOW_S)
            windows.append(
                {
                    "t_s": started,
                    "window_s": WINDOW_S,
                    "connections": args.connections,
                    "rps": r.rps,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "errors": r.non_2xx + r.socket_errors,
                }
            )
        load_end = time.monotonic() - t0
        time.sleep(args.idle_s)
    finally:
        stop.set()
        watcher.join()
        service.close()

    up = next((t for t, n in replicas if t >= load_start and n >= 2), None)
    down = next((t for t, n in replicas if t >= load_end and n == 1), None)
    if up is not None and down is not None and down < up:
        down = None
    summary = {
        "autoscaling_config": autoscaling,
        "connections": args.connections,
        "load_start_s": load_start,
        "load_end_s": load_end,
        "second_replica_after_s": None if up is None else up - load_start,
        "back_to_one_after_s": None if down is None else down - load_end,
        "max_replicas_seen": max(n for _, n in replicas),
        "errors": sum(w["errors"] for w in windows),
    }
    png = args.out / f"scaling-{time.strftime('%Y%m%dT%H%M%S')}.png"
    args.out.mkdir(parents=True, exist_ok=True)
    plot_timeline(png, replicas, windows, load_start, load_end, summary, REPLICA)

    def fmt(v: float | None) -> str:
        return "never" if v is None else f"{v:.1f} s"

    table = "\n".join(
        [
            f"Autoscaling timeline, {args.connections} connections for {args.load_s} s "
            f"({time.strftime('%Y-%m-%d %H:%M')}); plot: {png.name}",
            "",
            "| measure | value |",
            "| --- | --- |",
            "| load start -> 2nd ModelReplica RUNNING | "
            f"{fmt(summary['second_replica_after_s'])} |",
            f"| load stop -> back to 1 replica | {fmt(summary['back_to_one_after_s'])} |",
            f"| upscale / downscale delay, target ongoing | {autoscaling['upscale_delay_s']} s / "
            f"{autoscaling['downscale_delay_s']} s, {autoscaling['target_ongoing_requests']} |",
            f"| failed requests | {summary['errors']} |",
        ]
    )
    write_report(
        "scaling",
        {"summary": summary, "replicas": replicas, "windows": windows},
        table,
        args.out,
    )


if __name__ == "__main__":
    main()
