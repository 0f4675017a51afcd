"""Runs a loaded model on batches of feature rows. Model code only: no Ray, no HTTP.

The serving contract of a batch: items are independent requests, each a float32 matrix of
rows. One bad item never fails its batch. Items of the wrong width are refused alone; if the
stacked forward pass fails, every item is retried alone so only the culprit fails; an item
whose output is not finite fails alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from deployments.artifacts import Artifact
from deployments.errors import InferenceFailed, InvalidInput, ServingError

Outputs = dict[str, list[Any]]


def resolve_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {preference!r} requested but torch sees no CUDA device; "
            "use device 'auto' or 'cpu', or give the replica a GPU (ray_actor_options.num_gpus)"
        )
    return device


class ModelRunner:
    def __init__(self, artifact: Artifact, device: torch.device) -> None:
        self.metadata = artifact.metadata
        self.device = device
        self.width = artifact.metadata.architecture.input_dim
        task = artifact.metadata.task
        self._labels = np.array(task.labels, dtype=object)
        self._positive = task.labels.index(task.positive_label)
        self._threshold = task.threshold
        self.score_output = f"{task.positive_label}_probability"
        declared = [o.name for o in artifact.metadata.outputs]
        if declared != ["label", self.score_output]:
            raise ValueError(
                f"{artifact.metadata.name}:{artifact.metadata.version} declares outputs "
                f"{declared}; a binary classifier serves ['label', '{self.score_output}']"
            )
        self.module = artifact.module.to(device=device, dtype=torch.float32).eval()
        # Peak bytes one row costs in a forward pass: its input and every layer's
        # activations in float32, times 2 for temporaries (softmax, copies).
        widths = [m.out_features for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
        self.bytes_per_row = 4 * (self.width + sum(widths)) * 2

    def gpu_memory_probe(self) -> Callable[[], tuple[int, int]] | None:
        if self.device.type != "cuda":
            return None
        device = self.device
        return lambda: torch.cuda.mem_get_info(device)

    @torch.inference_mode()
    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Positive-class probabilities for a [N, width] float32 matrix."""
        # Arrays from Ray's object store are read-only; torch wants writable memory.
        writable = np.require(rows, requirements="W")
        inputs = torch.from_numpy(writable).to(self.device, dtype=torch.float32, non_blocking=True)
        logits = self.module(inputs)
        probs = torch.softmax(logits.float(), dim=1)[:, self._positive]
        return probs.cpu().numpy()

    def outputs(self, scores: np.ndarray) -> Outputs:
        labels = self._labels[(scores >= self._threshold).astype(np.int64)]
        return {"label": labels.tolist(), self.score_output: scores.astype(float).tolist()}

    def run_batch(self, items: list[np.ndarray]) -> list[Outputs | ServingError]:
        results: list[Outputs | ServingError] = [self._check_shape(item) for item in items]
        good = [i for i, r in enumerate(results) if r is None]
        if not good:
            return results
        try:
            stacked = np.concatenate([items[i] for i in good]) if len(good) > 1 else items[good[0]]
            all_scores = self.scores(stacked)
        except Exception:  # noqa: BLE001 - isolate the culprit by running items alone
            for i in good:
                results[i] = self._run_alone(items[i])
            return results
        start = 0
        for i in good:
            n = len(items[i])
            results[i] = self._finish(all_scores[start : start + n])
            start += n
        return results

    def warm_up(self, max_rows: int) -> None:
        """Run the shapes serving will see, so the first request pays no lazy init."""
        for rows in sorted({1, max(1, max_rows)}):
            self.scores(np.zeros((rows, self.width), dtype=np.float32))

    def _check_shape(self, item: Any) -> ServingError | None:
        if not isinstance(item, np.ndarray) or item.ndim != 2 or item.shape[1] != self.width:
            shape = getattr(item, "shape", type(item).__name__)
            expected = f"[N, {self.width}]"
            return InvalidInput(f"expected a feature matrix of shape {expected}, got {shape}")
        if len(item) == 0:
            return InvalidInput("no rows to predict")
        return None

    def _run_alone(self, item: np.ndarray) -> Outputs | ServingError:
        try:
            return self._finish(self.scores(item))
        except Exception as exc:  # noqa: BLE001 - becomes this item's typed error
            return InferenceFailed(f"model forward pass failed: {type(exc).__name__}: {exc}")

    def _finish(self, scores: np.ndarray) -> Outputs | ServingError:
        if not np.all(np.isfinite(scores)):
            return InferenceFailed("model produced a non-finite score for this input")
        return self.outputs(scores)
