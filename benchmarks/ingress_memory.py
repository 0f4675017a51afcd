"""10,000 distinct large text requests: does the ingress stay within its memory?

The shipped config with the result cache forced on (its worst case: every answer is kept
until the byte bound evicts it). Each request is a 64 KB body of 32 texts of 2,000
characters (the model's max_chars is 2,048), each mostly whitespace around a few words no
other request uses: large in bytes, while the forward passes stay short, because the memory
under test is the ingress's (bodies parsed, answers cached, requests in flight). An answer
is 32 x 384 float32, 48 KiB: 10,000 of them would be 470 MiB unbounded. The Ingress
replica's RSS is sampled every 0.25 s; the report compares its peak with the replica's
configured memory.

    python -m benchmarks ingress_memory [--requests 10000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from benchmarks.harness import LocalService, deployment, shipped_config, variant, write_report

TEXT_PATH = "/v1/models/minilm:predict"
TEXTS_PER_REQUEST = 32
TEXT_BYTES = 2000  # within the model's max_chars (2048)


def body(index: int) -> bytes:
    texts = []
    for j in range(TEXTS_PER_REQUEST):
        words = f"request {index} text {j} about fraud"
        texts.append({"text": words + " " * (TEXT_BYTES - len(words))})
    return json.dumps({"instances": texts}).encode()


def ingress_process() -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica:inference:Ingress" in cmdline:
            return proc
    raise RuntimeError("no Ingress replica process found")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks ingress_memory", description=__doc__
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    config = variant(shipped_config(), Ingress={"cache_mode": "on", "shadow_sample_rate": 0.1})
    memory_bytes = deployment(config, "Ingress")["ray_actor_options"]["memory"]
    cache_max_bytes = deployment(config, "Ingress")["user_config"].get("cache_max_bytes", 32 << 20)
    service = LocalService(config)
    statuses: dict[int, int] = {}
    samples: list[tuple[float, int]] = []
    try:
        ingress = ingress_process()
        url = service.url + TEXT_PATH
        first = requests.post(url, data=body(-1), timeout=60)
        if first.status_code != 200:
            raise RuntimeError(f"the text model answers {first.status_code}: {first.text[:300]}")
        baseline_rss = ingress.memory_info().rss
        stop = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not stop.wait(0.25):
                samples.append((time.monotonic() - start, ingress.memory_info().rss))

        sampler = threading.Thread(target=sample)
        sampler.start()
        local = threading.local()
        lock = threading.Lock()

        def send(index: int) -> None:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            status = session.post(
                url, data=body(index), headers={"content-type": "application/json"}, timeout=120
            ).status_code
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            for _ in pool.map(send, range(args.requests)):
                pass
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        final_rss = ingress.memory_info().rss
    finally:
        service.close()

    peak = max(rss for _, rss in samples) if samples else final_rss
    mib = 1 << 20
    sent_bytes = sum(len(body(i)) for i in itertools.islice(range(args.requests), 100)) * (
        args.requests / 100
    )
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| requests (distinct) | {args.requests} at {args.concurrency} concurrent |",
        f"| body per request | {len(body(0)) / 1024:.0f} KiB ({TEXTS_PER_REQUEST} texts) |",
        f"| bytes sent in all | {sent_bytes / mib:.0f} MiB |",
        f"| statuses | {statuses} |",
        f"| duration | {elapsed:.0f} s ({args.requests / elapsed:.0f} requests/s) |",
        f"| ingress RSS before / peak / after | {baseline_rss / mib:.0f} / {peak / mib:.0f} / "
        f"{final_rss / mib:.0f} MiB |",
        f"| ingress memory configured | {memory_bytes / mib:.0f} MiB |",
        f"| result cache bound | {cache_max_bytes / mib:.0f} MiB |",
        f"| peak within the configured memory | {peak < memory_bytes} |",
    ]
    table = f"Ingress memory under distinct large text requests ({time.strftime('%Y-%m-%d %H:%M')})"
    table += "\n\n" + "\n".join(rows)
    write_report(
        "ingress_memory",
        {"statuses": statuses, "samples": samples, "peak_rss": peak, "memory_bytes": memory_bytes},
        table,
        args.out,
    )


if __name__ == "__main__":
    main()
