"""Batching at the caller: real asyncio, a downstream that takes real time."""

from __future__ import annotations

import asyncio

import pytest

from deployments.admission.caller_batch import CallerBatcher


class Downstream:
    """A stand-in for the two handle calls: each flush takes `latency_s`."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(self.latency_s)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def run(coro):
    return asyncio.run(coro)


def test_each_caller_gets_its_own_answer_and_one_bad_item_fails_only_itself() -> None:
    async def main():
        down = Downstream()
        batcher = CallerBatcher(down, max_items=64, max_wait_s=0.01)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in [1, 2, -3, 4]), return_exceptions=True
        )
        return down, results

    down, results = run(main())
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError) and "bad -3" in str(results[2])
    assert down.batches == [[1, 2, -3, 4]]  # one call, not four


def test_batches_grow_with_load_instead_of_the_queue() -> None:
    """While the slots are busy, arrivals accumulate and leave together: 200 callers arriving
    over ~100 ms against a 40 ms downstream take a handful of calls, not 200."""

    async def main():
        down = Downstream(latency_s=0.04)
        batcher = CallerBatcher(down, max_items=64, max_wait_s=0.001, max_concurrent=1)

        async def caller(i: int) -> int:
            await asyncio.sleep(i * 0.0005)
            return await batcher.submit(i)

        results = await asyncio.gather(*(caller(i) for i in range(200)))
        return down, results

    down, results = run(main())
    assert results == [i * 10 for i in range(200)]
    assert all(len(b) <= 64 for b in down.batches)
    assert len(down.batches) <= 8, [len(b) for b in down.batches]


def test_an_idle_pipeline_sends_at_once_and_a_busy_one_gathers() -> None:
    async def main():
        down = Downstream(latency_s=0.05)
        batcher = CallerBatcher(down, max_items=64, max_wait_s=30.0, max_concurrent=2)
        # Nothing on its way: no 30 s window for a lone request.
        assert await asyncio.wait_for(batcher.submit(1), 5.0) == 10
        first = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)  # the first batch is out now
        second = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.2)
        # One batch on its way: the next one waits for company (here, the whole window).
        assert first.done() and not second.done()
        second.cancel()
        return down

    down = run(main())
    assert down.batches == [[1], [2]]


def test_concurrent_flushes_are_bounded() -> None:
    async def main():
        in_flight = peak = 0

        async def flush(items: list[int]) -> list[int]:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            return items

        batcher = CallerBatcher(flush, max_items=4, max_wait_s=0, max_concurrent=2)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(40))) == list(range(40))
        return peak

    assert run(main()) == 2


def test_a_failed_flush_fails_its_batch_only_and_the_batcher_keeps_working() -> None:
    async def main():
        calls = 0

        async def flush(items: list[int]) -> list[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("replica gone")
            return items

        batcher = CallerBatcher(flush, max_items=8, max_wait_s=0.005)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        second = await batcher.submit(7)
        return first, second

    first, second = run(main())
    assert all(isinstance(r, ConnectionError) for r in first)
    assert second == 7


def test_a_caller_that_gave_up_is_not_sent() -> None:
    async def main():
        down = Downstream(latency_s=0.05)
        batcher = CallerBatcher(down, max_items=64, max_wait_s=0, max_concurrent=1)
        busy = asyncio.ensure_future(batcher.submit(1))  # occupies the only slot
        await asyncio.sleep(0.01)
        quitter = asyncio.ensure_future(batcher.submit(2))
        stayer = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        quitter.cancel()
        assert await busy == 10 and await stayer == 30
        with pytest.raises(asyncio.CancelledError):
            await quitter
        return down

    down = run(main())
    assert down.batches == [[1], [3]]


def test_a_lone_caller_waits_at_most_the_gather_time() -> None:
    async def main():
        batcher = CallerBatcher(Downstream(), max_items=64, max_wait_s=0.005)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit(5) == 50
        return loop.time() - started

    assert run(main()) < 0.5


def test_a_wrong_number_of_results_is_an_error_for_the_batch() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items[:-1]

    async def main():
        batcher = CallerBatcher(flush, max_items=8, max_wait_s=0.005)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, RuntimeError) and "3 items" in str(r) for r in results)


def test_a_batch_leaves_beside_another_only_with_enough_company() -> None:
    """min_overlap 4: with one batch on its way, three waiting requests wait for it to come
    back (and then leave together at once); a fourth lets a second batch leave beside it."""

    async def main():
        down = Downstream(latency_s=0.1)
        batcher = CallerBatcher(down, max_items=64, max_wait_s=0, min_overlap=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # batch [0] is out
        few = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        assert down.batches == [[0]]  # three are not enough to overlap
        await asyncio.gather(first, *few)
        # They left together as soon as [0] came back, not one call each.
        assert down.batches == [[0], [1, 2, 3]]

        first = asyncio.ensure_future(batcher.submit(10))
        await asyncio.sleep(0.01)
        more = [asyncio.ensure_future(batcher.submit(i)) for i in (11, 12, 13, 14)]
        await asyncio.sleep(0.01)
        assert down.batches[-2:] == [[10], [11, 12, 13, 14]]  # four overlap at once
        await asyncio.gather(first, *more)

    run(main())


def test_with_min_overlap_nothing_is_left_behind_when_the_last_batch_returns() -> None:
    """Callers arriving at random while batches come and go: every one is answered, and
    batches overlap only with enough company."""

    async def main():
        down = Downstream(latency_s=0.01)
        batcher = CallerBatcher(down, max_items=16, max_wait_s=0.001, min_overlap=8)

        async def caller(i: int) -> int:
            await asyncio.sleep((i * 7919 % 100) / 2000)
            return await batcher.submit(i)

        results = await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(300))), 10)
        return down, results

    down, results = run(main())
    assert results == [i * 10 for i in range(300)]
    assert sum(len(b) for b in down.batches) == 300
