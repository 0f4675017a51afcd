"""CPU time per request, by process, over one load run: where a request's cost goes.

Processes are grouped by role (a Ray worker by its actor's title, e.g.
`ServeReplica:inference:Ingress`; Ray's own daemons by name; haproxy), so the report reads
"Ingress 0.4 ms, ModelReplica 0.1 ms, ..." rather than pids. The load generator is measured
too (as this process's finished children): on a small machine it competes with the server
for the same cores.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Callable
from typing import Any

import psutil

_ROLES = (
    re.compile(r"ray::ServeReplica:[^:]+:(\S+)"),
    re.compile(r"ray::(\w+)"),
    re.compile(r"/(gcs_server|raylet|haproxy)\b"),
)


def role(cmdline: list[str]) -> str | None:
    text = " ".join(cmdline)
    for pattern in _ROLES:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _snapshot() -> dict[int, tuple[str, psutil.Process, float]]:
    seen = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        name = role(proc.info["cmdline"] or [])
        if name is None:
            continue
        try:
            seen[proc.pid] = (name, proc, _cpu_s(proc))
        except psutil.Error:
            continue
    return seen


def cpu_per_request(run: Callable[[], Any], requests_of: Callable[[Any], int]) -> tuple[Any, dict]:
    """Run `run()` (a load run) and return its result with `{role: ms of CPU per request}`
    over the processes of interest (summed over processes of the same role), largest first;
    "total" is their sum."""
    before = _snapshot()
    children_before = _children_cpu_s()
    result = run()
    after = _snapshot()
    load_generator_s = _children_cpu_s() - children_before
    requests = max(1, requests_of(result))
    spent: dict[str, float] = {}
    for pid, (name, proc, cpu_after) in after.items():
        cpu_before = before.get(pid, (name, proc, 0.0))[2]
        spent[name] = spent.get(name, 0.0) + max(0.0, cpu_after - cpu_before)
    spent["load generator"] = load_generator_s
    per_request = {
        name: round(seconds * 1000 / requests, 4)
        for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1])
        if seconds > 0
    }
    per_request["total"] = round(sum(per_request.values()), 4)
    return result, per_request


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
