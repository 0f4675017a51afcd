"""Intra-op CPU threads for the thread that actually runs the forward pass.

torch's CPU build parallelises with OpenMP, and OpenMP's thread count is a per-thread
setting. A replica's constructor runs on one thread and its batches on another (the actor's
event loop), so `torch.set_num_threads(n)` in `__init__` never reaches the forward pass: that
thread keeps the `OMP_NUM_THREADS` Ray gave the worker (the actor's `num_cpus`, at least 1),
while `torch.get_num_threads()` there still reports n (a 2-thread setting made in `__init__`
ran batches on one core: docs/benchmarks.md).

`ThreadCount(n).apply()` is called right before each forward pass; it sets the count once
per thread (a thread-local flag), so it costs nothing after the first batch.
"""

from __future__ import annotations

import threading


class ThreadCount:
    def __init__(self, threads: int) -> None:
        """`threads` = 0 leaves every thread as it is."""
        self.threads = threads
        self._local = threading.local()

    def apply(self) -> None:
        if not self.threads or getattr(self._local, "applied", 0) == self.threads:
            return
        import torch

        torch.set_num_threads(self.threads)
        self._local.applied = self.threads
