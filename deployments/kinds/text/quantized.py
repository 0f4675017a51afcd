"""An int8 candidate of the text encoder: dynamic quantisation of nn.Linear layers.

`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` stores
Linear weights as int8 and quantises each Linear's input on the fly, per batch;
embeddings, LayerNorm, attention softmax and pooling stay float32. CPU only (fbgemm/x86
kernels); these modules have no CUDA kernel.

Accuracy on torch 2.13's x86 engine (cosine to float32 over the test sentences; see
tests/unit/test_text_encoder.py): the plain call above ("per_tensor") is the least
accurate, because the x86 dynamic-linear kernel always quantises activations to 7 bits
(`reduce_range=True` is hard-coded in DynamicQuantizedLinear.forward) and MiniLM's FFN
down-projections (`layer.N.output.dense`, input = GELU of a 1536-wide layer) carry
outlier activations. Per-output-channel weights ("per_channel") help; additionally keeping
those six down-projections in float32 ("per_channel_keep_ffn_out", the default) helps most.

On torch 2.13 the API still works but warns that `torch.ao.quantization` is deprecated in
favour of torchao (`quantize_(model, Int8DynamicActivationInt8WeightConfig())`); the two
known deprecation warnings are silenced around the call only. Moving to torchao is a
separate dependency decision.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from deployments.kinds.text.encoder import TextEncoder

Scheme = Literal["per_tensor", "per_channel", "per_channel_keep_ffn_out"]
SCHEMES: tuple[Scheme, ...] = ("per_tensor", "per_channel", "per_channel_keep_ffn_out")
DEFAULT_SCHEME: Scheme = "per_channel_keep_ffn_out"


def _is_ffn_out(name: str) -> bool:
    # BERT: encoder.layer.N.output.dense is the FFN down-projection;
    # encoder.layer.N.attention.output.dense is attention's output projection.
    return name.endswith(".output.dense") and ".attention." not in name


def quantize_dynamic_int8(
    module: torch.nn.Module, scheme: Scheme = DEFAULT_SCHEME
) -> torch.nn.Module:
    """An int8 dynamically quantised copy of `module` (the original is left untouched)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_", category=UserWarning)
        from torch.ao.quantization import (
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        if scheme == "per_tensor":
            return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
        if scheme not in SCHEMES:
            raise ValueError(f"unknown quantisation scheme {scheme!r}; known: {SCHEMES}")
        spec = {
            name: per_channel_dynamic_qconfig
            for name, child in module.named_modules()
            if isinstance(child, torch.nn.Linear)
            and not (scheme == "per_channel_keep_ffn_out" and _is_ffn_out(name))
        }
        return quantize_dynamic(module, spec, dtype=torch.qint8, inplace=False)


def int8_encoder(encoder: TextEncoder, scheme: Scheme = DEFAULT_SCHEME) -> TextEncoder:
    """The same tokenizer and batching around an int8 copy of the encoder's model."""
    if encoder.device.type != "cpu" or encoder.dtype != torch.float32:
        raise ValueError(
            f"dynamic int8 quantisation needs a float32 encoder on CPU, got "
            f"{encoder.dtype} on {encoder.device}"
        )
    return encoder.with_model(
        quantize_dynamic_int8(encoder.model, scheme), variant=f"int8-{scheme}"
    )
