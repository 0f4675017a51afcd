"""Batch execution: order kept, results equal to running alone, one bad item never fails a batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deployments.artifacts import load_artifact
from deployments.errors import InferenceFailed, InvalidInput
from deployments.metadata import read_metadata
from deployments.runner import ModelRunner, resolve_device
from deployments.schema import InputSchema
from tests.support import MODEL, MODELS, sample_transactions


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return ModelRunner(load_artifact(MODELS, MODEL, "1"), torch.device("cpu"))


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    schema = InputSchema(read_metadata(MODELS, MODEL, "1"))
    return schema.to_features(sample_transactions(40))


def test_batch_results_equal_individual_results_in_order(runner, features) -> None:
    items = [features[0:1], features[1:6], features[6:7], features[7:20]]
    batched = runner.run_batch(items)
    for item, result in zip(items, batched):
        alone = runner.outputs(runner.scores(item))
        assert result["label"] == alone["label"]
        np.testing.assert_allclose(
            result["fraud_probability"], alone["fraud_probability"], rtol=1e-5, atol=1e-6
        )


def test_wrong_width_item_fails_alone(runner, features) -> None:
    items = [features[:3], np.zeros((2, 5), dtype=np.float32), features[3:4]]
    results = runner.run_batch(items)
    assert isinstance(results[1], InvalidInput) and "[N, 16]" in results[1].message
    assert len(results[0]["label"]) == 3 and len(results[2]["label"]) == 1


def test_non_finite_output_fails_only_its_item(runner, features) -> None:
    poisoned = features[:2].copy()
    poisoned[1, 0] = np.inf  # inf in, NaN probability out
    results = runner.run_batch([features[2:4], poisoned, features[4:5]])
    assert isinstance(results[1], InferenceFailed)
    assert len(results[0]["label"]) == 2 and len(results[2]["label"]) == 1


class _FailsOnMarker(torch.nn.Module):
    """A real module that cannot process rows carrying a marker value, like a kernel fault."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == 12345.0).any()):
            raise RuntimeError("kernel rejected input")
        return self.inner(x)


def test_forward_failure_is_isolated_to_the_culprit(features) -> None:
    artifact = load_artifact(MODELS, MODEL, "1")
    runner = ModelRunner(
        dataclasses.replace(artifact, module=_FailsOnMarker(artifact.module)), torch.device("cpu")
    )
    culprit = features[:1].copy()
    culprit[0, 0] = 12345.0
    results = runner.run_batch([features[1:3], culprit, features[3:6]])
    assert isinstance(results[1], InferenceFailed) and "kernel rejected" in results[1].message
    assert [len(r["label"]) for r in (results[0], results[2])] == [2, 3]


def test_labels_follow_the_threshold(runner, features) -> None:
    out = runner.outputs(np.array([0.1, 0.5, 0.9], dtype=np.float32))
    assert out["label"] == ["legit", "fraud", "fraud"]


def test_device_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="num_gpus"):
            resolve_device("cuda:0")


def test_warm_up_runs_serving_shapes(runner) -> None:
    runner.warm_up(128)  # must not raise for 1 and 128 rows
