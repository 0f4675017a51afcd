"""Batching at the caller: concurrent requests share one downstream call.

`CallerBatcher.submit(item)` waits for the answer to `item`; behind it, `flush(items)` is
called with many callers' items at once and must return one result per item, in order (a
result may be an exception object: that caller gets it raised, the others are unaffected).

Why not `@serve.batch` here: it forms the next batch while the previous one runs and parks
it behind its concurrency semaphore, so when a batch takes longer than the wait timeout
(two handle calls do) the queue turns into a chain of tiny batches, each request queued
behind many of them (docs/benchmarks.md). Here a batch is taken only when a flush slot is
free, so it holds everything that arrived while the slots were busy: batches grow with load
instead of the queue.

A request that finds no batch on its way leaves at once; while one is out, the next waits
up to `max_wait_s` for company.

Flushes run in a fresh context: they belong to no one request, so a caller that goes away
(client disconnect, deadline) cancels only its own wait, never the batch's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CallerBatcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        max_items: int,
        max_wait_s: float,
        max_concurrent: int = 2,
        on_batch: Callable[[int], None] | None = None,
        min_overlap: int = 1,
    ) -> None:
        self._flush = flush
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.max_concurrent = max_concurrent
        self.min_overlap = min_overlap
        self._on_batch = on_batch
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._running = 0
        self._collecting = False
        self._full = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_items:
            self._full.set()
        self._maybe_start()
        return await future

    def _may_overlap(self) -> bool:
        # A batch leaves beside others already on their way only with at least `min_overlap`
        # requests: fewer wait for a batch to come back rather than pay calls of their own.
        return len(self._pending) >= self.min_overlap

    def _maybe_start(self) -> None:
        # At most one flusher is gathering at a time; the others are sending.
        if (
            self._running < self.max_concurrent
            and not self._collecting
            and self._pending
            and (self._running == 0 or self._may_overlap())
        ):
            self._running += 1
            self._collecting = True
            asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())

    async def _run(self) -> None:
        owning = True  # this flusher is the one gathering (`_collecting`)
        gather = True  # the first batch may wait for company; later ones already waited
        try:
            while True:
                if gather:
                    await self._gather()
                batch = self._take()
                self._collecting = owning = False
                self._maybe_start()  # another flusher may gather while this batch is out
                if batch:
                    await self._send(batch)
                if not self._pending or self._collecting:
                    return
                if self._running > 1 and not self._may_overlap():
                    return  # another batch is out; what queued leaves when it is back
                # What queued while this batch was out has waited long enough: send it now.
                self._collecting = owning = True
                gather = False
        finally:
            if owning:
                self._collecting = False
            self._running -= 1
            self._maybe_start()

    async def _gather(self) -> None:
        # Waiting for company pays only while another batch is on its way; an idle pipeline
        # sends at once, so a lone request never waits out the window.
        if self._running <= 1 or len(self._pending) >= self.max_items or self.max_wait_s <= 0:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self.max_wait_s)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = []
        while self._pending and len(batch) < self.max_items:
            item, future = self._pending.popleft()
            if not future.done():  # a caller that gave up is not sent
                batch.append((item, future))
        return batch

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = await self._flush([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch flush returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
