"""ThreadCount reaches the thread that runs the forward pass (OpenMP counts are per thread).

Runs in a child process with OMP_NUM_THREADS=1, as Ray starts a worker whose actor has a
fractional num_cpus: a matmul loop on a second thread uses one core unless the count is
applied on that thread. Measured as CPU seconds per wall second of the loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch
    from deployments.kinds.torch_threads import ThreadCount

    threads = ThreadCount(2)
    threads.apply()  # the constructor's thread, as in a replica's __init__
    a, w = torch.randn(256, 1024), torch.randn(1024, 1024)
    result = {}

    def loop(name, apply):
        if apply:
            threads.apply()
        for _ in range(20):
            a @ w  # warm the pool
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(300):
            a @ w
        result[name] = (time.process_time() - cpu) / (time.perf_counter() - wall)

    for name, apply in (("constructor_only", False), ("applied", True)):
        t = threading.Thread(target=loop, args=(name, apply))
        t.start()
        t.join()
    print(json.dumps(result))
    """
)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to see two threads")
def test_thread_count_applies_on_the_forward_thread() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    cores = json.loads(out.stdout.strip().splitlines()[-1])
    # Without apply() on the loop's own thread it runs on one core; with it, on two.
    assert cores["constructor_only"] < 1.2, cores
    assert cores["applied"] > 1.4, cores
