"""Token-budget batching for the text model: pure functions, no torch, no model."""

from __future__ import annotations

import random

import pytest

from deployments.kinds.text.token_budget import (
    bytes_per_token,
    cap_token_budget,
    padded_tokens,
    padding_efficiency,
    plan_sub_batches,
)


def _check_plan(lengths: list[int], plan: list[list[int]], budget: int, max_rows=None) -> None:
    flat = [i for sub in plan for i in sub]
    assert sorted(flat) == list(range(len(lengths))), "every row exactly once"
    for sub in plan:
        assert sub, "no empty sub-batch"
        sub_lengths = [lengths[i] for i in sub]
        assert padded_tokens(sub_lengths) <= budget or len(sub) == 1
        if max_rows is not None:
            assert len(sub) <= max_rows


def test_empty_input_plans_nothing() -> None:
    assert plan_sub_batches([], 100) == []
    assert padding_efficiency([], []) == 1.0
    assert padded_tokens([]) == 0


def test_padded_size_is_rows_times_longest() -> None:
    assert padded_tokens([3, 10, 7]) == 30


def test_one_sub_batch_when_everything_fits() -> None:
    lengths = [10, 12, 11, 9]
    assert plan_sub_batches(lengths, token_budget=1000) == [[1, 2, 0, 3]]


def test_budget_splits_and_sub_batches_come_longest_first() -> None:
    lengths = [10] * 10
    plan = plan_sub_batches(lengths, token_budget=40)
    assert [len(sub) for sub in plan] == [4, 4, 2]
    _check_plan(lengths, plan, 40)
    mixed = [5, 30, 6, 29, 7, 28]
    plan = plan_sub_batches(mixed, token_budget=60)
    assert [mixed[sub[0]] for sub in plan] == sorted({mixed[sub[0]] for sub in plan}, reverse=True)
    _check_plan(mixed, plan, 60)


def test_row_longer_than_the_budget_runs_alone() -> None:
    lengths = [3, 500, 4]
    plan = plan_sub_batches(lengths, token_budget=100)
    assert plan[0] == [1]
    _check_plan(lengths, plan, 100)


def test_max_rows_caps_sub_batch_rows() -> None:
    lengths = [2] * 7
    plan = plan_sub_batches(lengths, token_budget=10_000, max_rows=3)
    assert [len(sub) for sub in plan] == [3, 3, 1]


def test_length_bucketing_keeps_long_and_short_rows_apart() -> None:
    # Budget is no constraint: only the padding rule separates 200-token rows from 20s.
    lengths = [20, 200, 20, 200, 20]
    plan = plan_sub_batches(lengths, token_budget=100_000)
    assert plan == [[1, 3], [0, 2, 4]]
    assert padding_efficiency(lengths, plan) == 1.0
    assert padding_efficiency(lengths, [list(range(5))]) == pytest.approx(460 / 1000)


def test_short_rows_always_mix() -> None:
    lengths = [2, 16, 3, 9]
    assert len(plan_sub_batches(lengths, token_budget=1000)) == 1


def test_ties_keep_caller_order() -> None:
    assert plan_sub_batches([5, 5, 5], token_budget=100) == [[0, 1, 2]]


@pytest.mark.parametrize("seed", range(5))
def test_random_plans_hold_their_invariants(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(2, 256) for _ in range(rng.randint(1, 300))]
    budget = rng.choice([256, 1024, 4096, 8192])
    max_rows = rng.choice([None, 8, 64])
    plan = plan_sub_batches(lengths, budget, max_rows=max_rows)
    _check_plan(lengths, plan, budget, max_rows)
    # Bucketing bounds padding: every row is at least half its sub-batch's longest, or short.
    for sub in plan:
        longest = max(lengths[i] for i in sub)
        assert all(max(lengths[i], 16) * 2 >= longest for i in sub)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_budget": 0},
        {"token_budget": 10, "max_rows": 0},
        {"token_budget": 10, "max_pad_ratio": 0.5},
    ],
)
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        plan_sub_batches([1, 2], **kwargs)
    with pytest.raises(ValueError):
        plan_sub_batches([-1], 10)


def test_bytes_per_token_for_minilm() -> None:
    # MiniLM-L6: hidden 384, FFN 1536, 12 heads, 256 tokens, float32, 2x safety.
    assert bytes_per_token(384, 1536, 12, 256) == (6 * 384 + 1536 + 12 * 256) * 4 * 2
    assert (
        bytes_per_token(384, 1536, 12, 256, dtype_bytes=2)
        == bytes_per_token(384, 1536, 12, 256) // 2
    )


def test_cap_token_budget_by_headroom() -> None:
    assert cap_token_budget(8192, headroom_bytes=10**12, per_token_bytes=1000) == 8192
    assert cap_token_budget(8192, headroom_bytes=1_000_000, per_token_bytes=1000) == 1000
    # Never below one full row, even with no headroom: refusing is the memory guard's job.
    assert cap_token_budget(8192, headroom_bytes=0, per_token_bytes=1000, min_tokens=256) == 256
    with pytest.raises(ValueError):
        cap_token_budget(8192, 1, 0)
