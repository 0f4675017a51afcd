"""Baseline servers the benchmarks measure ours against, on the same machine and model."""
