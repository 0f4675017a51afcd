"""Which torch device a replica computes on."""

from __future__ import annotations

import torch


def resolve_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {preference!r} requested but torch sees no CUDA device; "
            "use device 'auto' or 'cpu', or give the replica a GPU (num_gpus in its model spec)"
        )
    return device


def gpu_memory_probe(device: torch.device):  # type: ignore[no-untyped-def]
    """(free, total) bytes of a cuda device, for the memory guard; None on CPU."""
    if device.type != "cuda":
        return None
    return lambda: torch.cuda.mem_get_info(device)
