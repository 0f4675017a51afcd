"""Candidates that misbehave on purpose, to rehearse shadow-mode isolation.

Each builder is the production graph with the ShadowReplica's candidate inference replaced
by a fault: it raises, it hangs, or it is ten times slower. Point `import_path` at one of
them (e.g. `deployments.shadow.chaos:build_slow`) in a staging copy of serve_config.yaml and
the primary must answer exactly as before. The tests and the shadow benchmark do this.
No `from __future__ import annotations`: Serve reads the builders' `AppArgs` annotation.
"""

import asyncio
from typing import Any

from ray.serve import Application

from deployments.app import bind_graph
from deployments.config import AppArgs
from deployments.roles.shadow import ShadowReplica


class _Raising(ShadowReplica.func_or_class):  # type: ignore[misc,name-defined]
    ledger_scope = "~chaos-raising"

    async def infer_many(self, batch: Any, traceparents: Any = None) -> Any:
        raise RuntimeError("candidate blew up")


class _Hanging(ShadowReplica.func_or_class):  # type: ignore[misc,name-defined]
    ledger_scope = "~chaos-hanging"

    async def infer_many(self, batch: Any, traceparents: Any = None) -> Any:
        await asyncio.Event().wait()  # never set
        raise AssertionError("unreachable")


class _TenTimesSlower(ShadowReplica.func_or_class):  # type: ignore[misc,name-defined]
    ledger_scope = "~chaos-slow"

    async def infer_many(self, batch: Any, traceparents: Any = None) -> Any:
        started = asyncio.get_running_loop().time()
        answer = await super().infer_many(batch, traceparents)
        await asyncio.sleep(9 * max(asyncio.get_running_loop().time() - started, 0.02))
        answer.infer_ms *= 10
        return answer


def build_raising(args: AppArgs) -> Application:
    return bind_graph(args, ShadowReplica.options(func_or_class=_Raising))


def build_hanging(args: AppArgs) -> Application:
    return bind_graph(args, ShadowReplica.options(func_or_class=_Hanging))


def build_slow(args: AppArgs) -> Application:
    return bind_graph(args, ShadowReplica.options(func_or_class=_TenTimesSlower))
