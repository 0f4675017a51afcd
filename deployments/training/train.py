"""Train the fraud-risk classifier versions and write them as safetensors artifacts.

    python -m deployments.training.train --model-dir models            # both versions
    python -m deployments.training.train --model-dir models --version 2

Deterministic: fixed data and torch seeds, one thread, deterministic algorithms. The same
command on the same library versions writes byte-identical weights.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from deployments.kinds.tabular import ClassificationMetadata
from deployments.kinds.tabular_schema import InputSchema
from deployments.nets import MLPClassifier
from deployments.repository.package import package_model
from deployments.training import fraud_data

MODEL_NAME = "fraud-risk"
DATA_SEED_TRAIN, DATA_SEED_TEST = 7, 8
N_TRAIN, N_TEST = 40_000, 10_000
LABELS = ["legit", "fraud"]


@dataclass(frozen=True)
class Recipe:
    version: str
    description: str
    hidden_dims: list[int]
    epochs: int
    learning_rate: float
    seed: int
    fraud_class_weight: float
    dropout: float = 0.1
    batch_size: int = 256
    weight_decay: float = 1e-4
    extra: dict[str, Any] = field(default_factory=dict)


RECIPES = {
    "1": Recipe(
        "1",
        "Primary: two hidden layers, unweighted loss.",
        hidden_dims=[64, 32],
        epochs=10,
        learning_rate=3e-3,
        seed=1,
        fraud_class_weight=1.0,
    ),
    "2": Recipe(
        "2",
        "Candidate: one smaller layer, fewer epochs, fraud up-weighted 4x, so it "
        "flags more transactions and sometimes disagrees with v1.",
        hidden_dims=[32],
        epochs=4,
        learning_rate=2e-3,
        seed=2,
        fraud_class_weight=4.0,
    ),
}


def base_metadata(version: str, description: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    features = [{"required": True, **f} for f in fraud_data.FEATURES]
    normalization = {}
    for f in features:
        if f["type"] in ("float", "int"):
            column = np.array([r[f["name"]] for r in records], dtype=np.float64)
            if f.get("transform") == "log1p":
                column = np.log1p(column)
            normalization[f["name"]] = {
                "mean": float(column.mean()),
                "std": float(column.std()) or 1.0,
            }
    vector = [col for f in features for col in _columns(f)]
    return {
        "format_version": 1,
        "kind": "tabular_classification",
        "name": MODEL_NAME,
        "version": version,
        "description": "Card-transaction fraud risk. " + description,
        "features": features,
        "normalization": normalization,
        "feature_vector": vector,
        "task": {
            "labels": LABELS,
            "positive_label": "fraud",
            "threshold": 0.5,
        },
        "outputs": [
            {
                "name": "label",
                "datatype": "BYTES",
                "shape": [-1],
                "description": "Predicted label: legit or fraud",
            },
            {
                "name": "fraud_probability",
                "datatype": "FP32",
                "shape": [-1],
                "description": "Probability that the transaction is fraud",
            },
        ],
    }


def train(recipe: Recipe, model_dir: str) -> str:
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    train_records, y_train = fraud_data.generate(N_TRAIN, DATA_SEED_TRAIN)
    test_records, y_test = fraud_data.generate(N_TEST, DATA_SEED_TEST)
    meta = base_metadata(recipe.version, recipe.description, train_records)
    arch = {
        "input_dim": len(meta["feature_vector"]),
        "hidden_dims": recipe.hidden_dims,
        "num_classes": 2,
        "dropout": recipe.dropout,
    }
    meta["architecture"] = {"import_path": "deployments.nets:MLPClassifier", "kwargs": arch}
    draft = ClassificationMetadata.model_validate(
        {**meta, "weights": {"sha256": "0" * 64, "size_bytes": 0}}
    )
    schema = InputSchema(draft)
    x_train = torch.from_numpy(schema.to_features(train_records))
    x_test = torch.from_numpy(schema.to_features(test_records))
    t_train = torch.from_numpy(y_train)

    model = MLPClassifier(arch["input_dim"], recipe.hidden_dims, 2, recipe.dropout)
    optim = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, recipe.fraud_class_weight]))
    gen = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        model.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(recipe.batch_size):
            optim.zero_grad()
            loss_fn(model(x_train[idx]), t_train[idx]).backward()
            optim.step()
    model.eval()
    with torch.no_grad():
        p_test = torch.softmax(model(x_test), dim=1)[:, 1].numpy().astype(np.float64)

    meta["training"] = {
        **asdict(recipe),
        "optimizer": "AdamW",
        "loss": "cross_entropy",
        "n_train": N_TRAIN,
        "n_test": N_TEST,
        "data_seeds": {"train": DATA_SEED_TRAIN, "test": DATA_SEED_TEST},
        "data": "deployments/training/fraud_data.py (documented process)",
    }
    meta["metrics"] = {"heldout": heldout_metrics(p_test, y_test, threshold=0.5)}
    # package_model records library versions and created_at, and verifies the written
    # artifact by loading it back as the server does.
    # The training instances also become the drift reference (reference.json).
    return str(package_model(model, meta, model_dir, reference_data=train_records).path)


def heldout_metrics(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    eps = 1e-7
    return {
        "n": int(len(y)),
        "fraud_rate": round(float(y.mean()), 5),
        "accuracy": round(float(np.mean(pred == (y == 1))), 5),
        "precision": round(tp / (tp + fp) if tp + fp else 0.0, 5),
        "recall": round(tp / (tp + fn) if tp + fn else 0.0, 5),
        "roc_auc": round(roc_auc(p, y), 5),
        "log_loss": round(float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))), 5),
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _columns(feature: dict[str, Any]) -> list[str]:
    if feature["type"] == "category":
        return [f"{feature['name']}={c}" for c in feature["categories"]]
    return [feature["name"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--version", choices=sorted(RECIPES), action="append")
    args = parser.parse_args(argv)
    for version in args.version or sorted(RECIPES):
        print(train(RECIPES[version], args.model_dir))


if __name__ == "__main__":
    main()
