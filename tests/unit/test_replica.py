"""A model replica's batch: order kept, results equal to running alone, one bad item never
fails a batch; and the tabular classifier's runtime that it runs.

The replica is the real `BatchedReplica` over the shipped artifact (no Ray: a replica needs
none until Serve calls it). The ingress sends it many requests as one `Batch`; these tests
call `infer_many` with such batches directly, as the handle call does.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from ray import cloudpickle

from deployments.config import BatchConfig
from deployments.errors import InferenceFailed
from deployments.kinds.base import Batch, Columns
from deployments.kinds.devices import resolve_device
from deployments.kinds.tabular import FEATURES, ClassificationKind, ClassifierRuntime
from deployments.repository.store import load_kind
from deployments.roles.replica import BatchedReplica
from tests.support import MODEL, MODELS, REPO, sample_transactions

BATCH = {"max_batch_size": 64}


def new_replica() -> BatchedReplica:
    return BatchedReplica(str(MODELS), MODEL, "1", "cpu", [], BATCH)


@pytest.fixture(scope="module")
def replica() -> BatchedReplica:
    return new_replica()


@pytest.fixture(scope="module")
def columns(replica: BatchedReplica) -> Columns:
    return replica.kind.decode_v1(sample_transactions(40))


def rows(columns: Columns, start: int, stop: int) -> Columns:
    return {name: array[start:stop] for name, array in columns.items()}


def run_batch(replica: BatchedReplica, parts: list[Columns]) -> list:
    """One call with many requests, as the ingress makes it: each request's outputs, or
    its own error, in order."""
    answer = asyncio.run(replica.infer_many(Batch.of(parts)))
    results: list = [answer.failures.get(i) for i in range(len(parts))]
    for k, i in enumerate(answer.answered):
        results[i] = answer.outputs.part(k)
    return results


def test_batch_results_equal_individual_results_in_order(replica, columns) -> None:
    parts = [rows(columns, *span) for span in ((0, 1), (1, 6), (6, 7), (7, 20))]
    batched = run_batch(replica, parts)
    assert len(batched) == len(parts)
    for part, result in zip(parts, batched):
        alone = replica.runtime.forward(part)
        assert result["label"].tolist() == alone["label"].tolist()
        np.testing.assert_allclose(
            result["fraud_probability"], alone["fraud_probability"], rtol=1e-5, atol=1e-6
        )


def test_non_finite_output_fails_only_its_item(replica, columns) -> None:
    poisoned = {name: array.copy() for name, array in rows(columns, 0, 2).items()}
    poisoned[FEATURES][1, 0] = np.inf  # inf in, NaN probability out
    results = run_batch(replica, [rows(columns, 2, 4), poisoned, rows(columns, 4, 5)])
    assert isinstance(results[1], InferenceFailed) and "non-finite" in results[1].message
    assert len(results[0]["label"]) == 2 and len(results[2]["label"]) == 1


def test_the_ingress_reads_an_answer_without_torch(replica, columns, tmp_path) -> None:
    """The ingress (no torch) unpickles each answer a replica sends it. A class of the answer
    defined in a torch module would import torch there on the first answer: a stall of the
    first request and the ingress's memory spent on a library it never runs."""
    poisoned = {name: array.copy() for name, array in rows(columns, 0, 1).items()}
    poisoned[FEATURES][0, 0] = np.inf
    answer = asyncio.run(replica.infer_many(Batch.of([rows(columns, 1, 3), poisoned])))
    assert answer.answered == [0] and isinstance(answer.failures[1], InferenceFailed)
    sent = tmp_path / "answer.pkl"
    sent.write_bytes(cloudpickle.dumps(answer))
    code = (
        "import pickle, sys; import deployments.roles.ingress; "
        f"answer = pickle.loads(open({str(sent)!r}, 'rb').read()); "
        "assert answer.outputs.part(0)['label'].shape == (2,), answer; "
        "assert 'torch' not in sys.modules, 'unpickling an answer imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


class _FailsOnMarker(torch.nn.Module):
    """A real module that cannot process rows carrying a marker value, like a kernel fault."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == 12345.0).any()):
            raise RuntimeError("kernel rejected input")
        return self.inner(x)


def test_forward_failure_is_isolated_to_the_culprit(columns) -> None:
    replica = new_replica()
    meta = replica.kind.metadata
    replica.runtime = ClassifierRuntime(
        _FailsOnMarker(replica.runtime.module), torch.device("cpu"), meta
    )
    culprit = {name: array.copy() for name, array in rows(columns, 0, 1).items()}
    culprit[FEATURES][0, 0] = 12345.0
    results = run_batch(replica, [rows(columns, 1, 3), culprit, rows(columns, 3, 6)])
    assert isinstance(results[1], InferenceFailed) and "kernel rejected" in results[1].message
    assert [len(r["label"]) for r in (results[0], results[2])] == [2, 3]


def test_a_batch_runs_in_forward_passes_within_the_cost_budget(columns) -> None:
    replica = new_replica()
    replica.reconfigure({"max_batch_size": 4})
    calls: list[int] = []
    forward = replica.runtime.forward
    replica.runtime.forward = lambda c: calls.append(len(c[FEATURES])) or forward(c)
    parts = [rows(columns, 0, 3), rows(columns, 3, 4), rows(columns, 4, 10)]
    results = run_batch(replica, parts)
    assert calls == [4, 4, 2]  # rows of several requests share a pass; none exceeds 4
    alone = forward(rows(columns, 0, 10))
    joined = np.concatenate([r["fraud_probability"] for r in results])
    np.testing.assert_allclose(joined, alone["fraud_probability"], rtol=1e-5, atol=1e-6)
    assert [len(r["label"]) for r in results] == [3, 1, 6]


def test_the_cost_budget_is_the_batch_size_at_most(replica) -> None:
    assert 1 <= replica.cost_budget() <= replica.batch.max_batch_size == 64


def classifier(threshold: float) -> ClassifierRuntime:
    """The shipped classifier's runtime over a real module that answers logits [0, x0]:
    softmax gives the fraud class sigmoid(x0), so a row chooses its own probability."""
    kind = load_kind(MODELS, MODEL, "1")
    assert isinstance(kind, ClassificationKind)
    meta = kind.metadata
    meta = meta.model_copy(update={"task": meta.task.model_copy(update={"threshold": threshold})})
    linear = torch.nn.Linear(meta.width, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1, 0] = 1.0
    return ClassifierRuntime(linear, torch.device("cpu"), meta)


def with_probabilities(probabilities: list[float], width: int = 16) -> Columns:
    x = np.zeros((len(probabilities), width), dtype=np.float32)
    x[:, 0] = [math.log(p / (1 - p)) for p in probabilities]
    return {FEATURES: x}


def test_labels_follow_the_threshold() -> None:
    out = classifier(0.5).forward(with_probabilities([0.1, 0.5, 0.9]))
    assert out["label"].tolist() == ["legit", "fraud", "fraud"]
    np.testing.assert_allclose(out["fraud_probability"], [0.1, 0.5, 0.9], rtol=1e-5)
    strict = classifier(0.95).forward(with_probabilities([0.1, 0.5, 0.9, 0.96]))
    assert strict["label"].tolist() == ["legit", "legit", "legit", "fraud"]


def test_device_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="num_gpus"):
            resolve_device("cuda:0")


def test_warm_up_runs_serving_shapes(replica) -> None:
    replica.runtime.warm_up(128)  # must not raise for 1 and 128 rows
    replica.check_health()
    example = replica.runtime.example(3)
    assert example[FEATURES].shape == (3, 16) and example[FEATURES].dtype == np.float32


def test_reconfigure_applies_a_new_batch_size() -> None:
    replica = new_replica()
    replica.reconfigure({"max_batch_size": 128})
    assert replica.batch.max_batch_size == 128
    assert replica.batch.memory == BatchConfig().memory  # the rest kept its defaults
    assert 1 <= replica.cost_budget() <= 128
