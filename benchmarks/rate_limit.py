"""Two clients, one over its rate limit: does the other notice?

The shipped config with auth on (two API keys from a key file, as a mounted Secret holds
them) and the per-client limit on. `polite` sends at a fixed rate well under its limit,
open loop (latency from the scheduled send); first alone, then while `greedy` floods with
wrk at 32 connections, far over its limit. Reported: polite's goodput and p50/p99 in both
phases (the ratio is the claim), greedy's 200s and 429s, whether every 429 carried a
Retry-After, and whether greedy, honouring that Retry-After once the flood stops, is
admitted again.

    python -m benchmarks rate_limit [--duration-s 15] [--polite-rps 50] [--limit-rps 100]
        [--greedy-nice 19]
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.harness import (
    OVERLOAD_LUA,
    LoadResult,
    LocalService,
    mixed_script,
    model_autoscaling,
    run_wrk,
    shipped_config,
    variant,
    write_report,
)
from benchmarks.openloop import run_open_loop
from deployments.training.fraud_data import generate

PREDICT = "/v1/models/fraud-risk:predict"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks rate_limit", description=__doc__)
    parser.add_argument("--duration-s", type=int, default=15)
    parser.add_argument("--polite-rps", type=float, default=50.0)
    parser.add_argument("--limit-rps", type=float, default=100.0)
    parser.add_argument("--greedy-connections", type=int, default=32)
    parser.add_argument(
        "--greedy-nice",
        type=int,
        default=0,
        help="run greedy's wrk at this niceness: on a shared machine, how much of the polite "
        "client's tail is the flood generator's own CPU rather than the server's",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    tokens = {"polite": secrets.token_hex(16), "greedy": secrets.token_hex(16)}
    work = Path(tempfile.mkdtemp(prefix="rate-limit-"))
    keys = work / "keys"
    keys.write_text("".join(f"{client}:{token}\n" for client, token in tokens.items()))
    keys.chmod(0o600)
    config = variant(
        shipped_config(),
        Ingress={
            "cache_mode": "off",
            "rate_limit": {
                "enabled": True,
                "requests_per_s": args.limit_rps,
                "burst": int(args.limit_rps),
            },
        },
    )
    config["applications"][0]["args"]["auth_token_file"] = str(keys)
    model_autoscaling(config).update(min_replicas=1, initial_replicas=1, max_replicas=1)
    greedy_lua = work / "greedy.lua"
    greedy_lua.write_text(
        f'headers["Authorization"] = "Bearer {tokens["greedy"]}"\n' + OVERLOAD_LUA.read_text()
    )
    script = mixed_script(extra=greedy_lua)
    records, _ = generate(4096, seed=7)  # unique bodies: no cache could answer a repeat
    bodies = [{"instances": [r]} for r in records]
    polite = {"authorization": f"Bearer {tokens['polite']}"}

    service = LocalService(config)
    try:
        url = service.url + PREDICT
        run_open_loop(url, bodies[:200], args.polite_rps, 3, headers=polite)  # warm-up
        alone = run_open_loop(url, bodies, args.polite_rps, args.duration_s, headers=polite)
        flood: list[LoadResult] = []
        flooder = threading.Thread(
            target=lambda: flood.append(
                run_wrk(
                    service.url,
                    args.greedy_connections,
                    args.duration_s + 4,
                    script=script,
                    niceness=args.greedy_nice,
                )
            )
        )
        flooder.start()
        time.sleep(2)  # let the flood reach its steady state before measuring against it
        beside = run_open_loop(url, bodies, args.polite_rps, args.duration_s, headers=polite)
        flooder.join()
        readmitted = honour_retry_after(service.url + PREDICT, tokens["greedy"], bodies[0])
    finally:
        service.close()

    greedy = flood[0]
    rows = [
        "| measure | polite alone | polite while greedy floods |",
        "| --- | --- | --- |",
        f"| offered | {args.polite_rps:.0f} /s | {args.polite_rps:.0f} /s |",
        f"| goodput | {alone.ok / alone.duration_s:.1f} /s | "
        f"{beside.ok / beside.duration_s:.1f} /s |",
        f"| statuses | {alone.status_counts} | {beside.status_counts} |",
        f"| p50 / p99 ms | {alone.p50_ms:.1f} / {alone.p99_ms:.1f} | "
        f"{beside.p50_ms:.1f} / {beside.p99_ms:.1f} |",
        "",
        "| greedy (wrk) | value |",
        "| --- | --- |",
        f"| connections | {args.greedy_connections} |",
        f"| niceness | {args.greedy_nice} |",
        f"| answers /s | {greedy.rps:.0f} |",
        f"| statuses | {greedy.statuses} |",
        f"| admitted (200) /s | {greedy.goodput_rps:.1f} (limit {args.limit_rps:.0f}) |",
        f"| readmitted after honouring Retry-After | {readmitted} |",
    ]
    ratio = (beside.ok / beside.duration_s) / max(alone.ok / alone.duration_s, 1e-9)
    table = (
        f"Per-client rate limit, two clients ({time.strftime('%Y-%m-%d %H:%M')})\n\n"
        + "\n".join(rows)
        + f"\n\npolite goodput ratio (flood / alone): {ratio:.2f}; p99 ratio: "
        f"{beside.p99_ms / max(alone.p99_ms, 1e-9):.2f}"
    )
    write_report(
        "rate_limit",
        {"alone": alone, "beside": beside, "greedy": greedy, "readmitted": readmitted},
        table,
        args.out,
    )


def honour_retry_after(url: str, token: str, body: dict) -> str:
    """Spend greedy's bucket (faster than it refills), then come back when the 429 said."""
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    data = json.dumps(body)

    def post(_: int) -> requests.Response:
        return requests.post(url, data=data, headers=headers, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        refused = [r for r in pool.map(post, range(600)) if r.status_code == 429]
    if not refused:
        return "never limited"
    wait_s = int(refused[-1].headers["retry-after"])
    time.sleep(wait_s)
    return f"{post(0).status_code} after waiting the {wait_s} s it said"


if __name__ == "__main__":
    main()
