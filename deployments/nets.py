"""Torch module definitions. Model code only: no serving, no HTTP, no Ray.

An artifact's metadata names its class as `deployments.nets:<Class>` with its kwargs under
`architecture`; these shipped modules are always allowed (deployments/repository/
architectures.py), and weights are loaded into them from safetensors, never unpickled.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPClassifier(nn.Module):
    """A plain feed-forward classifier over a dense, already-normalised feature vector."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: list[int],
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class MLPRegressor(MLPClassifier):
    """The same network with `num_targets` linear outputs (normalised regression targets)."""

    def __init__(
        self, input_dim: int, hidden_dims: list[int], num_targets: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__(input_dim, hidden_dims, num_targets, dropout)
