"""The shipped kinds and the packaging API, on real safetensors artifacts written to tmp_path:
served outputs equal the torch module run directly; the allow list decides what is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deployments.config import AppArgs, ModelSpec
from deployments.errors import ArtifactError, InvalidInput
from deployments.kinds.base import Batch, ComparePolicy
from deployments.nets import MLPClassifier, MLPRegressor
from deployments.repository.package import complete_spec, package_model
from deployments.repository.store import load_kind
from tests.support import REPO

IRIS_SRC = REPO / "tests" / "fixtures" / "iris_model" / "src"
FEATURES = [
    {"name": "rooms", "type": "int", "unit": "count", "minimum": 1, "maximum": 20},
    {
        "name": "area_m2",
        "type": "float",
        "unit": "m2",
        "minimum": 5,
        "maximum": 1000,
        "transform": "log1p",
    },
    {"name": "district", "type": "category", "categories": ["north", "south", "east"]},
    {"name": "garden", "type": "bool", "required": False, "default": False},
]
NORMALIZATION = {"rooms": {"mean": 4.0, "std": 2.0}, "area_m2": {"mean": 4.5, "std": 0.6}}
WIDTH = 1 + 1 + 3 + 1


def homes(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "rooms": int(rng.integers(1, 21)),
            "area_m2": float(rng.uniform(5, 1000)),
            "district": ["north", "south", "east"][int(rng.integers(0, 3))],
            **({"garden": bool(rng.integers(0, 2))} if i % 2 else {}),
        }
        for i in range(n)
    ]


def direct_features(records: list[dict]) -> torch.Tensor:
    """The normalised vector, computed here by hand from the spec (not by the server)."""
    rows = []
    for r in records:
        district = [1.0 if r["district"] == d else 0.0 for d in ("north", "south", "east")]
        rows.append(
            [
                (r["rooms"] - 4.0) / 2.0,
                (np.log1p(r["area_m2"]) - 4.5) / 0.6,
                *district,
                float(r.get("garden", False)),
            ]
        )
    return torch.tensor(rows, dtype=torch.float32)


def regression_spec(version: str = "1") -> dict:
    return {
        "name": "home-price",
        "version": version,
        "kind": "tabular_regression",
        "architecture": {
            "import_path": "deployments.nets:MLPRegressor",
            "kwargs": {"input_dim": WIDTH, "hidden_dims": [8], "num_targets": 2},
        },
        "features": FEATURES,
        "normalization": NORMALIZATION,
        "targets": [
            {"name": "price_eur", "unit": "EUR", "mean": 300000.0, "std": 90000.0},
            {"name": "days_on_market", "unit": "day", "mean": 40.0, "std": 15.0},
        ],
    }


def multiclass_spec(version: str = "1") -> dict:
    return {
        "name": "home-type",
        "version": version,
        "kind": "tabular_classification",
        "architecture": {
            "import_path": "deployments.nets:MLPClassifier",
            "kwargs": {"input_dim": WIDTH, "hidden_dims": [8], "num_classes": 3},
        },
        "features": FEATURES,
        "normalization": NORMALIZATION,
        "labels": ["flat", "house", "villa"],
    }


def test_a_regressor_answers_what_its_module_computes_in_target_units(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = MLPRegressor(WIDTH, [8], 2).eval()
    packaged = package_model(net, regression_spec(), tmp_path)
    kind = load_kind(tmp_path, "home-price", "1")
    assert kind.kind == "tabular_regression"
    assert [o["name"] for o in kind.v2_outputs()] == ["price_eur", "days_on_market"]
    records = homes(7)
    outputs = packaged.runtime.forward(kind.decode_v1(records))
    with torch.inference_mode():
        raw = net(direct_features(records)).numpy()
    np.testing.assert_allclose(outputs["price_eur"], raw[:, 0] * 90000.0 + 300000.0, rtol=1e-5)
    np.testing.assert_allclose(outputs["days_on_market"], raw[:, 1] * 15.0 + 40.0, rtol=1e-5)
    v1 = kind.encode_v1(outputs)
    assert set(v1[0]) == {"price_eur", "days_on_market"} and len(v1) == 7


def test_a_multiclass_classifier_answers_label_probability_and_all_probabilities(
    tmp_path: Path,
) -> None:
    torch.manual_seed(2)
    net = MLPClassifier(WIDTH, [8], 3).eval()
    packaged = package_model(net, multiclass_spec(), tmp_path)
    kind = load_kind(tmp_path, "home-type", "1")
    records = homes(9, seed=3)
    outputs = packaged.runtime.forward(kind.decode_v1(records))
    with torch.inference_mode():
        probs = torch.softmax(net(direct_features(records)), dim=1).numpy()
    np.testing.assert_allclose(outputs["probabilities"], probs, rtol=1e-5)
    labels = np.array(["flat", "house", "villa"])[probs.argmax(axis=1)]
    assert outputs["label"].tolist() == labels.tolist()
    np.testing.assert_allclose(outputs["probability"], probs.max(axis=1), rtol=1e-5)
    tensors = {t["name"]: t for t in kind.encode_v2(outputs, None)}
    assert tensors["probabilities"]["shape"] == [9, 3]
    assert tensors["label"]["datatype"] == "BYTES"


def test_v1_and_v2_decode_to_the_same_columns_and_name_bad_fields(tmp_path: Path) -> None:
    package_model(MLPClassifier(WIDTH, [8], 3), multiclass_spec(), tmp_path)
    kind = load_kind(tmp_path, "home-type", "1")
    records = [{**r, "garden": r.get("garden", False)} for r in homes(4)]
    from deployments.protocol.v2 import RequestInput

    datatypes = {"rooms": "INT64", "area_m2": "FP64", "district": "BYTES", "garden": "BOOL"}
    tensors = [
        RequestInput(name=n, datatype=dt, shape=[4], data=[r[n] for r in records])
        for n, dt in datatypes.items()
    ]
    np.testing.assert_array_equal(
        kind.decode_v1(records)["features"], kind.decode_v2(tensors, 100)["features"]
    )
    with pytest.raises(InvalidInput) as bad:
        kind.decode_v1([{**records[0], "rooms": 0}, {**records[1], "district": "west"}])
    fields = {(d["instance"], d["field"]) for d in bad.value.details}
    assert fields == {(0, "rooms"), (1, "district")}


def test_the_shadow_comparison_fits_each_kind(tmp_path: Path) -> None:
    package_model(MLPRegressor(WIDTH, [8], 2), regression_spec(), tmp_path)
    package_model(MLPClassifier(WIDTH, [8], 3), multiclass_spec(), tmp_path)
    regressor = load_kind(tmp_path, "home-price", "1")
    a = {"price_eur": np.array([100.0, 200.0]), "days_on_market": np.array([10.0, 10.0])}
    b = {"price_eur": np.array([100.05, 260.0]), "days_on_market": np.array([10.0, 10.0])}
    cmp = regressor.compare(a, b, ComparePolicy(max_abs_delta=0.1))
    assert cmp.agree.tolist() == [True, False]
    np.testing.assert_allclose(cmp.metric, [0.05, 60.0])
    classifier = load_kind(tmp_path, "home-type", "1")
    p = {"label": np.array(["flat", "villa"], dtype=object), "probability": np.array([0.9, 0.6])}
    c = {"label": np.array(["flat", "house"], dtype=object), "probability": np.array([0.8, 0.5])}
    cmp = classifier.compare(p, c, ComparePolicy())
    assert cmp.agree.tolist() == [True, False]
    assert [tuple(x) for x in zip(*cmp.labels)] == [("flat", "flat"), ("villa", "house")]


def test_packaging_records_provenance_and_the_fingerprint(tmp_path: Path) -> None:
    packaged = package_model(MLPRegressor(WIDTH, [8], 2), regression_spec(), tmp_path)
    meta = json.loads((packaged.path / "metadata.json").read_text())
    assert meta["kind"] == "tabular_regression"
    assert meta["created_at"] and meta["library_versions"]["torch"] == torch.__version__
    assert len(meta["weights"]["sha256"]) == 64
    from safetensors import safe_open

    with safe_open(str(packaged.path / "model.safetensors"), framework="pt") as reader:
        assert reader.metadata()["schema_sha256"] == packaged.metadata.schema_fingerprint()


def test_packaging_refuses_a_module_that_is_not_the_named_architecture(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="MLPClassifier"):
        package_model(MLPRegressor(WIDTH, [8], 3), multiclass_spec(), tmp_path)


def test_a_changed_schema_after_packaging_is_refused_at_load(tmp_path: Path) -> None:
    packaged = package_model(MLPClassifier(WIDTH, [8], 3), multiclass_spec(), tmp_path)
    path = packaged.path / "metadata.json"
    meta = json.loads(path.read_text())
    meta["normalization"]["rooms"]["mean"] = 5.0
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="schema mismatch"):
        load_kind(tmp_path, "home-type", "1").load(str(tmp_path), "cpu", [])


def test_a_user_architecture_is_imported_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(IRIS_SRC))
    from iris_model.package import spec, trained

    net = trained(seed=0)
    package_model(net, spec("1"), tmp_path)
    kind = load_kind(tmp_path, "iris", "1")
    with pytest.raises(ArtifactError, match="allowed_architectures") as refused:
        kind.load(str(tmp_path), "cpu", [])
    assert "iris_model.nets:*" in str(refused.value)
    runtime = kind.load(str(tmp_path), "cpu", ["iris_model.nets:*"])
    x = [{f: 5.0 + i for f in spec("1")["normalization"]} for i in range(3)]
    expected = torch.softmax(net(torch.from_numpy(kind.decode_v1(x)["features"])), 1)
    np.testing.assert_allclose(
        runtime.forward(kind.decode_v1(x))["probabilities"], expected.detach().numpy(), rtol=1e-5
    )
    # A pattern for another module, or a prefix of this one, admits nothing.
    for other in (["iris_model.other:*"], ["iris_model:*"], ["iris_model.nets:Other"]):
        with pytest.raises(ArtifactError):
            kind.load(str(tmp_path), "cpu", other)


def test_the_app_refuses_an_unallowed_architecture_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(IRIS_SRC))
    from iris_model.package import spec, trained

    from deployments.app import bind_model

    package_model(trained(seed=0), spec("1"), tmp_path)
    args = AppArgs(model_dir=tmp_path, models=[ModelSpec(name="iris")])
    with pytest.raises(ArtifactError, match="allowed_architectures in the application's args"):
        bind_model(args, args.models[0])
    allowed = AppArgs(
        model_dir=tmp_path,
        models=[ModelSpec(name="iris")],
        allowed_architectures=["iris_model.nets:*"],
    )
    entry = bind_model(allowed, allowed.models[0])
    assert entry["name"] == "iris" and entry["version"] == "1" and "validator" in entry


def test_the_packaging_command_writes_and_verifies(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = MLPClassifier(WIDTH, [8], 3)
    weights = tmp_path / "trained.safetensors"
    save_file(net.state_dict(), str(weights))
    spec_path = tmp_path / "spec.json"

    def package(spec: dict) -> subprocess.CompletedProcess:
        spec_path.write_text(json.dumps(spec))
        argv = [
            "--spec",
            str(spec_path),
            "--weights",
            str(weights),
            "--model-dir",
            str(tmp_path / "repo"),
        ]
        return subprocess.run(
            [sys.executable, "-m", "deployments.repository.package", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    done = package(multiclass_spec("7"))
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert load_kind(tmp_path / "repo", "home-type", "7").kind == "tabular_classification"
    failed = package({**multiclass_spec("8"), "labels": ["only-one"]})
    assert failed.returncode == 2 and "labels" in failed.stderr


def test_complete_spec_derives_the_vector_and_outputs() -> None:
    spec = complete_spec(multiclass_spec())
    assert spec["feature_vector"] == [
        "rooms",
        "area_m2",
        "district=north",
        "district=south",
        "district=east",
        "garden",
    ]
    assert [o["name"] for o in spec["outputs"]] == ["label", "probability", "probabilities"]


def test_batches_concatenate_and_split_by_offsets() -> None:
    parts = [{"x": np.arange(n * 2).reshape(n, 2)} for n in (1, 3, 2)]
    batch = Batch.of(parts)
    assert len(batch) == 3 and batch.rows == 6 and batch.offsets.tolist() == [0, 1, 4, 6]
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(batch.part(i)["x"], part["x"])
    np.testing.assert_array_equal(batch.select([2, 0]).part(0)["x"], parts[2]["x"])
