"""One replica's running totals in Ray's cluster key-value store, summed over replicas.

Each replica keeps counts that add up (counters, fixed-edge histograms) and writes them under
its own key (`<prefix>/<replica id>`). A reader merges every key under the prefix, so a
replica that restarts, or a second one added by scaling, changes nothing in the totals.

Writes are rate-limited to one per `flush_s`; a change that falls inside that interval is
written when it ends (a timer on the replica's loop), and a replica that stops calls
`flush(force=True)`, so no count is left only in a replica's memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Generic, Protocol, TypeVar

from deployments.telemetry.cluster_kv import KeyValueStore


class Summable(Protocol):
    def to_json(self) -> bytes: ...
    def merged(self, other: Summable, /) -> Summable: ...
    @classmethod
    def from_json(cls, blob: bytes, /) -> Summable: ...


T = TypeVar("T", bound=Summable)


class Ledger(Generic[T]):
    """This replica's `counts`, flushed to the cluster's KV store at most every `flush_s`."""

    def __init__(self, store: KeyValueStore, key_prefix: str, replica_id: str, empty: T) -> None:
        """`empty`: zero counts; its class decodes what is stored (`from_json`)."""
        self.store = store
        self.prefix = key_prefix
        self.key = f"{key_prefix}/{replica_id}"
        self._decode = type(empty)
        self._empty = empty.to_json()
        self.counts: T = empty
        self.flush_s = 1.0
        self._flushed_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        stored = store.get_many([self.key]).get(self.key)
        if stored is not None:  # the same replica id restarting: carry on from its totals
            self.counts = self._decode.from_json(stored)

    def flush(self, force: bool = False) -> None:
        """Write the counts now if `force` or `flush_s` has passed since the last write;
        otherwise (on a running loop) when it has."""
        now = time.monotonic()
        if force or now - self._flushed_at >= self.flush_s:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.store.put(self.key, self.counts.to_json())
            self._flushed_at = now
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (offline use): the next flush writes it
                return
            delay_s = self._flushed_at + self.flush_s - now
            self._timer = loop.call_later(delay_s, self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._timer = None
        self.flush(force=True)

    def totals(self) -> T:
        """Every replica's counts under the prefix, this one's current."""
        self.flush(force=True)
        total = self._decode.from_json(self._empty)
        # Every replica's counts in one round trip to the store.
        for blob in self.store.get_many(self.store.keys(self.prefix + "/")).values():
            total = total.merged(self._decode.from_json(blob))
        return total
