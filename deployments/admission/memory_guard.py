"""Memory-aware admission: refuse work before the machine, the container or the GPU runs out.

Checks, in order, whatever applies where the replica runs:
- the container's cgroup (v2 `memory.max`/`memory.current`, v1 `memory.limit_in_bytes`/
  `memory.usage_in_bytes`): in containers this is the limit that gets a process killed;
- system memory (psutil);
- GPU memory (`torch.cuda.mem_get_info`), through a probe the caller passes in, so this
  module never imports torch.

Under pressure it runs `gc.collect()` (at most once per `gc_interval_s`), looks again, and
only then refuses with `Overloaded` (503 + Retry-After) naming the resource and the numbers.
Default thresholds (0.90) sit below Ray's own OOM killer (it kills workers at 0.95 node
usage), so we say no before Ray has to kill anything. Readings are cached for `check_interval_s`.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psutil

from deployments.config import MemoryGuardConfig
from deployments.errors import Overloaded

P = ParamSpec("P")
R = TypeVar("R")
GpuProbe = Callable[[], tuple[int, int]]  # (free_bytes, total_bytes)
_UNLIMITED_V1 = 1 << 60


@dataclass(frozen=True)
class Reading:
    resource: str
    used_bytes: int
    limit_bytes: int

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.limit_bytes if self.limit_bytes else 0.0

    @property
    def free_bytes(self) -> int:
        return max(0, self.limit_bytes - self.used_bytes)


def cgroup_memory(
    proc_root: Path = Path("/proc"), cg_root: Path = Path("/sys/fs/cgroup")
) -> Reading | None:
    """This process's cgroup memory limit and usage, v2 or v1; None when unlimited."""
    try:
        lines = (proc_root / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            base = cg_root / rel
            limit = _read(base / "memory.max")
            used = _read(base / "memory.current")
            if limit is not None and used is not None:
                return Reading("cgroup", used, limit)
        elif "memory" in controllers.split(","):
            base = cg_root / "memory" / rel
            limit = _read(base / "memory.limit_in_bytes")
            used = _read(base / "memory.usage_in_bytes")
            if limit is not None and used is not None and limit < _UNLIMITED_V1:
                return Reading("cgroup", used, limit)
    return None


def _read(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def system_memory() -> Reading:
    vm = psutil.virtual_memory()
    return Reading("system", vm.total - vm.available, vm.total)


class MemoryGuard:
    def __init__(self, config: MemoryGuardConfig, gpu_probe: GpuProbe | None = None) -> None:
        self.config = config
        self.gpu_probe = gpu_probe
        self._cached: tuple[float, list[Reading]] | None = None
        self._collected_at = -float("inf")

    def readings(self, fresh: bool = False) -> list[Reading]:
        now = time.monotonic()
        if not fresh and self._cached and now - self._cached[0] < self.config.check_interval_s:
            return self._cached[1]
        readings = [system_memory()]
        cgroup = cgroup_memory()
        if cgroup is not None:
            readings.append(cgroup)
        if self.gpu_probe is not None:
            free, total = self.gpu_probe()
            readings.append(Reading("gpu", total - free, total))
        self._cached = (now, readings)
        return readings

    def headroom_bytes(self) -> int:
        """Bytes that can still be used before the tightest threshold is crossed."""
        return min(
            max(0, int(r.limit_bytes * self._limit(r)) - r.used_bytes) for r in self.readings()
        )

    def check(self) -> None:
        """Raise Overloaded if any resource is over its threshold after one gc.collect()."""
        if not self.config.enabled:
            return
        over = self._over(self.readings())
        if not over:
            return
        now = time.monotonic()
        if now - self._collected_at >= self.config.gc_interval_s:
            self._collected_at = now
            gc.collect()
            over = self._over(self.readings(fresh=True))
        if over:
            worst = over[0]
            raise Overloaded(
                f"memory pressure: {worst.resource} memory {worst.used_fraction:.1%} used "
                f"({worst.used_bytes >> 20} of {worst.limit_bytes >> 20} MiB), over the "
                f"{self._limit(worst):.1%} admission threshold",
                [
                    {
                        "reason": "memory_pressure",
                        "resource": r.resource,
                        "used_fraction": round(r.used_fraction, 4),
                        "threshold": self._limit(r),
                    }
                    for r in over
                ],
                self.config.retry_after_s,
            )

    def _limit(self, reading: Reading) -> float:
        cfg = self.config
        return {
            "system": cfg.max_system_used_fraction,
            "cgroup": cfg.max_cgroup_used_fraction,
            "gpu": 1.0 - cfg.min_gpu_free_fraction,
        }[reading.resource]

    def _over(self, readings: list[Reading]) -> list[Reading]:
        return [r for r in readings if r.used_fraction > self._limit(r)]


def memory_guarded(
    guard: Callable[[Any], MemoryGuard],
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async method: `guard(self)` is checked before the method runs."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            guard(args[0]).check()
            return await fn(*args, **kwargs)

        return wrapper

    return decorate
