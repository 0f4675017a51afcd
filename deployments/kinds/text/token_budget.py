"""Token-budget batching for text models: pure functions, no torch, no tokenizer.

A transformer's forward pass costs (and allocates) in proportion to the *padded* batch,
rows x the longest row, not to the tokens actually sent. So a batch of texts is planned in
token lengths:

- rows are sorted longest first, so every sub-batch holds rows of similar length and the
  padding each row carries stays small (length bucketing);
- a sub-batch closes when one more row would take its padded size (rows x its longest row)
  over the token budget, when it reaches `max_rows`, or when the next row is so much
  shorter than the sub-batch's longest that padding would more than `max_pad_ratio`-fold
  its cost (rows of at most `short_len` tokens always mix: for them a separate forward pass
  costs more than the padding);
- a single row longer than the budget still gets a sub-batch of its own: a sequence cannot
  be split, and the caller truncates to the model's max_seq_length before planning.

Plans are lists of original indices; the caller runs each sub-batch and writes the results
back at those indices, so the caller's order is preserved whatever the plan.

`bytes_per_token` estimates the peak activation memory one token costs in an inference-mode
forward pass of a BERT-style encoder, for capping the budget by memory headroom the way
`BatchedModel.chunk_rows` caps rows by `bytes_per_row`.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_TOKEN_BUDGET = 8192
DEFAULT_MAX_PAD_RATIO = 2.0
DEFAULT_SHORT_LEN = 16


def padded_tokens(lengths: Sequence[int]) -> int:
    """Tokens a forward pass over these rows really computes: rows x the longest row."""
    return len(lengths) * max(lengths, default=0)


def plan_sub_batches(
    lengths: Sequence[int],
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    max_rows: int | None = None,
    max_pad_ratio: float = DEFAULT_MAX_PAD_RATIO,
    short_len: int = DEFAULT_SHORT_LEN,
) -> list[list[int]]:
    """Split rows of the given token lengths into sub-batches; returns original indices.

    Every index appears exactly once. Each sub-batch's padded size is at most
    `token_budget`, except a lone row that is itself longer than the budget. Sub-batches
    come longest first, so a pass that is too big for the device fails on the first one.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
    if max_pad_ratio < 1:
        raise ValueError(f"max_pad_ratio must be >= 1, got {max_pad_ratio}")
    if any(n < 0 for n in lengths):
        raise ValueError("token lengths must be >= 0")

    # Longest first; ties keep the caller's order (sorted is stable).
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    plan: list[list[int]] = []
    current: list[int] = []
    longest = 0  # of `current`: its first row, since rows come longest first
    for i in order:
        n = lengths[i]
        if current and (
            (len(current) + 1) * longest > token_budget
            or (max_rows is not None and len(current) >= max_rows)
            or longest > max(n, short_len) * max_pad_ratio
        ):
            plan.append(current)
            current = []
        if not current:
            longest = n
        current.append(i)
    if current:
        plan.append(current)
    return plan


def padding_efficiency(lengths: Sequence[int], plan: Sequence[Sequence[int]]) -> float:
    """Real tokens / padded tokens over a plan (1.0 is no padding at all)."""
    real = sum(lengths[i] for sub in plan for i in sub)
    padded = sum(padded_tokens([lengths[i] for i in sub]) for sub in plan)
    return real / padded if padded else 1.0


def bytes_per_token(
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    max_seq_length: int,
    dtype_bytes: int = 4,
    safety: float = 2.0,
) -> int:
    """Estimated peak activation bytes one (padded) token costs in a forward pass.

    Under `torch.inference_mode()` a layer's activations are freed once the next layer has
    consumed them, so the peak is one layer's working set: a few hidden-size tensors (input,
    Q, K, V, attention output, residual: 6), the feed-forward intermediate, and the
    attention scores, heads x sequence length per token when the attention kernel
    materialises them (the portable paths do). `safety` covers temporaries (softmax, GELU,
    layer-norm copies) and allocator slack. Upper-bounds with the longest sequence allowed.
    """
    per_token = 6 * hidden_size + intermediate_size + num_attention_heads * max_seq_length
    return int(per_token * dtype_bytes * safety)


def cap_token_budget(
    token_budget: int, headroom_bytes: int, per_token_bytes: int, min_tokens: int = 1
) -> int:
    """The budget, or less when memory headroom cannot hold that many padded tokens.

    Never below `min_tokens` (pass the model's max_seq_length so one full row still runs:
    refusing work under memory pressure is the memory guard's job, not the planner's).
    """
    if per_token_bytes < 1:
        raise ValueError(f"per_token_bytes must be >= 1, got {per_token_bytes}")
    fits = max(0, headroom_bytes) // per_token_bytes
    return max(min_tokens, min(token_budget, fits))
