"""CPU throughput of the text encoder: raw batched forward pass, fp32 vs int8 candidates.

    .venv/bin/python -m benchmarks.text_encoder [--threads 2] [--seconds 0.5] [--rounds 7]

No Ray, no HTTP: tokenisation is done once up front, then `TextEncoder._forward` (BERT +
mean pooling + L2) is timed on batches of 1, 8 and 32 short (~12-word) sentences. Variants
are interleaved round by round; the best round (as timeit takes the minimum time) and the
median round are reported, since on a shared machine a neighbour's burst can cut one round
several-fold. Also prints each int8 scheme's cosine to fp32
on the same sentences. Needs the `text` extra installed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deployments.kinds.text.encoder import TextEncoder
from deployments.kinds.text.quantized import SCHEMES, int8_encoder

SUBJECTS = ["The new manager", "A small dog", "Our support team", "The old bridge", "My neighbour"]
VERBS = ["quietly fixed", "carefully painted", "finally approved", "slowly crossed", "happily sold"]
OBJECTS = [
    "the broken fence behind the school before the heavy rain started",
    "three large boxes of fresh apples at the Saturday market downtown",
    "the quarterly budget after a long meeting with the finance team",
    "a wooden boat near the harbour on a cold and windy morning",
]


def short_sentences(n: int) -> list[str]:
    """n distinct-ish sentences of ~12-16 words."""
    return [
        f"{SUBJECTS[i % 5]} {VERBS[(i // 5) % 5]} {OBJECTS[(i // 25 + i) % 4]}." for i in range(n)
    ]


def time_forward(encoder: TextEncoder, texts: list[str], seconds: float) -> float:
    """items/s of the raw forward pass (tokenised once, padded to the batch's longest)."""
    encodings = encoder.tokenize(texts)
    with torch.inference_mode():
        encoder._forward(encodings)  # warm
        runs, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            encoder._forward(encodings)
            runs += 1
    return runs * len(texts) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.5, help="per variant, batch, round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    fp32 = TextEncoder()
    variants = {"fp32": fp32, **{f"int8 {s}": int8_encoder(fp32, s) for s in SCHEMES}}
    texts = short_sentences(max(args.batch_sizes))
    tokens = fp32.token_lengths(texts)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"quantized engine {torch.backends.quantized.engine}; tokens/sentence "
        f"{min(tokens)}-{max(tokens)}"
    )

    reference = fp32.encode(texts)
    for name, enc in variants.items():
        cos = (enc.encode(texts) * reference).sum(dim=1)
        print(f"{name:32s} cosine to fp32: min {cos.min():.4f} mean {cos.mean():.4f}")

    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in args.batch_sizes:
            for name, enc in variants.items():
                rate = time_forward(enc, texts[:batch], args.seconds)
                results.setdefault((name, batch), []).append(rate)

    header = "".join(f"{'batch ' + str(b):>16s}" for b in args.batch_sizes)
    print(f"\nitems/s, best / median of {args.rounds} rounds{'':4s}{header}")
    for name in variants:
        row = "".join(
            f"{max(results[(name, b)]):9.1f} /{statistics.median(results[(name, b)]):6.1f}"
            for b in args.batch_sizes
        )
        print(f"{name:42s}{row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
